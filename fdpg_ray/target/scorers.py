"""Batched text scorers: the features b(x), φ(x) and rewards r(x) of a target.

A scorer maps a batch of generated texts (and, for conditional targets, the
contexts/prompts they continue) to one finite float64 per text::

    scorer = build_scorer({"kind": "word", "words": ["amazing"]})
    scorer.score(["an amazing day", "a dull day"])      # array([1., 0.])

``build_scorer`` takes the mapping found in the YAML config; the key ``kind``
selects the class, every other key is checked, and a bad spec raises a one-line
``ValueError`` that names the field (``scorer.<key>``) and how to fix it.

Kinds and their keys (``name`` is accepted by every kind; default = kind):

==========  =================================================================
word        ``words`` (list), ``case_sensitive`` (false): 1.0 if any word or
            phrase occurs as a whole word, else 0.0.
regex       ``pattern``, ``flags`` ("" or letters of "imsx"): 1.0 if
            ``re.search`` matches, else 0.0.
wordlist    ``words`` (list), ``mode`` (any|count|fraction),
            ``case_sensitive`` (false): any → {0, 1}; count → number of
            whole-word occurrences; fraction → occurrences / number of words
            (words = runs of ``\\w`` characters; 0.0 for a text with none).
sentiment   ``output`` (positive|compound|probability), ``threshold`` (0.05):
            VADER compound score c ∈ [-1, 1]; positive → 1.0 if c ≥ threshold;
            compound → c; probability → (c + 1) / 2.
gender      ``gender`` (female|male): 1.0 if the text's pronouns are mostly of
            that gender (she/her/hers/herself vs he/him/his/himself, whole
            words, any case); 0.0 otherwise, and 0.0 for both on a tie.
classifier  ``path`` (local directory), ``label`` (name or index),
            ``batch_size`` (32), ``max_length`` (256), ``device``
            (cpu|cuda|cuda:N|auto), ``use_context`` (false): softmax
            probability of ``label`` from an
            ``AutoModelForSequenceClassification``; with ``use_context`` the
            model reads the pair (context, text).
callable    ``path`` ("package.module:function"), ``kwargs`` ({}): any
            Python function returning one float per text (see
            :class:`CallableScorer` for how it is called).
==========  =================================================================

This module has no Ray imports: scorer actors wrap it.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Optional, Protocol, Union, runtime_checkable

import numpy as np
from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, PrivateAttr, TypeAdapter,
                      ValidationError, model_validator)

from fdpg_ray.errors import one_line

__all__ = [
    "Scorer",
    "SCORER_KINDS",
    "build_scorer",
    "validate_scores",
    "WordScorer",
    "RegexScorer",
    "WordListScorer",
    "SentimentScorer",
    "GenderScorer",
    "ClassifierScorer",
    "CallableScorer",
]


@runtime_checkable
class Scorer(Protocol):
    """Anything with a ``name`` and a batched ``score``."""

    name: str

    def score(self, texts: list[str], contexts: list[str] | None = None) -> np.ndarray:
        """Return float64 scores of shape ``(len(texts),)``, all finite."""
        ...


# --------------------------------------------------------------------------
# Output checking shared by every scorer
# --------------------------------------------------------------------------


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def validate_scores(name: str, scores: Any, n: int) -> np.ndarray:
    """Return ``scores`` as a fresh float64 array of shape ``(n,)``.

    Raises ``ValueError`` naming the scorer when the values are not numbers,
    do not have shape ``(n,)`` (one float per text) or are not all finite.
    """
    if hasattr(scores, "detach"):  # torch tensor, possibly on GPU or with grad
        scores = scores.detach().cpu().numpy()
    if scores is None:
        raise ValueError(f"scorer '{name}': returned None; return one float per text, shape ({n},)")
    if isinstance(scores, (list, tuple)) or (isinstance(scores, np.ndarray) and scores.dtype == object):
        # numpy turns None into NaN: say what the scorer returned, not "NaN"
        none_idx = [i for i, v in enumerate(scores) if v is None]
        if none_idx:
            raise ValueError(
                f"scorer '{name}': returned None for {len(none_idx)} of {len(scores)} texts "
                f"(first at index {none_idx[0]}); return a float for every text"
            )
    try:
        arr = np.array(scores, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(
            f"scorer '{name}': expected scores of shape ({n},), one float per text; "
            f"got a value that is not a flat sequence of numbers ({_one_line(e)})"
        ) from None
    if arr.shape != (n,):
        raise ValueError(
            f"scorer '{name}': expected scores of shape ({n},), one float per text; "
            f"got shape {arr.shape}"
        )
    finite = np.isfinite(arr)
    if not finite.all():
        nan_idx = np.flatnonzero(np.isnan(arr))
        inf_idx = np.flatnonzero(np.isinf(arr))
        parts = []
        if nan_idx.size:
            parts.append(f"{nan_idx.size} NaN (first at index {nan_idx[0]})")
        if inf_idx.size:
            parts.append(f"{inf_idx.size} inf (first at index {inf_idx[0]})")
        raise ValueError(
            f"scorer '{name}': scores must be finite; got {' and '.join(parts)} "
            f"among {n} texts"
        )
    return arr


class _BaseScorer:
    """Checks inputs and outputs around ``_score``, which subclasses define."""

    kind: str = ""

    def __init__(self, name: str):
        self.name = name

    def score(self, texts: list[str], contexts: list[str] | None = None) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError(f"scorer '{self.name}': texts must be a list of strings, not one string")
        texts = list(texts)
        if contexts is not None:
            if isinstance(contexts, str):
                raise TypeError(
                    f"scorer '{self.name}': contexts must be a list of strings (one per text), "
                    "not one string"
                )
            contexts = list(contexts)
            if len(contexts) != len(texts):
                raise ValueError(
                    f"scorer '{self.name}': got {len(texts)} texts but {len(contexts)} contexts; "
                    "give one context per text or None"
                )
        if not texts:
            return np.zeros(0, dtype=np.float64)
        return validate_scores(self.name, self._score(texts, contexts), len(texts))

    def _score(self, texts: list[str], contexts: list[str] | None) -> Any:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# --------------------------------------------------------------------------
# Lexical scorers
# --------------------------------------------------------------------------


def _whole_word_pattern(words: Sequence[str], case_sensitive: bool) -> re.Pattern:
    """One compiled alternation matching any of ``words`` as a whole word.

    Word edges are ``(?<!\\w)`` / ``(?!\\w)`` rather than ``\\b`` so that entries
    that start or end with punctuation ("c++") still work; spaces inside a
    phrase match any run of whitespace; longer entries are tried first so that
    "new york" wins over "new".
    """
    alts = sorted({r"\s+".join(map(re.escape, w.split())) for w in words}, key=len, reverse=True)
    flags = 0 if case_sensitive else re.IGNORECASE
    return re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", flags)


class WordScorer(_BaseScorer):
    """1.0 if any of ``words`` occurs as a whole word, else 0.0."""

    kind = "word"

    def __init__(self, name: str, words: Sequence[str], case_sensitive: bool = False):
        super().__init__(name)
        self.words = list(words)
        self.case_sensitive = case_sensitive
        self._pattern = _whole_word_pattern(self.words, case_sensitive)

    def _score(self, texts, contexts):
        search = self._pattern.search
        return [1.0 if search(t) else 0.0 for t in texts]


class RegexScorer(_BaseScorer):
    """1.0 if ``re.search(pattern, text)`` matches, else 0.0."""

    kind = "regex"

    def __init__(self, name: str, pattern: str, flags: str = ""):
        super().__init__(name)
        self.pattern = pattern
        self.flags = flags
        self._regex = re.compile(pattern, _regex_flags(flags))

    def _score(self, texts, contexts):
        search = self._regex.search
        return [1.0 if search(t) else 0.0 for t in texts]


_FLAG_LETTERS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


def _regex_flags(flags: str) -> int:
    value = 0
    for letter in flags:
        value |= _FLAG_LETTERS[letter]
    return value


_WORD_TOKEN = re.compile(r"\w+")


class WordListScorer(_BaseScorer):
    """Whole-word occurrences of a word list: ``any``, ``count`` or ``fraction``.

    ``count`` counts non-overlapping matches (a phrase counts once);
    ``fraction`` divides by the number of words, a word being a run of ``\\w``
    characters, and is 0.0 for a text without words.
    """

    kind = "wordlist"

    def __init__(self, name: str, words: Sequence[str], mode: str = "any", case_sensitive: bool = False):
        super().__init__(name)
        self.words = list(words)
        self.mode = mode
        self.case_sensitive = case_sensitive
        self._pattern = _whole_word_pattern(self.words, case_sensitive)

    def _score(self, texts, contexts):
        if self.mode == "any":
            search = self._pattern.search
            return [1.0 if search(t) else 0.0 for t in texts]
        findall = self._pattern.findall
        counts = np.array([len(findall(t)) for t in texts], dtype=np.float64)
        if self.mode == "count":
            return counts
        n_words = np.array([len(_WORD_TOKEN.findall(t)) for t in texts], dtype=np.float64)
        return np.divide(counts, n_words, out=np.zeros_like(counts), where=n_words > 0)


_FEMALE = re.compile(r"\b(?:she|her|hers|herself)\b", re.IGNORECASE)
_MALE = re.compile(r"\b(?:he|him|his|himself)\b", re.IGNORECASE)


class GenderScorer(_BaseScorer):
    """Gender of a biography from its pronouns (the paper's debiasing task).

    female = count(she, her, hers, herself) > count(he, him, his, himself);
    male is the reverse; a tie (including no pronouns) is neither.
    """

    kind = "gender"

    def __init__(self, name: str, gender: str):
        super().__init__(name)
        self.gender = gender

    def _score(self, texts, contexts):
        female = np.array([len(_FEMALE.findall(t)) for t in texts])
        male = np.array([len(_MALE.findall(t)) for t in texts])
        hit = female > male if self.gender == "female" else male > female
        return hit.astype(np.float64)


# --------------------------------------------------------------------------
# Sentiment (VADER)
# --------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _vader():
    """One VADER analyzer per process (loading its lexicon takes ~50 ms)."""
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    return SentimentIntensityAnalyzer()


class SentimentScorer(_BaseScorer):
    """VADER sentiment: ``positive`` ({0, 1}), ``compound`` or ``probability``."""

    kind = "sentiment"

    def __init__(self, name: str, output: str = "positive", threshold: float = 0.05):
        super().__init__(name)
        self.output = output
        self.threshold = float(threshold)
        _vader()  # load now so that a missing package fails at build time

    def _score(self, texts, contexts):
        polarity = _vader().polarity_scores
        compound = np.array([polarity(t)["compound"] for t in texts], dtype=np.float64)
        if self.output == "compound":
            return compound
        if self.output == "probability":
            return (compound + 1.0) / 2.0
        return (compound >= self.threshold).astype(np.float64)


# --------------------------------------------------------------------------
# Transformers sequence classifier
# --------------------------------------------------------------------------


class ClassifierScorer(_BaseScorer):
    """Softmax probability of one label of a local sequence classifier.

    Texts are sorted by length before batching so that each batch pads little;
    scores come back in the input order.
    """

    kind = "classifier"

    def __init__(self, name: str, model, tokenizer, label_index: int, batch_size: int = 32,
                 max_length: int = 256, device: str = "cpu", use_context: bool = False):
        super().__init__(name)
        self.model = model
        self.tokenizer = tokenizer
        self.label_index = label_index
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = device
        self.use_context = use_context

    def _score(self, texts, contexts):
        import torch

        if self.use_context and contexts is None:
            raise ValueError(
                f"scorer '{self.name}' has use_context: true and needs one context per text; "
                "pass contexts or set use_context: false"
            )
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(contexts[i]) if self.use_context else 0))
        out = np.empty(len(texts), dtype=np.float64)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                batch = [texts[i] for i in idx]
                if self.use_context:
                    enc = self.tokenizer([contexts[i] for i in idx], batch, padding=True, truncation=True,
                                         max_length=self.max_length, return_tensors="pt")
                else:
                    enc = self.tokenizer(batch, padding=True, truncation=True,
                                         max_length=self.max_length, return_tensors="pt")
                enc = {k: v.to(self.device) for k, v in enc.items()}
                logits = self.model(**enc).logits.float()
                probs = torch.softmax(logits, dim=-1)[:, self.label_index]
                out[idx] = probs.cpu().numpy()
        return out

    def __repr__(self) -> str:
        return f"ClassifierScorer(name={self.name!r}, label_index={self.label_index}, device={self.device!r})"


# --------------------------------------------------------------------------
# Arbitrary Python function
# --------------------------------------------------------------------------


class CallableScorer(_BaseScorer):
    """A user function ``package.module:function`` returning one float per text.

    How it is called: ``fn(texts, contexts=contexts, **kwargs)`` if it has a
    parameter named ``contexts``; ``fn(texts, contexts, **kwargs)`` if its
    second positional parameter has no default (or it takes ``*args``);
    otherwise ``fn(texts, **kwargs)``. Its output is checked with
    :func:`validate_scores`; an exception inside it is re-raised as
    ``RuntimeError("scorer '<name>' raised <Type>: <message>")``.
    """

    kind = "callable"

    def __init__(self, name: str, fn: Callable, kwargs: Mapping[str, Any] | None = None,
                 call_mode: str | None = None, path: str = ""):
        super().__init__(name)
        self.fn = fn
        self.kwargs = dict(kwargs or {})
        self.path = path
        self.call_mode = call_mode or _call_mode(fn)

    def _score(self, texts, contexts):
        try:
            if self.call_mode == "keyword":
                return self.fn(texts, contexts=contexts, **self.kwargs)
            if self.call_mode == "positional":
                return self.fn(texts, contexts, **self.kwargs)
            return self.fn(texts, **self.kwargs)
        except Exception as e:
            raise RuntimeError(f"scorer '{self.name}' raised {type(e).__name__}: {_one_line(e)}") from e

    def __repr__(self) -> str:
        return f"CallableScorer(name={self.name!r}, path={self.path!r})"


def _call_mode(fn: Callable) -> str:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return "texts"
    params = sig.parameters
    if "contexts" in params and params["contexts"].kind is not inspect.Parameter.POSITIONAL_ONLY:
        return "keyword"
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in params.values()):
        return "positional"
    positional = [p for p in params.values()
                  if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if len(positional) >= 2 and positional[1].default is inspect.Parameter.empty:
        return "positional"
    return "texts"


# --------------------------------------------------------------------------
# Building from a config mapping
# --------------------------------------------------------------------------

def _text(v):
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"expected a non-empty string, got {v!r}")
    return v


def _words(v):
    if isinstance(v, str) or not isinstance(v, Sequence) or len(v) == 0:
        raise ValueError(f"expected a non-empty list, got {v!r}")
    for i, w in enumerate(v):
        if not isinstance(w, str) or not w.strip():
            raise ValueError(f"entry {i} is {w!r}, not a non-empty string")
    return [w.strip() for w in v]


def _threshold(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not -1.0 <= v <= 1.0:
        raise ValueError(f"expected a number in [-1.0, 1.0], got {v!r}")
    return float(v)


def _label(v):
    if isinstance(v, bool) or not isinstance(v, (int, str)):
        raise ValueError(f"expected a label name or index, got {v!r}")
    return v


def _flags(v):
    if not isinstance(v, str) or any(c not in _FLAG_LETTERS for c in v):
        raise ValueError(f'invalid flags {v!r}; use "" or letters from "imsx" ("i" = ignore case)')
    return v


Text = Annotated[str, BeforeValidator(_text)]
Words = Annotated[list, BeforeValidator(_words), Field(description="give a non-empty list of words or phrases, "
                                                                    "e.g. words: [amazing, great]")]
PositiveInt = Annotated[int, Field(gt=0)]


class _ScorerSpec(BaseModel):
    """The keys every scorer mapping has: ``kind`` and ``name`` (default: the kind)."""
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: str
    name: Optional[Text] = Field(None, description="give a short name used in metrics")
    _where: str = PrivateAttr("scorer")  # the mapping's dotted name in messages

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data):
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, Mapping) else data


class WordSpec(_ScorerSpec):
    """``kind: word``: 1.0 when any of ``words`` occurs as a whole word or phrase."""
    kind: Literal["word"]
    words: Words
    case_sensitive: bool = False


class RegexSpec(_ScorerSpec):
    """``kind: regex``: 1.0 when ``pattern`` matches (``flags``: letters of imsx)."""
    kind: Literal["regex"]
    pattern: Text = Field(description="give a Python regular expression, e.g. pattern: '\\bwedding\\b'")
    flags: Annotated[str, BeforeValidator(_flags)] = ""


class WordListSpec(_ScorerSpec):
    """``kind: wordlist``: any / count / fraction of ``words`` present."""
    kind: Literal["wordlist"]
    words: Words
    mode: Literal["any", "count", "fraction"] = "any"
    case_sensitive: bool = False


class SentimentSpec(_ScorerSpec):
    """``kind: sentiment``: VADER's sentiment, as ``output`` (``threshold`` on the compound score, in [-1, 1])."""
    kind: Literal["sentiment"]
    output: Literal["positive", "compound", "probability"] = "positive"
    threshold: Annotated[float, BeforeValidator(_threshold)] = 0.05


class GenderSpec(_ScorerSpec):
    """``kind: gender``: 1.0 when the text mentions ``gender`` (female or male)."""
    kind: Literal["gender"]
    gender: Literal["female", "male"]


class ClassifierSpec(_ScorerSpec):
    """``kind: classifier``: a local sequence classifier's probability of ``label`` (name or index);
    ``batch_size`` texts per forward pass, ``max_length`` tokens, ``device`` cpu | cuda | cuda:N | auto."""
    kind: Literal["classifier"]
    path: Text = Field(description="give the local directory of a saved sequence classifier")
    label: Annotated[Union[int, str], BeforeValidator(_label)] = Field(
        description="give the label to score, by name or index")
    batch_size: PositiveInt = 32
    max_length: PositiveInt = 256
    device: Text = Field("cpu", description="cpu, cuda, cuda:N or auto")
    use_context: bool = False


class CallableSpec(_ScorerSpec):
    """``kind: callable``: ``path`` 'package.module:function' called with the texts (and contexts) and ``kwargs``."""
    kind: Literal["callable"]
    path: Text = Field(description="give 'package.module:function'")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="give a mapping of argument names to values")


