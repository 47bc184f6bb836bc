"""Quasi-rejection sampling (QRS): approximate samples of the target p = P / Z itself.

Eikema, Kruszewski, Dance, Elsahar, Dymetman (2022), "An approximate sampler for
energy-based models with divergence diagnostics" (TMLR).  No Ray import: the CLI
(:func:`fdpg_ray.cli.cmd_qrs`) feeds it proposals from the rollout actors (or the local
sampler) and log P from the scorer actors (or the local scorer).

Symbols: P(x) the unnormalised target (log_P, nats), q(x) the proposal (a trained policy
or the base model; log_q, nats, summed over the generated tokens), beta > 0 the QRS
parameter (same units as P/q; log_beta in nats), w(x) = P(x) / q(x) the importance weight.

    accept x ~ q with probability   a_beta(x) = min(1, P(x) / (beta q(x)))          (1)
    accepted samples follow         p_beta(x) = min(q(x), P(x) / beta) / Z_beta      (2)
    acceptance rate                 Z_beta = sum_x min(q(x), P(x)/beta) = E_q[a_beta] (3)

p_beta = p exactly once beta >= max_x P(x)/q(x); as beta grows TV(p_beta, p) and
KL(p || p_beta) fall monotonically while the acceptance rate falls (about as Z / beta).

Diagnostics from n proposal draws x_i ~ q (w_i = P(x_i)/q(x_i), a_i = min(1, w_i/beta),
Z_hat = mean w_i, Z_beta_hat = mean a_i; both unbiased), by importance sampling:

    TV(p_beta, p)  = 1/2 E_q| a/Z_beta - w/Z |
                  ~= 1/2 mean_i | a_i/Z_beta_hat - w_i/Z_hat |                           (4)
    KL(p || p_beta) = E_q[ (w/Z) log( (w/Z) / (a/Z_beta) ) ]
                  ~= mean_i (w_i/Z_hat) ( max(log w_i, log beta) + log Z_beta_hat - log Z_hat )  (5)

(log(w/a) = max(log w, log beta); terms with w_i = 0 are 0).  Their standard errors come
from the delta method (the influence function of each ratio estimator, normalisers
included), the effective sample size of the weights w is (sum w)^2 / sum w^2.  Everything
is computed in log space; only ratios w_i/Z_hat <= n and a_i/Z_beta_hat <= n are
exponentiated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fdpg_ray.errors import UserInputError

# The first key of a QRS seed path: derive_seed(run.seed, QRS_STREAM, k) with k = 0 for the
# pilot draws of --beta auto, 1 for the proposals, 2 for the acceptance uniforms.  Far from
# the training streams of fdpg_ray/seeding.py (1..6) so that none is shared.
QRS_STREAM = 101
PILOT, PROPOSALS, UNIFORMS = 0, 1, 2


class QRSError(UserInputError):
    """Bad QRS input; one line naming the flag and the fix."""


def _f64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def log_acceptance(log_P, log_q, log_beta: float) -> torch.Tensor:
    """log a_beta(x) = min(0, log P - log beta - log q), eq. (1); shape (n,), nats; -inf where P = 0."""
    log_w = _f64(log_P) - _f64(log_q)
    return torch.clamp(log_w - log_beta, max=0.0)


def accept(log_P, log_q, log_beta: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool mask (n,): x_i is accepted when u_i < a_beta(x_i), u_i ~ U(0, 1) (eq. 1)."""
    log_a = log_acceptance(log_P, log_q, log_beta)
    u = torch.rand(log_a.shape, dtype=torch.float64, generator=generator)
    return torch.log(u) < log_a


def _log_mean_exp(x: torch.Tensor) -> float:
    return (torch.logsumexp(x, 0) - math.log(x.numel())).item()


@dataclass
class QRSEstimate:
    """Importance-sampling diagnostics of QRS at one beta (eqs. 3-5), each with its SE."""

    beta: float
    log_beta: float
    n: int
    acceptance_rate: float       # Z_beta_hat = mean a_i: the expected acceptance rate, eq. (3)
    acceptance_rate_se: float
    tv: float                    # TV(p_beta, p), eq. (4)
    tv_se: float
    kl: float                    # KL(p || p_beta), nats, eq. (5)
    kl_se: float
    log_z_hat: float             # log Z_hat = log mean w_i (nats)
    log_z_hat_se: float          # delta method: SE(Z_hat) / Z_hat
    ess: float                   # (sum w)^2 / sum w^2 of the weights w = P/q

    def to_dict(self) -> dict:
        """The fields as a plain dict (JSON-ready floats and ints)."""
        return dict(self.__dict__)


