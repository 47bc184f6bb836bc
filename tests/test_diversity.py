"""Distinct-n and Self-BLEU against hand-computed values and NLTK's sentence BLEU."""

from __future__ import annotations

import math
import random
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fdpg_ray.train.diversity import (
    SMOOTHING_EPSILON,
    _NgramCounts,
    _sentence_bleus,
    distinct_n,
    diversity_metrics,
    self_bleu,
)

# ---------------------------------------------------------------- distinct-n


def test_distinct_hand_computed():
    texts = ["a b a b", "a b c"]
    # unigrams: a b a b a b c -> 3 distinct of 7
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    # bigrams: ab ba ab | ab bc -> {ab, ba, bc} = 3 of 5
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    # trigrams: aba bab | abc -> 3 of 3
    assert distinct_n(texts, 3) == pytest.approx(1.0)


def test_distinct_lowercases_and_splits_on_whitespace():
    assert distinct_n(["A b", "a  B\n"], 1) == pytest.approx(2 / 4)


def test_distinct_ngrams_do_not_cross_texts():
    assert distinct_n(["a", "b"], 2) == 0.0
    assert distinct_n(["a b", "c"], 2) == 1.0


def test_distinct_empty_cases():
    assert distinct_n([], 1) == 0.0
    assert distinct_n(["", "  "], 1) == 0.0
    assert distinct_n(["one two"], 3) == 0.0


@pytest.mark.parametrize("n", [0, -1, 1.5])
def test_distinct_rejects_bad_n(n):
    with pytest.raises(ValueError, match="n must be a positive integer"):
        distinct_n(["a b"], n)


def test_distinct_rejects_single_string():
    with pytest.raises(TypeError):
        distinct_n("a b c", 1)


# ---------------------------------------------------------------- self-BLEU


def test_self_bleu_identical_texts_is_one():
    texts = ["the cat sat on the mat today"] * 5
    assert self_bleu(texts) == pytest.approx(1.0)


def test_self_bleu_disjoint_texts_is_zero():
    texts = ["a b c d e", "f g h i j", "k l m n o"]
    assert self_bleu(texts) == 0.0


def test_self_bleu_hand_computed_one_substitution():
    # a b c d e vs a b c d f, both ways: p1..p4 = 4/5, 3/4, 2/3, 1/2; BP = 1
    expected = (4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25
    assert self_bleu(["a b c d e", "a b c d f"]) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.2 ** 0.25)


def test_self_bleu_hand_computed_brevity_penalty_and_smoothing():
    eps = SMOOTHING_EPSILON
    # "a b c" | "a b c d": c=3 < r=4 -> BP = exp(1 - 4/3); p1=p2=p3=1;
    # p4 has no 4-gram: 0 matches over max(1, 0) -> eps / 1 (method 1)
    b1 = math.exp(1 - 4 / 3) * (1 * 1 * 1 * eps) ** 0.25
    # "a b c d" | "a b c": c=4 > r=3 -> BP = 1; p = 3/4, 2/3, 1/2, eps/1
    b2 = (3 / 4 * 2 / 3 * 1 / 2 * eps) ** 0.25
    assert self_bleu(["a b c", "a b c d"]) == pytest.approx((b1 + b2) / 2, abs=1e-12)


def test_self_bleu_hand_computed_clipping():
    eps = SMOOTHING_EPSILON
    # "the the the the" | "the cat": BP = 1 (c=4 > r=2); "the" clipped to 1 -> p1 = 1/4;
    # p2 = eps/3, p3 = eps/2, p4 = eps/1
    b1 = (1 / 4 * eps / 3 * eps / 2 * eps / 1) ** 0.25
    # "the cat" | "the the the the": BP = exp(1 - 4/2); p1 = 1/2; p2 = eps/1; p3, p4 = eps/max(1, 0)
    b2 = math.exp(1 - 2) * (1 / 2 * eps * eps * eps) ** 0.25
    assert self_bleu(["the the the the", "the cat"]) == pytest.approx((b1 + b2) / 2, abs=1e-12)


def test_self_bleu_closest_reference_length_prefers_shorter_on_tie():
    # hypothesis "a b c" (3) with references of lengths 2 and 4: tie -> r = 2 -> BP = 1
    table = _NgramCounts([["a", "b", "c"], ["a", "b"], ["a", "b", "c", "d"]], 4)
    bleu = _sentence_bleus(table, 4, [np.array([1, 2]), np.array([0]), np.array([0])])
    # p1 = 1, p2 = 1, p3 = 1, p4 = eps / 1 ; no brevity penalty
    assert bleu[0] == pytest.approx(SMOOTHING_EPSILON ** 0.25)


def test_self_bleu_matches_nltk_value():
    # nltk 3.9 sentence_bleu(..., smoothing_function=SmoothingFunction().method1)
    # averaged over the four hypotheses gives 0.09688870527579997
    texts = [
        "The quick brown fox jumps over the lazy dog",
        "the quick brown cat sleeps on the lazy mat",
        "a completely different sentence here",
        "the fox and the dog",
    ]
    assert self_bleu(texts) == pytest.approx(0.09688870527579997, abs=1e-12)