ScorerSpec = Annotated[Union[WordSpec, RegexSpec, WordListSpec, SentimentSpec, GenderSpec, ClassifierSpec, CallableSpec],
                       Discriminator("kind")]
"""One scorer mapping, told apart by ``kind``."""
_SCORER_SPEC = TypeAdapter(ScorerSpec)


def _error(s: _ScorerSpec, key: str, msg: str) -> ValueError:
    """The one-line error of ``key`` of a scorer mapping (``<where>.<key>: ...``)."""
    return ValueError(f"{s._where}.{key}: {_one_line(msg)}")


def _build_word(s: WordSpec, name: str) -> Scorer:
    return WordScorer(name, s.words, s.case_sensitive)


def _build_regex(s: RegexSpec, name: str) -> Scorer:
    try:
        return RegexScorer(name, s.pattern, s.flags)
    except re.error as e:
        raise _error(s, "pattern", f"invalid regular expression {s.pattern!r}: {e}; fix the pattern "
                                   "(quote it in YAML)") from None


def _build_wordlist(s: WordListSpec, name: str) -> Scorer:
    return WordListScorer(name, s.words, s.mode, s.case_sensitive)


def _build_sentiment(s: SentimentSpec, name: str) -> Scorer:
    try:
        return SentimentScorer(name, s.output, s.threshold)
    except ImportError as e:
        raise _error(s, "kind", f"kind 'sentiment' needs the vaderSentiment package ({e}); "
                                "pip install vaderSentiment") from None


