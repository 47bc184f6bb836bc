"""`divergence: module.path:callable`: a user's f in log t, checked at load; and the two
new built-ins rchi2 and jeffreys against their textbook definitions."""

import math

import pytest
import torch

from fdpg_ray.config import ConfigError, load_config
from fdpg_ray.objective.divergences import UserDivergence, get_divergence

U = torch.linspace(-20, 20, 401, dtype=torch.float64)


def test_user_js_by_autograd_gives_the_builtin_pseudo_rewards():
    user, builtin = get_divergence("tests.user_divergences:js"), get_divergence("js")
    assert isinstance(user, UserDivergence) and user.reward_fn is None  # autograd path
    assert torch.allclose(user.f(U), builtin.f(U), rtol=1e-12, atol=1e-12)
    assert torch.allclose(user.pseudo_reward(U), builtin.pseudo_reward(U), rtol=1e-9, atol=1e-12)
    assert user.report_scale == 0.5 and user.f_star_zero == pytest.approx(math.log(2))


def test_user_rchi2_by_autograd_matches_builtin_and_its_limit_is_found_numerically():
    user, builtin = get_divergence("tests.user_divergences:rchi2"), get_divergence("rchi2")
    u = torch.linspace(-15, 15, 301, dtype=torch.float64)
    assert torch.allclose(user.pseudo_reward(u), builtin.pseudo_reward(u), rtol=1e-9, atol=1e-9)
    assert user.f_star_zero == pytest.approx(1.0, rel=1e-6)  # no attribute: read off at log t = 50


def test_user_pseudo_reward_attribute_is_used():
    d = get_divergence("tests.user_divergences:kl_with_reward")
    assert d.reward_fn is not None
    assert torch.allclose(d.pseudo_reward(U), get_divergence("kl").pseudo_reward(U))
    assert d.f_star_zero == pytest.approx(0.0, abs=1e-12)  # -log t / t -> 0


def test_user_divergence_survives_infinite_log_t():
    d = get_divergence("tests.user_divergences:js")
    for edge in (math.inf, -math.inf):
        x = torch.tensor([edge], dtype=torch.float64)
        assert torch.isfinite(d.f(x)).all() and torch.isfinite(d.pseudo_reward(x)).all()
    # +inf stands for p = 0: the value at the clamp |log t| = 50 is the limit -log 2
    assert d.pseudo_reward(torch.tensor([math.inf])).item() == pytest.approx(-math.log(2), abs=1e-12)


@pytest.mark.parametrize("spec, words", [
    ("tests.user_divergences:shifted_kl", ["f(1) = 1", "not 0"]),
    ("tests.user_divergences:concave", ["not convex"]),
    ("tests.no_such_module:f", ["cannot import module 'tests.no_such_module'", "PYTHONPATH"]),
    ("tests.user_divergences:missing", ["no callable 'missing'"]),
    ("tests.user_divergences:not_callable", ["no callable 'not_callable'"]),
    ("tests.user_divergences:", ["module.path:callable"]),
])
def test_loader_rejects_bad_f_with_one_line_naming_divergence(spec, words):
    with pytest.raises(ValueError) as e:
        get_divergence(spec)
    msg = str(e.value)
    assert msg.startswith("divergence: ") and "\n" not in msg
    for w in words:
        assert w in msg, msg
    # and config validation turns it into a ConfigError (exit status 2 from the CLI)
    with pytest.raises(ConfigError) as e:
        load_config("configs/toy.yaml", {"divergence": spec})
    assert str(e.value).startswith("divergence: ")


def test_cli_rejects_bad_user_f_with_exit_status_2(capsys):
    from fdpg_ray.cli import main

    assert main(["train", "configs/toy.yaml", "--local", "--set", "divergence=tests.user_divergences:concave"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: divergence: ") and "not convex" in err[0]


def test_rchi2_and_jeffreys_are_their_textbook_divergences():
    p = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    pi = torch.tensor([0.25, 0.25, 0.4, 0.1], dtype=torch.float64)
    lt = torch.log(pi / p)

    def D(name):
        d = get_divergence(name)
        return d.report_scale * (p * d.f(lt)).sum().item()

    neyman = ((p - pi) ** 2 / pi).sum().item()            # chi^2(p || pi), Neyman
    kl = (p * torch.log(p / pi)).sum().item()
    rkl = (pi * torch.log(pi / p)).sum().item()
    assert D("rchi2") == pytest.approx(neyman, rel=1e-12)
    assert D("jeffreys") == pytest.approx(kl + rkl, rel=1e-12)
    assert D("jeffreys") == pytest.approx(D("kl") + D("rkl"), rel=1e-12)
    # the user's f reproduces the built-in divergence value too
    assert D("tests.user_divergences:rchi2") == pytest.approx(neyman, rel=1e-12)
