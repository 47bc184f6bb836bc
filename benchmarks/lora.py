"""LoRA against full fine-tuning at the same batch, side by side in one run: learner step
time, peak memory of the step, bytes synced to the rollout engine per step, and the learner's
fraction of the measured matmul peak (6·N·tokens/s ÷ peak, N = all parameters of the model).

    python benchmarks/lora.py --model smollm2 --batch 8 --seq 128          # CPU, this machine
    python benchmarks/lora.py --model bundled:gpt2-tiny --batch 8 --seq 64  # quick check

Each variant runs in its own fresh process (so one's allocations do not count in the other's
peak) and reports:
  step_seconds     median f-DPG update (chunked log pi with gradient + loss + backward + AdamW),
                   after 2 warm-up steps
  peak_step_mib    rise of peak RSS (VmHWM, reset after loading) above the RSS after loading (CPU),
                   or the CUDA allocator's peak (GPU)
  sync_bytes       bytes of what fdpg_ray.train.parallel.full_weights(policy, changed_only=True) yields,
                   i.e. what the rollout engine receives after each step
  mfu_6n           6 · N · tokens/s ÷ matmul peak (the usual "model FLOPs"; for LoRA the work
                   really done is about 4·N per token, since frozen weights get no weight
                   gradient: mfu_4n is that)
Prints one line of JSON per variant, then a comparison line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def one(args) -> dict:
    from fdpg_ray.config import LoraConfig
    from fdpg_ray.objective.divergences import get_divergence
    from fdpg_ray.model.lora import apply_lora
    from fdpg_ray.objective.loss import SequenceLogProbs, fdpg_loss
    from fdpg_ray.model.sources import load_model_and_tokenizer
    from fdpg_ray.train.parallel import full_weights
    from learner import matmul_peak

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    device = args.device
    model, _ = load_model_and_tokenizer(args.model, device=device)
    n_params = sum(p.numel() for p in model.parameters())
    if args.variant == "lora":
        model = apply_lora(model, LoraConfig(r=args.r, alpha=2 * args.r, target_modules=args.targets))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    module = SequenceLogProbs(model, 128).to(device).eval()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    div = get_divergence("js")
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), device=device)
    attn = torch.ones_like(ids)
    comp = torch.zeros_like(ids)
    comp[:, args.seq // 4:] = 1
    log_P = torch.randn(args.batch, dtype=torch.float64, device=device) - 30
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        base = _rss()
    times = []
    for i in range(args.steps + 2):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fdpg_loss(module(ids, attn, comp), log_P, 0.0, div)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() if cuda else _hwm()) - base
    t0 = time.perf_counter()
    pushed = list(full_weights(model, changed_only=True))
    gather_s = time.perf_counter() - t0
    sync_bytes = sum(t.numel() * t.element_size() for _, t in pushed)
    sec = sorted(times)[len(times) // 2]
    tokens = args.batch * args.seq
    peak_flops = matmul_peak(device, torch.float32)
    return {"bench": "lora", "variant": args.variant, "model": args.model, "device": device,
            "batch": args.batch, "seq": args.seq, "params": n_params, "trainable_params": trainable,
            "step_seconds": sec, "tokens_per_s": tokens / sec, "peak_step_mib": peak / 2 ** 20,
            "sync_tensors": len(pushed), "sync_bytes": sync_bytes, "merge_seconds": gather_s,
            "matmul_peak_flops": peak_flops, "mfu_6n": 6 * n_params * tokens / sec / peak_flops,
            "mfu_4n": 4 * n_params * tokens / sec / peak_flops}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--r", type=int, default=16)
    ap.add_argument("--targets", nargs="+", default=None,
                    help="LoRA target modules (default: q_proj v_proj for Llama-style, c_attn for GPT-2)")
    ap.add_argument("--threads", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    ap.add_argument("--variant", choices=["full", "lora"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.targets is None:
        args.targets = ["c_attn"] if "gpt2" in args.model else ["q_proj", "v_proj"]
    if args.variant:
        print(json.dumps(one(args)))
        return
    results = {}
    for variant in ("full", "lora"):
        cmd = [sys.executable, os.path.abspath(__file__), "--variant", variant, "--model", args.model, "--device",
               args.device, "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps),
               "--r", str(args.r), "--threads", str(args.threads), "--targets", *args.targets]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        line = [x for x in out.stdout.splitlines() if x.startswith("{")][-1]
        results[variant] = json.loads(line)
        print(line, flush=True)
    f, lo = results["full"], results["lora"]
    print(json.dumps({"bench": "lora_vs_full", "model": args.model, "batch": args.batch, "seq": args.seq,
                      "r": args.r, "targets": args.targets,
                      "step_time_ratio_lora_over_full": lo["step_seconds"] / f["step_seconds"],
                      "peak_memory_ratio_lora_over_full": lo["peak_step_mib"] / f["peak_step_mib"],
                      "sync_bytes_ratio_lora_over_full": lo["sync_bytes"] / f["sync_bytes"],
                      "mfu_6n_full": f["mfu_6n"], "mfu_6n_lora": lo["mfu_6n"], "mfu_4n_lora": lo["mfu_4n"],
                      "command": f"python benchmarks/lora.py --model {args.model} --batch {args.batch} "
                                 f"--seq {args.seq} --r {args.r}"}))


if __name__ == "__main__":
    main()
