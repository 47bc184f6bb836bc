"""How new policy weights reach the rollout engine, behind one small interface.

The learner only ever calls ``WeightSync.push(named_tensors)``.  The default path is the
process-group broadcast of :mod:`fdpg_ray.rollout.weight_group` (``rollout.weight_sync: group``); this
module holds the object-store path and the packing helpers both use:

* :class:`CPUWeightSync` (the path used and tested on CPU machines): the
  whole state dict is packed into one contiguous buffer per dtype
  (:func:`pack_state_dict`) and handed to ``VLLMSampler.load_weights`` (or to a
  Ray actor holding one), which ships it to vLLM's worker in a single
  ``collective_rpc`` and reloads it in place with
  ``model_runner.reload_weights(weights_iterator=...)``.  One RPC per push, never
  one per parameter.
The packing helpers are plain torch.  (A wrapper of vLLM's native weight-transfer API, never
wired into a run, was removed; docs/vllm-notes.md says why the process group is the one path.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "WeightSync",
    "CPUWeightSync",
    "pack_state_dict",
    "unpack_state_dict",
    "packed_to_wire",
    "wire_to_packed",
    "dtype_name",
    "dtype_from_name",
]


# --------------------------------------------------------------------------- #
# Packing
# --------------------------------------------------------------------------- #


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    """``"float32"`` -> ``torch.float32`` (raises on anything that is not a dtype)."""
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"unknown torch dtype name {name!r}")
    return dt


def pack_state_dict(
    named_tensors: Mapping[str, torch.Tensor] | Iterator[tuple[str, torch.Tensor]],
) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Pack tensors into one contiguous 1-D CPU buffer per dtype.

    Returns ``(buffers, metadata)``: ``buffers`` maps a dtype name (``"float32"``)
    to a flat tensor of that dtype; ``metadata`` is a list, in input order, of
    ``{"name", "dtype", "shape", "offset", "numel"}`` where ``offset``/``numel``
    count elements inside ``buffers[dtype]``.  Only plain Python types are in the
    metadata, so it serialises with msgpack/json/pickle alike.

    Tensors are detached and moved to CPU; their values are copied exactly.
    Tied parameters (two names, one storage) are packed twice, as a state dict
    lists them.
    """
    items = list(named_tensors.items()) if isinstance(named_tensors, Mapping) else list(named_tensors)
    metadata: list[dict[str, Any]] = []
    sizes: dict[str, int] = {}
    for name, t in items:
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
        dn = dtype_name(t.dtype)
        n = t.numel()
        metadata.append(
            {"name": name, "dtype": dn, "shape": list(t.shape), "offset": sizes.get(dn, 0), "numel": n}
        )
        sizes[dn] = sizes.get(dn, 0) + n
    buffers = {dn: torch.empty(n, dtype=dtype_from_name(dn)) for dn, n in sizes.items()}
    for (name, t), m in zip(items, metadata):
        buffers[m["dtype"]][m["offset"] : m["offset"] + m["numel"]].copy_(t.detach().reshape(-1))
    return buffers, metadata


def unpack_state_dict(
    buffers: Mapping[str, torch.Tensor], metadata: list[dict[str, Any]]
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`pack_state_dict`: name -> tensor views into ``buffers``
    (no copy; clone them if the buffers will be reused)."""
    out: dict[str, torch.Tensor] = {}
    for m in metadata:
        buf = buffers[m["dtype"]]
        n = int(m["numel"])
        if m["offset"] + n > buf.numel():
            raise ValueError(f"{m['name']}: metadata points past the end of the {m['dtype']} buffer")
        shape = tuple(m["shape"])
        if math.prod(shape) != n:
            raise ValueError(f"{m['name']}: shape {shape} does not hold {n} elements")
        out[m["name"]] = buf[m["offset"] : m["offset"] + n].view(shape)
    return out


def packed_to_wire(buffers: Mapping[str, torch.Tensor]) -> dict[str, bytes]:
    """Buffers as raw ``bytes`` (dtype name -> bytes), the one form that crosses
    vLLM's msgpack RPC between the frontend and the engine-core process intact
    (tensors inside ``collective_rpc`` arguments arrive as undecoded tuples)."""
    return {dn: b.contiguous().view(torch.uint8).numpy().tobytes() for dn, b in buffers.items()}


def wire_to_packed(wire: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Inverse of :func:`packed_to_wire`; also accepts tensors (in-process calls)."""
    out: dict[str, torch.Tensor] = {}
    for dn, raw in wire.items():
        if isinstance(raw, torch.Tensor):
            out[dn] = raw
            continue
        # bytearray: writable, so torch.frombuffer does not warn; one copy.
        u8 = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if len(raw) else torch.empty(0, dtype=torch.uint8)
        out[dn] = u8.view(dtype_from_name(dn))
    return out


# --------------------------------------------------------------------------- #
# The interface
# --------------------------------------------------------------------------- #


@runtime_checkable
class WeightSync(Protocol):
    """Gets the learner's current weights into the rollout engine(s)."""

    def push(self, named_tensors: Mapping[str, torch.Tensor]) -> None:
        """Make the engine(s) sample from ``named_tensors`` (HF checkpoint names,
        e.g. ``model.state_dict()``) from the next request on.  Blocking."""
        ...


def _resolve(ref: Any) -> Any:
    """``ray.get`` an ObjectRef, pass anything else through."""
    if type(ref).__name__ == "ObjectRef":
        import ray

        return ray.get(ref)
    return ref


class CPUWeightSync:
    """CPU path: pack once, one ``load_weights`` call per target.

    ``targets`` are ``VLLMSampler`` instances or Ray actor handles whose actor
    exposes ``load_packed(buffers, metadata)`` / ``load_weights(named_tensors)``
    (a rollout actor that forwards to its ``VLLMSampler``).  With actor handles
    the packed buffers are put in the object store once and shared by all
    targets.
    """

    def __init__(self, *targets: Any):
        if not targets:
            raise ValueError("CPUWeightSync needs at least one VLLMSampler or actor handle")
        self.targets = list(targets)
        self.last_push_s: float | None = None

    def push(self, named_tensors: Mapping[str, torch.Tensor]) -> None:
        """Pack ``named_tensors`` once (:func:`pack_state_dict`) and load them into every target; blocking.

        Actor targets share one ``ray.put`` copy of the buffers.  Seconds taken go to
        ``last_push_s``.  Raises TypeError for a target without ``load_packed``.
        """
        import time

        t0 = time.perf_counter()
        buffers, metadata = pack_state_dict(named_tensors)
        refs = []
        buf_ref = None
        for t in self.targets:
            method = getattr(t, "load_packed", None)
            if method is None:
                raise TypeError(f"{t!r} has no load_packed(buffers, metadata) method")
            if hasattr(method, "remote"):  # Ray actor handle
                if buf_ref is None:
                    import ray

                    buf_ref = ray.put(buffers)  # one copy in the object store for all actors
                refs.append(method.remote(buf_ref, metadata))
            else:
                method(buffers, metadata)
        for r in refs:
            _resolve(r)
        self.last_push_s = time.perf_counter() - t0
