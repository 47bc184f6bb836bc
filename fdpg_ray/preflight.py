"""Preflight: every check of a run's inputs that can run before Ray, vLLM or a run directory
is started (docs/reliability.md).  Used by ``fdpg-ray train`` and by every sweep trial."""

from __future__ import annotations

from .errors import ClusterError


def preflight(cfg) -> None:
    """Check what can be checked before anything is started or written: the model, its
    tokenizer, a GPU where one is asked for, the prompts file, every prompt against the
    model's context and the counts of a step (fdpg_ray.limits), every scorer (import paths,
    classifier folders), the proposal.  Raises the first problem as a one-line
    :class:`~fdpg_ray.errors.UserInputError` (ConfigError, ModelError, PromptsError,
    TargetError or ClusterError)."""
    from .models import resolve_model_path
    from .proposals import check_proposal
    from .scoring import build_target

    resolve_model_path(cfg.model.path)
    wants_gpu = cfg.learner.use_gpu or cfg.rollout.gpus_per_actor > 0
    if wants_gpu and cfg.ray.address is None:
        import torch

        if not torch.cuda.is_available():
            raise ClusterError("learner.use_gpu/rollout.gpus_per_actor: a GPU is requested but this machine has none; "
                               "set learner.use_gpu=false and rollout.gpus_per_actor=0, or give ray.address of a GPU cluster")
    if cfg.prompts.file is not None:
        from .data import load_prompts

        load_prompts(cfg.prompts.file, cfg.prompts.field, cfg.prompts.limit)
    from .limits import check_run_limits

    check_run_limits(cfg)  # every prompt + max_new_tokens within the context; the step's counts
    build_target(cfg)
    check_proposal(cfg)
