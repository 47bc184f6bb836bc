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
  hellinger (-1), rchi2 (-1) and alpha < 1 (-1/(1-a)), and -inf for rkl, chi2, jeffreys
  and alpha > 1.
  ``f`` returns its limit (+inf for most f).  The loss never sees these infinities:
  it clamps log t first (``loss.clip_log_t``), see :mod:`fdpg_ray.objective.loss`.
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
        """f(t) elementwise, from ``log_t = log pi(x) - log p(x)`` (any shape); float64, same shape.

        The generator of D_f(pi || p) = E_{x~p}[f(t)], t = pi/p (SPEC §1); before ``report_scale``.
        """
        raise NotImplementedError

    @property
    def f_star_zero(self) -> float:
        """f*(0) = lim_{t -> inf} f(t) / t (in the units of ``f``, before ``report_scale``).

        The mass of pi where p = 0 enters D_f(pi || p) as pi(p = 0) * f*(0) (the perspective
        of f at p = 0): D_f = sum_{p>0} p f(pi/p) + pi(p=0) f*(0).  +inf for rkl, chi2 and
        alpha > 1: for them D_f = +inf whenever pi puts mass where p = 0."""
        raise NotImplementedError  # pragma: no cover - abstract

    def pseudo_reward(self, log_t) -> torch.Tensor:  # pragma: no cover - abstract
        """Pseudo-reward r = -f'(t) elementwise from ``log_t`` (any shape); float64, same shape.

        The per-sample reward of the f-DPG policy gradient (Go et al. 2023, Theorem 1); limits at
        log t = +-inf as in the module docstring.
        """
        raise NotImplementedError


class ForwardKL(Divergence):
    """kl: KL(p || pi) (DPG/GDC). f(t) = -log t, r = 1/t = p/pi."""

    def __init__(self):
        super().__init__("kl")

    def f(self, log_t):
        """f(t) = -log t = -log_t (float64, same shape as ``log_t``)."""
        return -_f64(log_t)

    def pseudo_reward(self, log_t):
        """r = -f'(t) = 1/t = exp(-log_t) = p/pi; 0 at log_t = +inf (p = 0), +inf at -inf."""
        return torch.exp(-_f64(log_t))

    @property
    def f_star_zero(self):
        """f*(0) = lim_{t->inf} -log(t)/t = 0: pi-mass where p = 0 costs nothing under KL(p || pi)."""
        return 0.0


class ReverseKL(Divergence):
    """rkl: KL(pi || p) (RL with a KL penalty). f(t) = t log t, r = log(p/pi) - 1."""

    def __init__(self):
        super().__init__("rkl")

    def f(self, log_t):
        """f(t) = t log t = exp(log_t) * log_t; 0 at log_t = -inf (the limit), +inf at +inf."""
        u = _f64(log_t)
        out = torch.exp(u) * u
        return torch.where(u == -math.inf, torch.zeros_like(u), out)

    def pseudo_reward(self, log_t):
        """r = -f'(t) = -log t - 1 = log(p/pi) - 1; -inf at log_t = +inf (p = 0)."""
        return -_f64(log_t) - 1.0

    @property
    def f_star_zero(self):
        """f*(0) = lim t log t / t = +inf: KL(pi || p) is infinite if pi puts mass where p = 0."""
        return math.inf


class TotalVariation(Divergence):
    """tv: TV(pi, p). f(t) = |t - 1| / 2, r = -sign(t - 1) / 2 (0 at t = 1)."""

    def __init__(self):
        super().__init__("tv")

    def f(self, log_t):
        """f(t) = |t - 1| / 2 = |expm1(log_t)| / 2."""
        return 0.5 * torch.abs(torch.expm1(_f64(log_t)))

    def pseudo_reward(self, log_t):
        """r = -sign(t - 1) / 2 = -sign(log_t) / 2 (0 at t = 1; -1/2 at log_t = +inf)."""
        return -0.5 * torch.sign(_f64(log_t))

    @property
    def f_star_zero(self):
        """f*(0) = lim |t - 1| / (2t) = 1/2."""
        return 0.5


