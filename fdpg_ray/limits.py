"""Limits checked before anything starts: the model's context and the counts of a step.

One place for both, called by ``fdpg-ray train`` (preflight), ``eval`` and ``sample`` (and a
future ``qrs``): a config that would run past the model's context, or whose counts would
reach a backend's own assertion or silently change the number of samples a step trains on,
is refused here with one line naming the field, the file and line where it applies, and the
fix (:class:`~fdpg_ray.errors.ConfigError`, exit status 2).

Decision (docs/design.md, "Generation limits"): a prompt of L tokens (BOS included) with
``max_new_tokens`` = T needs L + T positions; more than the model's context C is refused,
never truncated.  vLLM would cut every completion to C - L tokens (finish reason "length")
and the transformers backend would index past its position table, so the two backends
would otherwise sample different distributions from one config; the samplers themselves
refuse the same way (:func:`check_fits`) for callers that bypass the CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import Config, ConfigError, check_counts


def context_length(model_path) -> int | None:
    """The number of positions of the model at ``model_path`` (a resolved local folder, a
    hub name, or a transformers config object): ``max_position_embeddings`` (``n_positions``
    for GPT-2), or None when the config declares none (then nothing is checked).  Units: tokens."""
    if isinstance(model_path, str):
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(model_path)
    else:
        cfg = model_path
    for name in ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length"):
        v = getattr(cfg, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def check_fits(prompt_len: int, max_new_tokens: int, context: int | None, *, field: str = "model.max_new_tokens",
               where: str = "the prompt", tokens_field: str = "model.max_new_tokens") -> None:
    """Raise ConfigError unless ``prompt_len + max_new_tokens <= context`` (all in tokens).

    ``field`` is named first in the message (the prompt's field, or ``tokens_field`` when the
    prompt is only BOS); ``tokens_field`` is the knob for the number of new tokens."""
    if context is None or prompt_len + max_new_tokens <= context:
        return
    room = context - prompt_len
    if room >= 1 and field == tokens_field:
        fix = f"lower {tokens_field} to at most {room}"
    elif room >= 1:
        fix = f"shorten it to at most {context - max_new_tokens} tokens, or lower {tokens_field} to at most {room}"
    else:
        fix = f"shorten it to at most {max(context - max_new_tokens, 1)} tokens (or lower {tokens_field})"
    raise ConfigError(f"{field}: {where} is {prompt_len} token{'s' if prompt_len != 1 else ''} (BOS included) and {tokens_field}={max_new_tokens}: "
                      f"{prompt_len + max_new_tokens} positions, but the model has {context}; {fix}")


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


def check_prompts_fit(model_path: str, prompts: list[tuple[str, str, str]], max_new_tokens: int,
                      tokenizer=None, tokens_field: str = "model.max_new_tokens") -> None:
    """Refuse the longest prompt that does not fit ``max_new_tokens`` in the model's context.

    ``prompts``: (field, where, text) as from :func:`run_prompts`.  Raises ConfigError."""
    from .loss import bos_prompt_ids

    context = context_length(model_path)
    if context is None:
        return
    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_path)
    worst = None
    for field, where, text in prompts:
        n = len(bos_prompt_ids(tokenizer, text))
        if worst is None or n > worst[0]:
            worst = (n, field, where)
    if worst is not None:
        n, field, where = worst
        check_fits(n, max_new_tokens, context, field=field, where=where, tokens_field=tokens_field)


def check_run_limits(cfg: Config) -> None:
    """Everything above for a run's config: counts, then every prompt against the context
    (the longest prompt in the file, model.prompt, or the BOS prompt)."""
    from .models import resolve_model_path

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
    from .models import resolve_model_path

    T = cfg.model.max_new_tokens if max_new_tokens is None else max_new_tokens
    path = resolve_model_path(model_path or cfg.model.path)
    texts = [cfg.model.prompt]
    if cfg.prompts.file is not None:
        from .data import load_prompts

        texts = load_prompts(cfg.prompts.file, cfg.prompts.field, cfg.prompts.limit)
    prompts = [(tokens_field if f == "model.max_new_tokens" else f, w, t) for f, w, t in run_prompts(cfg)]
    check_prompts_fit(path, prompts, T, tokens_field=tokens_field)
    return texts
