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
    kind = "moving"

    def __init__(self, momentum: float = 0.9, enabled: bool = True):
        self.momentum = momentum
        self.enabled = enabled
        self.value: dict[str, float] = {}

    def value_for(self, contexts: Sequence[str] | None, n: int, rewards=None, include=None) -> torch.Tensor:
        """B_i for the n samples of this batch (shape (n,), float64); ``rewards`` and
        ``include`` are accepted for the common interface and ignored (previous batches only)."""
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


class NoBaseline(MovingBaseline):
    """B = 0 for every sample (``loss.baseline: none``): the plain f-DPG estimator."""

    kind = "none"

    def __init__(self):
        super().__init__(enabled=False)

    def update(self, rewards, weights, contexts: Sequence[str] | None = None) -> None:
        return None


def leave_one_out_means(values, include, contexts: Sequence[str] | None = None) -> torch.Tensor:
    """B_i = mean of ``values[j]`` over the other included samples j != i of i's context.

    ``values`` shape (n,), ``include`` (n,) bool: samples that may serve as others' baseline
    (samples whose own value is meaningless, e.g. a context with Z_hat = 0, are left out).
    B_i never depends on sample i itself.  A sample with no other included sample in its
    context falls back to the mean over the other included samples of the whole batch (any
    context; still independent of sample i), and to 0 if there is none.  Returns float64 (n,).
    """
    v, inc = _t64(values), torch.as_tensor(include, dtype=torch.bool)
    n = len(v)
    own = inc.to(torch.float64)
    v0 = torch.where(inc, v, torch.zeros_like(v))  # excluded samples add nothing (even if inf)
    keys = list(contexts) if contexts is not None else [""] * n
    ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    group = torch.tensor([ids[k] for k in keys], dtype=torch.long)
    same = (group[:, None] == group[None, :]).to(torch.float64)  # (n, n), 1 on the diagonal
    s_ctx, c_ctx = same @ v0 - v0, same @ own - own
    s_all, c_all = v0.sum() - v0, own.sum() - own
    out = torch.where(c_all > 0, s_all / c_all.clamp(min=1), torch.zeros_like(v))
    return torch.where(c_ctx > 0, s_ctx / c_ctx.clamp(min=1), out)


class LeaveOneOutBaseline:
    """Leave-one-out baseline (RLOO): B_i = mean pseudo-reward of the *other* samples drawn
    for the same context in this batch (:func:`leave_one_out_means`).

    Unbiased for any proposal: the samples of a batch are independent, so B_i is independent
    of x_i and E_q[w_i B_i grad log pi(x_i)] = B_i E_pi[grad log pi] = 0.  The controller
    passes the pseudo-rewards r_j = -f'(t_j) with log t_j = log q(x_j) - log P(x_j) + log Z_hat,
    available before the learner's forward pass (on-policy q = pi_theta, so they are the
    loss's own r_j up to the engine's numerics, ~1e-5 nats); they enter unweighted (see
    docs/design.md, "Baseline").  ``update`` only records the batch mean for the logs:
    the baseline itself has no state across steps.
    """

    GLOBAL = "*"
    kind = "leave_one_out"

    def __init__(self):
        self.value: dict[str, float] = {}

    def value_for(self, contexts: Sequence[str] | None, n: int, rewards=None, include=None) -> torch.Tensor:
        if rewards is None:
            raise ValueError("LeaveOneOutBaseline.value_for needs this batch's pseudo-rewards (rewards=)")
        inc = torch.ones(n, dtype=torch.bool) if include is None else torch.as_tensor(include, dtype=torch.bool)
        inc = inc & torch.isfinite(_t64(rewards))
        return leave_one_out_means(rewards, inc, contexts)

    def update(self, rewards, weights, contexts: Sequence[str] | None = None) -> None:
        r, w = _t64(rewards), _t64(weights)
        if bool((w > 0).any()):
            self.value[self.GLOBAL] = float((w * r).sum() / w.sum())

    def state_dict(self) -> dict:
        return {"value": dict(self.value)}

    def load_state_dict(self, state: dict) -> None:
        self.value = dict(state.get("value", {}))


BASELINES = ("moving", "leave_one_out", "none")


def canonical_baseline(kind) -> str:
    """'moving' | 'leave_one_out' | 'none' from the config value; the booleans of older
    configs (true / false) mean 'moving' / 'none'.  ValueError for anything else."""
    if isinstance(kind, bool):
        return "moving" if kind else "none"
    key = str(kind).strip().lower()
    key = {"true": "moving", "false": "none"}.get(key, key)
    if key not in BASELINES:
        raise ValueError(f"loss.baseline: unknown baseline {kind!r}; use moving, leave_one_out or none "
                         f"(true/false from older configs mean moving/none)")
    return key


def make_baseline(kind, momentum: float = 0.9):
    """The baseline object for ``loss.baseline``: all share ``value_for(contexts, n, rewards,
    include) -> B`` (n,), ``update(rewards, weights, contexts)``, ``value`` (for the logs) and
    ``state_dict`` / ``load_state_dict``."""
    kind = canonical_baseline(kind)
    if kind == "moving":
        return MovingBaseline(momentum)
    if kind == "leave_one_out":
        return LeaveOneOutBaseline()
    return NoBaseline()


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
