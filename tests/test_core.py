"""Unit tests of the pure core: loss, chunked log-probs, estimators, targets, config."""

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fdpg_ray.config import ConfigError, load_config
from fdpg_ray.objective.divergences import get_divergence
from fdpg_ray.objective.estimators import LogPartition, MovingBaseline, is_metrics
from fdpg_ray.objective.loss import collate, fdpg_loss, sequence_log_probs
from fdpg_ray.target.energy import Constraint, Target, TargetError

ALL = ["kl", "rkl", "tv", "js", "hellinger", "chi2", "alpha:0.5", "alpha:2"]


# ----------------------------------------------------------------------------- loss

def test_loss_is_minus_mean_of_weighted_advantage_times_log_pi():
    log_pi = torch.tensor([-1.0, -2.0, -3.0], requires_grad=True)
    log_P = torch.tensor([-1.5, -1.0, -4.0], dtype=torch.float64)
    log_q = torch.tensor([-1.2, -2.0, -2.5], dtype=torch.float64)
    div = get_divergence("kl")
    out = fdpg_loss(log_pi, log_P, 0.3, div, log_q=log_q, baseline=0.5, max_importance_weight=None)
    log_t = log_pi.detach().double() - log_P + 0.3
    r = torch.exp(-log_t)
    w = torch.exp(log_pi.detach().double() - log_q)
    expected = -(w * (r - 0.5) * log_pi.detach().double()).mean()
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    out.loss.backward()
    assert torch.allclose(log_pi.grad.double(), -(w * (r - 0.5)) / 3, rtol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_no_nan_or_inf_reaches_the_gradient_even_at_p_zero_and_huge_log_t(name):
    log_pi = torch.tensor([-1.0, -5.0, -2.0, -3.0, -1e4], requires_grad=True)
    log_P = torch.tensor([-math.inf, 1e4, -2.0, -1e4, -3.0], dtype=torch.float64)
    out = fdpg_loss(log_pi, log_P, 0.0, get_divergence(name), log_q=torch.zeros(5, dtype=torch.float64),
                    clip_log_t=20.0)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(log_pi.grad).all()
    assert torch.isfinite(out.pseudo_reward).all()
    assert out.log_t.abs().max() <= 20.0


_LOGS = st.one_of(st.floats(-1e4, 1e4), st.sampled_from([-math.inf, math.inf, -1e4, 1e4, 0.0]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(_LOGS, _LOGS, _LOGS, _LOGS, _LOGS), min_size=1, max_size=8),
       st.sampled_from(ALL), st.booleans())
def test_hypothesis_loss_and_gradient_finite_for_any_inputs(rows, name, hard_constraint):
    """log pi, log P, log q, log Z, baseline anywhere in [-1e4, 1e4] or infinite (log P = -inf:
    a hard constraint; log Z = -inf: a context with Z_hat = 0): no NaN/inf in loss or gradient."""
    cols = torch.tensor(rows, dtype=torch.float64).T
    log_pi = cols[0].clamp(-1e4, 0.0).float().requires_grad_()  # a log-probability is finite, <= 0
    log_P = cols[1].clone()
    if hard_constraint:  # b(x) = 0 for the first sample
        log_P[0] = -math.inf
    log_q = cols[2].clamp(-1e4, 0.0)
    baseline = cols[4].nan_to_num(0.0, 0.0, 0.0)
    out = fdpg_loss(log_pi, log_P, cols[3], get_divergence(name), log_q=log_q, baseline=baseline,
                    max_importance_weight=100.0)
    out.loss.backward()
    assert torch.isfinite(out.loss) and torch.isfinite(log_pi.grad).all()


def test_p_zero_policy_uses_the_clipped_limit():
    # kl: r -> e^-clip ~ 0;  tv: -1/2;  js: -log 2 (up to e^-clip);  rkl: -clip - 1
    lp = torch.tensor([-1.0])
    P0 = torch.tensor([-math.inf], dtype=torch.float64)
    assert fdpg_loss(lp, P0, 0.0, get_divergence("kl")).pseudo_reward.item() == pytest.approx(0, abs=1e-8)
    assert fdpg_loss(lp, P0, 0.0, get_divergence("tv")).pseudo_reward.item() == -0.5
    assert fdpg_loss(lp, P0, 0.0, get_divergence("js")).pseudo_reward.item() == pytest.approx(-math.log(2), abs=1e-8)
    assert fdpg_loss(lp, P0, 0.0, get_divergence("rkl"), clip_log_t=20).pseudo_reward.item() == pytest.approx(-21)


def test_importance_weight_cap():
    out = fdpg_loss(torch.tensor([0.0]), torch.tensor([0.0]), 0.0, get_divergence("tv"),
                    log_q=torch.tensor([-10.0]), max_importance_weight=5.0)
    assert out.importance_weight.item() == pytest.approx(5.0)


def _tiny_lm(vocab=50):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=32, n_embd=32, n_layer=1, n_head=2)).eval()


