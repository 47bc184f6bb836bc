"""VLLMSampler against real vLLM (CPU build) and transformers, on a throwaway GPT-2.

The model is random (head size 64: vLLM-CPU refuses 16), built in a tmp dir so
that these tests depend on nobody else's artefacts.  One engine per module.
"""

from __future__ import annotations

import math
import os
import time

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fdpg_ray.rollout.weight_sync import (  # noqa: E402
    CPUWeightSync,
    WeightSync,
    pack_state_dict,
    packed_to_wire,
    unpack_state_dict,
    wire_to_packed,
)

VOCAB = 128
N_POS = 64
EOS = 0
TOL = 1e-3  # abs, per sequence, float32 on both sides


def make_tiny_gpt2(out_dir: str, seed: int = 0, vocab: int = VOCAB, n_positions: int = N_POS) -> str:
    """A random GPT-2 (1 layer, 1 head of size 64) with a word-level tokenizer
    ("w0".."w125"; id 0 is <|endoftext|>), saved with save_pretrained."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    words = ["<|endoftext|>", "<unk>"] + [f"w{i}" for i in range(vocab - 2)]
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>", unk_token="<unk>"
    )
    torch.manual_seed(seed)
    cfg = GPT2Config(
        vocab_size=vocab, n_positions=n_positions, n_embd=64, n_layer=1, n_head=1,
        bos_token_id=EOS, eos_token_id=EOS,
    )
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():  # sharpen the random init so the distribution is far from uniform
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8.0)
    model.save_pretrained(out_dir)
    fast.save_pretrained(out_dir)
    return out_dir


def hf_logprob(model, prompt, completion, temperature=1.0, eos_mask_steps=0) -> float:
    """log of the probability of ``completion`` after ``prompt`` under a
    transformers model, tempered, with EOS masked for the first
    ``eos_mask_steps`` generated tokens (vLLM's ``min_tokens``)."""
    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logits = model(ids).logits[0].double()
    total = 0.0
    for j, tok in enumerate(completion):
        z = logits[len(prompt) - 1 + j] / temperature
        if j < eos_mask_steps:
            z = z.clone()
            z[EOS] = -math.inf
        total += torch.log_softmax(z, -1)[tok].item()
    return total


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_gpt2(str(tmp_path_factory.mktemp("gpt2_tiny")))


@pytest.fixture(scope="module")
def hf_model(tiny_dir):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(tiny_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def sampler(tiny_dir):
    from fdpg_ray.rollout.vllm_sampler import VLLMSampler

    s = VLLMSampler(tiny_dir, seed=0, gpu_memory_utilization=0.2)
    print(f"\n[vllm] engine start {s.start_time_s:.2f}s")
    yield s
    s.shutdown()


# --------------------------------------------------------------------------- #
# packing (no engine)
# --------------------------------------------------------------------------- #


def test_pack_unpack_round_trip():
    g = torch.Generator().manual_seed(0)
    sd = {
        "a.weight": torch.randn(3, 4, generator=g),
        "a.bias": torch.randn(4, generator=g),
        "scalar": torch.tensor(2.5),
        "half": torch.randn(5, 2, generator=g).to(torch.bfloat16),
        "ids": torch.arange(7, dtype=torch.int64).view(7, 1),
        "empty": torch.empty(0, 3),
        "strided": torch.randn(4, 6, generator=g).t(),  # non-contiguous
    }
    buffers, meta = pack_state_dict(sd)
    assert set(buffers) == {"float32", "bfloat16", "int64"}  # one buffer per dtype
    assert all(b.dim() == 1 and b.is_contiguous() for b in buffers.values())
    assert buffers["float32"].numel() == 12 + 4 + 1 + 0 + 24
    assert [m["name"] for m in meta] == list(sd)
    for out in (unpack_state_dict(buffers, meta), unpack_state_dict(wire_to_packed(packed_to_wire(buffers)), meta)):
        assert list(out) == list(sd)
        for k, v in sd.items():
            assert out[k].dtype == v.dtype and out[k].shape == v.shape
            assert torch.equal(out[k], v), k
    # packing copies: later changes to the source do not leak into the buffer
    sd["a.bias"].add_(1.0)
    assert not torch.equal(unpack_state_dict(buffers, meta)["a.bias"], sd["a.bias"])
    with pytest.raises(ValueError):
        unpack_state_dict(buffers, [dict(meta[0], numel=10_000)])


def test_cpu_weight_sync_is_a_weight_sync():
    class Target:
        def __init__(self):
            self.calls = []

        def load_packed(self, buffers, metadata):
            self.calls.append(unpack_state_dict(buffers, metadata))

    t = Target()
    ws = CPUWeightSync(t)
    assert isinstance(ws, WeightSync)
    ws.push({"w": torch.ones(2, 2)})
    assert len(t.calls) == 1 and torch.equal(t.calls[0]["w"], torch.ones(2, 2))


# --------------------------------------------------------------------------- #
# sampling and scoring
# --------------------------------------------------------------------------- #


def test_samples_are_independent_and_grouped(sampler):
    prompts = [[EOS], [5, 6, 7]]
    t0 = time.perf_counter()
    out = sampler.sample(prompts, n=16, max_new_tokens=12)
    dt = time.perf_counter() - t0
    print(f"\n[vllm] {sum(len(s.token_ids) for s in out) / dt:.0f} generated tokens/s (32 samples)")
    assert [s.prompt_index for s in out] == [0] * 16 + [1] * 16
    for s in out:
        assert 1 <= len(s.token_ids) <= 12
        assert math.isfinite(s.log_q) and s.log_q < 0
        assert s.finish_reason in ("stop", "length")
        if s.finish_reason == "stop":
            assert s.token_ids[-1] == EOS  # the final EOS is part of the sample
        assert isinstance(s.text, str)
    for i in range(2):
        seqs = {tuple(s.token_ids) for s in out if s.prompt_index == i}
        assert len(seqs) >= 12, f"prompt {i}: only {len(seqs)} distinct samples out of 16"


def test_seeded_sampling_is_reproducible_and_independent(sampler):
    prompts = [[EOS], [EOS]]  # identical prompts must still get independent samples
    a = sampler.sample(prompts, n=4, max_new_tokens=10, seed=123, ignore_eos=True)
    b = sampler.sample(prompts, n=4, max_new_tokens=10, seed=123, ignore_eos=True)
    ids_a = [tuple(s.token_ids) for s in a]
    assert ids_a == [tuple(s.token_ids) for s in b]
    assert len(set(ids_a)) == 8
    assert all(len(s) == 10 for s in ids_a)  # ignore_eos


def test_log_q_equals_score_and_transformers(sampler, hf_model):
    prompts = [[EOS], [3, 4, 5, 6]]
    out = sampler.sample(prompts, n=6, max_new_tokens=16)
    comps = [s.token_ids for s in out]
    ps = [prompts[s.prompt_index] for s in out]
    scored = sampler.score(ps, comps)
    diffs_score, diffs_hf = [], []
    for s, p, c, sc in zip(out, ps, comps, scored):
        ref = hf_logprob(hf_model, p, c)
        diffs_score.append(abs(s.log_q - sc))
        diffs_hf.append(abs(s.log_q - ref))
    print(f"\n[vllm] max |log_q - score| = {max(diffs_score):.2e}, max |log_q - HF| = {max(diffs_hf):.2e}")
    assert max(diffs_score) < TOL
    assert max(diffs_hf) < TOL


def test_score_fixed_sequences(sampler, hf_model):
    prompts = [[EOS], [9, 8], [EOS, 17, 17, 17]]
    comps = [[10, 11, 12, EOS], [1], [20, 21, 22, 23, 24, 25, 26]]
    for p, c, sc in zip(prompts, comps, sampler.score(prompts, comps)):
        assert abs(sc - hf_logprob(hf_model, p, c)) < TOL


def test_temperature_and_min_tokens_are_in_log_q(sampler, hf_model):
    """log_q is the log-prob under the distribution actually sampled: tempered,
    and with EOS masked while fewer than min_new_tokens tokens exist."""
    T, k = 0.7, 5
    out = sampler.sample([[EOS]], n=6, max_new_tokens=12, temperature=T, min_new_tokens=k)
    for s in out:
        c = s.token_ids
        assert len(c) >= k and EOS not in c[:k]
        ref = hf_logprob(hf_model, [EOS], c, temperature=T, eos_mask_steps=k)
        assert abs(s.log_q - ref) < TOL
        # ...and differs from the untempered, unmasked log-prob
        assert abs(s.log_q - hf_logprob(hf_model, [EOS], c)) > 1e-2


# --------------------------------------------------------------------------- #
# weight reload
# --------------------------------------------------------------------------- #


def test_load_weights_in_place(sampler, hf_model, tiny_dir):
    from transformers import GPT2LMHeadModel

    prompts, comps = [[EOS], [4, 2]], [[7, 8, 9, 10, EOS], [30, 31, 32]]
    before = sampler.score(prompts, comps)
    original = {k: v.clone() for k, v in hf_model.state_dict().items()}

    new = GPT2LMHeadModel.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in new.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    t0 = time.perf_counter()
    sampler.load_weights(new.state_dict())
    wall = time.perf_counter() - t0
    print(f"\n[vllm] load_weights (tiny): {wall * 1e3:.1f} ms call, {sampler.last_reload_s * 1e3:.1f} ms in the worker")
    try:
        after = sampler.score(prompts, comps)
        for b, a, p, c in zip(before, after, prompts, comps):
            assert abs(a - b) > 1e-2  # the engine really serves new weights
            assert abs(a - hf_logprob(new, p, c)) < TOL
        # sampling uses the new weights too (prefix cache reset: same prompt as before)
        for s in sampler.sample([[EOS]], n=4, max_new_tokens=10):
            assert abs(s.log_q - hf_logprob(new, [EOS], s.token_ids)) < TOL
        # the CPU WeightSync path does the same thing
        CPUWeightSync(sampler).push(original)
        restored = sampler.score(prompts, comps)
        for b, r in zip(before, restored):
            assert abs(b - r) < 1e-5
    finally:
        sampler.load_weights(original)
