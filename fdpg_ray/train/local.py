"""Run f-DPG in one Python process, no Ray: the same controller, rollout backend code
and scorer as the distributed run.  Used by the exact toy verification, by unit tests and
as the no-Ray baseline of the end-to-end benchmark."""

from __future__ import annotations


import torch

from fdpg_ray.config import Config, parse_proposal
from fdpg_ray.train.controller import Controller
from fdpg_ray.rollout.proposals import DatasetProposal, rollout_model_path
from fdpg_ray.seeding import ENGINE, PROPOSAL_DATA, derive_seed


class LocalRollout:
    """In-process rollout with the same submit/collect/push_weights interface as the actor group."""

    def __init__(self, cfg: Config):
        engine_seed = derive_seed(cfg.run.seed, ENGINE, 0, bits=32)  # as rollout actor 0's
        if cfg.rollout.backend == "vllm":
            from fdpg_ray.rollout.vllm_sampler import VLLMSampler
            from fdpg_ray.model.sources import resolve_model_path

            self.sampler = VLLMSampler(resolve_model_path(rollout_model_path(cfg)), seed=engine_seed,
                                       gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
                                       enforce_eager=cfg.rollout.enforce_eager)
        else:
            from fdpg_ray.rollout.hf_sampler import HFSampler

            self.sampler = HFSampler(rollout_model_path(cfg), seed=engine_seed)
        self.cfg = cfg

    def submit(self, prompt_ids, n, seed):
        """Sample ``n`` completions per prompt now (synchronously) and return them as the handle.

        ``prompt_ids``: token ids per prompt; ``seed``: this step's sampling seed.  Each sample is
        a :class:`~fdpg_ray.rollout.samples.Sample` (prompt_index, token_ids, text, log_q in nats,
        finish_reason).
        """
        return self.sampler.sample(prompt_ids, n, self.cfg.model.max_new_tokens,
                                   temperature=self.cfg.rollout.temperature, seed=seed)

    def collect(self, handle):
        """Return the samples :meth:`submit` already drew (the handle is the list itself)."""
        return handle

    def push_weights(self, named_tensors):
        """In-process copy, no process group (the engine lives in this process; see
        docs/design.md): a Mapping or an iterable of (name, tensor) pairs, read once."""
        from fdpg_ray.rollout.weight_group import iter_named

        self.sampler.load_weights(dict(iter_named(named_tensors)))

    def close(self) -> None:
        """Stop an in-process vLLM engine now.  Left to the garbage collector, an old engine's
        teardown can run while the next engine of the same process starts and destroy its
        parallel groups ("pipeline model parallel group is not initialized")."""
        shutdown = getattr(self.sampler, "shutdown", None)
        if shutdown is not None:
            shutdown()


def build_local(cfg: Config, sink=None):
    """(controller, scorer) wired in-process."""
    from fdpg_ray.model.sources import load_model_and_tokenizer
    from fdpg_ray.target.scoring import TargetScorer

    torch.manual_seed(cfg.run.seed)
    scorer = TargetScorer(cfg)
    model, tokenizer = load_model_and_tokenizer(cfg.model.path, dtype=cfg.model.dtype)
    if cfg.learner.lora is not None:
        from fdpg_ray.model.lora import apply_lora

        model = apply_lora(model, cfg.learner.lora)
    exact = None
    if cfg.target.exact:
        from fdpg_ray.model.toy import exact_task_for

        exact = exact_task_for(cfg, scorer)
    proposal = parse_proposal(cfg.rollout.proposal)
    rollout = (DatasetProposal(proposal.path, tokenizer, derive_seed(cfg.run.seed, PROPOSAL_DATA))
               if proposal.kind == "dataset" else LocalRollout(cfg))
    controller = Controller(cfg, model, tokenizer, rollout=rollout, scorer=scorer, sink=sink, exact=exact)
    return controller, scorer
