"""Step-0 pseudo-rewards and gradient spread with the moving baseline (0 at step 0) and the
leave-one-out baseline, on a real config, in one process (the controller's own code path).

    python benchmarks/first_steps.py configs/gender.yaml --batches 8 --divergences kl rkl js tv

For each divergence: start the controller (base batch, lambda fit, initial Z_hat), draw
``--batches`` independent step-0 batches of ``learner.batch_size`` from the initial policy,
and on each batch compute the f-DPG gradient (before clipping) with both baselines, on the
same samples.  Prints the mean pseudo-reward (with its standard error over all samples),
the mean gradient norm, and the spread sqrt(mean_b ||g_b - mean g||^2) of each estimator,
plus its ratio to the norm of the mean gradient.  Z_hat is held at its start-up value.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch

from fdpg_ray.config import load_config
from fdpg_ray.objective.divergences import get_divergence
from fdpg_ray.objective.estimators import LeaveOneOutBaseline
from fdpg_ray.train.local import build_local
from fdpg_ray.objective.loss import fdpg_loss
from fdpg_ray.seeding import STEP, derive_seed


def flat_grad(ctl) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in ctl.model.parameters() if p.grad is not None]).double()


def measure(cfg_path: str, divergences: list[str], batches: int, overrides: list[str]) -> list[dict]:
    """One controller (base batch, lambda fit, Z_hat do not depend on the divergence); every
    divergence is measured on the same step-0 batches."""
    cfg = load_config(cfg_path, [*overrides, "rollout.backend=hf", "learner.num_workers=1", "run.progress=false"])
    ctl, _ = build_local(cfg)
    ctl.start()
    divs = [get_divergence(d) for d in divergences]
    rewards = {d.name: [] for d in divs}
    grads = {d.name: {"moving": [], "leave_one_out": []} for d in divs}
    t0 = time.time()
    for b in range(batches):
        # independent batches: seeds of steps the run never takes
        batch = ctl._collect(ctl._submit(cfg.learner.batch_size, seed=derive_seed(cfg.run.seed, STEP, 10_000 + b)))
        batch.set_scores(ctl.scorer.score(batch))
        contexts = batch.contexts if ctl.prompts.conditional else None
        n = len(batch)
        log_Z = ctl.log_partition.log_z_for(contexts, n)
        for div in divs:
            r_q = fdpg_loss(batch.log_q, batch.log_P, log_Z, div, clip_log_t=cfg.loss.clip_log_t).pseudo_reward
            rewards[div.name].append(r_q)
            B_loo = LeaveOneOutBaseline().value_for(contexts, n, rewards=r_q, include=torch.isfinite(log_Z))
            for key, B in (("moving", torch.zeros(n, dtype=torch.float64)), ("leave_one_out", B_loo)):
                ctl.model.zero_grad(set_to_none=True)
                for s in range(0, n, cfg.learner.micro_batch_size):
                    e = min(s + cfg.learner.micro_batch_size, n)
                    lp = ctl.log_pi(batch, slice(s, e), grad=True)
                    out = fdpg_loss(lp, batch.log_P[s:e], log_Z[s:e], div, log_q=batch.log_q[s:e],
                                    baseline=B[s:e], clip_log_t=cfg.loss.clip_log_t,
                                    max_importance_weight=cfg.loss.max_importance_weight, normalizer=n)
                    out.loss.backward()
                grads[div.name][key].append(flat_grad(ctl))
    results = []
    for div in divs:
        r = torch.cat(rewards[div.name])
        res = {"config": cfg_path, "divergence": div.name, "batches": batches, "batch_size": cfg.learner.batch_size,
               "log_z_hat": ctl.log_partition.mean_log_z(),
               "pseudo_reward_mean": r.mean().item(), "pseudo_reward_se": (r.std() / math.sqrt(len(r))).item(),
               "pseudo_reward_sd": r.std().item(), "seconds_all": time.time() - t0}
        for key, gs in grads[div.name].items():
            G = torch.stack(gs)
            mean = G.mean(0)
            spread = ((G - mean) ** 2).sum(1).mean().sqrt().item()
            res[key] = {"grad_norm_mean": G.norm(dim=1).mean().item(), "mean_grad_norm": mean.norm().item(),
                        "spread": spread, "spread_over_mean_norm": spread / mean.norm().item()}
        res["spread_ratio_loo_over_moving"] = res["leave_one_out"]["spread"] / res["moving"]["spread"]
        results.append(res)
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("config")
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--divergences", nargs="+", default=["kl", "rkl"])
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    args = ap.parse_args()
    for res in measure(args.config, args.divergences, args.batches, args.overrides):
        print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
