"""What a run (or a sweep) was run on, by content, so that a resume can refuse changed inputs.

One helper for every resumable thing in the project: ``fdpg-ray train --resume``, a sweep
trial that Tune starts again, and ``fdpg-ray sweep --resume`` (tuning/sweep.py, tuning/trials.py) all compare
the *content* that was run (the resolved config, the bytes of the prompts file, of a local
model folder's weights, config and tokenizer, of a classifier folder, of a callable scorer's
module), never the path it came from.

A resume may change only settings that leave the mathematics alone (:data:`MAY_CHANGE`:
steps, evaluation and checkpoint cadence, logging, resources); those changes are recorded in
``RUN_DIR/resumes.jsonl``.  Anything else (target, divergence, model, prompts, seeds, batch
shape, learning rate, loss settings, ...) is refused with one line naming the changed keys.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import time
from pathlib import Path

INPUTS_FILE = "inputs.json"
RESUMES_FILE = "resumes.jsonl"

# Dotted keys (or prefixes ending in '.') that may change on --resume: they decide how long,
# how often something is logged or saved, and with which resources, never what is computed.
MAY_CHANGE = (
    "run.steps", "run.eval_every", "run.checkpoint_every", "run.max_failures", "run.progress", "run.output_dir",
    "run.name", "eval.", "ray.", "scorer.", "rollout.num_actors", "rollout.cpus_per_actor", "rollout.gpus_per_actor",
    "rollout.gpu_memory_utilization", "rollout.enforce_eager", "learner.num_workers", "learner.cpus_per_worker",
    "learner.use_gpu", "learner.strategy", "learner.micro_batch_size", "loss.chunk_size",
)

# Files of a model folder that decide what the model computes (weights, architecture, tokenizer).
_MODEL_FILES = (".safetensors", ".bin", ".pt", ".gguf", ".json", ".txt", ".model", ".tiktoken")


def digest(obj) -> str:
    """16 hex digits of sha256 over ``obj`` as canonical JSON (sorted keys; str() for the rest)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_digest(path: str | os.PathLike) -> str:
    """16 hex digits of the sha256 of a file's bytes (read in 1 MiB blocks); OSError if it cannot be read."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def folder_digest(path: str | os.PathLike) -> str:
    """Digest of the model-defining files of a folder (by relative name and content)."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in _MODEL_FILES
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    return digest({str(p.relative_to(root)): file_digest(p) for p in files})


def _model_digest(spec: str) -> str:
    from fdpg_ray.model.sources import resolve_model_path

    path = resolve_model_path(spec)
    return folder_digest(path) if os.path.isdir(path) else f"name:{path}"  # a hub name: its name


def run_inputs(cfg) -> dict[str, str]:
    """{input: content digest} of everything a run reads besides its config."""
    out = {"model.path": _model_digest(cfg.model.path)}
    if cfg.prompts.file is not None:
        out["prompts.file"] = file_digest(cfg.prompts.file)
    from fdpg_ray.config import parse_proposal

    proposal = parse_proposal(cfg.rollout.proposal)
    if proposal.kind == "fixed":
        out["rollout.proposal"] = _model_digest(proposal.path)
    elif proposal.kind == "dataset":
        out["rollout.proposal"] = file_digest(proposal.path)
    for i, c in enumerate(cfg.target.constraints):
        scorer = c.get("scorer", {}) if isinstance(c, dict) else {}
        where = f"target.constraints.{i}.scorer.path"
        path = scorer.get("path")
        if not isinstance(path, str):
            continue
        if scorer.get("kind") == "classifier" and os.path.isdir(path):
            out[where] = folder_digest(path)
        elif scorer.get("kind") == "callable" and ":" in path:
            try:
                spec = importlib.util.find_spec(path.split(":", 1)[0])
            except (ImportError, ValueError):
                spec = None
            if spec is not None and spec.origin and os.path.isfile(spec.origin):
                out[where] = file_digest(spec.origin)
    return out


