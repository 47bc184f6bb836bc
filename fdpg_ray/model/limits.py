"""The model's context: how many positions a model has, and whether a prompt plus
``max_new_tokens`` fits in them.  Used by both samplers and, through
:mod:`fdpg_ray.train.preflight`, by ``fdpg-ray train``, ``eval``, ``sample`` and ``qrs``: a config that would run past the model's context, or whose counts would
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

from fdpg_ray.errors import ConfigError


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


def check_prompts_fit(model_path: str, prompts: list[tuple[str, str, str]], max_new_tokens: int,
                      tokenizer=None, tokens_field: str = "model.max_new_tokens") -> None:
    """Refuse the longest prompt that does not fit ``max_new_tokens`` in the model's context.

    ``prompts``: (field, where, text) as from :func:`fdpg_ray.train.preflight.run_prompts`.  Raises ConfigError."""
    from fdpg_ray.objective.loss import bos_prompt_ids

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
