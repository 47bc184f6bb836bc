"""The generated corpus and the small GPT-2-style models trained on it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from modelbuild.corpus import (  # noqa: E402
    MAX_WORDS,
    MIN_WORDS,
    generate_corpus,
    has_amazing,
    is_female,
    is_positive,
    text_rates,
)

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "models" / "gpt2-tiny"


# ---------------------------------------------------------------- corpus


def test_corpus_is_deterministic_and_seeded():
    a = generate_corpus(300, seed=0)
    assert a == generate_corpus(300, seed=0)
    assert a != generate_corpus(300, seed=1)
    # a shorter corpus is a prefix of a longer one (the tokenizer relies on it)
    assert generate_corpus(100, seed=0) == a[:100]


def test_corpus_format_and_variety():
    texts = generate_corpus(2000, seed=0)
    assert len(set(texts)) == len(texts)
    for t in texts:
        assert "\n" not in t
        assert t.startswith(("Biography: ", "Review: "))
        assert MIN_WORDS <= len(t.split()) <= MAX_WORDS
    # reviews carry no gendered pronouns: "female" is a biography feature
    assert not any(is_female(t) for t in texts if t.startswith("Review:"))


def test_corpus_rates_within_bounds():
    texts = generate_corpus(4000, seed=3)
    r = text_rates(texts)
    assert 0.08 <= r["amazing"] <= 0.12
    assert 0.22 <= r["positive"] <= 0.32
    assert 0.45 <= r["biography"] <= 0.55
    bios = [t for t in texts if t.startswith("Biography:")]
    female = sum(is_female(t) for t in bios) / len(bios)
    assert 0.21 <= female <= 0.29


def test_feature_helpers():
    assert has_amazing("An AMAZING day.") and not has_amazing("amazingly dull")
    assert is_female("She said her work was done.") and not is_female("He and she met.")
    assert is_positive("The food was great.") and not is_positive("The food was awful.")


# ---------------------------------------------------------------- training


def test_micro_model_trains_and_reloads(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modelbuild.small_models import EOT, build_model

    out = tmp_path / "micro"
    info = build_model("micro", out, seed=0, steps=25, batch_size=16, vocab_size=512,
                       tokenizer_texts=1000, log=lambda *a: None)
    assert info["final_loss"] < info["first_loss"] - 0.5
    assert info["head_size"] == 64
    for f in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
              "generation_config.json", "training_info.json"):
        assert (out / f).is_file(), f
    # the atomic write leaves no temp folders behind
    assert [p.name for p in tmp_path.iterdir()] == ["micro"]
    assert json.loads((out / "training_info.json").read_text())["steps"] == 25

    tok = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    eot = tok.convert_tokens_to_ids(EOT)
    assert tok.bos_token_id == tok.eos_token_id == tok.pad_token_id == eot == 0
    gc = model.generation_config
    assert gc.bos_token_id == gc.eos_token_id == gc.pad_token_id == 0
    # no special tokens are added by the tokenizer (GPT-2 convention)
    assert tok("Review: good", add_special_tokens=True).input_ids[0] != eot
    ids = torch.tensor([[eot] + tok("Review: The food", add_special_tokens=False).input_ids])
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()


def test_rebuild_replaces_atomically(tmp_path):
    from modelbuild.small_models import build_model

    out = tmp_path / "m"
    kw = dict(steps=2, batch_size=4, vocab_size=300, tokenizer_texts=200, log=lambda *a: None)
    build_model("micro", out, seed=0, **kw)
    build_model("micro", out, seed=1, **kw)
    assert json.loads((out / "training_info.json").read_text())["seed"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


# ---------------------------------------------------------------- committed tiny model


@pytest.mark.skipif(not (TINY / "config.json").is_file(), reason="models/gpt2-tiny not built")
def test_committed_tiny_model_base_rates():
    from transformers import AutoConfig

    from modelbuild.small_models import sample_texts

    cfg = AutoConfig.from_pretrained(TINY)
    assert cfg.model_type == "gpt2"
    assert cfg.n_embd // cfg.n_head == 64 and cfg.n_embd % cfg.n_head == 0
    assert cfg.n_positions == 128
    texts = sample_texts(TINY, n=256, seed=0, batch_size=128)
    r = text_rates(texts)
    for key in ("amazing", "female", "positive"):
        assert 0.01 <= r[key] <= 0.5, (key, r)
    assert r["biography"] + r["review"] > 0.8, r
