"""Estimates +- SE against exact values on the exact tasks of every target kind
(the table of docs/estimators.md).

    PYTHONPATH=. python benchmarks/estimators_vs_exact.py [--steps 2] [--seeds 0]

For each config (configs/toy.yaml: RLHF-like, toy_pointwise, toy_gdc, toy_conditional) it runs
fdpg_ray.train.estimator_check.run_check: the real rollout (transformers backend), scorer and
controller in one process; every metric on the base model (step 0) and after `--steps` f-DPG
steps (moved), paired with the exact value.  z = (estimate - exact) / SE; '?' = flagged as
untrusted by the run (fdpg_ray.objective.estimators.untrusted).  kl_p_pi_base_only is the base samples
alone (no policy samples pooled), for comparison with kl_p_pi_base.
"""

from __future__ import annotations

import argparse
import math
import time

from fdpg_ray.train.estimator_check import run_check

CONFIGS = {"RLHF-like": "configs/toy.yaml", "pointwise": "configs/toy_pointwise.yaml",
           "distributional": "configs/toy_gdc.yaml", "conditional": "configs/toy_conditional.yaml"}


def fmt(v: float) -> str:
    return "+inf" if v == math.inf else "nan" if v != v else f"{v:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    print("| task | seed | policy | estimate | value ± SE | ESS | exact | z | within 3 SE |")
    print("|---|---|---|---|---|---|---|---|---|")
    misses = total = 0
    t0 = time.time()
    for kind, path in CONFIGS.items():
        for seed in args.seeds:
            result = run_check(path, {"run.seed": seed, "scorer.batch_size": 1024}, steps=args.steps)
            for policy, rows in result.items():
                for r in rows:
                    se = "" if r["se"] != r["se"] else f" ± {r['se']:.4f}"
                    z = "" if not math.isfinite(r["z"]) and r["value"] == r["exact"] else f"{r['z']:+.2f}"
                    ok = "yes" if r["within_3se"] else "**no**"
                    flag = " ?" if r["flagged"] else ""
                    print(f"| {kind} | {seed} | {policy} | `{r['estimate']}` | {fmt(r['value'])}{se}{flag} | "
                          f"{r['ess']:.0f} | {fmt(r['exact'])} | {z} | {ok} |")
                    total += 1
                    misses += not r["within_3se"]
    print(f"\n{total - misses} of {total} estimates within 3 SE; {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