def flatten(d, prefix: str = "") -> dict:
    """{'a.b.0.c': value} for nested dicts and lists (config dicts)."""
    out = {}
    items = d.items() if isinstance(d, dict) else enumerate(d)
    for k, v in items:
        key = f"{prefix}{k}"
        if isinstance(v, (dict, list)) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def may_change(key: str) -> bool:
    """Whether the dotted config ``key`` may change on a resume (in :data:`MAY_CHANGE`, exactly or by prefix)."""
    return any(key == m or (m.endswith(".") and key.startswith(m)) for m in MAY_CHANGE)


def config_changes(old: dict, new: dict) -> dict[str, tuple]:
    """{dotted key: (old, new)} for every leaf that differs between two config dicts."""
    a, b = flatten(old), flatten(new)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def _short(v) -> str:
    s = repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def check_resume(cfg, run_dir: str | os.PathLike, old_config: dict | None = None) -> dict[str, tuple]:
    """Refuse (ConfigError, one line) a resume whose config or inputs differ from what the run
    in ``run_dir`` was started with in anything but :data:`MAY_CHANGE`.  Returns the allowed
    changes {key: (old, new)}.  ``old_config`` defaults to RUN_DIR/config.yaml, loaded."""
    from fdpg_ray.config import ConfigError, load_config

    run_dir = Path(run_dir)
    if old_config is None:
        old_config = load_config(run_dir / "config.yaml").to_dict()
    changes = config_changes(old_config, cfg.to_dict())
    refused = {k: v for k, v in changes.items() if not may_change(k)}
    if refused:
        listed = ", ".join(f"{k} ({_short(a)} -> {_short(b)})" for k, (a, b) in list(refused.items())[:4])
        more = f" and {len(refused) - 4} more" if len(refused) > 4 else ""
        raise ConfigError(f"--resume: {listed}{more} would change the mathematics of the run in '{run_dir}'; "
                          f"only steps, eval/checkpoint cadence, logging and resources may change on resume; "
                          f"start a new run for the new settings")
    check_inputs(cfg, run_dir, "--resume", "restore it, or start a new run")
    return changes


def check_inputs(cfg, run_dir: str | os.PathLike, action: str, fix: str) -> None:
    """Refuse (ConfigError naming ``action``) when an input of the run in ``run_dir`` (prompts
    file, model folder, classifier folder, callable scorer module) no longer has the content
    it had when the run started (RUN_DIR/inputs.json; runs older than that file pass)."""
    from fdpg_ray.config import ConfigError

    recorded = Path(run_dir) / INPUTS_FILE
    if not recorded.is_file():
        return
    before = json.loads(recorded.read_text()).get("inputs", {})
    now = run_inputs(cfg)
    moved = [k for k in before if k in now and before[k] != now[k]]
    if moved:
        raise ConfigError(f"{action}: the content of {', '.join(moved)} changed since the run in '{run_dir}' "
                          f"started (digest {before[moved[0]]} -> {now[moved[0]]}); {fix}")


def record_start(cfg, run_dir: str | os.PathLike, changes: dict | None = None) -> None:
    """Write RUN_DIR/inputs.json at a run's first start (kept as it is on every resume) and
    append the allowed changes of a resume to RUN_DIR/resumes.jsonl."""
    from fdpg_ray.atomic import atomic_write_text

    run_dir = Path(run_dir)
    recorded = run_dir / INPUTS_FILE
    if not recorded.is_file():
        atomic_write_text(recorded, json.dumps({"time": time.time(), "config": digest(cfg.to_dict()),
                                                "inputs": run_inputs(cfg)}, indent=2))
    if changes:
        with open(run_dir / RESUMES_FILE, "a") as f:
            f.write(json.dumps({"time": time.time(), "changed": {k: list(v) for k, v in changes.items()}},
                               default=str) + "\n")
