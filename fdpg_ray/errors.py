"""Errors in what the user gave us: config, paths, data, targets, scorers, the cluster.

Every such error derives from :class:`UserInputError` and carries one line,
``<field>: <problem>; <fix>``; the CLI prints it as ``error: ...`` with exit status 2
(:func:`is_user_error`), ``--debug`` shows the traceback instead.  This module imports
nothing of the project, so every layer can raise these errors and every layer (CLI, Ray
driver, sweeps) can recognise them without importing the others.
"""

from __future__ import annotations


class UserInputError(ValueError):
    """Base of the project's one-line user-input errors."""


class ConfigError(UserInputError):
    """Invalid configuration; str(e) is one line: '<dotted.field>: <problem>; <fix>'."""


class ClusterError(UserInputError, RuntimeError):
    """Ray cannot be reached or lacks the resources asked for; one line naming the fix."""


def is_user_error(e: BaseException) -> bool:
    """True for errors in the user's input: a :class:`UserInputError`, or a ValueError or
    RuntimeError raised by a user's scorer whose message starts with the field it concerns
    ("scorer", "target", or a command-line flag "--")."""
    if isinstance(e, UserInputError):
        return True
    return isinstance(e, (ValueError, RuntimeError)) and str(e).startswith(("scorer", "target", "--"))


def unknown_key(name: str, key: str, valid, what: str = "", tag: str = "") -> str:
    """The one line for a key that is not a field: ``<name>: unknown <what>key '<key>'<tag>
    (did you mean '<closest>'?); valid keys: <valid, in declaration order>`` -- the same words
    for a YAML file, ``--set`` and a sweep file.  ``name``: the dotted field, ending in the key."""
    import difflib

    valid = list(valid)
    close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return f"{name}: unknown {what}key '{key}'{tag}{hint}; valid keys: {', '.join(valid) or '(none)'}"


class NestedInvalid(ValueError):
    """Raised by a validator that checked a value against ``model`` and found ``err`` (a pydantic
    ValidationError): :func:`one_line` names the fields below the validated field."""

    def __init__(self, err, model):
        super().__init__(str(err))
        self.err, self.model = err, model


# pydantic error type -> the problem, in the project's words
_PROBLEMS = {
    "missing": "missing",
    **dict.fromkeys(("int_type", "int_parsing", "int_from_float"), "expected an integer, got {input!r}"),
    **dict.fromkeys(("float_type", "float_parsing"), "expected a number, got {input!r}"),
    **dict.fromkeys(("bool_type", "bool_parsing"), "expected true or false, got {input!r}"),
    "string_type": "expected a string, got {input!r}", "string_too_short": "expected a non-empty string, got {input!r}",
    "list_type": "expected a list, got {input!r}", "too_short": "expected a non-empty list, got {input!r}",
    **dict.fromkeys(("dict_type", "model_type", "model_attributes_type"), "expected a mapping, got {input!r}"),
    "greater_than": "must be > {gt}, got {input!r}", "greater_than_equal": "must be >= {ge}, got {input!r}",
    "less_than": "must be < {lt}, got {input!r}", "less_than_equal": "must be <= {le}, got {input!r}",
}


def _unwrap(tp):
    """The type behind Optional and Annotated; a list of the members for a union of several."""
    import types
    import typing

    if typing.get_origin(tp) is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return _unwrap(args[0]) if len(args) == 1 else [_unwrap(a) for a in args]
    return tp


def _tags(members) -> list:
    """The ``kind`` values of a tagged union's members; a member without ``kind`` is keyed by its
    one field's name (a sweep's ``{loguniform: [lo, hi]}``)."""
    return [t for m in members for t in (m.model_fields["kind"].annotation.__args__ if "kind" in m.model_fields
                                          else m.model_fields)]


