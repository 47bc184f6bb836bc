"""Running estimates (log Z_hat, baselines) and importance-sampled metrics.

All quantities are kept in log space.  Per-context state (conditional targets: one Z_c
per prompt c) is keyed by the context string; unconditional targets use the key "".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fdpg_ray.objective.divergences import Divergence


def _t64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


class LogPartition:
    """Running Z_hat = mean_i P(x_i)/q(x_i) over every proposal sample seen, per context.

    Stores log(sum_i P/q) and the count, so log Z_hat = log_sum - log(count).  Samples
    with P = 0 count in the denominator and add nothing to the sum (log P = -inf).
    Also log(sum_i (P/q)^2), for the standard error of log Z_hat and the Kish effective
    sample size of its weights (:meth:`log_z_se`, :meth:`ess`).
    """

    def __init__(self):
        self.log_sum: dict[str, float] = {}
        self.count: dict[str, int] = {}
        self.log_sum_sq: dict[str, float] = {}

    def update(self, log_P, log_q, contexts: Sequence[str] | None = None) -> None:
        """Add a batch of proposal samples to the running sums of ``P/q`` and ``(P/q)^2``.

        ``log_P``, ``log_q``: (n,) log P(x_i) and log q(x_i) in nats (log P = -inf allowed);
        ``contexts``: n context strings (None: the single key ""). Z_hat = mean_i P/q (SPEC §1).
        """
        log_ratio = _t64(log_P) - _t64(log_q)
        keys = list(contexts) if contexts is not None else [""] * len(log_ratio)
        for key in dict.fromkeys(keys):
            idx = torch.tensor([k == key for k in keys])
            batch = torch.logsumexp(log_ratio[idx], dim=0).item()
            prev = self.log_sum.get(key, -math.inf)
            self.log_sum[key] = float(torch.logaddexp(_t64(prev), _t64(batch)))
            batch_sq = torch.logsumexp(2 * log_ratio[idx], dim=0).item()
            self.log_sum_sq[key] = float(torch.logaddexp(_t64(self.log_sum_sq.get(key, -math.inf)), _t64(batch_sq)))
            self.count[key] = self.count.get(key, 0) + int(idx.sum())

    def log_z(self, key: str = "") -> float:
        """log Z_hat for context ``key`` (nats; -inf while every sample had P = 0).

        Raises KeyError if no sample of that context has been seen.
        """
        if key not in self.count:
            raise KeyError(f"no samples seen for context {key!r}")
        return self.log_sum[key] - math.log(self.count[key])

    def ess(self, key: str = "") -> float:
        """Kish effective sample size (sum w)^2 / sum w^2 of the weights w = P/q seen for ``key``."""
        if key not in self.log_sum_sq or self.log_sum[key] == -math.inf:
            return 0.0
        return math.exp(2 * self.log_sum[key] - self.log_sum_sq[key])

    def log_z_se(self, key: str = "") -> float:
        """Standard error of log Z_hat (nats), delta method: SE(Z_hat) / Z_hat with
        SE(Z_hat)^2 = (sum w^2 - N Z_hat^2) / (N (N - 1)) (Z_hat is a mean of N independent
        terms with mean Z), i.e. SE^2 = (N / ESS - 1) / (N - 1).  NaN with fewer than 2
        samples, +inf while Z_hat = 0, NaN for state saved before this was tracked."""
        n = self.count.get(key, 0)
        if n < 2 or key not in self.log_sum_sq:
            return math.nan
        if self.log_sum[key] == -math.inf:
            return math.inf
        return math.sqrt(max(n / self.ess(key) - 1.0, 0.0) / (n - 1))

    def log_z_se_for(self, contexts: Sequence[str] | None, n: int) -> torch.Tensor:
        """(n,) float64 tensor of :meth:`log_z_se` (nats) for each sample's context."""
        keys = list(contexts) if contexts is not None else [""] * n
        return _t64([self.log_z_se(k) for k in keys])

    def mean_log_z_se(self) -> float:
        """SE of :meth:`mean_log_z` (contexts' estimates are independent: sqrt(sum SE_c^2) / C)."""
        ses = [self.log_z_se(k) for k in self.count if self.log_z(k) > -math.inf]
        return math.sqrt(sum(v * v for v in ses)) / len(ses) if ses else math.nan

    def log_z_for(self, contexts: Sequence[str] | None, n: int) -> torch.Tensor:
        """(n,) float64 tensor of :meth:`log_z` (nats) for each sample's context.

        Raises KeyError for a context with no samples seen.
        """
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
        """The running sums and counts per context, for checkpoints (plain dicts)."""
        return {"log_sum": dict(self.log_sum), "count": dict(self.count), "log_sum_sq": dict(self.log_sum_sq)}

    def load_state_dict(self, state: dict) -> None:
        """Restore from :meth:`state_dict`; checkpoints without ``log_sum_sq`` give NaN SEs."""
        self.log_sum = dict(state["log_sum"])
        self.count = dict(state["count"])
        self.log_sum_sq = dict(state.get("log_sum_sq", {}))  # older checkpoints: SE unknown (NaN)


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

    needs_policy_log_probs = False

    def value_for(self, contexts: Sequence[str] | None, n: int, rewards=None, include=None,
                  log_weights=None) -> torch.Tensor:
        """B_i for the n samples of this batch (shape (n,), float64); ``rewards``, ``include``
        and ``log_weights`` are accepted for the common interface and ignored (previous
        batches only)."""
        if not self.enabled:
            return torch.zeros(n, dtype=torch.float64)
        keys = list(contexts) if contexts is not None else [""] * n
        fallback = self.value.get(self.GLOBAL, 0.0)
        return _t64([self.value.get(k, fallback) for k in keys])

    def update(self, rewards, weights, contexts: Sequence[str] | None = None) -> None:
        """Fold this batch's importance-weighted mean pseudo-reward into the moving average.

        ``rewards``, ``weights``: (n,) r_i and w_i; per context and for the global key "*";
        a group with no positive weight is skipped.  B <- m B + (1 - m) sum(w r) / sum(w).
        """
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
        """The per-context averages, for checkpoints."""
        return {"value": dict(self.value)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the per-context averages from :meth:`state_dict`."""
        self.value = dict(state["value"])


class NoBaseline(MovingBaseline):
    """B = 0 for every sample (``loss.baseline: none``): the plain f-DPG estimator."""

    kind = "none"

    def __init__(self):
        super().__init__(enabled=False)

    def update(self, rewards, weights, contexts: Sequence[str] | None = None) -> None:
        """No state to update (B = 0 always)."""
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
    # Whether value_for wants r and w at the current policy pi_theta (the controller then runs
    # a no-grad forward pass over an off-policy batch first); False: r at log q will do.
    needs_policy_log_probs = False

    def __init__(self):
        self.value: dict[str, float] = {}

    def value_for(self, contexts: Sequence[str] | None, n: int, rewards=None, include=None,
                  log_weights=None) -> torch.Tensor:
        """B_i for the n samples of this batch (shape (n,), float64): :func:`leave_one_out_means`
        of ``rewards`` over the samples in ``include`` with a finite reward; ``log_weights`` is
        accepted for the common interface and ignored.

        Raises ValueError if ``rewards`` is None.
        """
        if rewards is None:
            raise ValueError(f"{type(self).__name__}.value_for needs this batch's pseudo-rewards (rewards=)")
        inc = torch.ones(n, dtype=torch.bool) if include is None else torch.as_tensor(include, dtype=torch.bool)
        inc = inc & torch.isfinite(_t64(rewards))
        return leave_one_out_means(rewards, inc, contexts)

    def update(self, rewards, weights, contexts: Sequence[str] | None = None) -> None:
        """Record the batch's importance-weighted mean pseudo-reward under "*" (for the logs only)."""
        r, w = _t64(rewards), _t64(weights)
        if bool((w > 0).any()):
            self.value[self.GLOBAL] = float((w * r).sum() / w.sum())

    def state_dict(self) -> dict:
        """The last logged batch mean (the baseline itself has no state)."""
        return {"value": dict(self.value)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the logged batch mean from :meth:`state_dict` (missing: empty)."""
        self.value = dict(state.get("value", {}))


def _loo_weighted_means(v: torch.Tensor, lw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For one group: (B, has_other) with B_i = sum_{j != i} e^{lw_j} v_j / sum_{j != i} e^{lw_j}
    and has_other_i = whether some j != i has lw_j > -inf (else B_i = 0).

    Log space, O(m): every row is shifted by the largest log-weight among its others (the
    group's maximum, or for the row holding it the second largest), so the denominator is
    >= 1 and nothing overflows or cancels, even when one weight dominates by e^700.
    """
    m = len(v)
    if m == 0:
        return torch.zeros(0, dtype=torch.float64), torch.zeros(0, dtype=torch.bool)
    top = torch.argmax(lw)
    m1 = lw[top]
    rest = lw.clone()
    rest[top] = -math.inf
    m2 = rest.max()
    if m1 == -math.inf:
        return torch.zeros(m, dtype=torch.float64), torch.zeros(m, dtype=torch.bool)
    e1 = torch.exp(lw - m1)
    num = (e1 * v).sum() - e1 * v
    den = e1.sum() - e1
    out = num / den.clamp(min=1e-300)
    has = torch.ones(m, dtype=torch.bool)
    if m2 == -math.inf:  # the top row has no weighted other
        out[top], has[top] = 0.0, False
    else:
        e2 = torch.exp(rest - m2)
        out[top] = (e2 * v).sum() / e2.sum()
    return out, has


def self_normalized_loo_means(values, log_weights, include, contexts: Sequence[str] | None = None) -> torch.Tensor:
    """B_i = sum_{j != i} w_j v_j / sum_{j != i} w_j over the other included samples j of i's
    context, with w_j = exp(log_weights[j]) (a self-normalised importance-sampling mean).

    ``values``, ``log_weights`` shape (n,) (log w may be -inf: weight 0); ``include`` (n,) bool:
    samples that may serve as others' baseline; ``contexts`` (n,) keys or None (one context).
    B_i never depends on sample i.  A sample with no other included sample of positive weight
    in its context falls back to the same mean over every other included sample of the batch
    (any context), and to 0 if there is none.  With all log w = 0 this is
    :func:`leave_one_out_means`.  Returns float64 (n,).
    """
    v, lw = _t64(values), _t64(log_weights)
    inc = torch.as_tensor(include, dtype=torch.bool) & torch.isfinite(v) & ~torch.isnan(lw)
    lw = torch.where(inc, lw, torch.full_like(lw, -math.inf))
    v = torch.where(inc, v, torch.zeros_like(v))  # left-out samples add nothing (even if inf)
    n = len(v)
    keys = list(contexts) if contexts is not None else [""] * n
    out = torch.zeros(n, dtype=torch.float64)
    has = torch.zeros(n, dtype=torch.bool)
    for key in dict.fromkeys(keys):
        idx = torch.tensor([k == key for k in keys])
        out[idx], has[idx] = _loo_weighted_means(v[idx], lw[idx])
    if not bool(has.all()):
        fb, fb_has = _loo_weighted_means(v, lw)
        out = torch.where(has, out, torch.where(fb_has, fb, torch.zeros_like(fb)))
    return out


class SelfNormalizedBaseline(LeaveOneOutBaseline):
    """Self-normalised importance-weighted baseline (after BRAIn, Pandey et al. ICML 2024,
    arXiv:2402.02479, section 4), in its leave-one-out form: for sample i of context c,

        B_i = sum_{j in c, j != i} w_j r_j / sum_{j in c, j != i} w_j,   w_j = pi_theta(x_j) / q(x_j),

    the self-normalised importance-sampling estimate of E_pi[r] from the *other* samples of the
    context, with r_j = -f'(pi_theta(x_j) / p(x_j)) at the current policy and w_j as the loss
    truncates it (``loss.max_importance_weight``); computed in log space
    (:func:`self_normalized_loo_means`).  Per context for conditional targets; a context
    with a single usable sample falls back to the batch's other samples, then to 0.

    **Relation to BRAIn.**  BRAIn subtracts from the self-normalised DPG gradient
    sum_i alpha_i grad log pi(x_i) the control variate sum_i beta_i grad log pi(x_i),
    beta_i = w_i / sum_j w_j (a self-normalised estimate of E_pi[grad log pi] = 0).  In f-DPG's
    form (1/n) sum_i w_i (r_i - B) grad log pi(x_i) that control variate is the scalar baseline
    B_c = sum_j beta_j r_j over *all* samples of the context, i included (for kl, w_i r_i is
    proportional to alpha_i; BRAIn also divides by (1/n) sum_j w_j r_j, which removes Z).
    That inclusive B_c depends on x_i, so it is biased for finite n: on-policy (w = 1) the
    gradient is exactly (1 - 1/n_c) times the leave-one-out one.  Leaving sample i out gives

        r_i - B_i = (r_i - B_c) / (1 - beta_i),

    and B_i is then a function of the other samples only; they are independent of x_i, so
    E_q[w_i B_i grad log pi(x_i)] = E[B_i] E_pi[grad log pi] = 0: with Z exact and untruncated
    weights the gradient is **exactly unbiased** for any proposal, like leave-one-out (the
    only bias left is the common one of Z_hat and of weight truncation).

    **On-policy** (q = pi_theta: the default proposal, weights synced every step, no overlap,
    temperature 1) w = 1 and B_i is exactly :class:`LeaveOneOutBaseline`'s B_i.  It differs
    where q != pi_theta (``rollout.proposal`` base / fixed / dataset, ``rollout.overlap``,
    ``rollout.sync_every`` > 1, temperature != 1): there the controller first computes log
    pi_theta of the batch without gradient (one extra forward pass per step) so that B is
    centred on E_pi[r] at the current policy, where leave-one-out averages r taken at log q,
    unweighted (centred on E_q[-f'(q/p)]).  Measured in docs/baselines.md.
    """

    kind = "self_normalized"
    needs_policy_log_probs = True

    def value_for(self, contexts: Sequence[str] | None, n: int, rewards=None, include=None,
                  log_weights=None) -> torch.Tensor:
        """B_i (n,) float64 from ``rewards`` r_j (n,) and ``log_weights`` log w_j (n,; None
        means w = 1, i.e. leave-one-out); ``include`` (n,) bool marks the samples that may
        serve as others' baseline (default all; non-finite r or NaN log w are left out).
        ValueError without ``rewards``."""
        if rewards is None:
            raise ValueError("SelfNormalizedBaseline.value_for needs this batch's pseudo-rewards (rewards=)")
        inc = torch.ones(n, dtype=torch.bool) if include is None else torch.as_tensor(include, dtype=torch.bool)
        lw = torch.zeros(n, dtype=torch.float64) if log_weights is None else _t64(log_weights)
        if len(lw) != n or len(_t64(rewards)) != n:
            raise ValueError(f"SelfNormalizedBaseline.value_for: rewards and log_weights need shape ({n},), "
                             f"got {tuple(_t64(rewards).shape)} and {tuple(lw.shape)}")
        return self_normalized_loo_means(rewards, lw, inc, contexts)


BASELINES = ("moving", "leave_one_out", "self_normalized", "none")


def canonical_baseline(kind) -> str:
    """'moving' | 'leave_one_out' | 'self_normalized' | 'none' from the config value; the
    booleans of older configs (true / false) mean 'moving' / 'none'.  ValueError for anything else."""
    if isinstance(kind, bool):
        return "moving" if kind else "none"
    key = str(kind).strip().lower()
    key = {"true": "moving", "false": "none"}.get(key, key)
    if key not in BASELINES:
        raise ValueError(f"loss.baseline: unknown baseline {kind!r}; use moving, leave_one_out, self_normalized "
                         f"or none (true/false from older configs mean moving/none)")
    return key


def make_baseline(kind, momentum: float = 0.9):
    """The baseline object for ``loss.baseline``: all share ``value_for(contexts, n, rewards,
    include, log_weights) -> B`` (n,), ``update(rewards, weights, contexts)``, ``value`` (for
    the logs), ``needs_policy_log_probs`` and ``state_dict`` / ``load_state_dict``."""
    kind = canonical_baseline(kind)
    if kind == "moving":
        return MovingBaseline(momentum)
    if kind == "leave_one_out":
        return LeaveOneOutBaseline()
    if kind == "self_normalized":
        return SelfNormalizedBaseline()
    return NoBaseline()


def _xlogy_weighted(log_w: torch.Tensor, log_ratio: torch.Tensor) -> torch.Tensor:
    """exp(log_w) * log_ratio with 0 * (+-inf) := 0 (terms where the weight is zero)."""
    out = torch.exp(log_w) * log_ratio
    return torch.where(log_w == -math.inf, torch.zeros_like(out), out)


# An importance-sampled estimate whose Kish effective sample size is below this is flagged
# as untrustworthy ('?' in the progress bar and the summary).  Below ~30 effective samples
# the normal approximation behind "estimate +- 2 SE" fails and the sample variance of
# heavy-tailed weights is itself badly underestimated (docs/design.md, "Metrics").
MIN_ESS = 30.0


def kish_ess(log_w) -> float:
    """Kish effective sample size (sum w)^2 / sum w^2 of weights given as log w (-inf = 0)."""
    lw = _t64(log_w)
    lw = lw[lw > -math.inf]
    if len(lw) == 0:
        return 0.0
    return math.exp(2 * torch.logsumexp(lw, 0).item() - torch.logsumexp(2 * lw, 0).item())


# kl_pi_a_k3 = kl_pi_a + (mean a/q - 1) - (mean pi/q - 1): k3 is off by about (a_mass - 1)
# nats when the samples miss (or over-weight) regions where a has mass; flagged beyond this.
MAX_MASS_ERROR = 0.1


# The estimates on the pool of kl_p_pi_base are also flagged when the fixed base batch has
# fewer samples than this.  Their standard error was checked for coverage on the hardest exact
# task (configs/toy.yaml, weights P/a spanning e^8; benchmarks/se_coverage.py, table in
# docs/estimators.md): with 64-1024 base samples 21-41% of the estimates lay more than 3 SE
# from the exact value, at 4096 3.7%, at 16384 1.3% (0.3% if calibrated).  The ESS cannot
# show it: a batch that missed the rare heavy-weight sequences has *more even* weights.
MIN_BASE_SAMPLES = 4096
BASE_POOL_ESTIMATES = ("kl_p_pi_base", "log_z_base", "tv_p_pi_base", "js_p_pi_base", "divergence_base")


def ess_too_small(ess: float) -> bool:
    """ESS < MIN_ESS (NaN counts as too small)."""
    return not ess >= MIN_ESS


def untrusted(m: dict, key: str) -> bool:
    """The flagging rule for estimate ``key`` of a metrics row ``m`` (docs/design.md, "Metrics"):
    its ESS is below :data:`MIN_ESS`; for kl_pi_a_k3 also |kl_pi_a_k3_a_mass - 1| >
    :data:`MAX_MASS_ERROR` (its bias is about that many nats); for the estimates on the base
    pool (:data:`BASE_POOL_ESTIMATES`) also a base batch (``m["base_samples"]``) smaller than
    :data:`MIN_BASE_SAMPLES`."""
    ess = m.get(f"{key}_ess")
    if ess is not None and ess_too_small(ess):
        return True
    n_base = m.get("base_samples") if key in BASE_POOL_ESTIMATES else None
    if n_base is not None and n_base < MIN_BASE_SAMPLES:
        return True
    mass = m.get("kl_pi_a_k3_a_mass") if key == "kl_pi_a_k3" else None
    return mass is not None and not abs(mass - 1.0) <= MAX_MASS_ERROR


def _plain(terms: torch.Tensor, dlogz: torch.Tensor | None, log_Z_se: torch.Tensor | None,
           groups: list[torch.Tensor] | None) -> tuple[float, float]:
    """Mean of i.i.d. terms and its standard error sd/sqrt(n), plus the error of the log Z_hat
    plugged in: SE^2 = var(terms)/n + sum_c (d mean / d log Z_c)^2 SE(log Z_c)^2 (delta method;
    the covariance from the current batch's share in the running Z_hat is neglected)."""
    n = len(terms)
    mean = terms.mean().item() if n else math.nan
    if not math.isfinite(mean):
        return mean, math.nan
    var = terms.var().item() / n if n > 1 else math.nan
    if dlogz is not None and log_Z_se is not None and groups:
        for idx in groups:
            g = dlogz[idx].sum().item() / n
            se_c = log_Z_se[idx][0].item()
            if g != 0.0:
                var += g * g * se_c * se_c  # NaN (Z_hat's SE unknown) makes the SE NaN
    return mean, math.sqrt(var) if var >= 0 else math.nan


def is_metrics(log_P, log_Z, log_pi, log_q, log_a=None, divergence: Divergence | None = None,
               log_Z_se=None, contexts: Sequence[str] | None = None, p_has_zeros: bool = False) -> dict:
    """Importance-sampled divergences between p = P/Z and pi from n samples x ~ q, each with
    its standard error (``<name>_se``) and Kish effective sample size (``<name>_ess``).

    All inputs are per-sample log densities (shape (n,), nats); ``log_Z`` (the run's
    log Z_hat, treated as the normaliser) and ``log_Z_se`` (its standard error) are scalars or
    per-sample tensors; ``contexts`` groups samples that share one Z_c.  With rho = p/q and
    v = pi/q, each estimate is a *plain* (not self-normalised) importance-sampling mean
    (1/n) sum_i t_i of these terms:

      kl_p_pi    t = rho log(p/pi)                                  KL(p || pi)
      tv_p_pi    t = 1/2 |rho - v|                                  TV(p, pi)
      js_p_pi    t = 1/2 rho log(p/m) + 1/2 v log(pi/m), m=(p+pi)/2  JS(p, pi)
      divergence t = rho f(pi/p) if p > 0, v f*(0) if p = 0          D_f(pi || p) (times report_scale)
      kl_pi_a    t = v log(pi/a)                                    KL(pi || a)
      kl_pi_a_k3 t = v [(a/pi - 1) - log(a/pi)]  (>= 0 per sample)  KL(pi || a), never negative

    ``divergence`` implements D_f(pi||p) = sum_{p>0} p f(pi/p) + pi(p=0) f*(0) with
    f*(0) = lim_{t->inf} f(t)/t (:attr:`Divergence.f_star_zero`): the mass of pi where p = 0
    counts.  Where f*(0) = +inf (rkl, chi2, alpha > 1) one sample with p = 0 < pi makes the
    estimate +inf, which is then certain rather than estimated: its SE is reported as NaN.
    ``p_has_zeros``: P(x) = 0 is known to happen (a sample of the run, e.g. of the base batch,
    had it); a softmax policy gives every x pi(x) > 0, so D_f = +inf for those divergences
    even when no sample of this batch has P = 0 (once pi concentrates on p's support, none
    will, and the sample mean would read finite).

    ``kl_pi_a_k3_a_mass`` = (1/n) sum_i a/q is the share of a's mass that the samples reach
    (its expectation is 1 for a softmax proposal).  k3 = plain + (that - 1) - (mean v - 1):
    when pi has moved off regions where a has mass, the samples miss them, the a-mass reads
    below 1 and k3 is too low by about the shortfall, with an SE that does not show it
    (flagged by :func:`untrusted`).  The metrics of p from policy samples have the same blind
    spot (p's mass where pi no longer samples) and no such check: use kl_p_pi_base.

    SE: sd(t)/sqrt(n) for the i.i.d. mean, plus, for the metrics that depend on Z, the
    delta-method term (d estimate / d log Z_c)^2 SE(log Z_c)^2 for Z_hat's own error.
    ESS: Kish (sum w)^2 / sum w^2 of w = P/q for the metrics of p (kl_p_pi, tv_p_pi, js_p_pi,
    divergence: the heavy-tailed weights; v = pi/q is ~1 on-policy), of w = pi/q for kl_pi_a,
    and of w = a/q for kl_pi_a_k3 (its heavy-tailed term: far from a, a/pi is huge where pi is
    small and rarely sampled, and k3 then reads low with a deceptively small SE).  Below
    :data:`MIN_ESS` an estimate is not to be trusted.

    Samples whose log Z is -inf (a context with Z_hat = 0, where p is undefined) are left out;
    if that leaves none, every value but kl_pi_a(_k3) (which do not involve p) is NaN.
    Returns floats.
    """
    log_pi, log_q = _t64(log_pi), _t64(log_q)
    out = {}
    log_v_all = log_pi - log_q
    if log_a is not None:  # does not involve p: every sample counts
        la = _t64(log_a)
        plain = _xlogy_weighted(log_v_all, log_pi - la)
        k3 = torch.where(log_v_all == -math.inf, torch.zeros_like(plain),
                         (torch.exp(la - log_q) - torch.exp(log_v_all) + plain).clamp_min(0.0))
        # k3's heavy part is a/q (an importance-sampling estimate of sum a = 1 under q): far from
        # a, a/pi is huge where pi is small and rarely sampled, so k3 is then typically too low
        # while its sample SE looks fine.  The Kish ESS of a/q shows it only when such a sample
        # was drawn; the a-mass check (kl_pi_a_k3_a_mass, see untrusted) also when none was.
        for name, terms, ess in (("kl_pi_a", plain, kish_ess(log_v_all)), ("kl_pi_a_k3", k3, kish_ess(la - log_q))):
            out[name], out[f"{name}_se"] = _plain(terms, None, None, None)
            out[f"{name}_ess"] = ess
        out["kl_pi_a_k3_a_mass"] = torch.exp(la - log_q).mean().item() if len(la) else math.nan
    n_all = len(log_pi)
    log_Z = torch.broadcast_to(_t64(log_Z), log_pi.shape)
    keep = torch.isfinite(log_Z)
    keys = [k for k, kp in zip(contexts if contexts is not None else [""] * n_all, keep.tolist()) if kp]
    log_pi, log_q, log_Z_k = log_pi[keep], log_q[keep], log_Z[keep]
    # No SE given for log Z (an exact Z): the SEs are conditional on log Z.
    zse = torch.broadcast_to(_t64(log_Z_se), keep.shape)[keep] if log_Z_se is not None else None
    groups = [torch.tensor([k == key for k in keys]) for key in dict.fromkeys(keys)]
    log_P = _t64(log_P)[keep]
    log_p = log_P - log_Z_k
    log_rho, log_v = log_p - log_q, log_pi - log_q
    rho, v = torch.exp(log_rho), torch.exp(log_v)
    log_m = torch.logaddexp(log_p, log_pi) - math.log(2.0)
    ess_rho = kish_ess(log_rho)

    kl = _xlogy_weighted(log_rho, log_p - log_pi)
    js_p = _xlogy_weighted(log_rho, log_p - log_m)
    tv = 0.5 * (rho - v).abs()
    js = 0.5 * (js_p + _xlogy_weighted(log_v, log_pi - log_m))
    specs = [("kl_p_pi", kl, -(kl + rho)), ("tv_p_pi", tv, -0.5 * torch.sign(rho - v) * rho),
             ("js_p_pi", js, -0.5 * js_p)]
    if divergence is not None:
        pos = log_P > -math.inf
        u = torch.where(pos, log_pi - log_p, torch.zeros_like(log_p))
        f, r = divergence.f(u), divergence.pseudo_reward(u)
        if math.isfinite(divergence.f_star_zero):
            at_zero = v * divergence.f_star_zero
        elif p_has_zeros:
            at_zero = torch.full_like(v, math.inf)  # pi(p = 0) > 0 for a softmax policy
        else:
            at_zero = torch.where(v > 0, torch.full_like(v, math.inf), torch.zeros_like(v))
        terms = torch.where(pos, torch.where(rho > 0, rho * f, torch.zeros_like(f)), at_zero)
        dlogz = torch.where(pos & (rho > 0), -(rho * f + v * r), torch.zeros_like(f))
        if p_has_zeros and not math.isfinite(divergence.f_star_zero):
            terms = torch.full_like(terms, math.inf)
        specs.append(("divergence", divergence.report_scale * terms, divergence.report_scale * dlogz))
    for name, terms, dlogz in specs:
        if len(terms) == 0:
            out[name], out[f"{name}_se"], out[f"{name}_ess"] = math.nan, math.nan, 0.0
            continue
        out[name], out[f"{name}_se"] = _plain(terms, dlogz, zse, groups)
        out[f"{name}_ess"] = ess_rho
    return out


def mis_kl_p_pi(log_P, log_pi, log_a, from_policy, contexts: Sequence[str] | None = None) -> dict:
    """KL(p || pi) and log Z by multiple importance sampling (balance heuristic) over a pool of
    samples of the base model a and of the current policy pi, self-normalised per context.

    Inputs are per-sample, shape (N,): log P(x), log pi(x) (the current policy), log a(x) (the
    base model), ``from_policy`` (bool: drawn from pi, else from a) and ``contexts``.  For the
    context c with n_a samples of a and n_pi samples of pi (N_c = n_a + n_pi), every sample is
    weighted against the mixture proposal

        q_c(x) = (n_a a(x|c) + n_pi pi(x|c)) / N_c,     w_i = P(x_i) / q_c(x_i),

        Z_hat_c = (1/N_c) sum_i w_i,
        KL_c    = sum_i wbar_i (log P(x_i) - log pi(x_i)) - log Z_hat_c,   wbar_i = w_i / sum_j w_j

    (Veach and Guibas 1995; the balance heuristic is unbiased for Z_c with fixed counts, and
    its weights are bounded by (N_c / n_a) P/a, so they are never much heavier than base-only
    ones).  SE: delta method for the self-normalised ratio, with the influence values
    psi_i = (w_i / mean w)(h_i - R - 1) + 1 (KL_c; h = log P - log pi, R = sum wbar h) and
    (w_i - mean w) / mean w (log Z_c), their variance taken within each stratum (samples of a,
    samples of pi): SE^2 = sum_s n_s var_s(psi) / N_c^2.  Contexts are averaged uniformly
    (SE^2 = sum_c SE_c^2 / C^2); a context none of whose samples has P > 0 is left out
    (``contexts`` counts those used).  ESS is the sum over contexts of the Kish ESS of w.

    Returns {"kl_p_pi", "kl_p_pi_se", "kl_p_pi_ess", "log_z", "log_z_se", "log_z_ess", "contexts"} (nats).
    """
    log_P, log_pi, log_a = _t64(log_P), _t64(log_pi), _t64(log_a)
    from_policy = torch.as_tensor(from_policy, dtype=torch.bool)
    keys = list(contexts) if contexts is not None else [""] * len(log_P)
    kls, kl_vars, lzs, lz_vars, ess = [], [], [], [], 0.0
    for key in dict.fromkeys(keys):
        idx = torch.tensor([k == key for k in keys])
        lP, lpi, la, pol = log_P[idx], log_pi[idx], log_a[idx], from_policy[idx]
        n, n_pi = len(lP), int(pol.sum())
        n_a = n - n_pi
        if not bool((lP > -math.inf).any()):
            continue
        parts = []
        if n_a:
            parts.append(math.log(n_a) + la)
        if n_pi:
            parts.append(math.log(n_pi) + lpi)
        log_q = (torch.logaddexp(*parts) if len(parts) == 2 else parts[0]) - math.log(n)
        log_w = lP - log_q
        log_zc = (torch.logsumexp(log_w, 0) - math.log(n)).item()
        w_rel = torch.exp(log_w - log_zc)             # w_i / mean w
        wbar = torch.softmax(log_w, 0)
        h = lP - lpi
        wh = torch.where(wbar > 0, wbar * h, torch.zeros_like(h))
        R = wh.sum().item()
        psi_kl = torch.where(w_rel > 0, w_rel * (h - R - 1.0), torch.zeros_like(h)) + 1.0
        psi_z = w_rel - 1.0
        var_kl = var_z = 0.0
        for s in (pol, ~pol):
            m = int(s.sum())
            if m > 1:
                var_kl += m * psi_kl[s].var().item()
                var_z += m * psi_z[s].var().item()
        kls.append(R - log_zc)
        kl_vars.append(var_kl / n ** 2)
        lzs.append(log_zc)
        lz_vars.append(var_z / n ** 2)
        ess += kish_ess(log_w)
    C = len(kls)
    if C == 0:
        return {"kl_p_pi": math.nan, "kl_p_pi_se": math.nan, "kl_p_pi_ess": 0.0, "log_z": -math.inf,
                "log_z_se": math.nan, "log_z_ess": 0.0, "contexts": 0}
    return {"kl_p_pi": sum(kls) / C, "kl_p_pi_se": math.sqrt(sum(kl_vars)) / C, "kl_p_pi_ess": ess,
            "log_z": sum(lzs) / C, "log_z_se": math.sqrt(sum(lz_vars)) / C, "log_z_ess": ess, "contexts": C}


def _mixture_log_q(la: torch.Tensor, lpi: torch.Tensor, pol: torch.Tensor) -> torch.Tensor:
    n, n_pi = len(la), int(pol.sum())
    parts = ([math.log(n - n_pi) + la] if n > n_pi else []) + ([math.log(n_pi) + lpi] if n_pi else [])
    return (torch.logaddexp(*parts) if len(parts) == 2 else parts[0]) - math.log(n)


def mis_divergence(log_P, log_pi, log_a, from_policy, divergence: Divergence, contexts: Sequence[str] | None = None,
                   p_has_zeros: bool = False) -> dict:
    """D_f(pi || p) (times report_scale) by the same pooled, self-normalised multiple
    importance sampling as :func:`mis_kl_p_pi` (balance-heuristic mixture of a and pi per context):

        D_c = sum_{P_i > 0} wbar_i f(pi_i Z_hat_c / P_i) + f*(0) (1/N_c) sum_{P_i = 0} pi_i / q_c(x_i)

    (the second term estimates pi(p = 0); +inf where f*(0) = +inf and P = 0 occurs, see
    :func:`is_metrics`).  SE by the delta method, influence values
    psi_i = (w_i f_i / w̄ - T) + (G' - T)(w_i / w̄ - 1) + f*(0)(v_i 1{P_i = 0} - M0), with
    T = mean(w f)/w̄, G' = -mean(v r) (r = -f' the pseudo-reward, v = pi/q_c) and M0 = mean(v 1{P=0}),
    variance within strata as in :func:`mis_kl_p_pi`; for kl this is exactly its KL estimate.
    Contexts averaged uniformly.  Returns {"value", "se", "ess"}.
    """
    log_P, log_pi, log_a = _t64(log_P), _t64(log_pi), _t64(log_a)
    from_policy = torch.as_tensor(from_policy, dtype=torch.bool)
    keys = list(contexts) if contexts is not None else [""] * len(log_P)
    fz = divergence.f_star_zero
    vals, vars_, ess = [], [], 0.0
    for key in dict.fromkeys(keys):
        idx = torch.tensor([k == key for k in keys])
        lP, lpi, la, pol = log_P[idx], log_pi[idx], log_a[idx], from_policy[idx]
        pos = lP > -math.inf
        if not bool(pos.any()):
            continue
        n = len(lP)
        log_q = _mixture_log_q(la, lpi, pol)
        log_w = lP - log_q
        log_zc = (torch.logsumexp(log_w, 0) - math.log(n)).item()
        w_rel = torch.exp(log_w - log_zc)
        v = torch.exp(lpi - log_q)
        u = torch.where(pos, lpi + log_zc - lP, torch.zeros_like(lP))
        f = torch.where(pos, divergence.f(u), torch.zeros_like(u))
        r = torch.where(pos, divergence.pseudo_reward(u), torch.zeros_like(u))
        wf = torch.where(w_rel > 0, w_rel * f, torch.zeros_like(f))
        T = wf.mean().item()
        G1 = -(v * r).mean().item()
        zero = (~pos).to(torch.float64) * v
        psi = (wf - T) + (G1 - T) * (w_rel - 1.0)
        value = T
        if bool((~pos).any()) or p_has_zeros:
            if math.isfinite(fz):
                M0 = zero.mean().item()
                value += fz * M0
                psi = psi + fz * (zero - M0)
            else:
                value = math.inf
        var = 0.0
        for s in (pol, ~pol):
            m = int(s.sum())
            if m > 1:
                var += m * psi[s].var().item()
        vals.append(value)
        vars_.append(var / n ** 2 if math.isfinite(value) else math.nan)
        ess += kish_ess(log_w)
    C = len(vals)
    if C == 0:
        return {"value": math.nan, "se": math.nan, "ess": 0.0}
    k = divergence.report_scale
    value = k * sum(vals) / C
    se = k * math.sqrt(sum(vars_)) / C if math.isfinite(value) else math.nan
    return {"value": value, "se": se, "ess": ess}
