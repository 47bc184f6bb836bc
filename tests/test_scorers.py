"""Every scorer kind on crafted texts, and every validation message."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest
import torch

from fdpg_ray.target.scorers import SCORER_KINDS, Scorer, build_scorer, validate_scores


def _score(spec, texts, contexts=None):
    out = build_scorer(spec).score(texts, contexts)
    assert out.dtype == np.float64 and out.shape == (len(texts),)
    return out.tolist()


def _assert_names_field(excinfo, field: str):
    msg = str(excinfo.value)
    assert msg.startswith(f"scorer.{field}:"), msg
    assert "\n" not in msg, msg


# ---------------------------------------------------------------- lexical kinds


def test_word_whole_words_case_insensitive_by_default():
    texts = ["An AMAZING day", "amazingly dull", "so amazing!", "nothing here", "(amazing)"]
    assert _score({"kind": "word", "words": ["amazing"]}, texts) == [1.0, 0.0, 1.0, 0.0, 1.0]


def test_word_case_sensitive_phrases_and_punctuation_edges():
    spec = {"kind": "word", "words": ["New York", "c++"], "case_sensitive": True}
    texts = ["I love New   York", "new york", "Writing c++ code", "c++11 is old", "NewYork"]
    assert _score(spec, texts) == [1.0, 0.0, 1.0, 0.0, 0.0]


def test_regex_match_and_flags():
    assert _score({"kind": "regex", "pattern": r"\bwed+ing\b"}, ["a wedding", "A WEDDING", "weddings"]) == [
        1.0, 0.0, 0.0]
    assert _score({"kind": "regex", "pattern": r"\bwed+ing\b", "flags": "i"}, ["A WEDDING"]) == [1.0]


def test_wordlist_modes_hand_computed():
    words = ["cat", "dog", "hot", "hot dog"]
    texts = ["The cat and the dog", "a hot dog, a cat, a cat", "catalogue dogma", ""]
    assert _score({"kind": "wordlist", "words": words, "mode": "any"}, texts) == [1.0, 1.0, 0.0, 0.0]
    # "hot dog" counts once (longest entry first), not as "hot" + "dog"
    assert _score({"kind": "wordlist", "words": words, "mode": "count"}, texts) == [2.0, 3.0, 0.0, 0.0]
    # words: 5 | a hot dog a cat a cat = 7 | 2 | none -> 0.0
    assert _score({"kind": "wordlist", "words": words, "mode": "fraction"}, texts) == pytest.approx(
        [2 / 5, 3 / 7, 0.0, 0.0])
    assert _score({"kind": "wordlist", "words": ["Cat"], "mode": "count", "case_sensitive": True},
                  ["Cat cat CAT"]) == [1.0]


def test_gender_from_pronouns():
    texts = [
        "She is a physicist. Her work on optics made her famous.",
        "He was born in Ohio; his father taught him chess.",
        "SHE met him.",  # tie
        "The theme of the Hershey chapter.",  # no pronouns (he inside words does not count)
        "She and her sister met him.",
        "Himself and his brother; herself.",
    ]
    assert _score({"kind": "gender", "gender": "female"}, texts) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    assert _score({"kind": "gender", "gender": "male"}, texts) == [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]


# ---------------------------------------------------------------- sentiment


def test_sentiment_outputs_agree_with_vader():
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    texts = ["I love this wonderful movie!", "This is terrible and I hate it.", "The box is on the table."]
    compound = np.array([SentimentIntensityAnalyzer().polarity_scores(t)["compound"] for t in texts])
    assert compound[0] > 0.5 and compound[1] < -0.5 and compound[2] == 0.0

    assert _score({"kind": "sentiment", "output": "compound"}, texts) == pytest.approx(compound.tolist())
    assert _score({"kind": "sentiment", "output": "probability"}, texts) == pytest.approx(
        ((compound + 1) / 2).tolist())
    assert _score({"kind": "sentiment"}, texts) == [1.0, 0.0, 0.0]  # default: positive, threshold 0.05
    # compound 0.0 is positive under a threshold of 0, and nothing is under 0.99
    assert _score({"kind": "sentiment", "threshold": 0}, texts) == [1.0, 0.0, 1.0]
    assert _score({"kind": "sentiment", "threshold": 0.99}, texts) == [0.0, 0.0, 0.0]


# ---------------------------------------------------------------- classifier

_VOCAB = ["[PAD]", "[UNK]", "good", "bad", "movie", "the", "is", "very", "plot", "boring"]


@pytest.fixture(scope="module")
def classifier_dir(tmp_path_factory):
    """A tiny randomly initialised BERT classifier with a word-level tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("clf")
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(_VOCAB)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(_VOCAB), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, initializer_range=0.5, num_labels=3,
                        id2label={0: "negative", 1: "neutral", 2: "positive"},
                        label2id={"negative": 0, "neutral": 1, "positive": 2})
    BertForSequenceClassification(config).save_pretrained(path)
    return path