def estimate(log_P, log_q, log_beta: float) -> QRSEstimate:
    """Diagnostics of QRS with parameter beta = e^log_beta from proposal draws x_i ~ q.

    Args:
        log_P: (n,) log P(x_i), nats; -inf where P = 0.
        log_q: (n,) log q(x_i) of the proposal that drew x_i, nats, finite.
        log_beta: log beta (nats), finite.
    Returns:
        :class:`QRSEstimate` (eqs. 3-5 of the module docstring).
    Raises:
        QRSError: n < 2, or no draw has P > 0 (Z_hat = 0: p is not seen at all).
    """
    log_P, log_q = _f64(log_P).flatten(), _f64(log_q).flatten()
    n = log_P.numel()
    if n < 2:
        raise QRSError(f"--n: QRS diagnostics need at least 2 proposals, got {n}; draw more")
    log_w = log_P - log_q
    if not bool(torch.isfinite(log_w).any()):
        raise QRSError("--n: no proposal has P(x) > 0, so p is not seen at all; draw more proposals or use a "
                       "proposal closer to the target (a trained policy)")
    log_a = torch.clamp(log_w - log_beta, max=0.0)
    log_z, log_zb = _log_mean_exp(log_w), _log_mean_exp(log_a)
    wt = torch.exp(log_w - log_z)       # w_i / Z_hat  (mean 1)
    at = torch.exp(log_a - log_zb)      # a_i / Z_beta_hat (mean 1)
    sq = math.sqrt(n)

    # eq. (4) and its influence function: psi_i = g_i - TV + dTV/dZb (a_i - Zb) + dTV/dZ (w_i - Z),
    # written with the normalised at, wt (dTV/dZb * Zb = -1/2 mean(s at), dTV/dZ * Z = 1/2 mean(s wt)).
    diff = at - wt
    s = torch.sign(diff)
    g = 0.5 * diff.abs()
    tv = g.mean().item()
    psi_tv = g - tv - 0.5 * (s * at).mean() * (at - 1) + 0.5 * (s * wt).mean() * (wt - 1)

    # eq. (5): k_i = wt_i (max(log w_i, log beta) + log Zb - log Z); dKL/dZ * Z = -(KL + 1), dKL/dZb * Zb = 1.
    pos = torch.isfinite(log_w)
    log_ratio = torch.where(pos, torch.clamp(log_w, min=log_beta) + log_zb - log_z, torch.zeros_like(log_w))
    k = torch.where(pos, wt * log_ratio, torch.zeros_like(wt))
    kl = k.mean().item()
    psi_kl = k - kl - (kl + 1.0) * (wt - 1) + (at - 1)

    a = torch.exp(log_a)
    ess = (wt.sum() ** 2 / (wt ** 2).sum()).item()
    return QRSEstimate(
        beta=math.exp(log_beta), log_beta=float(log_beta), n=n,
        acceptance_rate=math.exp(log_zb), acceptance_rate_se=(a.std() / sq).item(),
        tv=tv, tv_se=(psi_tv.std() / sq).item(), kl=kl, kl_se=(psi_kl.std() / sq).item(),
        log_z_hat=log_z, log_z_hat_se=(wt.std() / sq).item(), ess=ess)


def beta_for_acceptance(log_P, log_q, target: float) -> float:
    """log beta at which the estimated acceptance rate mean_i min(1, w_i/beta) equals ``target``.

    The rate falls continuously from the share of draws with P > 0 (beta <= min w) to 0; above
    beta = max w it is mean(w)/beta (closed form), below, bisection in log beta (80 halvings).
    Raises QRSError when ``target`` is not in (0, share of draws with P > 0).
    """
    log_w = (_f64(log_P) - _f64(log_q)).flatten()
    pos = torch.isfinite(log_w)
    share = pos.double().mean().item()
    if not 0 < target < 1:
        raise QRSError(f"--target-acceptance: must be in (0, 1), got {target}; e.g. 0.1")
    if target >= share:
        raise QRSError(f"--target-acceptance: {target} is not reachable: only {share:.3g} of the pilot proposals "
                       f"have P > 0; ask for less than {share:.3g} or give --beta")
    log_w = log_w[pos]
    n_all = pos.numel()

    def rate(lb: float) -> float:
        return (torch.exp(torch.clamp(log_w - lb, max=0.0)).sum() / n_all).item()

    hi = log_w.max().item()
    if rate(hi) >= target:  # beta >= max w: rate = mean(w) / beta
        return (torch.logsumexp(log_w, 0) - math.log(n_all) - math.log(target)).item()
    lo = log_w.min().item()
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if rate(mid) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def exact(log_P, log_q, log_beta: float) -> dict:
    """Exact QRS quantities by enumeration of the whole space (the toy tasks).

    Args:
        log_P: (N,) log P(x) for every x; log_q: (N,) log q(x) for every x (sums to 1).
    Returns:
        {"exact_acceptance_rate": Z_beta (eq. 3), "exact_tv": TV(p_beta, p),
         "exact_kl": KL(p || p_beta) (nats)}, with p_beta from eq. (2).
    """
    log_P, log_q = _f64(log_P), _f64(log_q)
    log_m = torch.minimum(log_q, log_P - log_beta)     # log min(q, P/beta)
    log_zb = torch.logsumexp(log_m, 0)
    log_pb = log_m - log_zb
    log_p = log_P - torch.logsumexp(log_P, 0)
    tv = 0.5 * (log_pb.exp() - log_p.exp()).abs().sum()
    pos = log_p > -math.inf
    kl = (log_p[pos].exp() * (log_p[pos] - log_pb[pos])).sum()
    return {"exact_acceptance_rate": log_zb.exp().item(), "exact_tv": tv.item(), "exact_kl": kl.item()}


