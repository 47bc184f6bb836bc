"""ScoredBatch (fdpg_ray/train/batch.py): built from rollout samples, scored, sharded over workers."""
import math
import pickle

import numpy as np
import pytest
import torch

from fdpg_ray.rollout.samples import Sample
from fdpg_ray.target.scoring import Scores
from fdpg_ray.train.batch import ScoredBatch


def _batch(n: int) -> ScoredBatch:
    samples = [Sample(prompt_index=i % 2, token_ids=[i, i + 1], text=f"t{i}", log_q=-float(i), finish_reason="stop")
               for i in range(n)]
    batch = ScoredBatch.from_samples(samples, ["c0", "c1"], [[0], [0, 9]])
    return batch.set_scores(Scores(log_a=-torch.arange(n, dtype=torch.float64) / 2,
                                   features={"f": np.arange(n, dtype=np.float64)},
                                   log_P=-torch.arange(n, dtype=torch.float64) / 3))


def test_from_samples_looks_up_each_samples_prompt():
    b = _batch(3)
    assert len(b) == 3 and b.texts == ["t0", "t1", "t2"] and b.completion_ids == [[0, 1], [1, 2], [2, 3]]
    assert b.contexts == ["c0", "c1", "c0"] and b.prompt_ids == [[0], [0, 9], [0]]
    assert b.log_q.dtype == torch.float64 and b.log_q.tolist() == [0.0, -1.0, -2.0]
    assert b.scored and not ScoredBatch.from_samples([], [], []).scored


@pytest.mark.parametrize("n", [0, 1, 5, 7, 8, 12, 13])
@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_shards_are_contiguous_and_cover_every_row_once(n, world):
    b = _batch(n)
    bounds = [b.shard_rows(r, world) for r in range(world)]
    assert bounds[0].start == 0 and bounds[-1].stop == n
    assert all(a.stop == z.start for a, z in zip(bounds, bounds[1:]))  # contiguous, in rank order
    sizes = [s.stop - s.start for s in bounds]
    assert max(sizes) - min(sizes) <= 1  # uneven sizes differ by one row at most
    rows = [t for r in range(world) for t in b.shard(r, world).texts]
    assert rows == b.texts  # every row exactly once
    if n % world == 0:  # what the learner gets (batch_size divisible by num_workers): n / world each
        assert bounds == [slice(r * (n // world), (r + 1) * (n // world)) for r in range(world)]


def test_a_shard_carries_its_rows_of_every_field():
    b = _batch(7)
    s = b.shard(1, 3)  # rows 2..4
    assert s.texts == ["t2", "t3", "t4"] and s.contexts == ["c0", "c1", "c0"]
    assert s.log_q.tolist() == [-2.0, -3.0, -4.0] and s.log_P.tolist() == pytest.approx([-2 / 3, -1.0, -4 / 3])
    assert s.log_a.tolist() == [-1.0, -1.5, -2.0] and s.features["f"].tolist() == [2.0, 3.0, 4.0]
    picked = b.rows([5, 0])
    assert picked.texts == ["t5", "t0"] and picked.log_q.tolist() == [-5.0, 0.0] and picked.features["f"].tolist() == [5, 0]


def test_unknown_log_q_is_filled_and_the_batch_pickles():
    b = _batch(3)
    b.log_q = torch.tensor([math.nan, -1.0, math.nan], dtype=torch.float64)
    b.fill_unknown_log_q(b.log_a)
    assert b.log_q.tolist() == [0.0, -1.0, -1.0]
    b.timing = {"score_seconds": 0.5}
    c = pickle.loads(pickle.dumps(b))
    assert c.texts == b.texts and torch.equal(c.log_P, b.log_P) and c.timing == b.timing
    assert np.array_equal(c.features["f"], b.features["f"])


def test_scores_concatenate_in_row_order():
    parts = [Scores(torch.tensor([1.0]), {"f": np.array([1.0])}, torch.tensor([2.0])),
             Scores(torch.tensor([3.0, 4.0]), {"f": np.array([5.0, 6.0])}, torch.tensor([7.0, 8.0]))]
    s = Scores.concat(parts)
    assert s.log_a.tolist() == [1, 3, 4] and s.log_P.tolist() == [2, 7, 8] and s.features["f"].tolist() == [1, 5, 6]


def test_a_checkpoint_of_an_earlier_version_holds_a_dict():
    b = _batch(2)
    d = {"prompt_ids": b.prompt_ids, "completion_ids": b.completion_ids, "texts": b.texts, "contexts": b.contexts,
         "log_q": b.log_q, "log_a": b.log_a, "features": b.features, "log_P": b.log_P}
    c = ScoredBatch.from_dict(d)
    assert c.texts == b.texts and torch.equal(c.log_P, b.log_P) and c.timing == {}
