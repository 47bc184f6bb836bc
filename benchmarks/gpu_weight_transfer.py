"""The weight-transfer group (fdpg_ray.rollout.weight_group) between plain processes: one
sender (the learner's rank 0) and ``--receivers`` receivers (the rollout engines' workers),
the same WeightGroup / WeightSender / WeightReceiver code a run uses, with no Ray and no
vLLM.  Needs only torch and transformers (nothing downloaded: the model is built from a
config with random weights).

    python benchmarks/gpu_weight_transfer.py                  # GPU: GPT-2-small shape, bf16
    python benchmarks/gpu_weight_transfer.py --device cpu --dtype float32   # gloo ceiling here
    python benchmarks/gpu_weight_transfer.py --dry-run        # CPU: tiny shape, gloo, 1 push

Backend: NCCL on CUDA, gloo on CPU.  NCCL refuses two ranks on one GPU ("Duplicate GPU
detected"), so over NCCL every rank needs its own GPU (``receivers + 1`` GPUs); on a machine
with fewer GPUs the script says so in its JSON line and measures the same code over gloo
with the CUDA tensors instead (staged through host memory: a lower bound, not NCCL's figure).

Each push sends the model's ``state_dict()`` (a tied lm_head under both names, as a run
sends it) in buckets of ``--bucket-mb``; every receiver loads each bucket's tensors in place
into its own copy of the parameters (zeroed before each push) and, after the timed pushes,
checks them bit for bit against the sender's.  Times are medians over ``--repeats`` pushes
after one warm-up push; a push is timed on every rank from a common start (a one-element
all-reduce) to the end of its last bucket; GB/s = bytes / the slowest receiver's seconds.
Exits non-zero when a received tensor differs.  One JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _state_dict(args) -> dict[str, torch.Tensor]:
    from fsdp_step import build

    torch.manual_seed(0)
    lm = build(args.model).to(DTYPES[args.dtype])
    return {k: v.detach() for k, v in lm.state_dict().items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(rank: int, world: int, port: int, args, path: str) -> None:
    from fdpg_ray.rollout.weight_group import WeightGroup, WeightReceiver, WeightSender, plan_push

    cuda = args.device == "cuda"
    if cuda:
        torch.cuda.set_device(rank % torch.cuda.device_count())
    device = torch.device("cuda", torch.cuda.current_device()) if cuda else torch.device("cpu")
    torch.set_num_threads(1)
    sd = {k: v.to(device) for k, v in _state_dict(args).items()}
    bucket = int(args.bucket_mb * 2 ** 20)
    plan = plan_push(sd.items(), bucket)  # the plan a run makes
    group = WeightGroup("127.0.0.1", port, rank, world, backend=args.backend, timeout_s=120, device=device)
    start = torch.zeros(1, device=device)
    times, ok = [], True
    if rank == 0:
        sender = WeightSender(group, plan)
    else:
        receiver = WeightReceiver(group, plan)
        mine = {k: torch.zeros_like(v) for k, v in sd.items()}  # the engine's parameters

        def load(items):
            for name, view in items:
                mine[name].copy_(view)
    try:
        for rep in range(args.repeats + 1):
            if rank:
                for t in mine.values():
                    t.zero_()
            _sync(device)
            group.pg.allreduce([start]).wait()  # a common start (a broadcast's root need not wait)
            _sync(device)
            t0 = time.perf_counter()
            if rank == 0:
                sender.send(sd.items())
            else:
                receiver.receive(load)
            _sync(device)
            if rep:
                times.append(time.perf_counter() - t0)
        if rank:
            ok = all(torch.equal(mine[k], sd[k]) for k in sd)
        res = {"rank": rank, "seconds": statistics.median(times), "ok": ok, "bytes": plan.total_bytes,
               "buckets": len(plan.bucket_nbytes)}
    finally:
        group.close()
    with open(f"{path}.{rank}", "w") as f:
        json.dump(res, f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, gloo, tiny GPT-2 shape, float32, 1 push")
    ap.add_argument("--model", default="gpt2-small", help="gpt2-small (124M) or gpt2-tiny")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--dtype", default=None, choices=DTYPES, help="default bfloat16 (float32 on CPU)")
    ap.add_argument("--receivers", type=int, default=1)
    ap.add_argument("--bucket-mb", type=float, default=256.0)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if args.dry_run:
        args.device, args.model, args.repeats = "cpu", "gpt2-tiny", 1
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_weight_transfer: --device cuda but no CUDA device; use --device cpu or --dry-run")
    if args.receivers < 1:
        raise SystemExit("gpu_weight_transfer: --receivers must be >= 1")
    args.dtype = args.dtype or ("bfloat16" if args.device == "cuda" else "float32")
    world = 1 + args.receivers
    note = None
    if args.device == "cuda":
        gpus = torch.cuda.device_count()
        if gpus >= world:
            args.backend = "nccl"
        else:
            args.backend = "gloo"
            note = (f"NCCL needs one GPU per rank ({world}), this machine has {gpus}: measured over "
                    "gloo with CUDA tensors (host-staged), not NCCL")
    else:
        args.backend = "gloo"

    from fdpg_ray.rollout.weight_group import free_port

    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "res")
        mp.spawn(worker, args=(world, free_port("127.0.0.1"), args, path), nprocs=world, join=True)
        ranks = [json.load(open(f"{path}.{r}")) for r in range(world)]
    slowest = max(r["seconds"] for r in ranks[1:])
    nbytes = ranks[0]["bytes"]
    device = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    ok = all(r["ok"] for r in ranks[1:])
    print(json.dumps({
        "bench": "weight_transfer", "device": device, "backend": args.backend, "model": args.model,
        "dtype": args.dtype, "receivers": args.receivers, "bucket_mb": args.bucket_mb,
        "buckets": ranks[0]["buckets"], "bytes": nbytes, "send_seconds": round(ranks[0]["seconds"], 4),
        "receive_seconds": round(slowest, 4), "s_per_GB": round(slowest / (nbytes / 1e9), 4),
        "GB_per_s": round(nbytes / 1e9 / slowest, 3), "received_equal": ok, "note": note,
        "command": "python benchmarks/gpu_weight_transfer.py " + " ".join(sys.argv[1:])}))
    if not ok:
        raise SystemExit("gpu_weight_transfer: a receiver's tensors differ from the sender's")


if __name__ == "__main__":
    main()