def test_chunked_sequence_log_probs_equal_the_plain_computation_values_and_gradients():
    lm = _tiny_lm()
    prompts = [[1, 2], [3], [4, 5, 6]]
    comps = [[7, 8, 9, 10], [11, 12], [13]]
    ids, attn, comp = collate(prompts, comps, pad_id=0)
    chunked = sequence_log_probs(lm, ids, attn, comp, chunk_size=2)
    chunked.sum().backward()
    g1 = [p.grad.clone() for p in lm.parameters()]
    lm.zero_grad()
    logits = lm(input_ids=ids, attention_mask=attn).logits[:, :-1]
    tok = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    plain = (tok * comp[:, 1:]).sum(1)
    plain.sum().backward()
    assert torch.allclose(chunked, plain, atol=1e-5)
    for a, b in zip(g1, (p.grad for p in lm.parameters())):
        assert torch.allclose(a, b, atol=1e-5)
    # right padding does not change a row's value
    alone = sequence_log_probs(lm, *collate([prompts[1]], [comps[1]], 0))
    assert alone.item() == pytest.approx(chunked[1].item(), abs=1e-5)


# ----------------------------------------------------------------------------- estimators

def test_log_partition_running_mean_per_context_and_zero_samples():
    z = LogPartition()
    z.update(torch.log(torch.tensor([1.0, 3.0])), torch.zeros(2), ["a", "b"])
    z.update(torch.tensor([math.log(5.0), -math.inf]), torch.zeros(2), ["a", "b"])
    assert math.exp(z.log_z("a")) == pytest.approx(3.0)
    assert math.exp(z.log_z("b")) == pytest.approx(1.5)  # a P = 0 sample counts in the mean
    state = z.state_dict()
    z2 = LogPartition()
    z2.load_state_dict(state)
    assert z2.log_z("a") == z.log_z("a")


def test_baseline_uses_previous_batches_only():
    b = MovingBaseline(momentum=0.5)
    assert b.value_for(None, 2).tolist() == [0.0, 0.0]
    b.update(torch.tensor([1.0, 3.0]), torch.ones(2))
    assert b.value_for(None, 1).item() == pytest.approx(2.0)
    b.update(torch.tensor([4.0, 4.0]), torch.ones(2))
    assert b.value_for(None, 1).item() == pytest.approx(3.0)
    # unseen context falls back to the global average
    assert b.value_for(["new"], 1).item() == pytest.approx(3.0)
    assert MovingBaseline(enabled=False).value_for(None, 3).tolist() == [0.0] * 3


