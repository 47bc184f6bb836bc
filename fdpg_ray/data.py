"""Text tables read with HF `datasets`: the prompts of conditional targets (``prompts.file``)
and the texts of an offline proposal (``rollout.proposal: dataset:PATH``).  One reader,
:func:`read_table`, so both give the same one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

from fdpg_ray.errors import UserInputError


class PromptsError(UserInputError):
    """A prompts file that cannot be used; one line naming the fix."""


def read_table(path: str, setting: str, column: str, error: type[Exception] = ValueError, *,
               column_setting: tuple[str, str] | None = None, mention_parquet: bool = False):
    """The ``datasets.Dataset`` of a JSONL file (one JSON object per line) or, by suffix, a
    Parquet file, checked to have ``column``.

    Raises ``error`` with one line that starts with ``setting`` (the config field to fix)
    when the file is missing, empty, not JSONL (naming the first bad line) or unreadable.  A
    missing column is reported as ``column_setting`` = (field, fix) when given (the setting
    that names the column), else under ``setting``.  ``mention_parquet``: the fixes name
    Parquet as an accepted format too.
    """
    p = Path(path)
    shape = f'{{"{column}": ...}}'
    if not p.is_file():
        raise error(f"{setting}: '{path}' does not exist; give a JSONL file with one {shape} per line"
                    + (" (or a Parquet file)" if mention_parquet else ""))
    if p.stat().st_size == 0:
        raise error(f"{setting}: '{path}' is empty; add one {shape} object per line")
    kind = "parquet" if p.suffix == ".parquet" else "json"
    if kind == "json":  # check the lines ourselves first: datasets would log a traceback-like error
        with open(p) as f:
            for lineno, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        raise error(f"{setting}: '{path}' line {lineno} is not JSON; write one JSON object per line") from None
                    if not isinstance(row, dict):
                        raise error(f"{setting}: '{path}' line {lineno} is not a JSON object; write {shape}")
    import datasets
    from datasets import load_dataset

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        ds = load_dataset(kind, data_files=str(p), split="train")
    except Exception as e:  # noqa: BLE001 - datasets raises many types for unreadable files
        raise error(f"{setting}: cannot read '{path}' as {kind} ({type(e).__name__}); write one JSON object per line"
                    + (", or a Parquet file" if mention_parquet else "")) from None
    if column not in ds.column_names:
        where, fix = column_setting or (setting, f"put each row's text under '{column}'")
        raise error(f"{where}: '{column}' is not a column of '{path}' (columns: {', '.join(ds.column_names)}); {fix}")
    return ds


def load_prompts(path: str, field: str = "prompt", limit: int | None = None) -> list[str]:
    """Prompts (the contexts c of a conditional target) from a JSONL file, text under
    ``field``; rows without it are skipped; the first ``limit``.  Raises PromptsError."""
    ds = read_table(path, "prompts.file", field, PromptsError, column_setting=("prompts.field", "set prompts.field"))
    texts = [str(t) for t in ds[field] if t is not None]
    if limit is not None:
        texts = texts[:limit]
    if not texts:
        raise PromptsError(f"prompts.file: '{path}' holds no prompts under '{field}'")
    return texts
