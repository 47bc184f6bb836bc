"""Checks shared by the tests that train through Ray and then serve the result with vLLM."""

import pytest
import torch


def assert_final_model_matches_vllm(final: str, base_spec: str = "bundled:gpt2-tiny") -> None:
    """final/ loads in transformers and in vLLM, differs from the base model, and vLLM's log q
    of its own samples equals transformers' log pi (abs 2e-3, as in test_distributed)."""
    from fdpg_ray.rollout.vllm_sampler import VLLMSampler
    from fdpg_ray.objective.loss import bos_prompt_ids, collate, sequence_log_probs
    from fdpg_ray.model.sources import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(final)
    base, _ = load_model_and_tokenizer(base_spec)
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), base.state_dict().values()))
    sampler = VLLMSampler(final, seed=0)
    try:
        prompt = bos_prompt_ids(tok)
        samples = sampler.sample([prompt], 4, 24)
        with torch.no_grad():
            hf = sequence_log_probs(model, *collate([prompt] * 4, [s.token_ids for s in samples], tok.pad_token_id))
        for s, lp in zip(samples, hf.tolist()):
            assert s.log_q == pytest.approx(lp, abs=2e-3)
    finally:
        sampler.shutdown()