def test_importance_sampled_metrics_match_exact_values_on_a_small_space():
    # x in {0..3}; sample every x once under q uniform => IS estimates are exact sums / 4
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    pi = torch.tensor([0.25, 0.25, 0.4, 0.1], dtype=torch.float64)
    a = torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64)
    Z = 7.0
    q = torch.full((4,), 0.25, dtype=torch.float64)
    m = is_metrics(torch.log(p * Z), math.log(Z), torch.log(pi), torch.log(q), torch.log(a), get_divergence("js"))
    mix = (p + pi) / 2
    assert m["kl_p_pi"] == pytest.approx((p * torch.log(p / pi)).sum().item())
    assert m["tv_p_pi"] == pytest.approx(0.5 * (p - pi).abs().sum().item())
    js = 0.5 * (p * torch.log(p / mix)).sum() + 0.5 * (pi * torch.log(pi / mix)).sum()
    assert m["js_p_pi"] == pytest.approx(js.item())
    assert m["divergence"] == pytest.approx(js.item())
    assert m["kl_pi_a"] == pytest.approx((pi * torch.log(pi / a)).sum().item())


def test_a_context_with_zero_z_hat_is_left_out_of_loss_metrics_and_baseline():
    # context "b" has had no sample with P > 0: p_b is undefined, so its samples must not
    # move the weights, the metrics or the baseline (and must never produce NaN).
    z = LogPartition()
    log_P = torch.tensor([math.log(2.0), math.log(4.0), -math.inf, -math.inf], dtype=torch.float64)
    log_q = torch.full((4,), math.log(0.5), dtype=torch.float64)
    ctx = ["a", "a", "b", "b"]
    z.update(log_P, log_q, ctx)
    log_Z = z.log_z_for(ctx, 4)
    assert torch.isinf(log_Z[2:]).all() and z.zero_fraction() == 0.5
    assert z.mean_log_z() == pytest.approx(z.log_z("a"))
    log_pi = torch.log(torch.tensor([0.3, 0.2, 0.4, 0.1], dtype=torch.float64)).requires_grad_()
    out = fdpg_loss(log_pi, log_P, log_Z, get_divergence("kl"), log_q=log_q)
    out.loss.backward()
    assert torch.isfinite(log_pi.grad).all() and (log_pi.grad[2:] == 0).all() and (log_pi.grad[:2] != 0).all()
    m = is_metrics(log_P, log_Z, log_pi.detach(), log_q, log_q, get_divergence("kl"))
    only_a = is_metrics(log_P[:2], log_Z[:2], log_pi.detach()[:2], log_q[:2], None, get_divergence("kl"))
    assert all(math.isfinite(v) for v in m.values())
    assert m["kl_p_pi"] == pytest.approx(only_a["kl_p_pi"])
    b = MovingBaseline(momentum=0.0)
    b.update(out.pseudo_reward, torch.where(torch.isfinite(log_Z), out.importance_weight, 0.0), ctx)
    assert "b" not in b.value and math.isfinite(b.value["*"])


# ----------------------------------------------------------------------------- targets

def test_target_log_score_composes_in_log_space():
    t = Target([Constraint("pointwise", "b"), Constraint("reward", "r", beta=0.5),
                Constraint("distributional", "phi", lam=2.0)])
    feats = {"b": np.array([1.0, 0.0, 0.5]), "r": np.array([1.0, 2.0, -1.0]), "phi": np.array([0.0, 1.0, 1.0])}
    out = t.log_score(torch.tensor([-1.0, -2.0, -3.0]), feats)
    assert out[0].item() == pytest.approx(-1.0 + 0 + 2.0 + 0)
    assert out[1].item() == -math.inf  # b = 0 -> p(x) = 0
    assert out[2].item() == pytest.approx(-3.0 + math.log(0.5) - 2.0 + 2.0)


def test_lambda_fit_reaches_the_moment_with_the_closed_form_value():
    # binary phi with base rate 0.25 under a; target moment 0.5 => lambda = log 3 exactly
    phi = np.array([1.0] * 250 + [0.0] * 750)
    log_a = torch.zeros(1000, dtype=torch.float64)
    t = Target([Constraint("distributional", "phi", moment=0.5)])
    achieved = t.fit_lambdas(log_a, log_a, {"phi": phi})
    assert t.constraints[0].lam == pytest.approx(math.log(3), abs=1e-4)
    assert achieved["phi"] == pytest.approx(0.5, abs=1e-4)


