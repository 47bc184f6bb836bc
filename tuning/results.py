"""A sweep's results: every trial's every step in one table (SWEEP_DIR/results.parquet and
.csv), each trial's state (done, stopped, failed, running) and its model's size;
:mod:`tuning.report` reads the table."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import yaml

from fdpg_ray.atomic import atomic_write
from fdpg_ray.train.metrics import METRICS
from tuning.spec import RUNS, TASK_KEY, TRIALS_FILE, TUNE_NAME

# The objective's value is written as `divergence` in metrics.csv; in the sweep results the
# `divergence` column is the divergence's *name* (a config field), so the value is renamed
# (the registry's results_name).
METRIC_RENAMES = {m.name: m.results_name for m in METRICS if m.results_name}


def tune_trial_status(sweep_dir: Path) -> dict[str, str]:
    """{trial_id: status} as Tune saved it in its experiment state (what Tuner.restore
    resumes from): TERMINATED, ERROR, or RUNNING / PENDING / PAUSED for trials an
    interruption left unfinished. (After Ctrl-C Tune's in-memory trials read TERMINATED, so
    callbacks cannot tell; the saved state can.)"""
    states = sorted((sweep_dir / TUNE_NAME).glob("experiment_state-*.json"), key=lambda p: p.stat().st_mtime)
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
        out = {}
        for entry in data["trial_data"]:
            t = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
            out[t["trial_id"]] = t["status"]
        return out
    except (KeyError, TypeError, ValueError, IndexError):  # an unknown layout: statuses unknown
        return {}


def model_params(spec_or_path: str) -> float:
    """Parameter count of a model: training_info.json's `params` when the folder has one,
    else counted from its config.json (meta device, nothing allocated); hub GPT-2 sizes are
    known without the hub."""
    known = {"gpt2": 124_439_808, "gpt2-medium": 354_823_168, "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}
    try:
        from fdpg_ray.model.sources import resolve_model_path

        folder = resolve_model_path(spec_or_path)
    except Exception:
        return float(known.get(spec_or_path, math.nan))
    info = Path(folder) / "training_info.json"
    if info.is_file():
        try:
            return float(json.loads(info.read_text())["params"])
        except (KeyError, ValueError):
            pass
    if not (Path(folder) / "config.json").is_file():
        return float(known.get(spec_or_path, math.nan))
    try:
        import torch
        from transformers import AutoConfig, AutoModelForCausalLM

        config = AutoConfig.from_pretrained(folder)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        return float(sum(p.numel() for p in model.parameters()))
    except Exception:
        return math.nan


def _run_state(run_dir: Path, tune_status: str | None) -> str:
    """finished | failed | stopped (by the scheduler) | interrupted (resume to finish it)."""
    state = "unknown"
    if (run_dir / "status.json").is_file():
        state = json.loads((run_dir / "status.json").read_text()).get("state", "unknown")
    if state in ("finished", "failed"):
        return state
    if tune_status == "ERROR":
        return "failed"
    if tune_status == "TERMINATED":  # Tune ended the trial before its run did: the scheduler stopped it
        return "stopped"
    return "interrupted"


def collect_results(sweep_dir: str | os.PathLike):
    """Every trial's metrics.csv (all steps) in one DataFrame, saved atomically as
    SWEEP_DIR/results.parquet and results.csv. Columns: trial_id, the swept keys, task,
    divergence, model.path, run.seed, model_params, state, run_dir, then the metrics
    (the objective's value is ``divergence_value``)."""
    import pandas as pd

    sdir = Path(sweep_dir)
    meta = json.loads((sdir / "sweep.json").read_text()) if (sdir / "sweep.json").is_file() else {}
    keys = meta.get("params", [])
    tune_status = json.loads((sdir / TRIALS_FILE).read_text()) if (sdir / TRIALS_FILE).is_file() else {}
    frames = []
    sizes: dict[str, float] = {}
    for info_path in sorted((sdir / RUNS).glob("*/trial.json")):
        run_dir = info_path.parent
        info = json.loads(info_path.read_text())
        metrics = run_dir / "metrics.csv"
        if not metrics.is_file():
            continue
        m = pd.read_csv(metrics).rename(columns=METRIC_RENAMES)
        if m.empty:
            continue
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
        state = _run_state(run_dir, tune_status.get(info["trial_id"]))
        model = str(cfg.get("model", {}).get("path", ""))
        orig_model = info["params"].get("model.path", meta.get("spec", {}).get("set", {}).get("model.path", model))
        if orig_model not in sizes:
            sizes[orig_model] = model_params(orig_model)
        ident = {
            "trial_id": info["trial_id"],
            **{k: info["params"].get(k) for k in keys},
            TASK_KEY: info["params"].get(TASK_KEY, cfg.get("run", {}).get("name", "run")),
            "divergence": cfg.get("divergence"),
            "model.path": orig_model,
            "run.seed": cfg.get("run", {}).get("seed"),
            "model_params": sizes[orig_model],
            "state": state,
            "run_dir": str(run_dir),
        }
        ident = {k: ident[k] for k in dict.fromkeys(["trial_id", *keys, *ident])}  # swept keys first
        for i, (k, v) in enumerate(ident.items()):
            m.insert(i, k, [v] * len(m))
        frames.append(m)
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["trial_id", *keys, "step"])
    for k in keys:  # mixed-type values (e.g. from random search) stay writable
        if k in df and df[k].map(type).nunique() > 1:
            df[k] = df[k].astype(str)
    df = df.sort_values(["trial_id", "step"], kind="stable").reset_index(drop=True)
    _write_frame(df, sdir)
    return df


def _write_frame(df, sdir: Path) -> None:
    atomic_write(sdir / "results.parquet", lambda p: df.to_parquet(p, index=False))
    atomic_write(sdir / "results.csv", lambda p: df.to_csv(p, index=False))
