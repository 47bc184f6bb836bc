"""The record a rollout sampler returns for each completion it draws.

Every proposal (:class:`~fdpg_ray.rollout.hf_sampler.HFSampler`,
:class:`~fdpg_ray.rollout.vllm_sampler.VLLMSampler`, the offline proposals of
:mod:`fdpg_ray.rollout.proposals`) returns ``list[Sample]``, grouped by prompt.  The training
controller turns them into a :class:`fdpg_ray.train.batch.ScoredBatch`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Sample:
    """One completion drawn from a proposal q for one prompt."""
    prompt_index: int      # index into the prompt list of the sampling call (the caller's order)
    token_ids: list[int]   # [T] the generated token ids, the final EOS kept when generated; no prompt
    text: str              # the decoded completion (special tokens skipped), without the prompt
    log_q: float           # nats: log q(completion | prompt) summed over the T generated tokens,
    #                        under the distribution actually sampled (temperature applied);
    #                        NaN where the proposal does not know it (a dataset without log_q)
    finish_reason: str     # "stop" (ended with EOS) or "length" (hit max_new_tokens)
