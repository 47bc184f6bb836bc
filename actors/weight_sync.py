"""How new policy weights reach the rollout engine, behind one small interface.

The learner only ever calls ``WeightSync.push(named_tensors)``.  Two
implementations sit behind it:

* :class:`CPUWeightSync` (the path used and tested on CPU machines): the
  whole state dict is packed into one contiguous buffer per dtype
  (:func:`pack_state_dict`) and handed to ``VLLMSampler.load_weights`` (or to a
  Ray actor holding one), which ships it to vLLM's worker in a single
  ``collective_rpc`` and reloads it in place with
  ``model_runner.reload_weights(weights_iterator=...)``.  One RPC per push, never
  one per parameter.
* :class:`NativeWeightSync` (GPU clusters): vLLM's own weight-transfer API
  (``weight_transfer_config`` on the engine; ``init_weight_transfer_engine`` ->
  ``start_weight_update`` -> ``update_weights`` -> ``finish_weight_update``),
  driven through vLLM's trainer-side ``WeightTransferTrainerFactory`` with the
  ``nccl`` (packed broadcast) or ``ipc`` (colocated) backend.  It is written
  against the API of the installed vLLM 0.32 and is **not exercised on CPU**
  (NCCL and CUDA IPC need GPUs); see docs/vllm-notes.md.

The packing helpers are plain torch and are shared by both paths.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "WeightSync",
    "CPUWeightSync",
    "NativeWeightSync",
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


def _dict_weight_source(named_tensors: Mapping[str, torch.Tensor]):
    """A vLLM ``WeightSource`` over a dict whose ``tensors`` attribute can be
    replaced between pushes (vLLM is imported only here, so this module imports
    without it)."""
    from vllm.distributed.weight_transfer.base import ParamMeta, WeightSource

    class DictWeightSource(WeightSource):
        def __init__(self, tensors: Mapping[str, torch.Tensor]):
            self.tensors = dict(tensors)

        def metadata(self) -> list[ParamMeta]:
            return [ParamMeta(n, t.dtype, tuple(t.shape)) for n, t in self.tensors.items()]

        def __iter__(self):
            yield from self.tensors.items()

    return DictWeightSource(named_tensors)


class NativeWeightSync:
    """GPU path: vLLM's native weight-transfer API (NOT exercised on CPU).

    The rollout engine must be built with
    ``VLLMSampler(..., weight_transfer_config={"backend": backend})``; ``client``
    is anything with vLLM's ``VLLMWeightSyncClient`` surface
    (``init_weight_transfer_engine`` / ``start_weight_update`` /
    ``update_weights`` / ``finish_weight_update``): a ``VLLMSampler`` itself
    (in-process; see ``VLLMSampler.as_weight_sync_client``), or
    ``vllm.distributed.weight_transfer.clients.RayVLLMWeightSyncClient(handles)``
    for rollout actors exposing those methods.

    * ``backend="nccl"``: trainer rank 0 and the vLLM workers form one NCCL
      group (``world_size`` = 1 + number of vLLM workers, rendezvous at
      ``master_address:master_port``); every push is a packed broadcast
      (``packed=True``, vLLM's double-buffered packer).
    * ``backend="ipc"``: trainer and engine share a GPU; CUDA IPC handles are
      sent instead of bytes.

    The first ``push`` performs the rendezvous (``trainer_init``); later pushes
    call ``send_weights()``, which itself runs ``start_weight_update`` ->
    ``update_weights`` (concurrently with the broadcast) -> ``finish_weight_update``.
    Tensors must be on the trainer's CUDA device; pass the same names, shapes
    and dtypes on every push (vLLM sizes receive buffers from them).
    """

    def __init__(
        self,
        client: Any,
        *,
        backend: str = "nccl",
        master_address: str = "127.0.0.1",
        master_port: int = 29555,
        world_size: int = 2,
        rank: int = 0,
        packed: bool = True,
    ):
        self.client = client
        self.backend = backend
        self.master_address = master_address
        self.master_port = master_port
        self.world_size = world_size
        self.rank = rank
        self.packed = packed
        self._engine = None
        self._source = None
        self.version = 0

    def _init_info(self):
        if self.backend == "nccl":
            from vllm.distributed.weight_transfer.nccl_engine import NCCLTrainerInitInfo

            return NCCLTrainerInitInfo(
                master_address=self.master_address,
                master_port=self.master_port,
                world_size=self.world_size,
                packed=self.packed,
                rank=self.rank,
            )
        if self.backend == "ipc":
            from vllm.distributed.weight_transfer.ipc_engine import IPCTrainerInitInfo

            return IPCTrainerInitInfo(packed=self.packed, rank=self.rank)
        raise ValueError(f"unsupported weight-transfer backend {self.backend!r} (use 'nccl' or 'ipc')")

    def push(self, named_tensors: Mapping[str, torch.Tensor]) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError(
                "NativeWeightSync needs CUDA (NCCL / CUDA IPC); on CPU use CPUWeightSync"
            )
        if self._engine is None:
            from vllm.distributed.weight_transfer.factory import WeightTransferTrainerFactory

            self._source = _dict_weight_source(named_tensors)
            self._engine = WeightTransferTrainerFactory.trainer_init(
                self._init_info(), client=self.client, source=self._source
            )
        else:
            self._source.tensors = dict(named_tensors)
        self._engine.send_weights()
        self.version += 1

    def close(self) -> None:
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None
