"""f-divergences for f-DPG, written in terms of log t.

D_f(pi || p) = E_{x~p}[ f(t) ] with t = pi(x) / p(x), f convex and f(1) = 0.
Theorem 1 of Go et al. (2023): grad D_f = E_{x~pi}[ f'(t) grad log pi(x) ], so the
update is a policy gradient with the *pseudo-reward* r(x) = -f'(t).

Every function here takes ``log_t = log pi(x) - log p(x)`` (a tensor, any shape) and
works elementwise in float64, which keeps t^a and (t-1)^2 finite for |log t| <= 50
(e^100 overflows float32 but not float64).  The result is float64.

Values at the ends of the line (documented policy, see docs/design.md):

* ``log_t = +inf`` means p(x) = 0 with pi(x) > 0.  ``pseudo_reward`` returns the limit
  of -f'(t) as t -> inf, which is finite for kl (0), tv (-1/2), js (-log 2),
  hellinger (-1) and alpha < 1 (-1/(1-a)), and -inf for rkl, chi2 and alpha > 1.
  ``f`` returns its limit (+inf for most f).  The loss never sees these infinities:
  it clamps log t first (``loss.clip_log_t``), see :mod:`fdpg_ray.loss`.
* ``log_t = -inf`` means pi(x) = 0 < p(x); such an x is never sampled from pi.  The
  limits are returned (+inf where the limit is infinite), never NaN.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F

LOG2 = math.log(2.0)


def _f64(log_t) -> torch.Tensor:
    return torch.as_tensor(log_t).to(torch.float64)


@dataclass(frozen=True)
class Divergence:
    """Base class: a divergence defines ``f`` and ``pseudo_reward`` (= -f') in log t."""

    name: str
    # Multiply E_p[f(t)] by this to report the divergence by its usual definition
    # (the js f below gives 2 * JS; we report JS itself).
    report_scale: float = 1.0

    def f(self, log_t) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def f_star_zero(self) -> float:
        """f*(0) = lim_{t -> inf} f(t) / t (in the units of ``f``, before ``report_scale``).

        The mass of pi where p = 0 enters D_f(pi || p) as pi(p = 0) * f*(0) (the perspective
        of f at p = 0): D_f = sum_{p>0} p f(pi/p) + pi(p=0) f*(0).  +inf for rkl, chi2 and
        alpha > 1: for them D_f = +inf whenever pi puts mass where p = 0."""
        raise NotImplementedError  # pragma: no cover - abstract

    def pseudo_reward(self, log_t) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class ForwardKL(Divergence):
    """kl: KL(p || pi) (DPG/GDC). f(t) = -log t, r = 1/t = p/pi."""

    def __init__(self):
        super().__init__("kl")

    def f(self, log_t):
        return -_f64(log_t)

    def pseudo_reward(self, log_t):
        return torch.exp(-_f64(log_t))

    @property
    def f_star_zero(self):
        return 0.0


class ReverseKL(Divergence):
    """rkl: KL(pi || p) (RL with a KL penalty). f(t) = t log t, r = log(p/pi) - 1."""

    def __init__(self):
        super().__init__("rkl")

    def f(self, log_t):
        u = _f64(log_t)
        out = torch.exp(u) * u
        return torch.where(u == -math.inf, torch.zeros_like(u), out)

    def pseudo_reward(self, log_t):
        return -_f64(log_t) - 1.0

    @property
    def f_star_zero(self):
        return math.inf


class TotalVariation(Divergence):
    """tv: TV(pi, p). f(t) = |t - 1| / 2, r = -sign(t - 1) / 2 (0 at t = 1)."""

    def __init__(self):
        super().__init__("tv")

    def f(self, log_t):
        return 0.5 * torch.abs(torch.expm1(_f64(log_t)))

    def pseudo_reward(self, log_t):
        return -0.5 * torch.sign(_f64(log_t))

    @property
    def f_star_zero(self):
        return 0.5


class JensenShannon(Divergence):
    """js: f(t) = t log(2t/(1+t)) + log(2/(1+t)) = 2 JS(pi, p); r = log((pi+p)/(2 pi)).

    In u = log t: log(2t/(1+t)) = log 2 - softplus(-u), log(2/(1+t)) = log 2 - softplus(u).
    """

    def __init__(self):
        super().__init__("js", report_scale=0.5)

    def f(self, log_t):
        u = _f64(log_t)
        out = torch.exp(u) * (LOG2 - F.softplus(-u)) + LOG2 - F.softplus(u)
        out = torch.where(u == math.inf, torch.full_like(u, math.inf), out)
        return torch.where(u == -math.inf, torch.full_like(u, LOG2), out)

    def pseudo_reward(self, log_t):
        return F.softplus(-_f64(log_t)) - LOG2

    @property
    def f_star_zero(self):
        return LOG2  # before report_scale: JS gets log(2)/2 per unit of mass


class Alpha(Divergence):
    """alpha:<a> (Amari): f(t) = (t^a - 1 - a(t - 1)) / (a(a - 1)), r = (1 - t^(a-1)) / (a - 1).

    a -> 0 gives kl and a -> 1 gives rkl, up to f terms linear in (t - 1), whose
    expectation under p is zero (pseudo-rewards differ by a constant).
    """

    def __init__(self, a: float):
        if not math.isfinite(a) or a in (0.0, 1.0):
            raise ValueError(f"divergence: alpha must be a finite number other than 0 and 1, got {a!r}; "
                             f"use 'kl' for a -> 0 and 'rkl' for a -> 1. Valid names: {VALID_NAMES}")
        super().__init__(f"alpha:{a:g}")
        object.__setattr__(self, "a", float(a))

    def f(self, log_t):
        a, u = self.a, _f64(log_t)
        out = (torch.expm1(a * u) - a * torch.expm1(u)) / (a * (a - 1.0))
        # Limits at the ends: at u=+inf the dominant term is t^a (a>1) or -a t (a<1): +inf
        # either way; at u=-inf, t^a -> 0 (a>0) or +inf (a<0).
        at_minus_inf = (-1.0 + a) / (a * (a - 1.0)) if a > 0 else math.inf
        out = torch.where(u == math.inf, torch.full_like(u, math.inf), out)
        return torch.where(u == -math.inf, torch.full_like(u, at_minus_inf), out)

    def pseudo_reward(self, log_t):
        a, u = self.a, _f64(log_t)
        return -torch.expm1((a - 1.0) * u) / (a - 1.0)

    @property
    def f_star_zero(self):
        return 1.0 / (1.0 - self.a) if self.a < 1 else math.inf


class Hellinger(Divergence):
    """hellinger: f(t) = (sqrt t - 1)^2 (squared Hellinger), r = sqrt(p/pi) - 1."""

    def __init__(self):
        super().__init__("hellinger")

    def f(self, log_t):
        return torch.expm1(0.5 * _f64(log_t)) ** 2

    def pseudo_reward(self, log_t):
        return torch.expm1(-0.5 * _f64(log_t))

    @property
    def f_star_zero(self):
        return 1.0


class ChiSquared(Divergence):
    """chi2: Pearson chi^2(pi || p). f(t) = (t - 1)^2, r = 2(1 - t) = 2(1 - pi/p)."""

    def __init__(self):
        super().__init__("chi2")

    def f(self, log_t):
        return torch.expm1(_f64(log_t)) ** 2

    def pseudo_reward(self, log_t):
        return -2.0 * torch.expm1(_f64(log_t))

    @property
    def f_star_zero(self):
        return math.inf


_SIMPLE = {"kl": ForwardKL, "rkl": ReverseKL, "tv": TotalVariation, "js": JensenShannon,
           "hellinger": Hellinger, "chi2": ChiSquared}
VALID_NAMES = "kl, rkl, tv, js, hellinger, chi2, alpha:<a> (a a number other than 0 and 1, e.g. alpha:0.5)"
_ALPHA = re.compile(r"^alpha:(.*)$")


def get_divergence(name: str) -> Divergence:
    """Return the divergence called ``name`` (see VALID_NAMES); ValueError otherwise."""
    if isinstance(name, Divergence):
        return name
    if not isinstance(name, str):
        raise ValueError(f"divergence: expected a string, got {type(name).__name__}; valid names: {VALID_NAMES}")
    key = name.strip().lower()
    if key in _SIMPLE:
        return _SIMPLE[key]()
    m = _ALPHA.match(key)
    if m:
        try:
            a = float(m.group(1))
        except ValueError:
            raise ValueError(f"divergence: '{name}' has no number after 'alpha:'; valid names: {VALID_NAMES}") from None
        return Alpha(a)
    raise ValueError(f"divergence: unknown divergence '{name}'; valid names: {VALID_NAMES}")
