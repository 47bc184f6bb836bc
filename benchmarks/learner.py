"""Learner throughput and MFU of the f-DPG update, measured side by side with the
matrix-multiply peak of the same device in the same run.

    python benchmarks/learner.py --model gpt2-small --device cuda --dtype bfloat16   # GPU
    python benchmarks/learner.py --model bundled:gpt2-tiny --device cpu --dtype float32

One step = chunked sequence log-probs with gradient + fdpg_loss + backward + AdamW, on a
batch of random token sequences (the update's cost does not depend on what the tokens say).
Achieved FLOP/s = 6 x parameters x tokens/s; MFU = achieved / measured matmul peak.
Prints one line of JSON per measurement.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fdpg_ray.objective.divergences import get_divergence
from fdpg_ray.objective.loss import SequenceLogProbs, fdpg_loss

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build_model(spec: str, device: str):
    from transformers import GPT2Config, GPT2LMHeadModel

    if spec == "gpt2-small":  # GPT-2 small's shape (124M), random weights: no download needed
        model = GPT2LMHeadModel(GPT2Config())
    else:
        from fdpg_ray.model.sources import load_model_and_tokenizer

        model, _ = load_model_and_tokenizer(spec)
    return model.to(device)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype, n: int = 4096, iters: int = 20, repeats: int = 5) -> float:
    """The device's measured matmul rate (FLOP/s): the best of ``repeats`` timings of ``iters``
    square products (best, not mean: a peak; one short timing on a shared CPU can read half of it)."""
    if device == "cpu":
        n, iters = 1024, 10
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            a @ b
        sync(device)
        best = max(best, 2 * n ** 3 * iters / (time.perf_counter() - t0))
    return best


def learner_throughput(model, device: str, dtype: torch.dtype, batch: int, seq: int, steps: int,
                       chunk: int = 128) -> dict:
    module = SequenceLogProbs(model, chunk).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    div = get_divergence("js")
    vocab = model.config.vocab_size
    prompt = seq // 4
    ids = torch.randint(0, vocab, (batch, seq), device=device)
    attn = torch.ones_like(ids)
    comp = torch.zeros_like(ids)
    comp[:, prompt:] = 1
    log_P = torch.randn(batch, dtype=torch.float64, device=device) - 30
    times = []
    for i in range(steps + 2):
        sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=dtype,
                            enabled=dtype != torch.float32):
            log_pi = module(ids, attn, comp)
        out = fdpg_loss(log_pi.float(), log_P, 0.0, div)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        sync(device)
        if i >= 2:  # warm-up excluded
            times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]
    params = sum(p.numel() for p in model.parameters())
    tokens = batch * seq
    return {"params": params, "tokens_per_step": tokens, "step_seconds": sec, "tokens_per_s": tokens / sec,
            "flops_per_s": 6 * params * tokens / sec}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="gpt2-small")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="bfloat16" if torch.cuda.is_available() else "float32", choices=DTYPES)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args()
    dtype = DTYPES[args.dtype]
    model = build_model(args.model, args.device)
    peak = matmul_peak(args.device, dtype)
    res = learner_throughput(model, args.device, dtype, args.batch, args.seq, args.steps)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(json.dumps({"bench": "learner", "device": name, "model": args.model, "dtype": args.dtype,
                      "batch": args.batch, "seq": args.seq, **res, "matmul_peak_flops": peak,
                      "mfu_vs_measured_peak": res["flops_per_s"] / peak,
                      "command": f"python benchmarks/learner.py --model {args.model} --device {args.device} "
                                 f"--dtype {args.dtype} --batch {args.batch} --seq {args.seq}"}))


if __name__ == "__main__":
    main()
