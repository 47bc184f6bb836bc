"""Scorer actors: log a(x) from the frozen base model, the features b/phi/r, and log P(x).

Each actor loads the base model and its scorers once.  ``ScorerGroup`` splits a batch's
rows over the replicas and concatenates the results in order.
"""

from __future__ import annotations

import os

import ray

from fdpg_ray.target.scoring import Scores


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

    def score(self, batch) -> Scores:
        """log_a [N] nats, features {name: [N]}, log_P [N] nats of a rollout batch (a ScoredBatch).

        See :meth:`~fdpg_ray.target.scoring.TargetScorer.score`.
        """
        return self.scorer.score(batch)

    def fit(self, batch) -> dict:
        """Fit the distributional lambdas on ``batch`` (:meth:`~fdpg_ray.target.scoring.TargetScorer.fit`): {"lambdas", "moments"}."""
        return self.scorer.fit(batch)

    def set_lambdas(self, lambdas: dict) -> None:
        """Set the distributional lambdas ``{name: lambda}``."""
        self.scorer.set_lambdas(lambdas)


class ScorerGroup:
    """The controller's scorer, backed by one or more ScorerActor replicas."""

    def __init__(self, actors: list):
        self.actors = actors

    def score(self, batch) -> Scores:
        """Score a :class:`~fdpg_ray.train.batch.ScoredBatch` split into contiguous row ranges, one
        per actor (:meth:`~fdpg_ray.train.batch.ScoredBatch.shard`); concatenated back in row order.

        Returns log_a [N] float64 nats, log_P [N] float64 nats, features {name: [N] array}.
        """
        A = len(self.actors)
        shards = [batch.shard(k, A) for k in range(A)]
        results = ray.get([actor.score.remote(part) for actor, part in zip(self.actors, shards) if len(part)])
        return Scores.concat(results)

    def fit(self, batch) -> dict:
        """Fit the lambdas on the first actor, then set them on every actor; returns {"lambdas", "moments"}."""
        fit = ray.get(self.actors[0].fit.remote(batch))
        self.set_lambdas(fit["lambdas"])
        return fit

    def set_lambdas(self, lambdas: dict) -> None:
        """Set the distributional lambdas ``{name: lambda}`` on every actor (blocking)."""
        ray.get([a.set_lambdas.remote(lambdas) for a in self.actors])
