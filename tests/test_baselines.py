"""The self-normalised importance-weighted baseline (``loss.baseline: self_normalized``, after
BRAIn, Pandey et al. ICML 2024): values against hand computations (per context, off-policy
weights, fallbacks, extreme log weights), its config option, and exact-task training with it
through the controller, off-policy (q = a), where it differs from leave-one-out.
Measurements: docs/baselines.md."""

import math

import pytest
import torch

from fdpg_ray.config import ConfigError, load_config
from fdpg_ray.objective.estimators import (LeaveOneOutBaseline, SelfNormalizedBaseline, leave_one_out_means, make_baseline,
                                 self_normalized_loo_means)


def _t(x):
    return torch.tensor(x, dtype=torch.float64)


def test_self_normalized_means_by_hand_per_context_with_weights_and_fallbacks():
    r = _t([1.0, 3.0, 5.0, 10.0, 7.0, 100.0])
    w = _t([1.0, 2.0, 4.0, 1.0, 3.0, 1.0])
    ctx = ["a", "a", "a", "b", "c", "c"]
    include = torch.tensor([True, True, True, True, True, False])  # sample 5: e.g. Z_hat_c = 0
    B = self_normalized_loo_means(r, w.log(), include, ctx)
    # "a": weighted mean of the other two of the context
    assert B[0].item() == pytest.approx((2 * 3 + 4 * 5) / (2 + 4))
    assert B[1].item() == pytest.approx((1 * 1 + 4 * 5) / (1 + 4))
    assert B[2].item() == pytest.approx((1 * 1 + 2 * 3) / (1 + 2))
    # "b" has a single sample: the weighted mean of every other included sample of the batch
    assert B[3].item() == pytest.approx((1 * 1 + 2 * 3 + 4 * 5 + 3 * 7) / (1 + 2 + 4 + 3))
    # "c": sample 4's only companion is excluded -> batch fallback (0, 1, 2, 3)
    assert B[4].item() == pytest.approx((1 * 1 + 2 * 3 + 4 * 5 + 1 * 10) / (1 + 2 + 4 + 1))
    # the excluded sample still gets a finite value (the loss zeroes its advantage)
    assert B[5].item() == pytest.approx(7.0)
    # the class: same numbers; w = 1 (no log weights) is exactly leave-one-out
    base = SelfNormalizedBaseline()
    assert base.value_for(ctx, 6, rewards=r, include=include, log_weights=w.log()).tolist() == B.tolist()
    loo = leave_one_out_means(r, include, ctx)
    assert torch.equal(base.value_for(ctx, 6, rewards=r, include=include), loo)
    assert torch.equal(base.value_for(ctx, 6, rewards=r, include=include, log_weights=torch.zeros(6)), loo)
    # a batch of one: nothing else -> 0; wrong shapes and missing rewards are errors
    assert base.value_for(None, 1, rewards=r[:1], log_weights=_t([3.0])).tolist() == [0.0]
    with pytest.raises(ValueError, match="rewards"):
        base.value_for(None, 3)
    with pytest.raises(ValueError, match="shape"):
        base.value_for(None, 3, rewards=r[:3], log_weights=torch.zeros(2))


def test_self_normalized_baseline_ignores_its_own_sample_and_survives_extreme_weights():
    gen = torch.Generator().manual_seed(0)
    n = 30
    r = torch.randn(n, generator=gen, dtype=torch.float64)
    lw = 3 * torch.randn(n, generator=gen, dtype=torch.float64)
    ctx = [str(i % 3) for i in range(n)]
    base = SelfNormalizedBaseline()
    B = base.value_for(ctx, n, rewards=r, log_weights=lw)
    for i in (0, 7, 26):
        r2, lw2 = r.clone(), lw.clone()
        r2[i], lw2[i] = 1e6, 50.0
        B2 = base.value_for(ctx, n, rewards=r2, log_weights=lw2)
        assert B2[i].item() == pytest.approx(B[i].item(), abs=1e-12)  # B_i ignores (r_i, w_i) ...
        assert B2[i + 3].item() == pytest.approx(1e6, rel=1e-6)  # ... others of its context see them
    # log weights of +-700 (w = e^700 overflows a float64 once summed): no inf, no NaN
    lw3 = _t([700.0, 0.0, -700.0, 1.0])
    r3 = _t([1.0, 2.0, 3.0, 4.0])
    B3 = base.value_for(None, 4, rewards=r3, log_weights=lw3)
    e = math.e
    assert B3.tolist() == pytest.approx([(2 + 4 * e) / (1 + e), 1.0, 1.0, 1.0])
    # weight 0 (log w = -inf), infinite or excluded rewards never reach another sample's B
    r4, lw4 = r.clone(), lw.clone()
    r4[5], lw4[8] = -math.inf, -math.inf
    r4[8] = 1e9
    B4 = base.value_for(ctx, n, rewards=r4, log_weights=lw4)
    assert torch.isfinite(B4).all() and B4.abs().max() < 10