def _random_texts(rng: random.Random, n: int, vocab: int, max_len: int) -> list[str]:
    words = [f"w{i}" for i in range(vocab)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(0, max_len))) for _ in range(n)]


def _nltk_sentence_bleu(hyp, refs, max_n=4):
    """NLTK's sentence BLEU with smoothing method 1 (what Texygen's Self-BLEU uses): the
    maintained library our vectorised version is checked against."""
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    return sentence_bleu(refs, hyp, weights=(1 / max_n,) * max_n, smoothing_function=SmoothingFunction().method1)


def _nltk_self_bleu(texts, max_n=4):
    toks = [t.lower().split() for t in texts]
    return float(np.mean([
        _nltk_sentence_bleu(toks[i], [toks[j] for j in range(len(toks)) if j != i], max_n)
        for i in range(len(toks))
    ]))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_self_bleu_matches_nltk_on_random_batches(seed):
    texts = _random_texts(random.Random(seed), 30, vocab=8, max_len=12)
    assert self_bleu(texts) == pytest.approx(_nltk_self_bleu(texts), abs=1e-12)
    assert self_bleu(texts, max_n=2) == pytest.approx(_nltk_self_bleu(texts, 2), abs=1e-12)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "D"]), max_size=7).map(" ".join), min_size=2, max_size=6))
def test_self_bleu_property_equals_nltk_and_bounded(texts):
    value = self_bleu(texts)
    assert 0.0 <= value <= 1.0 + 1e-12
    assert value == pytest.approx(_nltk_self_bleu(texts), abs=1e-12)
    for n in (1, 2, 3):
        assert 0.0 <= distinct_n(texts, n) <= 1.0


def test_subset_path_with_all_references_equals_full_path():
    texts = _random_texts(random.Random(5), 25, vocab=6, max_len=10)
    table = _NgramCounts([t.split() for t in texts], 4)
    all_others = [np.array([j for j in range(len(texts)) if j != i]) for i in range(len(texts))]
    np.testing.assert_allclose(_sentence_bleus(table, 4, all_others), _sentence_bleus(table, 4, None), atol=1e-12)


def test_self_bleu_max_refs_subsamples_deterministically():
    texts = _random_texts(random.Random(3), 40, vocab=10, max_len=15)
    full = self_bleu(texts)
    sub = self_bleu(texts, max_refs=5, seed=1)
    assert sub == self_bleu(texts, max_refs=5, seed=1)
    assert sub != full  # 5 references instead of 39 change the clipping counts
    assert 0.0 <= sub <= 1.0
    assert self_bleu(texts, max_refs=39) == pytest.approx(full)
    assert self_bleu(texts, max_refs=1000) == pytest.approx(full)


def test_self_bleu_subset_matches_nltk_with_same_references():
    texts = _random_texts(random.Random(4), 12, vocab=5, max_len=8)
    toks = [t.split() for t in texts]
    rng = np.random.default_rng(7)
    ref_sets = [np.sort(rng.choice([j for j in range(12) if j != i], size=3, replace=False)) for i in range(12)]
    fast = _sentence_bleus(_NgramCounts(toks, 4), 4, ref_sets)
    naive = [_nltk_sentence_bleu(toks[i], [toks[j] for j in ref_sets[i]]) for i in range(12)]
    np.testing.assert_allclose(fast, naive, atol=1e-12)


def test_self_bleu_small_and_empty_inputs():
    assert self_bleu([]) == 0.0
    assert self_bleu(["only one text here"]) == 0.0
    assert self_bleu(["", ""]) == 0.0
    # an empty hypothesis scores 0, the other one has no unigram match -> 0
    assert self_bleu(["", "a b c d"]) == 0.0


@pytest.mark.parametrize("kwargs", [{"max_n": 0}, {"max_refs": 0}, {"max_refs": 2.5}])
def test_self_bleu_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        self_bleu(["a b", "a c"], **kwargs)


def test_self_bleu_is_fast_on_256_texts_of_40_words():
    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)] + ["the", "a", "of", "and"] * 20
    texts = [" ".join(rng.choice(words) for _ in range(40)) for _ in range(256)]
    start = time.perf_counter()
    value = self_bleu(texts)
    assert time.perf_counter() - start < 2.0
    assert 0.0 < value < 1.0


# ---------------------------------------------------------------- all metrics


def test_diversity_metrics_keys_and_values():
    texts = ["a b a b", "a b c"]
    m = diversity_metrics(texts)
    assert set(m) == {"distinct_1", "distinct_2", "distinct_3", "self_bleu", "mean_length"}
    assert m["distinct_1"] == pytest.approx(3 / 7)
    assert m["distinct_2"] == pytest.approx(3 / 5)
    assert m["distinct_3"] == pytest.approx(1.0)
    assert m["mean_length"] == pytest.approx(3.5)
    assert m["self_bleu"] == pytest.approx(self_bleu(texts))
    assert all(isinstance(v, float) for v in m.values())


def test_diversity_metrics_of_nothing():
    m = diversity_metrics([])
    assert m == {"distinct_1": 0.0, "distinct_2": 0.0, "distinct_3": 0.0, "self_bleu": 0.0, "mean_length": 0.0}
