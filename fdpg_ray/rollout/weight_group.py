"""Weight transfer through a dedicated ``torch.distributed`` process group (torch only).

The learner's rank 0 (the sender, rank 0 of this group) and every rollout engine's
worker (ranks 1..R) join one process group made only for weight transfer: gloo on
CPU, NCCL on GPU.  The group is *stateless*: it is built from a ``TCPStore`` and a
``ProcessGroupGloo`` / ``ProcessGroupNCCL`` object used directly, never through
``torch.distributed.init_process_group``, so it neither needs nor disturbs the
default group that Ray Train (learner) or vLLM (engine) set up in the same process.
This is how vLLM's RLHF examples and OpenRLHF form their trainer-to-engine group
(``vllm.distributed.utils.stateless_init_torch_distributed_process_group``); that
helper's own docstring says ``broadcast`` is unusable on its groups, hence our own
few lines here.

Protocol (one push = one broadcast per bucket, received by all engines at once):

1. Once: the sender computes a :class:`BucketPlan` from the tensors' names, shapes
   and dtypes (:func:`plan_buckets`): tensors are laid out back to back, each at a
   64-byte aligned offset, in byte buckets of at most ``bucket_bytes`` (a tensor
   at least ``alone_bytes`` gets a bucket of its own and is broadcast straight from
   the sender's tensor, without a copy).  The plan (plain Python data) goes
   to every receiver once, with the group's address.
2. Every push: the sender fills bucket k from the tensors as it consumes them (an
   iterable is read once, in order) and broadcasts it; receivers broadcast into
   pre-allocated buffers of the same size and hand the views of bucket k, by name,
   to a ``load`` callback (the engine copies them into its parameters in place).
   Two buffers on each side: bucket k+1 travels while bucket k is filled / loaded (a
   receiver with a buffer per bucket, as vLLM's, posts every bucket at once).

No Ray and no vLLM here: ``benchmarks/gpu_check.sh`` runs this module between two
plain processes over NCCL.
"""

from __future__ import annotations

import datetime
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "BucketPlan",
    "WeightGroup",
    "WeightSender",
    "WeightReceiver",
    "plan_buckets",
    "plan_push",
    "iter_named",
    "free_port",
    "DEFAULT_BUCKET_MB",
]

ALIGN = 64  # bytes: every tensor starts at a multiple (any dtype's element size divides it)
DEFAULT_BUCKET_MB = 256.0


def _dtype(name: str) -> torch.dtype:
    dt = getattr(torch, name, None)
    if not isinstance(dt, torch.dtype):
        raise ValueError(f"unknown torch dtype name {name!r}")
    return dt


def _dtype_name(dt: torch.dtype) -> str:
    return str(dt).removeprefix("torch.")