def max_log_ratio(log_P, log_q) -> float:
    """log max_x P(x)/q(x): with log beta at least this, p_beta = p (enumerable spaces)."""
    return (_f64(log_P) - _f64(log_q)).max().item()


def _draw(rollout, scorer, prompt_ids: list[list[int]], contexts: list[str], n: int, seed: int):
    """n proposals through the rollout (actors or local sampler), scored by the scorer(s): one
    :class:`~fdpg_ray.train.batch.ScoredBatch` with log_a, features and log_P filled."""
    from fdpg_ray.train.batch import ScoredBatch

    samples = rollout.collect(rollout.submit(prompt_ids, n, seed))
    batch = ScoredBatch.from_samples(samples, contexts, prompt_ids)
    return batch.set_scores(scorer.score(batch))


def run(rollout, scorer, prompt_ids: list[list[int]], contexts: list[str], *, n: int, run_seed: int,
        beta: float | None = None, target_acceptance: float = 0.1, pilot: int = 1024, exact_fn=None):
    """Draw ``n`` proposals, accept each with probability (1), return (summary, accepted rows).

    ``rollout`` has ``submit(prompt_ids, n, seed)`` / ``collect(handle)`` (the rollout actor
    group or :class:`fdpg_ray.train.local.LocalRollout`); ``scorer`` has ``score(batch)`` (the
    scorer actor group or :class:`fdpg_ray.target.scoring.TargetScorer`).  ``beta=None`` picks beta
    on ``pilot`` separate draws so that the estimated acceptance rate is ``target_acceptance``
    (:func:`beta_for_acceptance`); the proposals themselves are drawn after beta is fixed, so
    the accepted samples follow p_beta (eq. 2) exactly.  ``exact_fn(log_beta) -> dict`` adds
    exact quantities (enumerable tasks).  Seeds: derive_seed(run_seed, QRS_STREAM, k).

    Returns:
        summary: ``acceptance_rate`` (the realised share n_accepted / n) with its binomial SE
        ``acceptance_rate_se``, ``expected_acceptance_rate`` (eq. 3, estimated from the a_i)
        with its SE, ``beta``, ``log_beta``, ``n_proposals``, ``n_accepted``, ``tv``, ``kl``
        (KL(p || p_beta), nats) with SEs, ``ess``, ``log_z_hat``; ``beta_source``.
        rows: one dict per accepted sample (text, context, token ids, log q, log P,
        acceptance probability), in draw order.
    Raises:
        QRSError: bad n, pilot, beta or target acceptance (one line naming the flag).
    """
    from fdpg_ray.seeding import derive_seed

    if n < 2:
        raise QRSError(f"--n: must be >= 2, got {n}; draw at least 2 proposals")
    out: dict = {}
    if beta is None:
        if pilot < 2:
            raise QRSError(f"--pilot: must be >= 2, got {pilot}; give more pilot draws")
        pilot_batch = _draw(rollout, scorer, prompt_ids, contexts, pilot, derive_seed(run_seed, QRS_STREAM, PILOT))
        log_beta = beta_for_acceptance(pilot_batch.log_P, pilot_batch.log_q, target_acceptance)
        out.update({"beta_source": "auto", "target_acceptance": target_acceptance, "pilot": pilot})
    else:
        if not (math.isfinite(beta) and beta > 0):
            raise QRSError(f"--beta: must be a positive number or auto, got {beta}")
        log_beta = math.log(beta)
        out["beta_source"] = "given"
    batch = _draw(rollout, scorer, prompt_ids, contexts, n, derive_seed(run_seed, QRS_STREAM, PROPOSALS))
    log_P, log_q = _f64(batch.log_P), _f64(batch.log_q)
    gen = torch.Generator().manual_seed(derive_seed(run_seed, QRS_STREAM, UNIFORMS))
    mask = accept(log_P, log_q, log_beta, generator=gen)
    est = estimate(log_P, log_q, log_beta)
    k = int(mask.sum())
    rate = k / n
    summary = {"acceptance_rate": rate, "acceptance_rate_se": math.sqrt(rate * (1 - rate) / n),
               "beta": est.beta, "log_beta": est.log_beta, "n_proposals": n, "n_accepted": k}
    e = est.to_dict()
    summary["expected_acceptance_rate"] = e.pop("acceptance_rate")
    summary["expected_acceptance_rate_se"] = e.pop("acceptance_rate_se")
    e.pop("beta"), e.pop("log_beta"), e.pop("n")
    summary.update(e)
    summary.update(out)
    if exact_fn is not None:
        summary.update(exact_fn(log_beta))
    log_a = log_acceptance(log_P, log_q, log_beta)
    rows = [{"text": batch.texts[i], "context": batch.contexts[i], "token_ids": list(batch.completion_ids[i]),
             "log_q": log_q[i].item(), "log_P": log_P[i].item(), "acceptance_probability": math.exp(log_a[i].item())}
            for i in torch.nonzero(mask).flatten().tolist()]
    return summary, rows
