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
