"""Diversity of a batch of samples: Distinct-n and Self-BLEU.

Texts are lowercased and split on whitespace everywhere in this module.

* ``distinct_n``: distinct n-grams / total n-grams, pooled over all texts.
* ``self_bleu``: mean over texts of the sentence BLEU of each text against all
  the others as references (Zhu et al. 2018, Texygen). BLEU follows NLTK's
  ``sentence_bleu`` with ``SmoothingFunction().method1``, which is what Texygen
  (and hence most reported Self-BLEU numbers) uses:

  - p_n = Σ_g min(c_hyp(g), max_ref c_ref(g)) / max(1, #n-grams of hyp);
  - smoothing "method 1" (Chen & Cherry 2014): a p_n whose clipped count is 0
    becomes ε / max(1, #n-grams) with ε = 0.1 (not add-one);
  - a hypothesis with no unigram match at all scores 0 (as NLTK);
  - brevity penalty BP = 1 if c > r else exp(1 − r/c), c = hypothesis
    length, r = the reference length closest to c (the shorter on ties);
    BP = 0 for an empty hypothesis;
  - BLEU = BP · exp(Σ_n (1/N) log p_n), N = ``max_n`` (uniform weights).

  Kept ours (vectorised; NLTK's per-sentence loop is O(n²) Python for a batch) and checked
  against NLTK's ``sentence_bleu`` to 1e-12 on random batches (tests/test_diversity.py).

The n-gram counts of all texts are computed once with numpy; with all other
texts as references, max_ref c_ref(g) for every (hypothesis, g) comes from the
largest and second-largest count of g over the batch, so the whole batch costs
about one sort of its n-grams.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["distinct_n", "self_bleu", "diversity_metrics", "SMOOTHING_EPSILON"]

SMOOTHING_EPSILON = 0.1
"""ε of BLEU smoothing method 1 (NLTK's default)."""


def _tokenize(texts: Sequence[str]) -> list[list[str]]:
    if isinstance(texts, str):
        raise TypeError("texts must be a list of strings, not one string")
    return [t.lower().split() for t in texts]


def distinct_n(texts: Sequence[str], n: int) -> float:
    """Number of distinct n-grams / total number of n-grams over all texts.

    n-grams do not cross text boundaries; 0.0 when there are no n-grams.
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"distinct_n: n must be a positive integer, got {n!r}")
    seen: set[tuple[str, ...]] = set()
    total = 0
    for toks in _tokenize(texts):
        grams = [tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)]
        total += len(grams)
        seen.update(grams)
    return len(seen) / total if total else 0.0


class _NgramCounts:
    """Per-order sparse count table of a batch of tokenised texts.

    For order n: ``owner[k]``, ``gram[k]``, ``count[k]`` list each distinct
    (text, n-gram) pair, sorted by text; ``offsets`` delimits each text's slice
    and ``totals[t]`` is the number of n-grams of text t.
    """

    def __init__(self, tokens: list[list[str]], max_n: int):
        self.n_texts = len(tokens)
        self.lengths = np.array([len(t) for t in tokens], dtype=np.int64)
        vocab: dict[str, int] = {}
        flat = np.array([vocab.setdefault(w, len(vocab)) for toks in tokens for w in toks], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(self.lengths)])[:-1]
        text_of = np.repeat(np.arange(self.n_texts), self.lengths)
        pos_in_text = np.arange(flat.size) - starts[text_of]
        self.orders = []
        prefix_ids = flat  # id of the n-gram starting at each position (valid where it fits)
        for n in range(1, max_n + 1):
            if n > 1:
                # n-gram id at p from (id of the (n-1)-gram at p, word at p+n-1);
                # ids stand for token sequences of the flat array, so n-grams
                # that cross a text boundary only get ids of their own and are
                # masked out below.
                nxt = np.zeros_like(flat)
                nxt[:max(flat.size - (n - 1), 0)] = flat[n - 1:]
                key = prefix_ids * (len(vocab) + 1) + nxt
                _, prefix_ids = np.unique(key, return_inverse=True)
                prefix_ids = prefix_ids.reshape(-1)
            fits = pos_in_text <= self.lengths[text_of] - n
            owners, grams = text_of[fits], prefix_ids[fits]
            n_grams_total = int(grams.max()) + 1 if grams.size else 1
            pair, count = np.unique(owners * n_grams_total + grams, return_counts=True)
            owner, gram = pair // n_grams_total, pair % n_grams_total
            offsets = np.searchsorted(owner, np.arange(self.n_texts + 1))
            totals = np.maximum(self.lengths - n + 1, 0)
            self.orders.append((owner, gram, count.astype(np.int64), offsets, totals))


def _max_counts_all_others(owner, gram, count) -> np.ndarray:
    """For each (text t, n-gram g) entry: max over texts s ≠ t of c_s(g)."""
    if gram.size == 0:
        return np.zeros(0, dtype=np.int64)
    order = np.lexsort((-count, gram))  # by gram, then count descending
    g_sorted = gram[order]
    first = np.ones(g_sorted.size, dtype=bool)
    first[1:] = g_sorted[1:] != g_sorted[:-1]
    first_idx = np.flatnonzero(first)
    n_grams = int(gram.max()) + 1
    max1 = np.zeros(n_grams, dtype=np.int64)
    arg1 = np.full(n_grams, -1, dtype=np.int64)
    max2 = np.zeros(n_grams, dtype=np.int64)
    max1[g_sorted[first_idx]] = count[order[first_idx]]
    arg1[g_sorted[first_idx]] = owner[order[first_idx]]
    second_idx = first_idx + 1
    has_second = second_idx < g_sorted.size
    has_second[has_second] &= ~first[second_idx[has_second]]
    second_idx = second_idx[has_second]
    max2[g_sorted[second_idx]] = count[order[second_idx]]
    return np.where(arg1[gram] == owner, max2[gram], max1[gram])


def _max_counts_subset(table_order, i: int, refs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clipping counts of text i's n-grams against the references ``refs``."""
    owner, gram, count, offsets, _ = table_order
    hyp_gram = gram[offsets[i]:offsets[i + 1]]
    hyp_count = count[offsets[i]:offsets[i + 1]]
    order = np.argsort(hyp_gram)
    hyp_sorted = hyp_gram[order]
    best = np.zeros(hyp_gram.size, dtype=np.int64)
    if hyp_gram.size and refs.size:
        sl = [slice(offsets[j], offsets[j + 1]) for j in refs]
        ref_gram = np.concatenate([gram[s] for s in sl])
        ref_count = np.concatenate([count[s] for s in sl])
        pos = np.searchsorted(hyp_sorted, ref_gram)
        pos_c = np.minimum(pos, hyp_sorted.size - 1)
        hit = hyp_sorted[pos_c] == ref_gram
        best_sorted = np.zeros(hyp_gram.size, dtype=np.int64)
        np.maximum.at(best_sorted, pos_c[hit], ref_count[hit])
        best[order] = best_sorted
    return hyp_count, best


def _closest_ref_lengths(lengths: np.ndarray, ref_sets: list[np.ndarray] | None) -> np.ndarray:
    """Reference length closest to each hypothesis length, the shorter on ties."""
    n = lengths.size
    out = np.zeros(n, dtype=np.int64)
    for i in range(n):
        refs = np.delete(np.arange(n), i) if ref_sets is None else ref_sets[i]
        if refs.size == 0:
            continue
        ref_len = lengths[refs]
        # lexicographic (|r - c|, r): scale the distance so that r breaks ties
        key = np.abs(ref_len - lengths[i]) * (lengths.max() + 1) + ref_len
        out[i] = ref_len[np.argmin(key)]
    return out


def _sentence_bleus(table: _NgramCounts, max_n: int, ref_sets: list[np.ndarray] | None) -> np.ndarray:
    """BLEU of each text against its references (all others when ref_sets is None)."""
    n_texts = table.n_texts
    log_p = np.zeros((n_texts, max_n))
    no_unigram_match = np.zeros(n_texts, dtype=bool)
    for k, table_order in enumerate(table.orders):
        owner, gram, count, offsets, totals = table_order
        if ref_sets is None:
            clipped = np.minimum(count, _max_counts_all_others(owner, gram, count))
            matches = np.bincount(owner, weights=clipped, minlength=n_texts)
        else:
            matches = np.zeros(n_texts)
            for i in range(n_texts):
                hyp_count, best = _max_counts_subset(table_order, i, ref_sets[i])
                matches[i] = np.minimum(hyp_count, best).sum()
        denominators = np.maximum(totals, 1).astype(np.float64)
        numerators = np.where(matches > 0, matches, SMOOTHING_EPSILON)  # smoothing method 1
        log_p[:, k] = np.log(numerators / denominators)
        if k == 0:
            no_unigram_match = matches == 0
    c = table.lengths.astype(np.float64)
    r = _closest_ref_lengths(table.lengths, ref_sets).astype(np.float64)
    with np.errstate(divide="ignore"):
        bp = np.where(c > r, 1.0, np.exp(1.0 - r / np.where(c > 0, c, 1.0)))
    bp[c == 0] = 0.0
    bleu = bp * np.exp(log_p.mean(axis=1))
    bleu[no_unigram_match] = 0.0
    return bleu


def self_bleu(texts: Sequence[str], max_n: int = 4, max_refs: int | None = None, seed: int = 0) -> float:
    """Mean BLEU-``max_n`` of each text against the other texts (see module doc).

    ``max_refs`` bounds the references of each text to a random subset of that
    size (drawn with ``numpy.random.default_rng(seed)``), which makes large
    batches O(n · max_refs) instead of O(n²). Fewer than two texts → 0.0.
    """
    if not isinstance(max_n, int) or max_n < 1:
        raise ValueError(f"self_bleu: max_n must be a positive integer, got {max_n!r}")
    if max_refs is not None and (not isinstance(max_refs, int) or max_refs < 1):
        raise ValueError(f"self_bleu: max_refs must be a positive integer or None, got {max_refs!r}")
    tokens = _tokenize(texts)
    n = len(tokens)
    if n < 2:
        return 0.0
    table = _NgramCounts(tokens, max_n)
    ref_sets = None
    if max_refs is not None and max_refs < n - 1:
        rng = np.random.default_rng(seed)
        ref_sets = []
        for i in range(n):
            refs = rng.choice(n - 1, size=max_refs, replace=False)
            ref_sets.append(np.sort(refs + (refs >= i)))  # skip the hypothesis itself
    return float(_sentence_bleus(table, max_n, ref_sets).mean())


def diversity_metrics(texts: Sequence[str], max_refs: int | None = None) -> dict[str, float]:
    """Distinct-1/2/3, Self-BLEU(-4) and mean length in words of a batch of samples."""
    tokens = _tokenize(texts)
    return {
        "distinct_1": distinct_n(texts, 1),
        "distinct_2": distinct_n(texts, 2),
        "distinct_3": distinct_n(texts, 3),
        "self_bleu": self_bleu(texts, max_refs=max_refs),
        "mean_length": float(np.mean([len(t) for t in tokens])) if tokens else 0.0,
    }