def iter_named(named_tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]
               ) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) pairs from a Mapping (``state_dict()``) or an iterable of pairs."""
    if isinstance(named_tensors, Mapping):
        return iter(named_tensors.items())
    return iter(named_tensors)


@dataclass(frozen=True)
class BucketPlan:
    """Where each tensor lives in the byte buckets.

    ``entries[i] = (name, dtype_name, shape, bucket, byte_offset)`` in the order the
    sender yields the tensors; ``bucket_nbytes[k]`` is bucket k's size in bytes.
    Plain Python data, so it crosses any RPC (Ray, vLLM's msgpack) unchanged.
    """

    entries: tuple[tuple[str, str, tuple[int, ...], int, int], ...]
    bucket_nbytes: tuple[int, ...]

    @property
    def total_bytes(self) -> int:
        """Bytes of tensor data (padding excluded)."""
        return sum(_nbytes(dt, shape) for _, dt, shape, _, _ in self.entries)

    def to_dict(self) -> dict:
        """The plan as plain lists and ints (shapes as lists), for RPC; inverse of :meth:`from_dict`."""
        return {"entries": [list(e[:2]) + [list(e[2])] + list(e[3:]) for e in self.entries],
                "bucket_nbytes": list(self.bucket_nbytes)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BucketPlan":
        """Rebuild a plan from :meth:`to_dict`'s output (KeyError / ValueError on a malformed dict)."""
        return cls(tuple((str(n), str(dt), tuple(int(s) for s in shape), int(b), int(o))
                         for n, dt, shape, b, o in d["entries"]),
                   tuple(int(x) for x in d["bucket_nbytes"]))

    def buckets(self) -> list[list[tuple[str, str, tuple[int, ...], int]]]:
        """Per bucket: ``(name, dtype_name, shape, byte_offset)`` in order."""
        out: list[list] = [[] for _ in self.bucket_nbytes]
        for name, dt, shape, b, off in self.entries:
            out[b].append((name, dt, shape, off))
        return out


def _nbytes(dtype_name: str, shape: tuple[int, ...]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n * torch.empty((), dtype=_dtype(dtype_name)).element_size()


def plan_buckets(specs: Iterable[tuple[str, torch.dtype | str, tuple[int, ...]]], bucket_bytes: int,
                 alone_bytes: int | None = None) -> BucketPlan:
    """Lay ``(name, dtype, shape)`` out in buckets of at most ``bucket_bytes`` bytes,
    keeping the order.  A tensor of ``alone_bytes`` or more (default: ``bucket_bytes``)
    gets a bucket of its own, which the sender broadcasts straight from the tensor
    (no copy); smaller tensors are packed together."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be > 0, got {bucket_bytes}")
    alone = bucket_bytes if alone_bytes is None else min(int(alone_bytes), bucket_bytes)
    entries, sizes = [], []
    cur = None  # bytes used in the open packed bucket (None: no open bucket)
    for name, dt, shape in specs:
        dn = dt if isinstance(dt, str) else _dtype_name(dt)
        shape = tuple(int(s) for s in shape)
        nb = _nbytes(dn, shape)
        if nb >= alone:
            sizes.append(max(nb, 1))
            entries.append((name, dn, shape, len(sizes) - 1, 0))
            cur = None
            continue
        start = 0 if cur is None else -(-cur // ALIGN) * ALIGN
        if cur is None or start + nb > bucket_bytes:
            sizes.append(0)
            start = 0
        entries.append((name, dn, shape, len(sizes) - 1, start))
        cur = start + nb
        sizes[-1] = max(cur, 1)
    return BucketPlan(tuple(entries), tuple(sizes))


def plan_push(named: Iterable[tuple[str, torch.Tensor]], bucket_bytes: int) -> BucketPlan:
    """The plan a weight push uses (:func:`plan_buckets` of the tensors' names, dtypes and
    shapes): tensors of 1 MiB or more travel alone, straight from the learner's memory."""
    return plan_buckets([(n, t.dtype, tuple(t.shape)) for n, t in named], bucket_bytes,
                        alone_bytes=min(1 << 20, bucket_bytes))


def free_port(host: str = "") -> int:
    """A TCP port that was free a moment ago (the store binds it right after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


class WeightGroup:
    """One stateless process group for weight transfer.

    Args:
        master_addr, master_port: the sender's (rank 0's) address; rank 0 hosts the
            ``TCPStore`` there.
        rank, world_size: this process's rank; world size = 1 + number of receivers.
        backend: ``"gloo"`` (CPU tensors) or ``"nccl"`` (CUDA tensors).
        timeout_s: how long a rendezvous or a broadcast may wait (seconds) before
            it raises.
        device: where the buffers live; default CPU for gloo, the current CUDA device
            for NCCL.  gloo also moves CUDA tensors (staged through host memory).

    Construction blocks until all ``world_size`` ranks have joined.  Raises
    ``ValueError`` for an unknown backend and ``RuntimeError`` (from torch) when
    the rendezvous times out.
    """

    def __init__(self, master_addr: str, master_port: int, rank: int, world_size: int,
                 backend: str = "gloo", timeout_s: float = 600.0, device: torch.device | str | None = None):
        if backend not in ("gloo", "nccl"):
            raise ValueError(f"weight-group backend must be 'gloo' or 'nccl', got {backend!r}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a group of {world_size}")
        timeout = datetime.timedelta(seconds=timeout_s)
        self.rank, self.world_size, self.backend = rank, world_size, backend
        self.store = dist.TCPStore(master_addr, int(master_port), world_size, is_master=(rank == 0),
                                   timeout=timeout, wait_for_workers=False)
        prefix = dist.PrefixStore("fdpg_weight_group", self.store)
        if backend == "gloo":
            self.pg = dist.ProcessGroupGloo(prefix, rank, world_size, timeout)
            self.device = torch.device(device or "cpu")
        else:
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            self.pg = dist.ProcessGroupNCCL(prefix, rank, world_size, opts)
            self.device = torch.device(device) if device is not None else torch.device("cuda", torch.cuda.current_device())
        self.closed = False

    def broadcast(self, tensor: torch.Tensor, src: int = 0):
        """Start broadcasting ``tensor`` from rank ``src`` into every rank's ``tensor``
        (same size and dtype everywhere); returns the work handle (``.wait()``)."""
        opts = dist.BroadcastOptions()
        opts.rootRank = src
        opts.rootTensor = 0
        return self.pg.broadcast([tensor], opts)

    def close(self) -> None:
        """Shut down the process group (best effort) and drop the store; idempotent."""
        if self.closed:
            return
        self.closed = True
        try:
            if hasattr(self.pg, "shutdown"):
                self.pg.shutdown()
        except Exception:  # pragma: no cover - best effort
            pass
        self.pg = None
        self.store = None


def _views(buf: torch.Tensor, items: list[tuple[str, str, tuple[int, ...], int]]) -> list[tuple[str, torch.Tensor]]:
    out = []
    for name, dn, shape, off in items:
        nb = _nbytes(dn, shape)
        out.append((name, buf[off:off + nb].view(_dtype(dn)).view(shape)))
    return out


class WeightSender:
    """Rank 0: streams named tensors through the group, bucket by bucket.

    ``plan`` fixes the names, shapes, dtypes and order; every :meth:`send` must yield
    exactly them (a different set means a new plan and a new group).
    """

    def __init__(self, group: WeightGroup, plan: BucketPlan):
        self.group, self.plan = group, plan
        cap = max(plan.bucket_nbytes)
        # Two buffers: bucket k is filled while bucket k-1 travels.
        self._bufs = [torch.empty(cap, dtype=torch.uint8, device=group.device) for _ in range(2)]
        self.last_seconds: float | None = None
        self.bytes_sent = 0

    def send(self, named_tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> float:
        """Broadcast every tensor; returns the seconds spent.  Raises ``ValueError``
        when the tensors do not match the plan (name, shape or dtype, in order)."""
        t0 = time.perf_counter()
        it = iter_named(named_tensors)
        pending = None  # (work) of the previous bucket
        for k, items in enumerate(self.plan.buckets()):
            buf = self._bufs[k % 2]
            direct = None
            for (name, dn, shape, off) in items:
                try:
                    got_name, t = next(it)
                except StopIteration:
                    raise ValueError(f"weight push ended before {name!r}; the plan has "
                                     f"{len(self.plan.entries)} tensors") from None
                if got_name != name or tuple(t.shape) != shape or _dtype_name(t.dtype) != dn:
                    raise ValueError(f"weight push: got {got_name!r} {tuple(t.shape)} {_dtype_name(t.dtype)}, the plan "
                                     f"expects {name!r} {shape} {dn}; names, shapes and dtypes must not change "
                                     "between pushes")
                nb = _nbytes(dn, shape)
                if len(items) == 1 and t.is_contiguous() and t.device == self.group.device and nb > 0:
                    direct = t.detach().reshape(-1).view(torch.uint8)  # a bucket of its own: no copy
                else:
                    buf[off:off + nb].view(_dtype(dn)).view(shape).copy_(t.detach())
            if pending is not None:
                pending.wait()  # bucket k-1 is out: its buffer may be refilled at k+1
            pending = self.group.broadcast(direct if direct is not None else buf[:self.plan.bucket_nbytes[k]])
        if pending is not None:
            pending.wait()
        extra = next(it, None)
        if extra is not None:
            raise ValueError(f"weight push: {extra[0]!r} is not in the plan; names must not change between pushes")
        self.bytes_sent += self.plan.total_bytes
        self.last_seconds = time.perf_counter() - t0
        return self.last_seconds


class WeightReceiver:
    """Ranks 1..R: receive each bucket into a pre-allocated buffer and hand its
    tensors, by name, to the engine.

    ``keep=False``: two buffers in turn (bucket k+1 arrives while bucket k is
    loaded); the engine must copy a bucket's tensors before asking for the next
    bucket (:meth:`receive` with a copying ``load``).  ``keep=True``: one buffer per
    bucket (extra memory = the model's size), so every view stays valid until the next
    push; needed when the engine holds on to tensors across buckets, as vLLM's
    layerwise ``reload_weights`` does until a layer is complete (:meth:`stream`).
    """

    def __init__(self, group: WeightGroup, plan: BucketPlan, keep: bool = False):
        self.group, self.plan, self.keep = group, plan, keep
        sizes = plan.bucket_nbytes if keep else [max(plan.bucket_nbytes)] * min(2, len(plan.bucket_nbytes))
        self._bufs = [torch.empty(n, dtype=torch.uint8, device=group.device) for n in sizes]
        self._buckets = plan.buckets()
        self.last_seconds: float | None = None
        self.last_wait_seconds: float | None = None

    def _buf(self, k: int) -> torch.Tensor:
        return self._bufs[k if self.keep else k % 2][:self.plan.bucket_nbytes[k]]

    def _arrivals(self) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """Each bucket's (name, view) list, in plan order, as it arrives.  ``keep=True``:
        every bucket has its own buffer, so all are posted at once and the transfer runs at
        the network's pace, not the consumer's; otherwise two buffers in turn, and bucket
        k+2 is posted once the consumer is done with bucket k."""
        n = len(self._buckets)
        ahead = n if self.keep else 2
        works = {k: self.group.broadcast(self._buf(k)) for k in range(min(ahead, n))}
        wait_s = 0.0
        for k in range(n):
            t1 = time.perf_counter()
            works.pop(k).wait()
            wait_s += time.perf_counter() - t1
            yield _views(self._buf(k), self._buckets[k])
            if k + ahead < n:  # bucket k's buffer is free again
                works[k + ahead] = self.group.broadcast(self._buf(k + ahead))
        self.last_wait_seconds = wait_s

    def stream(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Receive one push as a generator of (name, tensor view), in plan order.  With
        ``keep=True`` every bucket is posted at once (the transfer does not wait for the
        consumer); otherwise the next bucket is on its way while the consumer works on
        this one.  Consume it to the end (the sender blocks until every rank has received)."""
        t0 = time.perf_counter()
        for items in self._arrivals():
            yield from items
        self.last_seconds = time.perf_counter() - t0

    def receive(self, load: Callable[[list[tuple[str, torch.Tensor]]], Any]) -> float:
        """Receive one push; ``load(list of (name, tensor view))`` is called once per
        bucket, in plan order, and must copy what it keeps.  Returns the seconds spent."""
        t0 = time.perf_counter()
        for items in self._arrivals():
            load(items)
        self.last_seconds = time.perf_counter() - t0
        return self.last_seconds
