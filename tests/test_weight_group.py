"""fdpg_ray/rollout/weight_group.py between plain processes (no Ray, no vLLM): the bucket plan, and a
sender broadcasting to two receivers over a real gloo group, bit-exact, twice."""

from __future__ import annotations

import multiprocessing as mp

import pytest
import torch

from fdpg_ray.rollout.weight_group import (ALIGN, BucketPlan, WeightGroup, WeightReceiver, WeightSender, free_port,
                                 plan_buckets)


def _tensors(seed: int) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        ("wte.weight", torch.randn(300, 17, generator=g)),
        ("steps", torch.randint(0, 1 << 40, (3,), generator=g)),
        ("ln.bias", torch.randn(5, generator=g).half()),
        ("big", torch.randn(70_000, generator=g)),  # larger than a bucket: a bucket of its own
        ("h.0.attn", torch.randn(4, 33, generator=g).to(torch.bfloat16)),
        ("mask", torch.rand(9, generator=g) > 0.5),
    ]


def test_plan_keeps_order_aligns_and_bounds_buckets():
    ts = _tensors(0)
    plan = plan_buckets([(n, t.dtype, t.shape) for n, t in ts], bucket_bytes=64 * 1024)
    assert [e[0] for e in plan.entries] == [n for n, _ in ts]
    assert all(off % ALIGN == 0 for *_, off in plan.entries)
    big = next(e for e in plan.entries if e[0] == "big")
    assert plan.bucket_nbytes[big[3]] == 70_000 * 4  # alone in its bucket
    assert [len(b) for b in plan.buckets()] == [3, 1, 2]
    for k, bucket in enumerate(plan.buckets()):
        ends = [off + t.numel() * t.element_size() for (n, _, _, off) in bucket for m, t in ts if m == n]
        assert max(ends) == plan.bucket_nbytes[k]
        assert len(bucket) == 1 or plan.bucket_nbytes[k] <= 64 * 1024
    assert plan.total_bytes == sum(t.numel() * t.element_size() for _, t in ts)
    assert BucketPlan.from_dict(plan.to_dict()) == plan
    # alone_bytes: tensors of that size or more get buckets of their own (sent without a copy)
    alone = plan_buckets([(n, t.dtype, t.shape) for n, t in ts], bucket_bytes=64 * 1024, alone_bytes=1024)
    assert [[e[0] for e in b] for b in alone.buckets()] == [["wte.weight"], ["steps", "ln.bias"], ["big"],
                                                            ["h.0.attn", "mask"]]
    with pytest.raises(ValueError, match="bucket_bytes"):
        plan_buckets([], 0)


def _receiver(rank: int, port: int, plan: dict, keep: bool, q) -> None:
    torch.set_num_threads(1)
    group = WeightGroup("127.0.0.1", port, rank, 3, timeout_s=120)
    r = WeightReceiver(group, BucketPlan.from_dict(plan), keep=keep)
    for _ in range(2):
        if keep:
            got = dict(r.stream())  # views, valid until the next push
            got = {k: v.clone() for k, v in got.items()}
        else:
            got = {}
            r.receive(lambda items: got.update({k: v.clone() for k, v in items}))
        # Plain bytes through the queue (tensors would travel as shared-memory handles
        # that die with this process).
        q.put((rank, {k: (str(v.dtype), tuple(v.shape), v.reshape(-1).view(torch.uint8).numpy().tobytes())
                      for k, v in got.items()}))
    group.close()


def _tensor(dtype: str, shape: tuple, raw: bytes) -> torch.Tensor:
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(getattr(torch, dtype[6:])).view(shape)


def test_one_broadcast_reaches_two_receivers_bit_exact():
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    port = free_port()
    first = _tensors(1)
    # wte and big travel straight from the sender's tensors, the rest packed in buckets
    plan = plan_buckets([(n, t.dtype, t.shape) for n, t in first], bucket_bytes=64 * 1024, alone_bytes=1024)
    procs = [ctx.Process(target=_receiver, args=(r, port, plan.to_dict(), r == 1, q)) for r in (1, 2)]
    for p in procs:
        p.start()
    try:
        sender = WeightSender(WeightGroup("127.0.0.1", port, 0, 3, timeout_s=120), plan)
        pushes = [first, _tensors(2)]
        for push in pushes:
            sender.send(iter(push))  # an iterable of pairs, read once
        received = [(r, {k: _tensor(*v) for k, v in got.items()}) for r, got in (q.get(timeout=120) for _ in range(4))]
        for rank in (1, 2):
            mine = [got for r, got in received if r == rank]
            assert len(mine) == 2
            for got, push in zip(mine, pushes):
                assert list(got) == [n for n, _ in push]
                for n, t in push:
                    assert got[n].dtype == t.dtype and got[n].shape == t.shape
                    assert torch.equal(got[n], t), n
        assert sender.bytes_sent == 2 * plan.total_bytes
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)


def test_sender_refuses_tensors_that_do_not_match_the_plan():
    ts = _tensors(3)
    plan = plan_buckets([(n, t.dtype, t.shape) for n, t in ts], bucket_bytes=1 << 20)
    sender = WeightSender(WeightGroup("127.0.0.1", free_port(), 0, 1, timeout_s=30), plan)
    sender.send(dict(ts))  # a Mapping works too
    with pytest.raises(ValueError, match="'ln.bias'.*plan expects"):
        sender.send([(n, t.float() if n == "ln.bias" else t) for n, t in ts])
    with pytest.raises(ValueError, match="ended before"):
        sender.send(ts[:-1])
    with pytest.raises(ValueError, match="not in the plan"):
        sender.send(ts + [("extra", torch.zeros(1))])
    with pytest.raises(ValueError, match="gloo"):
        WeightGroup("127.0.0.1", free_port(), 0, 1, backend="mpi")