def test_lambda_fit_two_constraints_at_once():
    rng = np.random.default_rng(0)
    f1 = (rng.random(4000) < 0.3).astype(float)
    f2 = rng.random(4000)
    t = Target([Constraint("distributional", "f1", moment=0.6), Constraint("distributional", "f2", moment=0.4)])
    achieved = t.fit_lambdas(torch.zeros(4000), torch.zeros(4000), {"f1": f1, "f2": f2})
    assert achieved["f1"] == pytest.approx(0.6, abs=1e-3) and achieved["f2"] == pytest.approx(0.4, abs=1e-3)


@pytest.mark.parametrize("moment", [1.0, 0.0, 1.5])
def test_unreachable_moments_raise_one_line(moment):
    t = Target([Constraint("distributional", "phi", moment=moment)])
    with pytest.raises(TargetError) as e:
        t.fit_lambdas(torch.zeros(4), torch.zeros(4), {"phi": np.array([0.0, 1.0, 0.0, 1.0])})
    assert "moment" in str(e.value) and "\n" not in str(e.value)


def test_no_sample_with_positive_P_raises():
    t = Target([Constraint("pointwise", "b"), Constraint("distributional", "phi", moment=0.5)])
    with pytest.raises(TargetError, match="Z_hat = 0"):
        t.fit_lambdas(torch.zeros(3), torch.zeros(3), {"b": np.zeros(3), "phi": np.array([0.0, 1.0, 1.0])})


# ----------------------------------------------------------------------------- config

def test_configs_load_and_overrides_use_dotted_paths():
    cfg = load_config("configs/amazing.yaml", ["learner.lr=3e-5", "divergence=alpha:0.5", "rollout.overlap=true"])
    assert cfg.learner.lr == 3e-5 and cfg.divergence == "alpha:0.5" and cfg.rollout.overlap is True
    assert load_config("configs/amazing.yaml", {"run.steps": 7}).run.steps == 7


@pytest.mark.parametrize("override,field", [
    ("divergence=foo", "divergence"), ("divergence=alpha:1", "divergence"), ("learner.lr=0", "learner.lr"),
    ("learner.lr=-1", "learner.lr"), ("learner.batch_size=0", "learner.batch_size"),
    ("model.max_new_tokens=0", "model.max_new_tokens"), ("learner.nope=1", "learner.nope"),
    ("nosection.x=1", "nosection"), ("rollout.backend=tgi", "rollout.backend"),
    ("learner.batch_size=3", "learner.batch_size"), ("run.steps=abc", "run.steps"),
    ("target.constraints=[]", "target.constraints"),
])
def test_bad_config_values_give_one_line_errors_naming_the_field(override, field):
    with pytest.raises(ConfigError) as e:
        load_config("configs/amazing.yaml", [override])
    msg = str(e.value)
    assert field in msg and "\n" not in msg


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("configs/nope.yaml")


def test_set_reaches_into_constraint_lists():
    cfg = load_config("configs/sentiment.yaml", ["target.constraints.0.beta=0.1"])
    assert cfg.target.constraints[0]["beta"] == 0.1
    with pytest.raises(ConfigError, match=r"^target\.constraints\.5: not an element of this list: it has 1 element \(indices 0 to 0\)"):
        load_config("configs/sentiment.yaml", ["target.constraints.5.beta=0.1"])


def test_fit_samples_need_not_divide_by_the_prompts_of_a_step():
    """The base batch covers every prompt of the file, max(ceil(n / C), 8) samples each
    (Controller.base_plan), so target.fit_samples is not tied to prompts.per_step (a rule of
    an older layout that refused e.g. 100 with 8 prompts a step)."""
    cfg = load_config("configs/prompts.yaml", ["target.fit_samples=100"])
    assert cfg.target.fit_samples == 100 and cfg.prompts.per_step == 8
