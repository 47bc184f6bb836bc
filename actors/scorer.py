"""Scorer actors: log a(x) from the frozen base model, the features b/phi/r, and log P(x).

Each actor loads the base model and its scorers once.  ``ScorerGroup`` splits a batch's
rows over the replicas and concatenates the results in order.
"""

from __future__ import annotations

import os

import numpy as np
import ray
import torch


@ray.remote
class ScorerActor:
    """Ray actor holding one :class:`~fdpg_ray.target.scoring.TargetScorer`: the frozen base model a, scorers and target."""
    def __init__(self, cfg: dict, run_dir: str | None = None):
        """The run's target scorer; with ``run_dir``, this process's output goes to
        RUN_DIR/logs/ (fdpg_ray.console)."""
        from fdpg_ray.console import send_output_to_log

        send_output_to_log(run_dir, "scorer")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from actors.rollout import _config
        from fdpg_ray.target.scoring import TargetScorer

        self.scorer = TargetScorer(_config(cfg))

    def ready(self) -> list[str]:
        """The scorers' names, once the base model and scorers are loaded (callers ``ray.get`` it to wait)."""
        return list(self.scorer.scorers)

    def score(self, batch: dict) -> dict:
        """{log_a (n,) nats, features {name: (n,)}, log_P (n,) nats} for a rollout batch.

        See :meth:`~fdpg_ray.target.scoring.TargetScorer.score`.
        """
        return self.scorer.score(batch)

    def fit(self, batch: dict) -> dict:
        """Fit the distributional lambdas on ``batch`` (:meth:`~fdpg_ray.target.scoring.TargetScorer.fit`): {"lambdas", "moments"}."""
        return self.scorer.fit(batch)

    def set_lambdas(self, lambdas: dict) -> None:
        """Set the distributional lambdas ``{name: lambda}``."""
        self.scorer.set_lambdas(lambdas)


_ROW_KEYS = ("prompt_ids", "completion_ids", "texts", "contexts", "log_q")


class ScorerGroup:
    """The controller's scorer, backed by one or more ScorerActor replicas."""

    def __init__(self, actors: list):
        self.actors = actors

    def score(self, batch: dict) -> dict:
        """Score a batch split into contiguous row ranges, one per actor; concatenated back in row order.

        Returns {log_a (n,) float64 nats, log_P (n,) float64 nats, features {name: (n,) array}}.
        """
        n, A = len(batch["texts"]), len(self.actors)
        bounds = [round(k * n / A) for k in range(A + 1)]
        parts = []
        for k in range(A):
            lo, hi = bounds[k], bounds[k + 1]
            if hi > lo:
                parts.append(self.actors[k].score.remote({key: batch[key][lo:hi] for key in _ROW_KEYS}))
        results = ray.get(parts)
        return {
            "log_a": torch.cat([r["log_a"] for r in results]),
            "log_P": torch.cat([r["log_P"] for r in results]),
            "features": {name: np.concatenate([r["features"][name] for r in results]) for name in results[0]["features"]},
        }

    def fit(self, batch: dict) -> dict:
        """Fit the lambdas on the first actor, then set them on every actor; returns {"lambdas", "moments"}."""
        fit = ray.get(self.actors[0].fit.remote({key: batch[key] for key in _ROW_KEYS}))
        self.set_lambdas(fit["lambdas"])
        return fit

    def set_lambdas(self, lambdas: dict) -> None:
        """Set the distributional lambdas ``{name: lambda}`` on every actor (blocking)."""
        ray.get([a.set_lambdas.remote(lambdas) for a in self.actors])