class JensenShannon(Divergence):
    """js: f(t) = t log(2t/(1+t)) + log(2/(1+t)) = 2 JS(pi, p); r = log((pi+p)/(2 pi)).

    In u = log t: log(2t/(1+t)) = log 2 - softplus(-u), log(2/(1+t)) = log 2 - softplus(u).
    """

    def __init__(self):
        super().__init__("js", report_scale=0.5)

    def f(self, log_t):
        """f(t) = t log(2t/(1+t)) + log(2/(1+t)) in u = log_t: e^u (log 2 - softplus(-u)) + log 2 - softplus(u).

        This is 2 JS (``report_scale`` = 1/2 reports JS); +inf at u = +inf, log 2 at u = -inf.
        """
        u = _f64(log_t)
        out = torch.exp(u) * (LOG2 - F.softplus(-u)) + LOG2 - F.softplus(u)
        out = torch.where(u == math.inf, torch.full_like(u, math.inf), out)
        return torch.where(u == -math.inf, torch.full_like(u, LOG2), out)

    def pseudo_reward(self, log_t):
        """r = -f'(t) = log((1+t)/(2t)) = softplus(-log_t) - log 2 = log((pi+p)/(2 pi)); -log 2 at log_t = +inf."""
        return F.softplus(-_f64(log_t)) - LOG2

    @property
    def f_star_zero(self):
        """f*(0) = lim f(t)/t = log 2 (nats per unit of pi-mass where p = 0, before ``report_scale``)."""
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
        """f(t) = (t^a - 1 - a(t - 1)) / (a(a - 1)) = (expm1(a log_t) - a expm1(log_t)) / (a(a - 1)).

        +inf at log_t = +inf; at log_t = -inf, 1/a for a > 0 and +inf for a < 0.
        """
        a, u = self.a, _f64(log_t)
        out = (torch.expm1(a * u) - a * torch.expm1(u)) / (a * (a - 1.0))
        # Limits at the ends: at u=+inf the dominant term is t^a (a>1) or -a t (a<1): +inf
        # either way; at u=-inf, t^a -> 0 (a>0) or +inf (a<0).
        at_minus_inf = (-1.0 + a) / (a * (a - 1.0)) if a > 0 else math.inf
        out = torch.where(u == math.inf, torch.full_like(u, math.inf), out)
        return torch.where(u == -math.inf, torch.full_like(u, at_minus_inf), out)

    def pseudo_reward(self, log_t):
        """r = -f'(t) = (1 - t^(a-1)) / (a - 1) = -expm1((a - 1) log_t) / (a - 1).

        At log_t = +inf (p = 0): -1/(1 - a) for a < 1, -inf for a > 1.
        """
        a, u = self.a, _f64(log_t)
        return -torch.expm1((a - 1.0) * u) / (a - 1.0)

    @property
    def f_star_zero(self):
        """f*(0) = lim f(t)/t: 1/(1 - a) for a < 1, +inf for a > 1."""
        return 1.0 / (1.0 - self.a) if self.a < 1 else math.inf


class Hellinger(Divergence):
    """hellinger: f(t) = (sqrt t - 1)^2 (squared Hellinger), r = sqrt(p/pi) - 1."""

    def __init__(self):
        super().__init__("hellinger")

    def f(self, log_t):
        """f(t) = (sqrt t - 1)^2 = expm1(log_t / 2)^2."""
        return torch.expm1(0.5 * _f64(log_t)) ** 2

    def pseudo_reward(self, log_t):
        """r = -f'(t) = 1/sqrt t - 1 = sqrt(p/pi) - 1 = expm1(-log_t / 2); -1 at log_t = +inf."""
        return torch.expm1(-0.5 * _f64(log_t))

    @property
    def f_star_zero(self):
        """f*(0) = lim (sqrt t - 1)^2 / t = 1."""
        return 1.0


class ChiSquared(Divergence):
    """chi2: Pearson chi^2(pi || p). f(t) = (t - 1)^2, r = 2(1 - t) = 2(1 - pi/p)."""

    def __init__(self):
        super().__init__("chi2")

    def f(self, log_t):
        """f(t) = (t - 1)^2 = expm1(log_t)^2."""
        return torch.expm1(_f64(log_t)) ** 2

    def pseudo_reward(self, log_t):
        """r = -f'(t) = 2(1 - t) = -2 expm1(log_t) = 2(1 - pi/p); -inf at log_t = +inf."""
        return -2.0 * torch.expm1(_f64(log_t))

    @property
    def f_star_zero(self):
        """f*(0) = lim (t - 1)^2 / t = +inf: chi^2(pi || p) is infinite if pi puts mass where p = 0."""
        return math.inf


class ReverseChiSquared(Divergence):
    """rchi2: Neyman chi^2(p || pi) = sum_x (p - pi)^2 / pi = E_p[(1 - t)^2 / t].

    f(t) = (1 - t)^2 / t = t - 2 + 1/t; in u = log t, f = (e^(u/2) - e^(-u/2))^2 = 4 sinh^2(u/2)
    (even in u: f(t) = f(1/t)).
    r = -f'(t) = 1/t^2 - 1 = expm1(-2u).  f*(0) = lim f(t)/t = 1; r(+inf) = -1, r(-inf) = +inf.
    """

    def __init__(self):
        super().__init__("rchi2")

    def f(self, log_t):
        """f(t) = (1 - t)^2 / t = (2 sinh(log_t / 2))^2 (even in log_t)."""
        u = _f64(log_t)
        return (2.0 * torch.sinh(0.5 * u)) ** 2

    def pseudo_reward(self, log_t):
        """r = -f'(t) = 1/t^2 - 1 = expm1(-2 log_t); -1 at log_t = +inf, +inf at -inf."""
        return torch.expm1(-2.0 * _f64(log_t))

    @property
    def f_star_zero(self):
        """f*(0) = lim (1 - t)^2 / t^2 = 1."""
        return 1.0