def _walk(model, loc):
    """Follow ``loc`` through ``model``: (dotted name, the model holding the last key, its FieldInfo).
    List indices are written ``[i]``, a mapping's keys ``.key``; the tags of discriminated unions are left out."""
    import typing

    name, holder, info, tp = "", None, None, model
    for part in loc:
        tp = _unwrap(tp)
        if typing.get_origin(tp) is dict:  # a key of a typed mapping: its value's type follows
            name += f".{part}" if name else str(part)
            holder, info, tp = None, None, typing.get_args(tp)[1]
        elif isinstance(part, int):
            name += f"[{part}]"
            tp = typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp
        elif isinstance(tp, list):  # a tagged union: `part` is the tag
            tp = next(m for m in tp if part in _tags([m]))
        else:
            name += f".{part}" if name else part
            holder = tp if hasattr(tp, "model_fields") else None
            info = holder.model_fields.get(part) if holder is not None else None
            tp = info.annotation if info is not None else None
    return name, holder, info, tp


def _number(v):
    return int(v) if isinstance(v, float) and v.is_integer() else v


def one_line(err, model, where: str = "") -> str:
    """The first error of a pydantic ``ValidationError`` as the project's one line,
    ``<dotted.field>: <problem>; <fix>``.

    ``model``: what was validated (a model class or a tagged union of them): its fields give the
    valid keys, a Literal's choices and, as ``Field(description=...)``, the fix.  ``where``: the
    dotted name of the validated value (``scorer``, ``target.constraints[0].scorer``).  A validator
    that raised a :class:`UserInputError` wrote the whole line: kept as is; one that raised a
    ValueError wrote the problem (and fix): the field's name is put in front (a message that
    starts with '.key:' names a key below it, for checks of a whole mapping).
    """
    import typing

    e = err.errors(include_url=False)[0]
    name, holder, info, tp = _walk(model, e["loc"])
    name = f"{where}.{name}".strip(".").replace(".[", "[") or "config"
    ctx, kind = e.get("ctx") or {}, e["type"]
    cause = ctx.get("error")
    if isinstance(cause, NestedInvalid):
        return one_line(cause.err, cause.model, name)
    if isinstance(cause, UserInputError):
        return str(cause)
    if kind == "extra_forbidden":
        tag = holder.model_fields.get("kind")
        tag = f" for kind '{tag.annotation.__args__[0]}'" if tag is not None and holder is not model else ""
        what = f"{holder.model_config['title']} " if holder.model_config.get("title") else ""  # 'unknown sweep key'
        return unknown_key(name, e["loc"][-1], holder.model_fields, what, tag)
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        got = f"unknown kind {ctx['tag']!r}" if "tag" in ctx else "missing"
        return f"{name}.kind: {got}; valid kinds: {', '.join(_tags(_unwrap(tp)))}"
    bounds = {k: _number(getattr(m, k)) for m in getattr(info, "metadata", ()) for k in ("gt", "ge", "lt", "le")
              if getattr(m, k, None) is not None}
    if isinstance(cause, Exception):  # '.key: ...' names a key below the validated value
        if str(cause).startswith("."):
            return f"{name}{cause}"
        problem = str(cause)
    elif kind == "literal_error":
        problem = f"invalid value {e['input']!r}; valid values: {', '.join(map(str, typing.get_args(_unwrap(tp))))}"
    elif e["input"] is None and kind != "missing":
        problem = "must not be null; give a value"
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal") and len(bounds) == 2:  # [0, 1)
        lo, hi = sorted(bounds, key=("ge", "gt", "le", "lt").index)
        problem = f"must be in {'[' if lo == 'ge' else '('}{bounds[lo]}, {bounds[hi]}{']' if hi == 'le' else ')'}, got {e['input']!r}"
    elif kind in _PROBLEMS:
        problem = _PROBLEMS[kind].format(input=e["input"], **{k: _number(v) for k, v in ctx.items()})
        if kind == "greater_than" and ctx["gt"] == 0:
            problem += "; set a positive value"
    else:
        problem = e["msg"]
    fix = getattr(info, "description", None)
    return f"{name}: {problem}; {fix}" if fix and "; " not in problem else f"{name}: {problem}"
