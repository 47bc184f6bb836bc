"""The FSDP2 learner step (fdpg_ray.train.parallel.shard_policy, as ``learner.strategy: fsdp`` runs
it) and its MFU, measured side by side with the device's matmul peak in the same run.
Needs only torch and transformers (no Ray, no vLLM, nothing downloaded: the model is built
from a config with random weights).

    python benchmarks/fsdp_step.py                       # GPU: GPT-2-small shape, bf16, NCCL
    python benchmarks/fsdp_step.py --dry-run             # CPU: tiny GPT-2 shape, float32, gloo

World size 1 by default (one process; the sharding, the all-gather/reduce-scatter hooks and
the gathered full weights all run, over a group of one); ``--world 2`` spawns two
processes (two GPUs, or two CPU processes with --dry-run).  bf16 is FSDP2's mixed
precision (bf16 parameters and compute, fp32 gradient reduction and master weights).
One step = chunked log pi with gradient + f-DPG loss + backward + clip_grad_norm_ + AdamW.
After the steps, the full weights are gathered once (what a push to the rollout engine
does) and checked against the sharded parameters.  Achieved FLOP/s = 6 × parameters ×
tokens/s (all ranks); MFU = that ÷ (world × the measured matmul peak).  One JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build(shape: str):
    from transformers import GPT2Config, GPT2LMHeadModel

    if shape == "gpt2-small":  # 124M, GPT-2 small's shape
        return GPT2LMHeadModel(GPT2Config())
    if shape == "gpt2-tiny":
        return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=1000, n_positions=256,
                                           bos_token_id=0, eos_token_id=0))
    raise SystemExit(f"--model: unknown shape {shape!r}; use gpt2-small or gpt2-tiny")


def worker(rank: int, world: int, port: int, args, out: dict | None = None) -> dict:
    import torch.distributed as dist
    from torch.distributed.fsdp import MixedPrecisionPolicy
    from torch.distributed.tensor import DTensor

    from fdpg_ray.objective.divergences import get_divergence
    from fdpg_ray.objective.loss import SequenceLogProbs, fdpg_loss
    from fdpg_ray.train.parallel import full_weights, grad_norm_value, shard_policy
    from learner import matmul_peak, sync

    cuda = args.device == "cuda"
    device = f"cuda:{rank}" if cuda else "cpu"
    if cuda:
        torch.cuda.set_device(rank)
    dist.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        dtype = DTYPES[args.dtype]
        lm = build(args.model).to(device)
        params = sum(p.numel() for p in lm.parameters())
        mp = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype != torch.float32 else None
        model = shard_policy(SequenceLogProbs(lm, 128), lm, mp_policy=mp)
        assert all(isinstance(p, DTensor) for p in model.parameters())
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
        div = get_divergence("js")
        g = torch.Generator().manual_seed(rank)
        ids = torch.randint(0, lm.config.vocab_size, (args.batch, args.seq), generator=g).to(device)
        attn = torch.ones_like(ids)
        comp = torch.zeros_like(ids)
        comp[:, args.seq // 4:] = 1
        log_P = torch.randn(args.batch, dtype=torch.float64, device=device) - 30
        times = []
        for i in range(args.steps + 2):
            sync(device)
            t0 = time.perf_counter()
            out_ = fdpg_loss(model(ids, attn, comp), log_P, 0.0, div)
            opt.zero_grad(set_to_none=True)
            out_.loss.backward()
            norm = grad_norm_value(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            opt.step()
            sync(device)
            if i >= 2:
                times.append(time.perf_counter() - t0)
        assert norm == norm and norm != float("inf"), norm
        sec = sorted(times)[len(times) // 2]
        t0 = time.perf_counter()
        n_bytes, n_tensors = 0, 0
        for name, t in full_weights(lm):  # every rank takes part; the gathered push
            n_bytes += t.numel() * t.element_size()
            n_tensors += 1
        gather_s = time.perf_counter() - t0
        peak = matmul_peak(device, dtype)
        tokens = args.batch * args.seq * world
        res = {"bench": "fsdp_step", "device": torch.cuda.get_device_name(rank) if cuda else "cpu",
               "backend": dist.get_backend(), "world": world, "model": args.model, "params": params,
               "dtype": args.dtype, "batch_per_rank": args.batch, "seq": args.seq, "step_seconds": sec,
               "tokens_per_s": tokens / sec, "flops_per_s": 6 * params * tokens / sec,
               "matmul_peak_flops": peak, "mfu_vs_measured_peak": 6 * params * tokens / sec / (world * peak),
               "full_weights_tensors": n_tensors, "full_weights_bytes": n_bytes, "full_weights_seconds": gather_s,
               "peak_memory_mib": torch.cuda.max_memory_allocated(rank) / 2 ** 20 if cuda else None,
               "command": "python benchmarks/fsdp_step.py " + " ".join(sys.argv[1:])}
        if rank == 0 and out is not None:
            out.update(res)
        return res
    finally:
        dist.destroy_process_group()


def _spawned(rank, world, port, args, path):
    res = worker(rank, world, port, args)
    if rank == 0:
        with open(path, "w") as f:
            json.dump(res, f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, gloo, tiny GPT-2 shape, float32, 2 steps")
    ap.add_argument("--model", default="gpt2-small")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default=None, choices=DTYPES, help="default bfloat16 (float32 with --dry-run)")
    ap.add_argument("--batch", type=int, default=16, help="sequences per rank")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--world", type=int, default=1)
    args = ap.parse_args()
    if args.dry_run:
        args.device, args.model, args.batch, args.seq, args.steps = "cpu", "gpt2-tiny", 4, 64, 2
        args.dtype = args.dtype or "float32"
    args.dtype = args.dtype or "bfloat16"
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("fsdp_step: no CUDA device; run with --dry-run on CPU")
    port = _port()
    if args.world == 1:
        print(json.dumps(worker(0, 1, port, args)))
        return
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "res.json")
        mp.spawn(_spawned, args=(args.world, port, args, path), nprocs=args.world, join=True)
        with open(path) as f:
            print(f.read())


if __name__ == "__main__":
    main()
