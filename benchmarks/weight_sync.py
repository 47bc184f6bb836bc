"""Weight sync, before and after, side by side in one run: the object-store path
(pack -> ray.put -> one RPC per actor -> unpack -> vLLM ``reload_weights``) split into its
parts, against the process-group path (one bucketed gloo broadcast that every actor
receives, streamed into ``reload_weights``), with 1 and 2 vLLM rollout actors.

    python benchmarks/weight_sync.py --model bundled:gpt2-tiny
    python benchmarks/weight_sync.py --model smollm2 --gpu-memory-utilization 0.5 --step-seconds 26

Times are medians over ``--repeats`` pushes of the same (perturbed) float32 state dict after
one warm-up push per path (the group path's first push forms the group; its cost is printed
apart as ``open_s``).  ``--step-seconds``: the rest of a training step (rollout, scoring,
learning) measured by a run; the sync share is then sync / (rest + sync).
Prints one JSON line per (model, actors, path); ``bytes`` is what the path moves per push
(both send a tied lm_head under both of its names, as ``state_dict()`` lists it; docs/design.md,
"Weight sync").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="bundled:gpt2-tiny")
    ap.add_argument("--actors", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--bucket-mb", type=float, default=64.0)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.2)
    ap.add_argument("--step-seconds", type=float, default=None)
    args = ap.parse_args()

    import ray
    import torch

    from actors.driver import init_ray
    from actors.rollout import RolloutActor, RolloutGroup
    from fdpg_ray.rollout.weight_sync import pack_state_dict, unpack_state_dict
    from fdpg_ray.config import load_config
    from fdpg_ray.model.sources import load_model_and_tokenizer

    cfg = load_config("configs/amazing.yaml", {"model.path": args.model,
                                               "rollout.gpu_memory_utilization": args.gpu_memory_utilization})
    init_ray(cfg)
    model, _ = load_model_and_tokenizer(args.model, dtype="float32")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3 * torch.randn(p.shape, generator=g))
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    nbytes = sum(v.numel() * v.element_size() for v in sd.values())
    med = statistics.median

    def emit(row, moved):
        row = {"model": args.model, "bytes": moved, **row}
        if args.step_seconds:
            row["sync_share"] = round(row["total_s"] / (args.step_seconds + row["total_s"]), 4)
        row["s_per_GB"] = round(row["total_s"] / (moved / 1e9), 3)
        row["GB_per_s"] = round(moved / 1e9 / row["total_s"], 3)
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)

    for n in [int(x) for x in args.actors.split(",")]:
        actors = [RolloutActor.options(num_cpus=0.5).remote(cfg.to_dict(), i) for i in range(n)]
        ray.get([a.ready.remote() for a in actors])
        before: dict[str, list] = {k: [] for k in ("pack", "put", "rpc_get", "engine_call", "reload", "unpack", "total")}
        after: dict[str, list] = {k: [] for k in ("send", "receive", "receive_wait", "total")}
        group = RolloutGroup(actors, weight_sync="group", bucket_mb=args.bucket_mb)
        t0 = time.perf_counter()
        group.push_weights(sd)  # forms the group
        open_s = time.perf_counter() - t0
        for rep in range(args.repeats + 1):  # interleaved: before, after, before, after, ...
            # -- before: the object-store path, part by part (what CPUWeightSync.push does)
            t0 = time.perf_counter()
            buffers, meta = pack_state_dict(sd)
            t1 = time.perf_counter()
            ref = ray.put(buffers)
            t2 = time.perf_counter()
            actor_s = ray.get([a.load_packed.remote(ref, meta) for a in actors])
            t3 = time.perf_counter()
            timings = ray.get([a.weight_timings.remote() for a in actors])
            del ref
            t4 = time.perf_counter()
            unpack_state_dict(buffers, meta)
            unpack = time.perf_counter() - t4
            if rep:  # rep 0 is the warm-up
                before["pack"].append(t1 - t0)
                before["put"].append(t2 - t1)
                before["rpc_get"].append((t3 - t2) - max(actor_s))
                before["engine_call"].append(max(actor_s) - max(t["reload_worker_s"] for t in timings))
                before["reload"].append(max(t["reload_worker_s"] for t in timings) - unpack)
                before["unpack"].append(unpack)
                before["total"].append(t3 - t0)
            # -- after: the process-group path
            group.push_weights(sd)
            st = group.last_push_stats
            if rep:
                after["send"].append(st["send_seconds"])
                after["receive"].append(st["receive_seconds"])
                after["receive_wait"].append(st["receive_wait_seconds"])
                after["total"].append(group.last_push_seconds)
        emit({"actors": n, "path": "object_store (before)", **{f"{k}_s": med(v) for k, v in before.items()}}, nbytes)
        emit({"actors": n, "path": f"group {group.backend} (after)", "bucket_mb": args.bucket_mb, "open_s": open_s,
              **{f"{k}_s": med(v) for k, v in after.items()}}, group.last_push_stats["bytes"])
        group.close()
        for a in actors:
            ray.kill(a)
    ray.shutdown()


if __name__ == "__main__":
    main()