def test_self_normalized_baseline_estimates_the_policy_mean_from_proposal_samples():
    """Off-policy: samples of q, weights pi/q -> B_i is the self-normalised estimate of
    E_pi[r] (here 4.5), where the unweighted leave-one-out mean estimates E_q[r] (2.5)."""
    gen = torch.Generator().manual_seed(1)
    q = _t([0.25, 0.25, 0.25, 0.25])
    pi = _t([0.05, 0.05, 0.1, 0.8])
    r_of = _t([1.0, 2.0, 3.0, 5.0])
    idx = torch.multinomial(q, 4000, replacement=True, generator=gen)
    lw = (pi.log() - q.log())[idx]
    B = SelfNormalizedBaseline().value_for(None, len(idx), rewards=r_of[idx], log_weights=lw)
    assert B.mean().item() == pytest.approx((pi * r_of).sum().item(), abs=0.1)  # SE ~0.015
    assert LeaveOneOutBaseline().value_for(None, len(idx), rewards=r_of[idx]).mean().item() == \
        pytest.approx((q * r_of).sum().item(), abs=0.15)  # SE ~0.03


def test_self_normalized_is_a_config_option_and_round_trips_its_state():
    cfg = load_config("configs/toy.yaml", {"loss.baseline": "self_normalized"})  # refused before
    assert cfg.loss.baseline == "self_normalized"
    assert load_config("configs/toy.yaml", {"loss.baseline": " Self_Normalized "}).loss.baseline == "self_normalized"
    b = make_baseline(cfg.loss.baseline)
    assert type(b) is SelfNormalizedBaseline and b.needs_policy_log_probs
    assert not make_baseline("leave_one_out").needs_policy_log_probs
    with pytest.raises(ConfigError) as e:
        load_config("configs/toy.yaml", ["loss.baseline=brain"])
    msg = str(e.value)
    assert msg.startswith("loss.baseline:") and "\n" not in msg
    assert all(k in msg for k in ("moving", "leave_one_out", "self_normalized", "none"))
    # state: only the logged batch mean sum w r / sum w; it survives a round trip
    b.update(_t([1.0, 3.0]), _t([1.0, 3.0]))
    assert b.value["*"] == pytest.approx(2.5)
    c = make_baseline("self_normalized")
    c.load_state_dict(b.state_dict())
    assert c.value == b.value


@pytest.mark.parametrize("proposal", ["base"])
def test_self_normalized_training_off_policy_lowers_exact_kl(monkeypatch, proposal):
    """Exact task, forward KL, samples from the frozen base model (q = a, DPG's fixed
    proposal): the controller hands the baseline log w = log pi_theta - log q from a forward
    pass without gradient (0 at step 0, where pi = a; not 0 once pi has moved), and the exact
    KL(p || pi) falls by more than half in 30 steps."""
    from fdpg_ray.train.toy_table import train_toy

    seen = []
    original = SelfNormalizedBaseline.value_for

    def spy(self, contexts, n, rewards=None, include=None, log_weights=None):
        seen.append(log_weights.clone())
        return original(self, contexts, n, rewards=rewards, include=include, log_weights=log_weights)

    monkeypatch.setattr(SelfNormalizedBaseline, "value_for", spy)
    row = train_toy("kl", steps=30, overrides={"loss.baseline": "self_normalized", "rollout.proposal": proposal})
    assert len(seen) == 31
    assert seen[0].abs().max().item() < 1e-4  # step 0: pi_theta = a = q
    assert seen[-1].abs().max().item() > 0.1  # later: the weights pi_theta / q of the moved policy
    assert row["end"] < 0.5 * row["start"], row
