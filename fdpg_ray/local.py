"""Run f-DPG in one Python process, no Ray: the same controller, rollout backend code
and scorer as the distributed run.  Used by the exact toy verification, by unit tests and
as the no-Ray baseline of the end-to-end benchmark."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .config import Config, parse_proposal
from .controller import Controller
from .proposals import DatasetProposal, rollout_model_path
from .seeding import ENGINE, PROPOSAL_DATA, derive_seed


class LocalRollout:
    """In-process rollout with the same submit/collect/push_weights interface as the actor group."""

    def __init__(self, cfg: Config):
        engine_seed = derive_seed(cfg.run.seed, ENGINE, 0, bits=32)  # as rollout actor 0's
        if cfg.rollout.backend == "vllm":
            from actors.vllm_engine import VLLMSampler
            from .models import resolve_model_path

            self.sampler = VLLMSampler(resolve_model_path(rollout_model_path(cfg)), seed=engine_seed,
                                       gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
                                       enforce_eager=cfg.rollout.enforce_eager)
        else:
            from actors.hf_engine import HFSampler

            self.sampler = HFSampler(rollout_model_path(cfg), seed=engine_seed)
        self.cfg = cfg

    def submit(self, prompt_ids, n, seed):
        """Sample ``n`` completions per prompt now (synchronously) and return them as the handle.

        ``prompt_ids``: token ids per prompt; ``seed``: this step's sampling seed.  Each sample is
        a dict (prompt_index, token_ids, text, log_q in nats, finish_reason).
        """
        return self.sampler.sample(prompt_ids, n, self.cfg.model.max_new_tokens,
                                   temperature=self.cfg.rollout.temperature, seed=seed)

    def collect(self, handle):
        """Return the samples :meth:`submit` already drew (the handle is the list itself)."""
        return handle

    def push_weights(self, named_tensors):
        """In-process copy, no process group (the engine lives in this process; see
        docs/design.md): a Mapping or an iterable of (name, tensor) pairs, read once."""
        from actors.weight_group import iter_named

        self.sampler.load_weights(dict(iter_named(named_tensors)))


def build_local(cfg: Config, sink=None):
    """(controller, scorer) wired in-process."""
    from .models import load_model_and_tokenizer
    from .scoring import TargetScorer

    torch.manual_seed(cfg.run.seed)
    scorer = TargetScorer(cfg)
    model, tokenizer = load_model_and_tokenizer(cfg.model.path, dtype=cfg.model.dtype)
    if cfg.learner.lora is not None:
        from .lora import apply_lora

        model = apply_lora(model, cfg.learner.lora)
    exact = None
    if cfg.target.exact:
        from .toy import exact_task_for

        exact = exact_task_for(cfg, scorer)
    proposal = parse_proposal(cfg.rollout.proposal)
    rollout = (DatasetProposal(proposal.path, tokenizer, derive_seed(cfg.run.seed, PROPOSAL_DATA))
               if proposal.kind == "dataset" else LocalRollout(cfg))
    controller = Controller(cfg, model, tokenizer, rollout=rollout, scorer=scorer, sink=sink, exact=exact)
    return controller, scorer
