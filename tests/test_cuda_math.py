"""The mathematics on the device named by FDPG_TEST_DEVICE (cpu by default; `cuda` in
benchmarks/gpu_check.sh): loss, chunked log-probs in bf16/fp32, exact toy gradient."""

import math
import os

import pytest
import torch

from fdpg_ray.objective.divergences import get_divergence
from fdpg_ray.objective.loss import collate, fdpg_loss, sequence_log_probs

DEVICE = os.environ.get("FDPG_TEST_DEVICE", "cpu")
if DEVICE.startswith("cuda") and not torch.cuda.is_available():
    raise RuntimeError("FDPG_TEST_DEVICE=cuda but CUDA is not available")


@pytest.mark.parametrize("name", ["kl", "rkl", "tv", "js", "hellinger", "chi2", "alpha:0.5", "alpha:2"])
def test_loss_on_device_matches_cpu(name):
    g = torch.Generator().manual_seed(0)
    log_pi = torch.randn(64, generator=g) * 3 - 20
    log_P = torch.randn(64, generator=g, dtype=torch.float64) * 3 - 20
    log_P[::7] = -math.inf
    log_q = log_pi.double() + torch.randn(64, generator=g, dtype=torch.float64) * 0.1
    div = get_divergence(name)
    ref = fdpg_loss(log_pi, log_P, 0.5, div, log_q=log_q, baseline=0.1)
    x = log_pi.to(DEVICE).requires_grad_()
    out = fdpg_loss(x, log_P.to(DEVICE), 0.5, div, log_q=log_q.to(DEVICE), baseline=0.1)
    out.loss.backward()
    assert torch.isfinite(x.grad).all()
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_chunked_log_probs_on_device(dtype):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    lm = GPT2LMHeadModel(GPT2Config(vocab_size=4096, n_positions=64, n_embd=64, n_layer=2, n_head=1)).to(DEVICE).eval()
    prompts = [[1, 2, 3]] * 4
    comps = [list(range(10, 10 + k)) for k in (5, 9, 20, 1)]
    batch = collate(prompts, comps, 0, DEVICE)
    with torch.autocast(device_type="cuda" if DEVICE.startswith("cuda") else "cpu", dtype=dtype,
                        enabled=dtype != torch.float32):
        chunked = sequence_log_probs(lm, *batch, chunk_size=4).float()
    full = sequence_log_probs(lm.float(), *batch, chunk_size=10_000).float()
    tol = 1e-4 if dtype == torch.float32 else 0.15
    assert torch.allclose(chunked, full, atol=tol * max(1, full.abs().max().item() / 10))


def test_exact_gradient_identity_on_device():
    """Uniform proposal over all 625 toy sequences: loss gradient == exact grad D_f."""
    from fdpg_ray.config import load_config
    from fdpg_ray.target.scoring import TargetScorer
    from fdpg_ray.model.toy import ExactTask

    cfg = load_config("configs/toy.yaml")
    scorer = TargetScorer(cfg)
    task = ExactTask(scorer.base, scorer.log_P_of_texts)
    policy = scorer.base.__class__(scorer.base.config).to(DEVICE).eval()  # no dropout
    policy.load_state_dict(scorer.base.state_dict())
    # (ExactTask collates its sequences on the device of the model it is given)
    log_p = task.log_p.to(DEVICE)
    div = get_divergence("js")
    lp = task.log_pi(policy)
    (div.f(lp.double() - log_p) * log_p.exp()).sum().backward()
    g_exact = torch.cat([p.grad.flatten() for p in policy.parameters()])
    policy.zero_grad()
    lp = task.log_pi(policy)
    log_q = torch.full_like(log_p, -math.log(len(log_p)))
    fdpg_loss(lp, task.log_P.to(DEVICE), task.log_Z, div, log_q=log_q, clip_log_t=50,
              max_importance_weight=None).loss.backward()
    g = torch.cat([p.grad.flatten() for p in policy.parameters()])
    assert torch.allclose(g, g_exact, rtol=1e-3, atol=1e-5 * g_exact.abs().max().item())