class Jeffreys(Divergence):
    """jeffreys: KL(p || pi) + KL(pi || p).  f(t) = (t - 1) log t (the sum of kl's -log t and
    rkl's t log t), r = -f'(t) = -log t - 1 + 1/t = expm1(-u) - u.  f*(0) = +inf (as rkl);
    r(+inf) = -inf, r(-inf) = +inf.
    """

    def __init__(self):
        super().__init__("jeffreys")

    def f(self, log_t):
        """f(t) = (t - 1) log t = expm1(log_t) * log_t; +inf at log_t = +-inf."""
        u = _f64(log_t)
        out = torch.expm1(u) * u
        return torch.where(torch.isinf(u), torch.full_like(u, math.inf), out)

    def pseudo_reward(self, log_t):
        """r = -f'(t) = 1/t - 1 - log t = expm1(-log_t) - log_t; -inf at log_t = +inf."""
        u = _f64(log_t)
        out = torch.expm1(-u) - u
        return torch.where(u == math.inf, torch.full_like(u, -math.inf), out)

    @property
    def f_star_zero(self):
        """f*(0) = lim (t - 1) log t / t = +inf (as rkl)."""
        return math.inf


# --------------------------------------------------------------------------- user f

# The grid on which a user's f is checked at load: log t in [-GRID_LOG_T, GRID_LOG_T].
GRID_LOG_T = 10.0
GRID_POINTS = 801
# |log t| at which a user's f and pseudo-reward stand in for their limits at log t = +-inf.
USER_LOG_T_LIMIT = 50.0


class UserDivergence(Divergence):
    """``divergence: module.path:callable``: a user's f written in log t.

    The callable takes a float64 tensor ``log_t`` (any shape) and returns f(e^log_t), same
    shape, differentiable by autograd.  Optional attributes on the callable:

    * ``pseudo_reward(log_t)``: -f'(t); otherwise computed by autograd in log space,
      r = -df/dt = -(df/du) e^(-u) with u = log t (chain rule: df/du = f'(t) t);
    * ``f_star_zero``: f*(0) = lim_{t->inf} f(t)/t (nats per unit of pi-mass where p = 0);
      otherwise read off numerically: f(e^u)/e^u at u = 50 if it moved by < 1e-3 since u = 25,
      else +inf (a slowly converging limit, e.g. alpha close to 1, needs the attribute);
    * ``report_scale``: multiplies E_p[f] when reported (default 1).

    Inputs are clamped to |log t| <= 50 before the call, so log t = +-inf (p = 0, pi = 0)
    returns the value at the clamp, a finite stand-in for the limit.  Loading checks
    f(1) = 0 and convexity in t on a grid of log t in [-10, 10] (:func:`load_user_divergence`).
    """

    def __init__(self, spec: str, fn, reward=None, f_star_zero=None, report_scale: float = 1.0):
        super().__init__(spec, report_scale=float(report_scale))
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "reward_fn", reward)
        object.__setattr__(self, "_f_star_zero", f_star_zero)

    def _u(self, log_t) -> torch.Tensor:
        u = _f64(log_t)
        return torch.nan_to_num(u, posinf=USER_LOG_T_LIMIT, neginf=-USER_LOG_T_LIMIT).clamp(
            -USER_LOG_T_LIMIT, USER_LOG_T_LIMIT)

    def f(self, log_t):
        """The user's f at ``log_t`` (float64, same shape); log_t = +-inf is replaced by +-50 first.

        Non-finite values the callable returns at finite log_t are passed on as they are.
        """
        u = _f64(log_t)
        return torch.as_tensor(self.fn(torch.where(torch.isinf(u), self._u(u), u)), dtype=torch.float64)

    def pseudo_reward(self, log_t):
        """r = -f'(t) at ``log_t`` clamped to [-50, 50] (float64, same shape, no gradient).

        The callable's ``pseudo_reward`` attribute if it has one, else -(df/du) e^(-u) by autograd, u = log t.
        """
        u = self._u(log_t).detach()
        if self.reward_fn is not None:
            return torch.as_tensor(self.reward_fn(u), dtype=torch.float64)
        with torch.enable_grad():
            x = u.clone().requires_grad_(True)
            (df_du,) = torch.autograd.grad(torch.as_tensor(self.fn(x), dtype=torch.float64).sum(), x)
        return -df_du * torch.exp(-u)

    @property
    def f_star_zero(self):
        """f*(0) = lim_{t->inf} f(t)/t: the callable's ``f_star_zero`` attribute, else f(e^50)/e^50
        when it moved by <= 1e-3 (relative) since log t = 25, else +inf.
        """
        if self._f_star_zero is not None:
            return float(self._f_star_zero)
        u = torch.tensor([25.0, USER_LOG_T_LIMIT], dtype=torch.float64)
        v = (self.f(u) * torch.exp(-u)).tolist()
        if math.isfinite(v[1]) and abs(v[1] - v[0]) <= 1e-3 * max(1.0, abs(v[1])):
            return v[1]
        return math.inf


