"""Scoring a batch of samples against the target: log a(x), features, log P(x).

:class:`TargetScorer` is what a scorer actor holds (``actors/scorer.py``) and what the
local runner calls directly: one frozen copy of the base model a (loaded once), the
scorers named by the target's constraints, and the :class:`~fdpg_ray.target.energy.Target`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fdpg_ray.config import Config
from fdpg_ray.objective.loss import collate, sequence_log_probs
from fdpg_ray.model.sources import load_model_and_tokenizer
from fdpg_ray.target.energy import Constraint, Target


def build_target(cfg: Config):
    """(Target, {name: scorer}) from ``cfg.target.constraints``."""
    from fdpg_ray.target.scorers import build_scorer

    target = Target(conditional=cfg.prompts.file is not None)
    scorers = {}
    for i, spec in enumerate(cfg.target.constraints):
        scorer = build_scorer(dict(spec["scorer"]), where=f"target.constraints[{i}].scorer")
        name = scorer.name if scorer.name not in scorers else f"{scorer.name}_{i}"
        scorers[name] = scorer
        target.constraints.append(Constraint(kind=spec["kind"], name=name, moment=spec.get("moment"),
                                             beta=spec.get("beta"), lam=spec.get("lam")))
    return target, scorers


@dataclass
class Scores:
    """What scoring adds to N rollout rows, in their order (the scored fields of
    :class:`fdpg_ray.train.batch.ScoredBatch`)."""
    log_a: torch.Tensor               # [N] float64, nats: log a(x | c), the frozen base model, summed over generated tokens
    features: dict[str, np.ndarray]   # {scorer name: [N] array} phi(x), b(x) or r(x) per row
    log_P: torch.Tensor               # [N] float64, nats: log P(x) of the unnormalised target (-inf where P = 0)

    @classmethod
    def concat(cls, parts: list[Scores]) -> Scores:
        """The scores of consecutive row ranges joined in order (at least one part)."""
        return cls(log_a=torch.cat([p.log_a for p in parts]), log_P=torch.cat([p.log_P for p in parts]),
                   features={k: np.concatenate([p.features[k] for p in parts]) for k in parts[0].features})


class TargetScorer:
    """The frozen base model a, the target's scorers and the :class:`~fdpg_ray.target.energy.Target`.

    Loads the model at ``cfg.model.path`` in float32; ``batch_size`` (default
    ``cfg.scorer.batch_size``) sequences per forward pass of a.  Raises what
    :func:`build_target` and :func:`~fdpg_ray.model.sources.load_model_and_tokenizer` raise.
    """
    def __init__(self, cfg: Config, batch_size: int | None = None):
        self.cfg = cfg
        self.target, self.scorers = build_target(cfg)
        self.base, self.tokenizer = load_model_and_tokenizer(cfg.model.path, dtype="float32")
        self.base.eval().requires_grad_(False)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.batch_size = batch_size or cfg.scorer.batch_size

    @torch.no_grad()
    def log_base(self, prompt_ids: list[list[int]], completion_ids: list[list[int]]) -> torch.Tensor:
        """log a(x | c): the frozen base model's log-probability of each completion."""
        out = []
        for s in range(0, len(prompt_ids), self.batch_size):
            batch = collate(prompt_ids[s:s + self.batch_size], completion_ids[s:s + self.batch_size], self.pad_id)
            out.append(sequence_log_probs(self.base, *batch, chunk_size=self.cfg.loss.chunk_size).double())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def features(self, texts: list[str], contexts: list[str] | None = None) -> dict[str, np.ndarray]:
        """{scorer name: (n,) array of phi(x) or b(x)} for ``texts`` (``contexts``: one prompt per text or None)."""
        return {name: scorer.score(texts, contexts) for name, scorer in self.scorers.items()}

    def score(self, batch) -> Scores:
        """The :class:`Scores` (log a, features, log P) of a rollout batch: anything with the
        row fields prompt_ids, completion_ids, texts and contexts of a
        :class:`~fdpg_ray.train.batch.ScoredBatch` (docs/design.md, "Layout and data flow")."""
        log_a, feats = self._base_and_features(batch)
        return Scores(log_a=log_a, features=feats, log_P=self.target.log_score(log_a, feats))

    def _base_and_features(self, batch) -> tuple[torch.Tensor, dict[str, np.ndarray]]:
        log_a = self.log_base(batch.prompt_ids, batch.completion_ids)
        return log_a, self.features(batch.texts, batch.contexts if self.target.conditional else None)

    def log_P_of_texts(self, texts: list[str], log_a, contexts: list[str] | None = None) -> torch.Tensor:
        """log P from texts and precomputed log a (used by the exact toy task); ``contexts``
        (one per text) for conditional targets."""
        return self.target.log_score(log_a, self.features(texts, contexts if self.target.conditional else None))

    def fit(self, batch) -> dict:
        """Fit the distributional lambdas on samples of the proposal (the base model at start),
        a batch with the row fields of :meth:`score` and log_q ([N] nats):
        {"lambdas": {name: lambda}, "moments": {name: achieved E_p[phi]}}."""
        log_a, feats = self._base_and_features(batch)
        moments = self.target.fit_lambdas(log_a, batch.log_q, feats)
        return {"lambdas": self.target.lambdas(), "moments": moments}

    def set_lambdas(self, lambdas: dict[str, float]) -> None:
        """Set the distributional constraints' lambda from ``{name: lambda}`` (other names ignored)."""
        for c in self.target.distributional:
            if c.name in lambdas:
                c.lam = lambdas[c.name]

    def lambdas(self) -> dict[str, float]:
        """{name: lambda} of the distributional constraints (:meth:`Target.lambdas`)."""
        return self.target.lambdas()
