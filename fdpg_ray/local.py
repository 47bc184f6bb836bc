"""Run f-DPG in one Python process, no Ray: the same controller, rollout backend code
and scorer as the distributed run.  Used by the exact toy verification, by unit tests and
as the no-Ray baseline of the end-to-end benchmark."""

from __future__ import annotations

import torch

from .config import Config
from .controller import Controller
from .seeding import ENGINE, derive_seed


class LocalRollout:
    """In-process rollout with the same submit/collect/push_weights interface as the actor group."""

    def __init__(self, cfg: Config):
        engine_seed = derive_seed(cfg.run.seed, ENGINE, 0, bits=32)  # as rollout actor 0's
        if cfg.rollout.backend == "vllm":
            from actors.vllm_engine import VLLMSampler
            from .models import resolve_model_path

            self.sampler = VLLMSampler(resolve_model_path(cfg.model.path), seed=engine_seed,
                                       gpu_memory_utilization=cfg.rollout.gpu_memory_utilization,
                                       enforce_eager=cfg.rollout.enforce_eager)
        else:
            from actors.hf_engine import HFSampler

            self.sampler = HFSampler(cfg.model.path, seed=engine_seed)
        self.cfg = cfg

    def submit(self, prompt_ids, n, seed):
        return self.sampler.sample(prompt_ids, n, self.cfg.model.max_new_tokens,
                                   temperature=self.cfg.rollout.temperature, seed=seed)

    def collect(self, handle):
        return handle

    def push_weights(self, state_dict):
        self.sampler.load_weights(state_dict)


def build_local(cfg: Config, sink=None):
    """(controller, scorer) wired in-process."""
    from .models import load_model_and_tokenizer
    from .scoring import TargetScorer

    torch.manual_seed(cfg.run.seed)
    scorer = TargetScorer(cfg)
    model, tokenizer = load_model_and_tokenizer(cfg.model.path, dtype=cfg.model.dtype)
    exact = None
    if cfg.target.exact:
        from .toy import exact_task_for

        exact = exact_task_for(cfg, scorer)
    controller = Controller(cfg, model, tokenizer, rollout=LocalRollout(cfg), scorer=scorer, sink=sink, exact=exact)
    return controller, scorer
