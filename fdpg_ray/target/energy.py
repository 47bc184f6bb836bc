"""Energy-based targets P(x), built from the base model a(x), composable, in log space.

    log P(x) = log a(x)                      (base model, frozen)
             + sum_j log b_j(x)              pointwise constraints, b in [0, 1]; b = 0 -> -inf
             + sum_k lambda_k phi_k(x)       distributional constraints (GDC), lambda fitted
             + sum_m r_m(x) / beta_m         RLHF-like rewards

A conditional target (prompts) uses the same formula with a(x|c), b(x, c) and one Z_c
per context c; that bookkeeping lives in :mod:`fdpg_ray.objective.estimators`.

A :class:`Constraint` names a scorer (see :mod:`fdpg_ray.target.scorers`) by ``name``; the
scorer actors compute ``features[name]`` for every sample and :meth:`Target.log_score`
turns features and log a into log P.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fdpg_ray.errors import UserInputError


class TargetError(UserInputError):
    """A target that cannot be built or fitted; the message is one line naming the fix."""


@dataclass
class Constraint:
    """One term of log P(x): a pointwise b(x), a distributional lambda phi(x) or a reward r(x)/beta.

    ``name`` is the scorer's key in the features dict.  Raises TargetError (one line) for an
    unknown ``kind``, a distributional constraint with neither ``moment`` nor ``lam``, or a
    reward constraint without beta > 0.
    """
    kind: str                 # "pointwise" | "distributional" | "reward"
    name: str                 # the scorer's name == key in the features dict
    moment: float | None = None   # distributional: the target E_p[phi]
    beta: float | None = None     # reward: temperature
    lam: float | None = None      # distributional: fitted (or given) coefficient

    def __post_init__(self):
        if self.kind not in ("pointwise", "distributional", "reward"):
            raise TargetError(f"target.constraints.kind: unknown kind '{self.kind}'; use pointwise, distributional or reward")
        if self.kind == "distributional" and self.moment is None and self.lam is None:
            raise TargetError(f"target.constraints[{self.name}].moment: a distributional constraint needs 'moment' (or a fixed 'lam')")
        if self.kind == "reward" and (self.beta is None or not self.beta > 0):
            raise TargetError(f"target.constraints[{self.name}].beta: a reward constraint needs beta > 0, got {self.beta}")


@dataclass
class Target:
    """The energy-based target log P(x) = log a(x) + sum of its constraints' terms (module docstring).

    ``conditional``: one Z_c per prompt c (the prompts file is set).
    """
    constraints: list[Constraint] = field(default_factory=list)
    conditional: bool = False

    def log_score(self, log_a, features: dict[str, np.ndarray | torch.Tensor]) -> torch.Tensor:
        """log P(x) for a batch: float64 tensor, -inf where a pointwise b(x) = 0."""
        out = torch.as_tensor(log_a, dtype=torch.float64).clone()
        for c in self.constraints:
            out += self._term(c, features)
        return out

    def log_score_without_distributional(self, log_a, features) -> torch.Tensor:
        """log P_0(x): :meth:`log_score` without the lambda phi terms ((n,) float64, nats).

        The reference measure whose importance weights :meth:`fit_lambdas` reweights; raises
        TargetError as :meth:`log_score` does.
        """
        out = torch.as_tensor(log_a, dtype=torch.float64).clone()
        for c in self.constraints:
            if c.kind != "distributional":
                out += self._term(c, features)
        return out

    @staticmethod
    def _term(c: Constraint, features) -> torch.Tensor:
        if c.name not in features:
            raise TargetError(f"target.constraints[{c.name}]: no feature '{c.name}' was scored; check the scorer names")
        v = torch.as_tensor(np.asarray(features[c.name]), dtype=torch.float64)
        if c.kind == "pointwise":
            if (v < 0).any() or (v > 1).any():
                raise TargetError(f"target.constraints[{c.name}]: pointwise scores must lie in [0, 1]; "
                                  f"use kind 'reward' or 'distributional' for other ranges")
            return torch.log(v)  # log 0 = -inf: p(x) = 0 deliberately
        if c.kind == "distributional":
            if c.lam is None:
                raise TargetError(f"target.constraints[{c.name}].lam: not fitted yet; call fit_lambdas first")
            return c.lam * v
        return v / c.beta

    @property
    def distributional(self) -> list[Constraint]:
        """The distributional (GDC) constraints, in order."""
        return [c for c in self.constraints if c.kind == "distributional"]

    def fit_lambdas(self, log_a, log_q, features, *, max_iter: int = 100, tol: float = 1e-4) -> dict[str, float]:
        """Fit lambda so that E_p[phi] = moment, by self-normalised importance sampling.

        Samples x_i ~ q with weights w_i = P_0(x_i)/q(x_i), P_0 the target without the
        distributional terms; p_lambda(x_i) is proportional to w_i exp(lambda . phi_i).
        Minimises the convex dual log sum_i w_i exp(lambda . phi_i) - lambda . moment by
        damped Newton steps.  Constraints with a fixed ``lam`` (and no moment) are kept.
        Returns the achieved moments; raises TargetError when the moments cannot be reached.
        """
        free = [c for c in self.distributional if c.moment is not None]
        if not free:
            return {}
        log_w = self.log_score_without_distributional(log_a, features) - torch.as_tensor(log_q, dtype=torch.float64)
        for c in self.distributional:
            if c.moment is None:
                log_w = log_w + c.lam * torch.as_tensor(np.asarray(features[c.name]), dtype=torch.float64)
        keep = torch.isfinite(log_w)
        if not keep.any():
            raise TargetError("target: no sample has P(x) > 0, so the moments cannot be fitted (Z_hat = 0); "
                              "use more samples (target.fit_samples) or a softer constraint")
        log_w = log_w[keep]
        phi = torch.stack([torch.as_tensor(np.asarray(features[c.name]), dtype=torch.float64)[keep] for c in free], 1)
        mu = torch.tensor([c.moment for c in free], dtype=torch.float64)
        for j, c in enumerate(free):
            lo, hi = phi[:, j].min().item(), phi[:, j].max().item()
            if not lo < c.moment < hi:
                raise TargetError(f"target.constraints[{c.name}].moment: {c.moment} cannot be reached: the samples' "
                                  f"{c.name} lies in [{lo:g}, {hi:g}]; use a moment strictly inside, or more samples "
                                  f"(target.fit_samples)")
        lam = torch.zeros(len(free), dtype=torch.float64)

        def dual(l):
            return torch.logsumexp(log_w + phi @ l, 0) - l @ mu

        for _ in range(max_iter):
            weights = torch.softmax(log_w + phi @ lam, 0)
            mean = weights @ phi
            grad = mean - mu
            if grad.abs().max() < tol:
                break
            centred = phi - mean
            hess = (centred * weights[:, None]).T @ centred + 1e-9 * torch.eye(len(free), dtype=torch.float64)
            step = torch.linalg.solve(hess, grad)
            t, f0 = 1.0, dual(lam)
            while dual(lam - t * step) > f0 - 1e-4 * t * (grad @ step) and t > 1e-8:
                t *= 0.5
            lam = lam - t * step
            if lam.abs().max() > 50:
                break
        weights = torch.softmax(log_w + phi @ lam, 0)
        achieved = weights @ phi
        if (achieved - mu).abs().max() > 1e-2 or not torch.isfinite(lam).all():
            names = ", ".join(c.name for c in free)
            raise TargetError(f"target.constraints[{names}].moment: lambda fitting diverged (achieved "
                              f"{achieved.tolist()} for {mu.tolist()}); use reachable moments or more samples (target.fit_samples)")
        for c, l in zip(free, lam.tolist()):
            c.lam = l
        return {c.name: float(a) for c, a in zip(free, achieved.tolist())}

    def lambdas(self) -> dict[str, float]:
        """{name: lambda} of the distributional constraints (None where not fitted yet)."""
        return {c.name: c.lam for c in self.distributional}
