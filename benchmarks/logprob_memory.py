"""Peak memory of the sequence log-probability computation with gradient: fdpg-ray's chunked,
checkpointed projection against the plain full-vocabulary log-softmax, on SmolLM2-135M's
49,152-token vocabulary.  Each variant runs in its own fresh process and reports the rise
of its peak resident memory (VmHWM, reset after loading) above what it held after loading
the model (CPU), or the CUDA allocator's peak (GPU).  Two parts are measured:

  head   hidden states -> log pi of the sequence, forward and backward (what chunking changes)
  step   the whole forward and backward through the model (backbone activations included)

    python benchmarks/logprob_memory.py                 # batch 8, length 512, chunk 128
    python benchmarks/logprob_memory.py --batch 4 --seq 256

Goal: chunked <= 0.6 x plain.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    """Start the peak-RSS count (VmHWM) afresh, so that loading the model does not count."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def plain_sequence_log_probs(model, ids, attn, comp):
    logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()  # (B, L-1, V) at once
    tok = torch.gather(torch.log_softmax(logits, -1), -1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (tok * comp[:, 1:]).sum(1)


def head_only(model, hidden, ids, comp, chunk: int | None):
    from fdpg_ray.objective.loss import _chunk_token_logprobs
    from torch.utils.checkpoint import checkpoint

    head = model.get_output_embeddings()
    h, tgt = hidden[:, :-1], ids[:, 1:]
    if chunk is None:
        tok = _chunk_token_logprobs(h, head.weight, None, tgt)
    else:
        tok = torch.cat([checkpoint(_chunk_token_logprobs, h[:, s:s + chunk], head.weight, None, tgt[:, s:s + chunk],
                                    use_reentrant=False) for s in range(0, h.shape[1], chunk)], dim=1)
    return (tok * comp[:, 1:]).sum(1)


def child(variant: str, model_spec: str, batch: int, seq: int, chunk: int, device: str) -> None:
    from fdpg_ray.objective.loss import sequence_log_probs
    from fdpg_ray.model.sources import load_model_and_tokenizer

    torch.manual_seed(0)
    model, _ = load_model_and_tokenizer(model_spec)
    model.to(device).eval()
    vocab = model.get_output_embeddings().weight.shape[0]
    ids = torch.randint(0, vocab, (batch, seq), device=device)
    attn, comp = torch.ones_like(ids), torch.ones_like(ids)
    comp[:, : seq // 4] = 0
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_bytes()
        reset_peak_rss()
    if variant.endswith("head"):  # stand-in hidden states, made before the baseline is taken
        width = model.get_output_embeddings().weight.shape[1]
        hidden = torch.randn(batch, seq, width, device=device).requires_grad_()
        if device == "cuda":
            base = torch.cuda.memory_allocated()
        else:
            base = rss_bytes()
            reset_peak_rss()
    if variant == "chunked":
        lp = sequence_log_probs(model, ids, attn, comp, chunk_size=chunk)
    elif variant == "plain":
        lp = plain_sequence_log_probs(model, ids, attn, comp)
    else:
        lp = head_only(model, hidden, ids, comp, chunk if variant == "chunked-head" else None)
    lp.sum().backward()
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = peak_rss_bytes() - base
    print(json.dumps({"variant": variant, "vocab": vocab, "peak_bytes": peak, "value": float(lp.sum())}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", default=None)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.model, args.batch, args.seq, args.chunk, args.device)
        return
    res = {}
    for variant in ("plain-head", "chunked-head", "plain", "chunked"):
        out = subprocess.run([sys.executable, __file__, "--child", variant, "--model", args.model, "--batch",
                              str(args.batch), "--seq", str(args.seq), "--chunk", str(args.chunk), "--device",
                              args.device], capture_output=True, text=True, check=True, cwd=ROOT)
        res[variant] = json.loads(out.stdout.strip().splitlines()[-1])
        print(json.dumps(res[variant]))
    mib = {k: round(v["peak_bytes"] / 2**20, 1) for k, v in res.items()}
    same = abs(res["chunked"]["value"] - res["plain"]["value"]) <= 1e-3 * abs(res["plain"]["value"])
    print(json.dumps({"bench": "logprob_memory", "model": args.model, "vocab": res["plain"]["vocab"], "batch": args.batch,
                      "seq": args.seq, "chunk": args.chunk, "peak_MiB": mib,
                      "ratio_head": round(mib["chunked-head"] / mib["plain-head"], 3),
                      "ratio_whole_step": round(mib["chunked"] / mib["plain"], 3),
                      "same_values": same, "goal": "<= 0.6",
                      "command": f"python benchmarks/logprob_memory.py --model {args.model} --batch {args.batch} "
                                 f"--seq {args.seq} --chunk {args.chunk} --device {args.device}"}))


if __name__ == "__main__":
    main()
