"""How often is an importance-sampled estimate more than 2 or 3 of its own standard errors
from the exact value?  Coverage of KL(p || a) on base samples, the estimate behind
``kl_p_pi_base`` at step 0, on the exact task of configs/toy.yaml (RLHF-like target
P(x) = a(x) exp(r(x)/beta), r = number of "d" tokens, beta = 0.5: importance weights P/a
span e^0 .. e^8).

    PYTHONPATH=. python benchmarks/se_coverage.py [--reps 300] [--sizes 64 256 1024 4096 16384]

For each base-batch size n it draws ``reps`` independent batches of n sequences from a (the
enumerated distribution itself, no model run), computes the estimate and its standard error
with :func:`fdpg_ray.objective.estimators.mis_kl_p_pi` (the pooled estimator with no policy
samples) and z = (estimate - exact) / SE.  A calibrated estimate has |z| > 2 about 4.6% and
|z| > 3 about 0.3% of the time.  Prints a Markdown table (by n, then by Kish ESS) and the
command; docs/estimators.md holds the measured table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

ESS_BINS = [(0, 30), (30, 100), (100, 200), (200, 400), (400, 800), (800, 1600), (1600, 3200), (3200, 10 ** 9)]


def _row(label: str, z: np.ndarray, ess: np.ndarray) -> str:
    return (f"| {label} | {len(z)} | {np.median(ess):.0f} | {z.mean():+.2f} | {np.mean(np.abs(z) > 2):.1%} | "
            f"{np.mean(np.abs(z) > 3):.1%} |")


def main() -> None:
    from fdpg_ray.config import load_config
    from fdpg_ray.model.toy import ExactTask
    from fdpg_ray.objective.estimators import MIN_ESS, mis_kl_p_pi
    from fdpg_ray.target.scoring import TargetScorer

    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=300)
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 256, 1024, 4096, 16384])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    t0 = time.time()
    cfg = load_config("configs/toy.yaml")
    scorer = TargetScorer(cfg)
    task = ExactTask(scorer.base, scorer.log_P_of_texts)
    with torch.no_grad():
        log_a = task.log_pi(scorer.base).double()
    log_a = log_a - torch.logsumexp(log_a, 0)
    log_P = task.log_P.double()
    log_p = log_P - torch.logsumexp(log_P, 0)
    exact = float((log_p.exp() * (log_p - log_a)).sum())
    gen = torch.Generator().manual_seed(args.seed)
    all_z, all_ess = [], []
    print(f"KL(p || a) exact = {exact:.4f} nats; {args.reps} batches per size; flag rule: ESS < {MIN_ESS:.0f}\n")
    print("| base samples n | batches | median ESS | mean z | abs(z) > 2 | abs(z) > 3 |")
    print("|---|---|---|---|---|---|")
    for n in args.sizes:
        zs, es = [], []
        for _ in range(args.reps):
            idx = torch.multinomial(log_a.exp(), n, replacement=True, generator=gen)
            r = mis_kl_p_pi(log_P[idx], log_a[idx], log_a[idx], torch.zeros(n, dtype=torch.bool))
            zs.append((r["kl_p_pi"] - exact) / r["kl_p_pi_se"])
            es.append(r["kl_p_pi_ess"])
        z, e = np.array(zs), np.array(es)
        all_z.append(z)
        all_ess.append(e)
        print(_row(str(n), z, e))
    z, e = np.concatenate(all_z), np.concatenate(all_ess)
    print("\n| Kish ESS | batches | median ESS | mean z | abs(z) > 2 | abs(z) > 3 |")
    print("|---|---|---|---|---|---|")
    for lo, hi in ESS_BINS:
        s = (e >= lo) & (e < hi)
        if s.sum() >= 10:
            print(_row(f"[{lo}, {hi if hi < 10 ** 9 else '∞'})", z[s], e[s]))
    print(f"\n`PYTHONPATH=. python benchmarks/se_coverage.py --reps {args.reps} --sizes "
          f"{' '.join(map(str, args.sizes))}` ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
