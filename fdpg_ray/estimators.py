"""Running estimates (log Z_hat, baselines) and importance-sampled metrics.

All quantities are kept in log space.  Per-context state (conditional targets: one Z_c
per prompt c) is keyed by the context string; unconditional targets use the key "".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .divergences import Divergence


def _t64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


class LogPartition:
    """Running Z_hat = mean_i P(x_i)/q(x_i) over every proposal sample seen, per context.

    Stores log(sum_i P/q) and the count, so log Z_hat = log_sum - log(count).  Samples
    with P = 0 count in the denominator and add nothing to the sum (log P = -inf).
    """

    def __init__(self):
        self.log_sum: dict[str, float] = {}
        self.count: dict[str, int] = {}

    def update(self, log_P, log_q, contexts: Sequence[str] | None = None) -> None:
        log_ratio = _t64(log_P) - _t64(log_q)
        keys = list(contexts) if contexts is not None else [""] * len(log_ratio)
        for key in dict.fromkeys(keys):
            idx = torch.tensor([k == key for k in keys])
            batch = torch.logsumexp(log_ratio[idx], dim=0).item()
            prev = self.log_sum.get(key, -math.inf)
            self.log_sum[key] = float(torch.logaddexp(_t64(prev), _t64(batch)))
            self.count[key] = self.count.get(key, 0) + int(idx.sum())

    def log_z(self, key: str = "") -> float:
        if key not in self.count:
            raise KeyError(f"no samples seen for context {key!r}")
        return self.log_sum[key] - math.log(self.count[key])

    def log_z_for(self, contexts: Sequence[str] | None, n: int) -> torch.Tensor:
        keys = list(contexts) if contexts is not None else [""] * n
        return _t64([self.log_z(k) for k in keys])

    def mean_log_z(self) -> float:
        """Mean of log Z_c over the contexts whose Z_hat is positive (-inf if there is none)."""
        finite = [z for z in (self.log_z(k) for k in self.count) if z > -math.inf]
        return sum(finite) / len(finite) if finite else -math.inf

    def mean_z_hat(self) -> float:
        """exp(mean_log_z()), for display only: +inf where log Z_hat exceeds the float range
        (log Z_hat > 709, e.g. a reward target with a tiny beta) instead of OverflowError.
        Everything that computes keeps log Z_hat (``log_z_hat`` in the metrics)."""
        return self.exp_or_inf(self.mean_log_z())

    @staticmethod
    def exp_or_inf(log_x: float) -> float:
        """exp(log_x) for display, +inf beyond the float range (log_x > 709.78) instead of
        math.exp's OverflowError."""
        try:
            return math.exp(log_x)
        except OverflowError:
            return math.inf

    def zero_fraction(self) -> float:
        """Fraction of the contexts seen so far for which no sample has had P > 0 (Z_hat = 0)."""
        return sum(self.log_sum[k] == -math.inf for k in self.count) / max(len(self.count), 1)

    def state_dict(self) -> dict:
        return {"log_sum": dict(self.log_sum), "count": dict(self.count)}

    def load_state_dict(self, state: dict) -> None:
        self.log_sum = dict(state["log_sum"])
        self.count = dict(state["count"])


class MovingBaseline:
    """Exponential moving average of the (importance-weighted) pseudo-reward, per context.

    ``value_for`` only uses *previous* batches, so B is independent of the current samples
    and the gradient stays unbiased.  A context seen for the first time falls back to the
    average over all contexts (key "*"), and to 0 before any batch has been seen.
    """

    GLOBAL = "*"

    def __init__(self, momentum: float = 0.9, enabled: bool = True):
        self.momentum = momentum
        self.enabled = enabled
        self.value: dict[str, float] = {}

    def value_for(self, contexts: Sequence[str] | None, n: int) -> torch.Tensor:
        if not self.enabled:
            return torch.zeros(n, dtype=torch.float64)
        keys = list(contexts) if contexts is not None else [""] * n
        fallback = self.value.get(self.GLOBAL, 0.0)
        return _t64([self.value.get(k, fallback) for k in keys])

    def update(self, rewards, weights, contexts: Sequence[str] | None = None) -> None:
        r, w = _t64(rewards), _t64(weights)
        keys = list(contexts) if contexts is not None else [""] * len(r)
        groups = {k: torch.tensor([kk == k for kk in keys]) for k in dict.fromkeys(keys)}
        groups[self.GLOBAL] = torch.ones(len(r), dtype=torch.bool)
        for key, idx in groups.items():
            if not bool((w[idx] > 0).any()):  # nothing to learn from (e.g. Z_hat_c = 0)
                continue
            mean = float((w[idx] * r[idx]).sum() / w[idx].sum())
            prev = self.value.get(key)
            self.value[key] = mean if prev is None else self.momentum * prev + (1 - self.momentum) * mean

    def state_dict(self) -> dict:
        return {"value": dict(self.value)}

    def load_state_dict(self, state: dict) -> None:
        self.value = dict(state["value"])


def _xlogy_weighted(log_w: torch.Tensor, log_ratio: torch.Tensor) -> torch.Tensor:
    """exp(log_w) * log_ratio with 0 * (+-inf) := 0 (terms where the weight is zero)."""
    out = torch.exp(log_w) * log_ratio
    return torch.where(log_w == -math.inf, torch.zeros_like(out), out)


def is_metrics(log_P, log_Z, log_pi, log_q, log_a=None, divergence: Divergence | None = None) -> dict:
    """Importance-sampled divergences between p = P/Z and pi from samples x ~ q.

    With rho = p/q and v = pi/q:
      KL(p||pi) = E_q[rho log(p/pi)],  TV = 1/2 E_q|rho - v|,
      JS = 1/2 E_q[rho log(p/m)] + 1/2 E_q[v log(pi/m)],  m = (p+pi)/2,
      KL(pi||a) = E_q[v log(pi/a)],  D_f(pi||p) = E_q[rho f(pi/p)] (times report_scale).
    ``log_Z`` is a scalar or a per-sample tensor.  Samples whose log Z is -inf (a context
    with Z_hat = 0, where p is undefined) are left out; if that leaves none, every value
    but ``kl_pi_a`` (which does not involve p) is NaN.  Returns floats.
    """
    log_pi, log_q = _t64(log_pi), _t64(log_q)
    out = {}
    if log_a is not None:  # does not involve p: every sample counts
        out["kl_pi_a"] = _xlogy_weighted(log_pi - log_q, log_pi - _t64(log_a)).mean().item()
    log_Z = torch.broadcast_to(_t64(log_Z), log_pi.shape)
    keep = torch.isfinite(log_Z)
    log_pi, log_q = log_pi[keep], log_q[keep]
    log_p = _t64(log_P)[keep] - log_Z[keep]
    log_rho, log_v = log_p - log_q, log_pi - log_q
    log_m = torch.logaddexp(log_p, log_pi) - math.log(2.0)
    out.update({
        "kl_p_pi": _xlogy_weighted(log_rho, log_p - log_pi).mean().item(),
        "tv_p_pi": 0.5 * (torch.exp(log_rho) - torch.exp(log_v)).abs().mean().item(),
        "js_p_pi": 0.5 * (_xlogy_weighted(log_rho, log_p - log_m) + _xlogy_weighted(log_v, log_pi - log_m)).mean().item(),
    })
    if divergence is not None:
        f = divergence.f(log_pi - log_p)
        terms = torch.where(log_rho == -math.inf, torch.zeros_like(f), torch.exp(log_rho) * f)
        out["divergence"] = divergence.report_scale * terms.mean().item()
    return out
