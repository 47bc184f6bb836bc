"""The batch that flows from sampling through scoring to the learner's update.

A :class:`ScoredBatch` is built on rank 0 from the rollout's
:class:`~fdpg_ray.rollout.samples.Sample` records (:meth:`ScoredBatch.from_samples`), scored in
place by the target scorer (:meth:`ScoredBatch.set_scores`, from a
:class:`~fdpg_ray.target.scoring.Scores`), broadcast to every learner worker, and each worker
trains on its contiguous rows (:meth:`ScoredBatch.shard`).  It holds lists, tensors and numpy
arrays only, so it pickles through Ray, ``torch.distributed.broadcast_object_list`` and
checkpoints.  N is the number of rows (samples); every per-row field has N entries, in row order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from fdpg_ray.rollout.samples import Sample
from fdpg_ray.target.scoring import Scores

# The per-row fields a scorer needs (sent to scorer actors); the scores are added later.
ROLLOUT_FIELDS = ("prompt_ids", "completion_ids", "texts", "contexts", "log_q")


@dataclass
class ScoredBatch:
    """N samples of a proposal with their prompts and, once scored, log a, features and log P."""
    prompt_ids: list[list[int]]       # N lists of token ids: the prompt of each row (BOS + prompt text)
    completion_ids: list[list[int]]   # N lists of token ids: the generated tokens (final EOS kept)
    texts: list[str]                  # N decoded completions, without the prompt
    contexts: list[str]               # N prompt texts (the context c of a conditional target)
    log_q: torch.Tensor               # [N] float64, nats: log q(x | c) of the proposal, summed over
    #                                   generated tokens (NaN until known for a dataset proposal)
    log_a: torch.Tensor | None = None  # [N] float64, nats: log a(x | c) under the frozen base model
    features: dict[str, np.ndarray] | None = None  # {constraint name: [N] float64} phi(x), b(x) or r(x)
    log_P: torch.Tensor | None = None  # [N] float64, nats: log P(x) of the unnormalised target (-inf where P = 0)
    timing: dict[str, float] = field(default_factory=dict)  # {metric name: seconds} of rank 0's sampling/scoring

    def __len__(self) -> int:
        """N, the number of rows."""
        return len(self.texts)

    @classmethod
    def from_samples(cls, samples: list[Sample], contexts: list[str], prompt_ids: list[list[int]]) -> ScoredBatch:
        """The unscored batch of ``samples``; each sample's ``prompt_index`` looks up its context
        (a prompt text) in ``contexts`` and its prompt token ids in ``prompt_ids``."""
        return cls(
            prompt_ids=[prompt_ids[s.prompt_index] for s in samples],
            completion_ids=[s.token_ids for s in samples],
            texts=[s.text for s in samples],
            contexts=[contexts[s.prompt_index] for s in samples],
            log_q=torch.tensor([s.log_q for s in samples], dtype=torch.float64),
        )

    @property
    def scored(self) -> bool:
        """Whether :meth:`set_scores` has filled log_a, features and log_P."""
        return self.log_P is not None

    def set_scores(self, scores: Scores) -> ScoredBatch:
        """Fill log_a, features and log_P from the scorer's ``scores`` (same rows, same order);
        returns ``self``."""
        self.log_a, self.features, self.log_P = scores.log_a, scores.features, scores.log_P
        return self

    def fill_unknown_log_q(self, log_a: torch.Tensor) -> None:
        """Where a row's log q is unknown (NaN: a dataset proposal without a log_q column), take
        the texts to be samples of the base model: log q := log a ([N] nats)."""
        unknown = torch.isnan(self.log_q)
        if unknown.any():
            self.log_q = torch.where(unknown, torch.as_tensor(log_a, dtype=torch.float64), self.log_q)

    def shard_rows(self, rank: int, world: int) -> slice:
        """The contiguous rows of worker ``rank`` out of ``world``: [round(rank N / world),
        round((rank + 1) N / world)).  The shards cover every row exactly once, in rank order; with N
        divisible by ``world`` (what the config requires of the learner) each has N / world rows."""
        n = len(self)
        return slice(round(rank * n / world), round((rank + 1) * n / world))

    def shard(self, rank: int, world: int) -> ScoredBatch:
        """Worker ``rank``'s contiguous rows (:meth:`shard_rows`) as a batch of their own."""
        return self.rows(self.shard_rows(rank, world))

    def rows(self, rows: slice | list[int]) -> ScoredBatch:
        """The batch of the given rows (a slice, or a list of row indices in the order wanted);
        scores and timing are kept where present."""
        def take(x):
            if x is None:
                return None
            if isinstance(rows, slice) or isinstance(x, (torch.Tensor, np.ndarray)):
                return x[rows]
            return [x[i] for i in rows]

        return ScoredBatch(prompt_ids=take(self.prompt_ids), completion_ids=take(self.completion_ids),
                           texts=take(self.texts), contexts=take(self.contexts), log_q=take(self.log_q),
                           log_a=take(self.log_a), log_P=take(self.log_P),
                           features=None if self.features is None else {k: take(v) for k, v in self.features.items()},
                           timing=dict(self.timing))

    @classmethod
    def from_dict(cls, d: dict) -> ScoredBatch:
        """A batch from the dict of its fields (the form checkpoints of earlier versions hold)."""
        return cls(**d)