_CLF_TEXTS = ["the movie is very good", "bad", "boring plot is very very bad indeed", "good good", "the movie"]


def _expected_probs(path, label_index):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(path).eval()
    ids = {w: i for i, w in enumerate(_VOCAB)}
    out = []
    with torch.no_grad():
        for text in _CLF_TEXTS:  # one text at a time: no padding involved
            x = torch.tensor([[ids.get(w, 1) for w in text.split()]])
            out.append(torch.softmax(model(input_ids=x).logits, -1)[0, label_index].item())
    return out


def test_classifier_probability_of_label_by_name_and_index(classifier_dir):
    expected = _expected_probs(classifier_dir, 2)
    assert len({round(p, 4) for p in expected}) > 1  # the random model does tell texts apart
    by_name = build_scorer({"kind": "classifier", "path": str(classifier_dir), "label": "positive",
                            "batch_size": 2, "name": "clf"})
    assert by_name.name == "clf"
    np.testing.assert_allclose(by_name.score(_CLF_TEXTS), expected, atol=1e-5)  # padded batches
    by_index = build_scorer({"kind": "classifier", "path": str(classifier_dir), "label": 2, "batch_size": 32})
    np.testing.assert_allclose(by_index.score(_CLF_TEXTS), expected, atol=1e-5)
    total = sum(build_scorer({"kind": "classifier", "path": str(classifier_dir), "label": i}).score(_CLF_TEXTS)
                for i in range(3))
    np.testing.assert_allclose(total, 1.0, atol=1e-6)


def test_classifier_max_length_truncates(classifier_dir):
    s = build_scorer({"kind": "classifier", "path": str(classifier_dir), "label": 0, "max_length": 1})
    expected = build_scorer({"kind": "classifier", "path": str(classifier_dir), "label": 0}).score(["the"])[0]
    assert s.score(["the movie is good", "the"]).tolist() == pytest.approx([expected, expected], abs=1e-6)


def test_classifier_use_context_needs_contexts(classifier_dir):
    s = build_scorer({"kind": "classifier", "path": str(classifier_dir), "label": 0, "use_context": True})
    out = s.score(["good", "bad"], ["the movie", "the plot"])
    assert out.shape == (2,) and np.all((out > 0) & (out < 1))
    with pytest.raises(ValueError, match="use_context"):
        s.score(["good"])


@pytest.mark.parametrize(
    "extra, field",
    [
        ({"label": "happy"}, "label"),
        ({"label": 3}, "label"),
        ({"label": -1}, "label"),
        ({"label": 1.5}, "label"),
        ({"label": None}, "label"),
        ({"label": 0, "batch_size": 0}, "batch_size"),
        ({"label": 0, "max_length": "long"}, "max_length"),
        ({"label": 0, "device": "tpu"}, "device"),
        ({"label": 0, "use_context": "yes"}, "use_context"),
        ({"label": 0, "labels": 0}, "labels"),
    ],
)
def test_classifier_validation(classifier_dir, extra, field):
    with pytest.raises(ValueError) as e:
        build_scorer({"kind": "classifier", "path": str(classifier_dir), **extra})
    _assert_names_field(e, field)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message for a machine without CUDA")
