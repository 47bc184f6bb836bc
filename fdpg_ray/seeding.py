"""Seeds for every source of randomness in a run, derived so that no two collide.

f-DPG's estimators (the gradient of Theorem 1, Z_hat, every importance-sampled metric)
assume that the samples of a step are independent of each other and of every other
step's.  Integer seeds that differ by small amounts break that on vLLM: with ``n > 1``
and a request seed ``s``, vLLM gives child ``j`` the seed ``s + j``, so step seeds
``s, s+1, ...`` made each batch re-draw most of the previous one (issue 10; docs/study.md §1).

Every seed is therefore the hash of its whole path through :class:`numpy.random.SeedSequence`
(``derive_seed(run_seed, STEP, k)``, then per rollout actor, then per prompt), 63 bits
wide: two derived seeds ``s, s'`` share a vLLM child stream only if ``|s - s'| < n``,
with probability about ``2n / 2**63`` per pair.
"""

from __future__ import annotations

import numpy as np

# The first key of each path: which stream of the run a seed belongs to.
STEP = 1          # the rollout batch of training step k: derive_seed(run.seed, STEP, k)
BASE = 2          # the fixed batch of base-model samples (lambda fit, initial Z_hat, kl_p_pi_base)
ENGINE = 3        # a rollout engine's own global seed: derive_seed(run.seed, ENGINE, actor index)
PROMPT_ORDER = 4  # the shuffle of a prompts file
EVAL = 5          # samples drawn by `fdpg-ray eval` (policy) ...
EVAL_BASE = 6     # ... and of the base model it compares with
PROPOSAL_DATA = 7  # the order in which a dataset proposal's rows are read

_MASK = (1 << 63) - 1


def derive_seed(seed: int, *path: int, bits: int = 63) -> int:
    """A 63-bit seed that depends on ``seed`` and every integer of ``path``.

    ``derive_seed(s, 1, 7)`` and ``derive_seed(s, 1, 8)`` (or ``derive_seed(s + 1, 1, 7)``)
    are unrelated numbers, so child streams ``seed + j`` that an engine derives from them do
    not overlap.  Deterministic: the same arguments give the same seed in any process.

    Args:
        seed: a non-negative integer (the run's ``run.seed``, or a seed derived before).
        path: non-negative integers naming the stream (e.g. ``STEP, step``; actor; prompt).
        bits: width of the result; 32 for libraries that refuse more (``numpy.random.seed``,
            which vLLM calls with an engine's seed).
    Returns:
        an int in [0, 2**bits).
    Raises:
        ValueError: if ``seed`` or an element of ``path`` is negative.
    """
    if seed < 0 or any(p < 0 for p in path):
        raise ValueError(f"seeds and seed paths must be non-negative, got {seed} and {path}")
    words = np.random.SeedSequence(int(seed), spawn_key=tuple(int(p) for p in path)).generate_state(2, np.uint64)
    return int(words[0]) & _MASK & ((1 << bits) - 1)