def _build_gender(s: GenderSpec, name: str) -> Scorer:
    return GenderScorer(name, s.gender)


def _resolve_device(s: ClassifierSpec, device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if re.fullmatch(r"cuda(:\d+)?", device):
        if not torch.cuda.is_available():
            raise _error(s, "device", f"'{device}' requested but CUDA is not available here; use device: cpu or auto")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise _error(s, "device", f"'{device}' requested but only {torch.cuda.device_count()} CUDA "
                                      "device(s) are visible; use cuda:0 or auto")
        return device
    raise _error(s, "device", f"invalid device {device!r}; valid values: cpu, cuda, cuda:N, auto")


def _build_classifier(s: ClassifierSpec, name: str) -> Scorer:
    path, label = Path(s.path).expanduser(), s.label
    device = _resolve_device(s, s.device)

    if not path.is_dir():
        raise _error(s, "path", f"{str(path)!r} is not a directory; give the local directory of a saved "
                                "sequence classifier (save_pretrained output); hub names are not downloaded")
    if not (path / "config.json").is_file():
        raise _error(s, "path", f"{str(path)!r} holds no model (no config.json); give the directory written "
                                "by save_pretrained")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as e:
        raise _error(s, "path", f"{str(path)!r} holds no loadable tokenizer ({type(e).__name__}: {e}); "
                                "save the tokenizer next to the model") from None
    try:
        model = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True)
    except Exception as e:
        raise _error(s, "path", f"{str(path)!r} holds no loadable sequence-classification model "
                                f"({type(e).__name__}: {e})") from None
    model.eval().to(device)

    num_labels = int(model.config.num_labels)
    id2label = {int(k): str(v) for k, v in (model.config.id2label or {}).items()}
    if isinstance(label, int):
        if not 0 <= label < num_labels:
            raise _error(s, "label", f"index {label} out of range for a model with {num_labels} labels; "
                                     f"valid: 0..{num_labels - 1} ({_labels_text(id2label)})")
        label_index = label
    else:
        matches = [i for i, lab in id2label.items() if lab == label]
        if not matches:
            raise _error(s, "label", f"unknown label {label!r}; valid labels: {_labels_text(id2label)}")
        label_index = matches[0]

    if tokenizer.pad_token is None:  # GPT-2 style tokenizers have none; padding needs one
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        if tokenizer.pad_token is None:
            raise _error(s, "path", f"the tokenizer in {str(path)!r} has no pad, eos or unk token to pad "
                                    "batches with; add a pad token")
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return ClassifierScorer(name, model, tokenizer, label_index, s.batch_size, s.max_length, device, s.use_context)


