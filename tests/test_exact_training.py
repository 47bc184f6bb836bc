"""Training with each divergence on the exact toy task lowers its exact D_f by >= 90%.

Goes through the same code as a real run (transformers rollout backend, TargetScorer,
Controller, fdpg_loss), in one process; the distributed path runs configs/toy.yaml in
tests/test_distributed.py.  The table in docs/exact-verification.md comes from
`python -m fdpg_ray.train.toy_table`, which runs exactly this.
"""

import pytest

from fdpg_ray.train.toy_table import STEPS, train_toy

DIVERGENCES = ["kl", "rkl", "tv", "js", "hellinger", "chi2", "rchi2", "jeffreys", "alpha:0.5", "alpha:2"]


@pytest.mark.parametrize("name", DIVERGENCES)
def test_training_lowers_the_exact_divergence_by_90_percent(name):
    row = train_toy(name)
    assert row["end"] <= 0.1 * row["start"], row
    assert row["steps"] == STEPS[name]
    # and Z_hat tracks the exact Z (running mean of P/q over all samples)
    assert abs(row["log_z_hat"] - row["log_z"]) < 0.15, row