def test_classifier_cuda_without_gpu(classifier_dir):
    with pytest.raises(ValueError, match="CUDA is not available") as e:
        build_scorer({"kind": "classifier", "path": str(classifier_dir), "label": 0, "device": "cuda"})
    _assert_names_field(e, "device")


def test_classifier_path_errors(tmp_path):
    with pytest.raises(ValueError, match="not a directory") as e:
        build_scorer({"kind": "classifier", "path": str(tmp_path / "missing"), "label": 0})
    _assert_names_field(e, "path")
    with pytest.raises(ValueError, match="holds no model") as e:
        build_scorer({"kind": "classifier", "path": str(tmp_path), "label": 0})
    _assert_names_field(e, "path")
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="holds no loadable") as e:
        build_scorer({"kind": "classifier", "path": str(tmp_path), "label": 0})
    _assert_names_field(e, "path")
    with pytest.raises(ValueError) as e:
        build_scorer({"kind": "classifier", "label": 0})
    _assert_names_field(e, "path")


# ---------------------------------------------------------------- callable

_USER_MODULE = '''
import math

def with_contexts(texts, contexts):
    return [len(t) + (len(c) if c is not None else 0) for t, c in zip(texts, contexts or [None] * len(texts))]

def texts_only(texts, scale=1.0):
    return [scale * t.count("a") for t in texts]

def keyword_contexts(texts, *, contexts=None, bonus=0.0):
    return [bonus + (1.0 if contexts is None else 2.0) for _ in texts]

def nan_scores(texts):
    return [math.nan] + [0.0] * (len(texts) - 1)

def inf_scores(texts):
    return [-math.inf for _ in texts]

def too_short(texts):
    return [1.0] * (len(texts) - 1)

def two_d(texts):
    return [[1.0] for _ in texts]

def not_numbers(texts):
    return ["high" for _ in texts]

def ragged(texts):
    return [[1.0, 2.0], [3.0]]

def boom(texts):
    raise KeyError("missing feature")

def torch_scores(texts):
    import torch
    return torch.ones(len(texts), requires_grad=True) * 0.5

NOT_A_FUNCTION = 3
'''


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    path = tmp_path_factory.mktemp("usermod")
    (path / "fdpg_test_user_scorers.py").write_text(textwrap.dedent(_USER_MODULE))
    sys.path.insert(0, str(path))
    yield "fdpg_test_user_scorers"
    sys.path.remove(str(path))
    sys.modules.pop("fdpg_test_user_scorers", None)


def test_callable_call_modes(user_module):
    s = build_scorer({"kind": "callable", "path": f"{user_module}:with_contexts", "name": "lengths"})
    assert s.name == "lengths"
    assert s.score(["ab", "abc"], ["x", "yy"]).tolist() == [3.0, 5.0]
    assert s.score(["ab"]).tolist() == [2.0]
    s = build_scorer({"kind": "callable", "path": f"{user_module}:texts_only", "kwargs": {"scale": 2}})
    assert s.score(["banana", "xyz"], ["ctx", "ctx"]).tolist() == [6.0, 0.0]
    s = build_scorer({"kind": "callable", "path": f"{user_module}:keyword_contexts", "kwargs": {"bonus": 1}})
    assert s.score(["a"], ["c"]).tolist() == [3.0]
    assert s.score(["a"]).tolist() == [2.0]
    s = build_scorer({"kind": "callable", "path": f"{user_module}:torch_scores"})
    out = s.score(["a", "b"])
    assert out.dtype == np.float64 and out.tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    "fn, match",
    [
        ("nan_scores", r"scorer 'bad': scores must be finite; got 1 NaN \(first at index 0\)"),
        ("inf_scores", r"scorer 'bad': scores must be finite; got 3 inf"),
        ("too_short", r"scorer 'bad': expected scores of shape \(3,\), one float per text; got shape \(2,\)"),
        ("two_d", r"scorer 'bad': expected scores of shape \(3,\).*got shape \(3, 1\)"),
        ("not_numbers", r"scorer 'bad': expected scores of shape \(3,\)"),
        ("ragged", r"scorer 'bad': expected scores of shape \(3,\)"),
    ],
)
def test_callable_bad_outputs(user_module, fn, match):
    s = build_scorer({"kind": "callable", "path": f"{user_module}:{fn}", "name": "bad"})
    with pytest.raises(ValueError, match=match) as e:
        s.score(["a", "b", "c"])
    assert "\n" not in str(e.value)