def _labels_text(id2label: Mapping[int, str]) -> str:
    return ", ".join(f"{i}={lab}" for i, lab in sorted(id2label.items()))


_CALLABLE_PATH = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _build_callable(s: CallableSpec, name: str) -> Scorer:
    path = s.path
    if not _CALLABLE_PATH.fullmatch(path):
        raise _error(s, "path", f"invalid import path {path!r}; expected 'package.module:function'")
    module_name, attr_path = path.split(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:
        raise _error(s, "path", f"cannot import module {module_name!r} ({type(e).__name__}: {e}); "
                                "check that it is installed or on PYTHONPATH") from None
    for attr in attr_path.split("."):
        if not hasattr(obj, attr):
            raise _error(s, "path", f"module {module_name!r} has no attribute {attr_path!r}; check the name "
                                    "after ':'")
        obj = getattr(obj, attr)
    if not callable(obj):
        raise _error(s, "path", f"{path!r} is a {type(obj).__name__}, not a function")
    kwargs = s.kwargs
    mode = _call_mode(obj)
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        sig = None
    if sig is not None:
        try:
            if mode == "keyword":
                sig.bind([], contexts=None, **kwargs)
            elif mode == "positional":
                sig.bind([], None, **kwargs)
            else:
                sig.bind([], **kwargs)
        except TypeError as e:
            raise _error(s, "kwargs", f"{path} cannot be called with texts and kwargs {sorted(kwargs)}: {e}; "
                                      "fix kwargs or the function's signature") from None
    return CallableScorer(name, obj, kwargs, mode, path)


SCORER_KINDS: dict[str, tuple[type[_ScorerSpec], Callable[[Any, str], Scorer]]] = {
    "word": (WordSpec, _build_word), "regex": (RegexSpec, _build_regex), "wordlist": (WordListSpec, _build_wordlist),
    "sentiment": (SentimentSpec, _build_sentiment), "gender": (GenderSpec, _build_gender),
    "classifier": (ClassifierSpec, _build_classifier), "callable": (CallableSpec, _build_callable),
}
"""kind → (its spec model, builder)."""


def build_scorer(spec: Mapping[str, Any], where: str = "scorer") -> Scorer:
    """Build a scorer from its config mapping; ``spec["kind"]`` selects the class.

    ``where`` is the config path used in error messages (default ``scorer``,
    e.g. ``target.constraints[0].scorer`` from the config loader).  Raises ValueError, one line
    ``<where>.<key>: <problem>; <fix>``, for a mapping that does not fit its kind's spec model
    (:data:`ScorerSpec`) or names something that cannot be loaded.
    """
    valid = ", ".join(SCORER_KINDS)
    if isinstance(spec, Scorer) and not isinstance(spec, Mapping):
        return spec  # already built (programmatic use)
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where}: expected a mapping with a 'kind' key, got {type(spec).__name__}; "
                         f"valid kinds: {valid}")
    try:
        s = _SCORER_SPEC.validate_python(dict(spec))
    except ValidationError as e:
        raise ValueError(one_line(e, ScorerSpec, where)) from None
    s._where = where
    return SCORER_KINDS[s.kind][1](s, s.name or s.kind)
