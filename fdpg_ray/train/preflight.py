"""Preflight: every check of a run's inputs that can run before Ray, vLLM or a run directory
is started (docs/reliability.md).  Used by ``fdpg-ray train`` and by every sweep trial.

The limits of a run (decision in docs/design.md, "Generation limits"): the counts of a step
(:func:`fdpg_ray.config.check_counts`) and every prompt the run starts from plus
``model.max_new_tokens`` within the model's context (:mod:`fdpg_ray.model.limits`); ``eval``,
``sample`` and ``qrs`` take their contexts from :func:`run_contexts`, so that none of them
samples a distribution the run never trained."""

from __future__ import annotations

import json
from pathlib import Path

from fdpg_ray.config import Config, check_counts
from fdpg_ray.errors import ClusterError
from fdpg_ray.model.limits import check_prompts_fit


def preflight(cfg) -> None:
    """Check what can be checked before anything is started or written: the model, its
    tokenizer, a GPU where one is asked for, the prompts file, every prompt against the
    model's context and the counts of a step (fdpg_ray.model.limits), every scorer (import paths,
    classifier folders), the proposal.  Raises the first problem as a one-line
    :class:`~fdpg_ray.errors.UserInputError` (ConfigError, ModelError, PromptsError,
    TargetError or ClusterError)."""
    from fdpg_ray.model.sources import resolve_model_path
    from fdpg_ray.rollout.proposals import check_proposal
    from fdpg_ray.target.scoring import build_target

    resolve_model_path(cfg.model.path)
    wants_gpu = cfg.learner.use_gpu or cfg.rollout.gpus_per_actor > 0
    if wants_gpu and cfg.ray.address is None:
        import torch

        if not torch.cuda.is_available():
            raise ClusterError("learner.use_gpu/rollout.gpus_per_actor: a GPU is requested but this machine has none; "
                               "set learner.use_gpu=false and rollout.gpus_per_actor=0, or give ray.address of a GPU cluster")
    if cfg.prompts.file is not None:
        from fdpg_ray.data import load_prompts

        load_prompts(cfg.prompts.file, cfg.prompts.field, cfg.prompts.limit)
    check_run_limits(cfg)  # every prompt + max_new_tokens within the context; the step's counts
    build_target(cfg)
    check_proposal(cfg)


def prompt_lines(path: str, field: str, limit: int | None = None) -> list[tuple[int, str]]:
    """(line number, prompt text) of each prompt in a JSONL prompts file, in the order
    :func:`fdpg_ray.data.load_prompts` returns them (rows without the field are skipped)."""
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                row = json.loads(line)
                if isinstance(row, dict) and row.get(field) is not None:
                    out.append((lineno, str(row[field])))
    return out[:limit] if limit is not None else out


def run_prompts(cfg: Config) -> list[tuple[str, str, str]]:
    """(field, where, text) of every prompt a run with ``cfg`` starts from: each line of
    ``prompts.file``, else ``model.prompt`` (the BOS prompt when empty)."""
    if cfg.prompts.file is not None:
        name = Path(cfg.prompts.file).name
        return [("prompts.file", f"'{name}' line {n}", t)
                for n, t in prompt_lines(cfg.prompts.file, cfg.prompts.field, cfg.prompts.limit)]
    if cfg.model.prompt:
        return [("model.prompt", f"model.prompt {cfg.model.prompt[:30]!r}", cfg.model.prompt)]
    return [("model.max_new_tokens", "the BOS prompt", "")]


def check_run_limits(cfg: Config) -> None:
    """Everything above for a run's config: counts, then every prompt against the context
    (the longest prompt in the file, model.prompt, or the BOS prompt)."""
    from fdpg_ray.model.sources import resolve_model_path

    prompts = run_prompts(cfg)
    check_counts(cfg, len(prompts) if cfg.prompts.file is not None else None)
    check_prompts_fit(resolve_model_path(cfg.model.path), prompts, cfg.model.max_new_tokens)


def run_contexts(cfg: Config, max_new_tokens: int | None = None, tokens_field: str = "model.max_new_tokens",
                 model_path: str | None = None) -> list[str]:
    """The contexts a model trained with ``cfg`` is to be sampled from, checked against the
    context length: every prompt of ``prompts.file`` (after ``prompts.limit``) for a conditional
    run, else ``[model.prompt]`` ('' = BOS alone).  The one function ``eval`` and ``sample``
    (and a future ``qrs``) call, so that none of them samples a distribution the run never
    trained.  Raises ConfigError / PromptsError (one line)."""
    from fdpg_ray.model.sources import resolve_model_path

    T = cfg.model.max_new_tokens if max_new_tokens is None else max_new_tokens
    path = resolve_model_path(model_path or cfg.model.path)
    texts = [cfg.model.prompt]
    if cfg.prompts.file is not None:
        from fdpg_ray.data import load_prompts

        texts = load_prompts(cfg.prompts.file, cfg.prompts.field, cfg.prompts.limit)
    prompts = [(tokens_field if f == "model.max_new_tokens" else f, w, t) for f, w, t in run_prompts(cfg)]
    check_prompts_fit(path, prompts, T, tokens_field=tokens_field)
    return texts