def load_user_divergence(spec: str) -> UserDivergence:
    """Import ``module.path:callable`` and check it is an f-divergence; ValueError otherwise.

    Checks, on log t in a grid of 801 points over [-10, 10] (t from 4.5e-5 to 2.2e4):
    f(1) = 0 (|f(0 in log t)| <= 1e-8), values finite, convex in t (slopes
    (f(t_{i+1}) - f(t_i)) / (t_{i+1} - t_i) non-decreasing, up to 1e-7 relative), and the
    pseudo-reward finite.  Every error is one line naming ``divergence`` and the fix.
    """
    import importlib

    module_name, _, attr = spec.partition(":")
    module_name, attr = module_name.strip(), attr.strip()
    if not module_name or not attr:
        raise ValueError(f"divergence: '{spec}' is not module.path:callable; write e.g. divergence: mypkg.fs:my_f, "
                         f"or one of {VALID_NAMES}")
    try:
        module = importlib.import_module(module_name)
    except Exception as e:  # noqa: BLE001 - any import failure is the user's to fix
        raise ValueError(f"divergence: cannot import module '{module_name}' ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); put it on PYTHONPATH or fix the name") from None
    fn = getattr(module, attr, None)
    if fn is None or not callable(fn):
        raise ValueError(f"divergence: module '{module_name}' has no callable '{attr}'; define {attr}(log_t) -> f(e^log_t)")
    div = UserDivergence(spec, fn, reward=getattr(fn, "pseudo_reward", None),
                         f_star_zero=getattr(fn, "f_star_zero", None), report_scale=getattr(fn, "report_scale", 1.0))
    u = torch.linspace(-GRID_LOG_T, GRID_LOG_T, GRID_POINTS, dtype=torch.float64)
    try:
        y = div.f(u)
        f1 = float(div.f(torch.zeros((), dtype=torch.float64)))
        r = div.pseudo_reward(u)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"divergence: {spec}(log_t) failed on a float64 tensor ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}); make it take and return a tensor of log t") from None
    if y.shape != u.shape or r.shape != u.shape:
        raise ValueError(f"divergence: {spec} returned shape {tuple(y.shape)} for log t of shape {tuple(u.shape)}; "
                         f"return f elementwise, same shape as log_t")
    if not (torch.isfinite(y).all() and torch.isfinite(r).all()):
        bad = u[~(torch.isfinite(y) & torch.isfinite(r))][0].item()
        raise ValueError(f"divergence: {spec} is not finite at log t = {bad:g}; write f in log t so that it stays "
                         f"finite for |log t| <= {GRID_LOG_T:g}")
    if abs(f1) > 1e-8:
        raise ValueError(f"divergence: {spec} has f(1) = {f1:.6g}, not 0; subtract f(1) (an f-divergence needs f(1) = 0)")
    t = torch.exp(u)
    slope = (y[1:] - y[:-1]) / (t[1:] - t[:-1])
    drop = slope[:-1] - slope[1:]
    tol = 1e-7 * (1.0 + slope[:-1].abs())
    if (drop > tol).any():
        i = int(torch.nonzero(drop > tol)[0])
        raise ValueError(f"divergence: {spec} is not convex in t (slope falls near t = {t[i + 1].item():.4g}); "
                         f"an f-divergence needs f convex in t = e^log_t")
    return div


_SIMPLE = {"kl": ForwardKL, "rkl": ReverseKL, "tv": TotalVariation, "js": JensenShannon,
           "hellinger": Hellinger, "chi2": ChiSquared, "rchi2": ReverseChiSquared,
           "jeffreys": Jeffreys}
VALID_NAMES = ("kl, rkl, tv, js, hellinger, chi2, rchi2, jeffreys, alpha:<a> (a a number other than 0 and 1, "
               "e.g. alpha:0.5), or module.path:callable (your f in log t)")
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
    if ":" in name:
        return load_user_divergence(name.strip())
    raise ValueError(f"divergence: unknown divergence '{name}'; valid names: {VALID_NAMES}")
