"""Exact verification on the enumerable toy task (625 sequences, exact p, Z, D_f).

1. The Monte-Carlo f-DPG gradient (fdpg_loss on samples of pi) agrees with the exact
   gradient of D_f(pi || p) (autograd through the exact sum) within statistical error.
2. Training with each divergence, through the real rollout/scoring/learning code, lowers
   its exact D_f by at least 90% (tests/test_exact_training.py).
3. Z_hat converges to the exact Z.
"""

import math

import pytest
import torch

from fdpg_ray.config import load_config
from fdpg_ray.objective.divergences import get_divergence
from fdpg_ray.objective.estimators import LogPartition
from fdpg_ray.objective.loss import fdpg_loss
from fdpg_ray.model.sources import load_model_and_tokenizer
from fdpg_ray.target.scoring import TargetScorer
from fdpg_ray.model.toy import ExactTask

DIVERGENCES = ["kl", "rkl", "tv", "js", "hellinger", "chi2", "rchi2", "jeffreys", "alpha:0.5", "alpha:2",
               "tests.user_divergences:js"]  # a user f (pseudo-reward by autograd)


@pytest.fixture(scope="module")
def task():
    cfg = load_config("configs/toy.yaml")
    scorer = TargetScorer(cfg)
    # The policy starts where training starts: at the base model a (a != p, so every D_f
    # and every gradient is far from zero).  Moving it far away makes chi2's pseudo-reward
    # heavy-tailed (E_pi[t^2] ~ 1e7 at 0.1 noise), and no finite sample check is reliable.
    policy, _ = load_model_and_tokenizer("toy")
    return ExactTask(scorer.base, scorer.log_P_of_texts), policy


def flat_grad(model, loss, retain_graph=False):
    model.zero_grad(set_to_none=True)
    loss.backward(retain_graph=retain_graph)
    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]).double()


@pytest.mark.parametrize("name", DIVERGENCES)
def test_monte_carlo_gradient_matches_exact_gradient(task, name):
    exact, policy = task
    div = get_divergence(name)
    g_exact = flat_grad(policy, exact.divergence(name, exact.log_pi(policy)) / div.report_scale)

    # M independent batches of N samples of pi; exact Z; baseline 0 (unbiased estimator).
    gen = torch.Generator().manual_seed(0)
    M, N = 24, 4096
    grads = []
    log_pi_all = exact.log_pi(policy)  # one forward; each batch indexes into it
    for _ in range(M):
        idx = torch.multinomial(log_pi_all.detach().double().exp(), N, replacement=True, generator=gen)
        out = fdpg_loss(log_pi_all[idx], exact.log_P[idx], exact.log_Z, div, clip_log_t=50.0)
        # loss = -mean r log pi: its gradient estimates +grad D_f
        grads.append(flat_grad(policy, out.loss, retain_graph=True))
    G = torch.stack(grads)
    g_mc, se = G.mean(0), G.std(0) / math.sqrt(M)
    err2, expected_err2 = ((g_mc - g_exact) ** 2).sum().item(), (se ** 2).sum().item()
    cos = torch.nn.functional.cosine_similarity(g_mc, g_exact, dim=0).item()
    # Unbiased => E||mean - exact||^2 = sum(SE^2).  Allow 2x (the statistical tolerance);
    # test_a_biased_estimator_is_rejected shows a wrong log Z fails this bound.
    assert err2 <= 2.0 * expected_err2, (name, err2, expected_err2)
    assert cos > 0.95, (name, cos)  # and the direction is right (a sign error gives cos = -1)


@pytest.mark.parametrize("name", DIVERGENCES)
def test_loss_gradient_equals_exact_gradient_under_uniform_proposal(task, name):
    """With every sequence listed once and q uniform, w = pi/q makes the f-DPG loss an exact
    expectation over pi: its gradient must equal grad D_f to float precision (Theorem 1)."""
    exact, policy = task
    div = get_divergence(name)
    g_exact = flat_grad(policy, exact.divergence(name, exact.log_pi(policy)) / div.report_scale)
    log_pi = exact.log_pi(policy)
    log_q = torch.full_like(exact.log_P, -math.log(len(exact.log_P)))
    out = fdpg_loss(log_pi, exact.log_P, exact.log_Z, div, log_q=log_q, clip_log_t=50.0,
                    max_importance_weight=None)
    g = flat_grad(policy, out.loss)
    assert torch.allclose(g, g_exact, rtol=1e-4, atol=1e-6 * g_exact.abs().max().item())


def test_a_biased_estimator_is_rejected(task):
    """The tolerance above is tight enough to catch a wrong Z (log Z off by 0.5)."""
    exact, policy = task
    div = get_divergence("js")
    g_exact = flat_grad(policy, exact.divergence("js", exact.log_pi(policy)) / div.report_scale)
    gen = torch.Generator().manual_seed(0)
    grads = []
    log_pi_all = exact.log_pi(policy)
    for _ in range(24):
        idx = torch.multinomial(log_pi_all.detach().double().exp(), 4096, replacement=True, generator=gen)
        out = fdpg_loss(log_pi_all[idx], exact.log_P[idx], exact.log_Z + 0.5, div, clip_log_t=50.0)
        grads.append(flat_grad(policy, out.loss, retain_graph=True))
    G = torch.stack(grads)
    err2 = ((G.mean(0) - g_exact) ** 2).sum().item()
    expected = ((G.std(0) / math.sqrt(24)) ** 2).sum().item()
    assert err2 > 2.0 * expected


def test_z_hat_converges_to_exact_z(task):
    exact, _ = task
    gen = torch.Generator().manual_seed(0)
    q = exact.log_a  # proposal: the base model
    est = LogPartition()
    ratio = (exact.log_P - q).exp()  # P/q, whose mean under q is Z
    rel_sd = ((q.exp() * (ratio - ratio @ q.exp()) ** 2).sum().sqrt() / math.exp(exact.log_Z)).item()
    n, errors = 0, []
    for _ in range(40):
        idx = torch.multinomial(q.exp(), 2000, replacement=True, generator=gen)
        est.update(exact.log_P[idx], q[idx])
        n += 2000
        errors.append(abs(est.log_z() - exact.log_Z))
    # |log Z_hat - log Z| ~ relative error of a mean of n iid terms: within 4 standard errors
    assert errors[-1] < 4 * rel_sd / math.sqrt(n), (errors[-1], rel_sd / math.sqrt(n))
    assert errors[-1] < 4 * rel_sd / math.sqrt(2000 * 4)  # and it shrank (vs. the 4th batch's SE)


def test_exact_quantities_are_consistent(task):
    exact, policy = task
    assert exact.log_a.exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    assert exact.log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    lp = exact.log_pi(policy).detach().double()
    assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    # exact KL(p||pi) from the divergence object equals the textbook sum
    kl = (exact.log_p.exp() * (exact.log_p - lp)).sum().item()
    assert exact.divergence("kl", lp).item() == pytest.approx(kl, rel=1e-9)
