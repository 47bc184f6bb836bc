"""Properties of every f-divergence: f(1) = 0, convexity, r = -f' by autograd, limits."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fdpg_ray.objective.divergences import get_divergence

NAMES = ["kl", "rkl", "tv", "js", "hellinger", "chi2", "rchi2", "jeffreys", "alpha:0.5", "alpha:-1", "alpha:2", "alpha:3.5"]
# Closed forms of SPEC §1 in t (float64), independent of the log-t implementation.
CLOSED_F = {
    "kl": lambda t: -math.log(t),
    "rkl": lambda t: t * math.log(t),
    "tv": lambda t: 0.5 * abs(t - 1),
    "js": lambda t: t * math.log(2 * t / (1 + t)) + math.log(2 / (1 + t)),
    "hellinger": lambda t: (math.sqrt(t) - 1) ** 2,
    "chi2": lambda t: (t - 1) ** 2,
    "rchi2": lambda t: (1 - t) ** 2 / t,
    "jeffreys": lambda t: (t - 1) * math.log(t),
}
CLOSED_R = {
    "kl": lambda t: 1 / t,
    "rkl": lambda t: -math.log(t) - 1,
    "tv": lambda t: -0.5 * (1 if t > 1 else -1 if t < 1 else 0),
    "js": lambda t: math.log((1 + t) / (2 * t)),
    "hellinger": lambda t: 1 / math.sqrt(t) - 1,
    "chi2": lambda t: 2 * (1 - t),
    "rchi2": lambda t: 1 / t ** 2 - 1,
    "jeffreys": lambda t: -math.log(t) - 1 + 1 / t,
}
# Pseudo-reward at p(x) = 0 (log t = +inf), SPEC §1 table.
AT_P_ZERO = {"kl": 0.0, "rkl": -math.inf, "tv": -0.5, "js": -math.log(2), "hellinger": -1.0, "chi2": -math.inf,
             "rchi2": -1.0, "jeffreys": -math.inf, "alpha:0.5": -1 / (1 - 0.5), "alpha:-1": -1 / (1 + 1), "alpha:2": -math.inf, "alpha:3.5": -math.inf}


def closed_alpha(a):
    return (lambda t: (t ** a - 1 - a * (t - 1)) / (a * (a - 1)), lambda t: (1 - t ** (a - 1)) / (a - 1))


@pytest.mark.parametrize("name", NAMES)
def test_f_of_one_is_zero_and_reward_matches_closed_form(name):
    d = get_divergence(name)
    assert d.f(torch.tensor(0.0)).item() == pytest.approx(0.0, abs=1e-12)
    if name.startswith("alpha:"):
        f, r = closed_alpha(float(name.split(":")[1]))
    else:
        f, r = CLOSED_F[name], CLOSED_R[name]
    for t in [0.01, 0.3, 0.9, 1.7, 5.0, 40.0]:
        u = torch.tensor(math.log(t), dtype=torch.float64)
        assert d.f(u).item() == pytest.approx(f(t), rel=1e-9, abs=1e-12)
        assert d.pseudo_reward(u).item() == pytest.approx(r(t), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_f_is_convex_in_t(name):
    d = get_divergence(name)
    t = torch.linspace(0.02, 8.0, 800, dtype=torch.float64)
    y = d.f(torch.log(t))
    second = y[2:] - 2 * y[1:-1] + y[:-2]
    assert (second >= -1e-12).all()


@pytest.mark.parametrize("name", [n for n in NAMES if n != "tv"])
def test_pseudo_reward_is_minus_f_prime_by_autograd(name):
    d = get_divergence(name)
    t = torch.tensor([0.05, 0.4, 0.95, 1.3, 3.0, 12.0], dtype=torch.float64, requires_grad=True)
    d.f(torch.log(t)).sum().backward()
    assert torch.allclose(-t.grad, d.pseudo_reward(torch.log(t.detach())), rtol=1e-8, atol=1e-10)


def test_tv_reward_is_minus_subgradient():
    d = get_divergence("tv")
    t = torch.tensor([0.5, 2.0], dtype=torch.float64, requires_grad=True)
    d.f(torch.log(t)).sum().backward()
    assert torch.allclose(-t.grad, d.pseudo_reward(torch.log(t.detach())))
    assert d.pseudo_reward(torch.tensor(0.0)).item() == 0.0


@pytest.mark.parametrize("name", NAMES)
def test_stable_on_wide_range_and_at_infinity(name):
    d = get_divergence(name)
    u = torch.linspace(-50, 50, 2001, dtype=torch.float64)
    for out in (d.f(u), d.pseudo_reward(u)):
        assert torch.isfinite(out).all(), name
    assert d.f(u.float()).dtype == torch.float64  # float32 input is upcast
    r_inf = d.pseudo_reward(torch.tensor(math.inf)).item()
    assert r_inf == pytest.approx(AT_P_ZERO[name]) if math.isfinite(AT_P_ZERO[name]) else r_inf == -math.inf
    for edge in (math.inf, -math.inf):
        for out in (d.f(torch.tensor(edge)), d.pseudo_reward(torch.tensor(edge))):
            assert not torch.isnan(out).any(), (name, edge)
    # -inf is a pseudo-reward only at p(x) = 0 for rkl, chi2 and alpha > 1 (never at pi(x) = 0)
    assert d.pseudo_reward(torch.tensor(-math.inf)).item() != -math.inf


@given(st.floats(min_value=-50, max_value=50, allow_nan=False), st.sampled_from(NAMES))
@settings(max_examples=300, deadline=None)
def test_hypothesis_no_nan_anywhere(u, name):
    d = get_divergence(name)
    x = torch.tensor(u, dtype=torch.float64)
    assert torch.isfinite(d.f(x)) and torch.isfinite(d.pseudo_reward(x))


def test_alpha_limits_recover_kl_and_rkl():
    """alpha -> 0 gives kl and alpha -> 1 gives rkl, up to f terms linear in t - 1 (zero mean under p):
    f_alpha(t) - f_kl(t) -> (t - 1) and f_alpha(t) - f_rkl(t) -> -(t - 1); rewards shift by constants."""
    u = torch.log(torch.tensor([0.1, 0.5, 1.0, 2.0, 7.0], dtype=torch.float64))
    t = torch.exp(u)
    kl, rkl = get_divergence("kl"), get_divergence("rkl")
    for eps in (1e-3, 1e-5):
        a0, a1 = get_divergence(f"alpha:{eps}"), get_divergence(f"alpha:{1 - eps}")
        assert torch.allclose(a0.f(u) - kl.f(u), t - 1, atol=50 * eps)
        assert torch.allclose(a0.pseudo_reward(u), kl.pseudo_reward(u) - 1, atol=50 * eps)
        assert torch.allclose(a1.f(u) - rkl.f(u), -(t - 1), atol=50 * eps)
        assert torch.allclose(a1.pseudo_reward(u), rkl.pseudo_reward(u) + 1, atol=50 * eps)
    # and the divergence values agree on a real pair of distributions (linear terms vanish)
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    pi = torch.tensor([0.25, 0.25, 0.4, 0.1], dtype=torch.float64)
    lt = torch.log(pi / p)

    def D(d):
        return (p * d.f(lt)).sum().item()

    assert D(get_divergence("alpha:1e-6")) == pytest.approx(D(kl), abs=1e-5)
    assert D(get_divergence("alpha:0.999999")) == pytest.approx(D(rkl), abs=1e-5)


def test_hellinger_is_alpha_half_up_to_scale():
    u = torch.linspace(-5, 5, 101, dtype=torch.float64)
    assert torch.allclose(get_divergence("alpha:0.5").f(u), 2 * get_divergence("hellinger").f(u), atol=1e-10)


def test_js_reports_js_itself():
    p = torch.tensor([0.5, 0.5, 0.0], dtype=torch.float64)
    pi = torch.tensor([0.0, 0.5, 0.5], dtype=torch.float64)
    m = (p + pi) / 2

    def kl(a, b):
        mask = a > 0
        return (a[mask] * torch.log(a[mask] / b[mask])).sum()

    js = 0.5 * kl(p, m) + 0.5 * kl(pi, m)
    d = get_divergence("js")
    # D_f(pi||p) = sum_{p>0} p f(pi/p) + pi(p=0) * lim f(t)/t  (= log 2 for js)
    mask = p > 0
    value = (p[mask] * d.f(torch.log(pi[mask] / p[mask]))).sum() + pi[~mask].sum() * math.log(2)
    assert (d.report_scale * value).item() == pytest.approx(js.item(), rel=1e-12)


@pytest.mark.parametrize("bad", ["foo", "alpha:0", "alpha:1", "alpha:", "alpha:x", "alpha:nan", 3])
def test_bad_names_raise_value_error_listing_valid_names(bad):
    with pytest.raises(ValueError) as e:
        get_divergence(bad)
    msg = str(e.value)
    assert "kl, rkl, tv, js" in msg and "\n" not in msg
