"""Leave-one-out vs the moving baseline at step 0 on the exact task (configs/toy.yaml).

    python benchmarks/baseline_variance_exact.py [M] [N]      # default 24 batches of 1024

The policy is the base model (step 0), Z exact.  For each divergence, M batches of N samples
of pi; on each batch the f-DPG gradient with the moving baseline (0 at step 0) and with the
leave-one-out baseline, on the same samples.  Prints the mean squared error to the exact
gradient of each, their ratio, the paired t statistic of the difference, and the bias check
||mean_LOO - exact||^2 / sum SE^2 (about 1 for an unbiased estimator).  docs/design.md
("Baseline") holds the table.
"""

import math
import sys
import time

import torch

from fdpg_ray.config import load_config
from fdpg_ray.objective.divergences import get_divergence
from fdpg_ray.objective.estimators import LeaveOneOutBaseline
from fdpg_ray.objective.loss import fdpg_loss
from fdpg_ray.model.sources import load_model_and_tokenizer
from fdpg_ray.target.scoring import TargetScorer
from fdpg_ray.model.toy import ExactTask

DIVERGENCES = ["kl", "rkl", "tv", "js", "hellinger", "chi2", "alpha:0.5", "alpha:2"]


def main(M: int = 24, N: int = 1024):
    scorer = TargetScorer(load_config("configs/toy.yaml"))
    policy, _ = load_model_and_tokenizer("toy")
    exact = ExactTask(scorer.base, scorer.log_P_of_texts)

    def flat_grad(loss):
        policy.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        return torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None]).double()

    print("divergence  mean_r  mse_moving  mse_loo  ratio  paired_t  bias_check  seconds")
    for name in DIVERGENCES:
        t0 = time.time()
        div = get_divergence(name)
        lp_all = exact.log_pi(policy)
        g_exact = flat_grad(exact.divergence(name, lp_all) / div.report_scale)
        gen = torch.Generator().manual_seed(0)
        e0, e1, G1, rs = [], [], [], []
        for _ in range(M):
            idx = torch.multinomial(lp_all.detach().double().exp(), N, replacement=True, generator=gen)
            r = fdpg_loss(lp_all[idx].detach().double(), exact.log_P[idx], exact.log_Z, div, clip_log_t=50.0).pseudo_reward
            rs.append(r)
            B = LeaveOneOutBaseline().value_for(None, N, rewards=r)
            g0 = flat_grad(fdpg_loss(lp_all[idx], exact.log_P[idx], exact.log_Z, div, clip_log_t=50.0).loss)
            g1 = flat_grad(fdpg_loss(lp_all[idx], exact.log_P[idx], exact.log_Z, div, clip_log_t=50.0, baseline=B).loss)
            e0.append(((g0 - g_exact) ** 2).sum().item())
            e1.append(((g1 - g_exact) ** 2).sum().item())
            G1.append(g1)
        G = torch.stack(G1)
        err2 = ((G.mean(0) - g_exact) ** 2).sum().item()
        exp2 = ((G.std(0) / math.sqrt(M)) ** 2).sum().item()
        d = torch.tensor(e1) - torch.tensor(e0)
        t = (d.mean() / (d.std() / math.sqrt(M))).item()
        print(f"{name:10s} {torch.cat(rs).mean():+.3f} {sum(e0) / M:10.4g} {sum(e1) / M:8.4g} {sum(e1) / sum(e0):6.3f} "
              f"{t:+8.2f} {err2 / exp2:10.2f} {time.time() - t0:8.1f}", flush=True)


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
