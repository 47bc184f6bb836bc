"""Prompts for conditional targets, read with HF `datasets`."""

from __future__ import annotations

from pathlib import Path


class PromptsError(ValueError):
    """A prompts file that cannot be used; one line naming the fix."""


def load_prompts(path: str, field: str = "prompt", limit: int | None = None) -> list[str]:
    """Prompts from a JSONL file (one JSON object per line, text under ``field``)."""
    p = Path(path)
    if not p.is_file():
        raise PromptsError(f"prompts.file: '{path}' does not exist; give a JSONL file with one {{\"{field}\": ...}} per line")
    if p.stat().st_size == 0:
        raise PromptsError(f"prompts.file: '{path}' is empty; add one {{\"{field}\": ...}} object per line")
    import json

    import datasets
    from datasets import load_dataset
    from datasets.exceptions import DatasetGenerationError

    # Check the lines ourselves first: datasets would log a traceback-like error and a bar.
    with open(p) as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise PromptsError(f"prompts.file: '{path}' line {lineno} is not JSON; write one JSON object per line") from None
                if not isinstance(row, dict):
                    raise PromptsError(f"prompts.file: '{path}' line {lineno} is not a JSON object; write {{\"{field}\": ...}}")
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        ds = load_dataset("json", data_files=str(p), split="train")
    except (DatasetGenerationError, ValueError, OSError) as e:
        raise PromptsError(f"prompts.file: '{path}' is not JSONL ({type(e).__name__}); write one JSON object per line") from None
    if field not in ds.column_names:
        raise PromptsError(f"prompts.field: '{field}' is not a column of '{path}' (columns: {', '.join(ds.column_names)}); "
                           f"set prompts.field")
    texts = [str(t) for t in ds[field] if t is not None]
    if limit is not None:
        texts = texts[:limit]
    if not texts:
        raise PromptsError(f"prompts.file: '{path}' holds no prompts under '{field}'")
    return texts