def test_callable_exception_is_wrapped(user_module):
    s = build_scorer({"kind": "callable", "path": f"{user_module}:boom", "name": "explodes"})
    with pytest.raises(RuntimeError) as e:
        s.score(["a"])
    assert str(e.value) == "scorer 'explodes' raised KeyError: 'missing feature'"
    assert isinstance(e.value.__cause__, KeyError)


@pytest.mark.parametrize(
    "spec, field, match",
    [
        ({"path": "no_colon_here"}, "path", "package.module:function"),
        ({"path": "fdpg_no_such_module_xyz:f"}, "path", "cannot import module"),
        ({"path": "{mod}:missing"}, "path", "has no attribute"),
        ({"path": "{mod}:NOT_A_FUNCTION"}, "path", "not a function"),
        ({}, "path", "missing"),
        ({"path": "{mod}:texts_only", "kwargs": {"nope": 1}}, "kwargs", "cannot be called"),
        ({"path": "{mod}:texts_only", "kwargs": [1]}, "kwargs", "expected a mapping"),
        ({"path": "{mod}:texts_only", "args": []}, "args", "unknown key"),
    ],
)
def test_callable_validation(user_module, spec, field, match):
    spec = {k: (v.format(mod=user_module) if isinstance(v, str) else v) for k, v in spec.items()}
    with pytest.raises(ValueError, match=match) as e:
        build_scorer({"kind": "callable", **spec})
    _assert_names_field(e, field)


# ---------------------------------------------------------------- spec validation


@pytest.mark.parametrize(
    "spec, field, match",
    [
        ({"kind": "foo"}, "kind", "unknown kind 'foo'; valid kinds: word, regex, wordlist, sentiment, gender, "
                                  "classifier, callable"),
        ({"words": ["a"]}, "kind", "missing; valid kinds"),
        ({"kind": "word"}, "words", "missing"),
        ({"kind": "word", "words": "amazing"}, "words", "expected a non-empty list"),
        ({"kind": "word", "words": []}, "words", "expected a non-empty list"),
        ({"kind": "word", "words": ["ok", ""]}, "words", "entry 1"),
        ({"kind": "word", "words": ["ok", 3]}, "words", "entry 1"),
        ({"kind": "word", "words": ["a"], "case_sensitive": "no"}, "case_sensitive", "true or false"),
        ({"kind": "word", "words": ["a"], "mode": "any"}, "mode", "unknown key 'mode' for kind 'word'"),
        ({"kind": "word", "words": ["a"], "name": ""}, "name", "non-empty string"),
        ({"kind": "word", "words": ["a"], "name": 5}, "name", "non-empty string"),
        ({"kind": "regex"}, "pattern", "missing"),
        ({"kind": "regex", "pattern": "x("}, "pattern", "invalid regular expression"),
        ({"kind": "regex", "pattern": "[a-"}, "pattern", "invalid regular expression"),
        ({"kind": "regex", "pattern": "x", "flags": "q"}, "flags", "invalid flags"),
        ({"kind": "regex", "pattern": "x", "flags": 1}, "flags", "invalid flags"),
        ({"kind": "wordlist", "words": ["a"], "mode": "ratio"}, "mode", "valid values: any, count, fraction"),
        ({"kind": "wordlist", "mode": "any"}, "words", "missing"),
        ({"kind": "sentiment", "output": "label"}, "output", "valid values: positive, compound, probability"),
        ({"kind": "sentiment", "threshold": 2}, "threshold", r"number in \[-1.0, 1.0\]"),
        ({"kind": "sentiment", "threshold": "high"}, "threshold", "number"),
        ({"kind": "sentiment", "threshold": True}, "threshold", "number"),
        ({"kind": "gender"}, "gender", "missing"),
        ({"kind": "gender", "gender": "other"}, "gender", "valid values: female, male"),
        ({"kind": "gender", "gender": "female", "pronouns": []}, "pronouns", "valid keys: kind, name, gender"),
    ],
)
def test_spec_validation_messages(spec, field, match):
    with pytest.raises(ValueError, match=match) as e:
        build_scorer(spec)
    _assert_names_field(e, field)


