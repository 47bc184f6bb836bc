"""Rollout throughput: vLLM called directly, the fdpg-ray rollout actor (vLLM backend, through
Ray), and the transformers backend, on the same model, prompts and sampling settings,
measured side by side (interleaved repeats) in one run.

    python benchmarks/rollout.py                                   # bundled:gpt2-tiny
    python benchmarks/rollout.py --model smollm2 --n 32 --repeats 3

Every backend samples n completions of the BOS prompt with temperature 1, no top-k/top-p,
at most max_new_tokens tokens (stopping at EOS, as runs do; tokens/s counts the tokens
actually produced), and returns per-sequence log q.  vLLM direct = ``vllm.LLM.generate`` in this
process with the engine settings the actor uses and one CPU thread, as the actor gets one CPU.
Prints one JSON line per backend and the actor's overhead over direct vLLM (goal <= 10%).
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
    ap.add_argument("--n", type=int, default=128, help="samples per call")
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args()

    import ray
    import torch

    from actors.driver import init_ray
    from fdpg_ray.rollout.hf_sampler import HFSampler
    from actors.rollout import RolloutActor, RolloutGroup
    from fdpg_ray.rollout.vllm_sampler import VLLMSampler
    from fdpg_ray.config import load_config
    from fdpg_ray.objective.loss import bos_prompt_ids
    from fdpg_ray.model.sources import load_model_and_tokenizer, resolve_model_path

    path = resolve_model_path(args.model)
    _, tok = load_model_and_tokenizer(args.model)
    prompt = bos_prompt_ids(tok)
    tokens = args.n * args.max_new_tokens

    # The actor, exactly as a run builds it (1 CPU), through RolloutGroup.submit/collect.
    cfg = load_config("configs/amazing.yaml", {"model.path": args.model, "model.max_new_tokens": args.max_new_tokens,
                                               "rollout.cpus_per_actor": 1, "ray.num_cpus": 4})
    init_ray(cfg)
    actor = RolloutActor.options(num_cpus=1).remote(cfg.to_dict(), 0)
    ray.get(actor.ready.remote())
    group = RolloutGroup([actor])

    # vLLM direct, same engine arguments (VLLMSampler builds them), one thread.
    direct = VLLMSampler(path, seed=0, num_threads=1)
    llm, params_for = direct.llm, direct._sampling_params

    def run_direct(seed):
        from vllm.inputs import TokensPrompt

        params = params_for(n=args.n, temperature=1.0, max_tokens=args.max_new_tokens,
                            logprobs=0, seed=seed)
        out = llm.generate([TokensPrompt(prompt_token_ids=prompt)], [params], use_tqdm=False)
        return sum(len(c.token_ids) for c in out[0].outputs)

    def run_actor(seed):
        samples = group.collect(group.submit([prompt], args.n, seed))
        return sum(len(s.token_ids) for s in samples)

    hf = None if args.skip_hf else HFSampler(args.model, seed=0)
    torch.set_num_threads(1)

    def run_hf(seed):
        samples = hf.sample([prompt], args.n, args.max_new_tokens, seed=seed)
        return sum(len(s.token_ids) for s in samples)

    backends = {"vllm_direct": run_direct, "vllm_actor": run_actor}
    if hf is not None:
        backends["hf_inprocess"] = run_hf
    rates = {k: [] for k in backends}
    for name, fn in backends.items():  # warm-up
        fn(1)
    for r in range(args.repeats):
        for name, fn in backends.items():
            t0 = time.perf_counter()
            produced = fn(1000 + r)
            rates[name].append(produced / (time.perf_counter() - t0))
    result = {"model": args.model, "n": args.n, "max_new_tokens": args.max_new_tokens, "repeats": args.repeats}
    for name, xs in rates.items():
        result[f"{name}_tokens_per_s"] = round(statistics.median(xs), 1)
        print(json.dumps({"backend": name, "median_tokens_per_s": round(statistics.median(xs), 1),
                          "all": [round(x, 1) for x in xs]}))
    result["actor_overhead_vs_direct"] = round(result["vllm_direct_tokens_per_s"] / result["vllm_actor_tokens_per_s"] - 1, 4)
    if hf is not None:
        result["vllm_actor_over_hf"] = round(result["vllm_actor_tokens_per_s"] / result["hf_inprocess_tokens_per_s"], 2)
    print(json.dumps(result))
    print("rerun: python benchmarks/rollout.py " + " ".join(sys.argv[1:]))
    direct.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