def test_spec_must_be_a_mapping():
    with pytest.raises(ValueError, match=r"^scorer: expected a mapping with a 'kind' key"):
        build_scorer(["word"])


def test_where_prefix_in_messages():
    with pytest.raises(ValueError, match=r"^target\.constraints\[0\]\.words: missing"):
        build_scorer({"kind": "word"}, where="target.constraints[0]")


def test_default_name_is_kind_and_protocol():
    for spec in ({"kind": "word", "words": ["x"]}, {"kind": "regex", "pattern": "x"},
                 {"kind": "wordlist", "words": ["x"]}, {"kind": "sentiment"}, {"kind": "gender", "gender": "male"}):
        s = build_scorer(spec)
        assert s.name == spec["kind"]
        assert isinstance(s, Scorer)
    assert set(SCORER_KINDS) == {"word", "regex", "wordlist", "sentiment", "gender", "classifier", "callable"}


# ---------------------------------------------------------------- score() inputs and validate_scores


def test_score_checks_inputs():
    s = build_scorer({"kind": "word", "words": ["a"]})
    assert s.score([]).shape == (0,)
    with pytest.raises(ValueError, match="got 2 texts but 1 contexts"):
        s.score(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="not one string"):
        s.score("a b")
    assert s.score(("a", "b")).tolist() == [1.0, 0.0]  # any sequence of strings


def test_validate_scores():
    out = validate_scores("s", [1, 0, True], 3)
    assert out.dtype == np.float64 and out.tolist() == [1.0, 0.0, 1.0]
    arr = np.array([1.0, 2.0])
    assert validate_scores("s", arr, 2) is not arr  # a fresh array the caller may keep
    assert validate_scores("s", torch.tensor([0.25, 0.5]), 2).tolist() == [0.25, 0.5]
    with pytest.raises(ValueError, match=r"scorer 's': expected scores of shape \(2,\).*got shape \(\)"):
        validate_scores("s", 1.0, 2)
    with pytest.raises(ValueError, match=r"scorer 's': returned None; return one float per text"):
        validate_scores("s", None, 2)  # issue 14: say what the scorer returned
    with pytest.raises(ValueError, match=r"scorer 's': scores must be finite; got 1 NaN \(first at index 1\) "
                                         r"and 1 inf \(first at index 2\) among 3 texts"):
        validate_scores("s", [0.0, float("nan"), float("inf")], 3)


def test_lexical_scorers_are_fast():
    import time

    texts = ["she said the movie was amazing and his friend agreed, new york style"] * 5000
    specs = [{"kind": "word", "words": ["amazing", "great", "new york"]},
             {"kind": "wordlist", "words": ["amazing", "great"], "mode": "fraction"},
             {"kind": "regex", "pattern": r"am[a-z]+ing"}, {"kind": "gender", "gender": "female"}]
    scorers = [build_scorer(s) for s in specs]
    start = time.perf_counter()
    for s in scorers:
        s.score(texts)
    assert time.perf_counter() - start < 2.0
