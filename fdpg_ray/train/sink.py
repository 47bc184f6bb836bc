"""The run directory: everything a run leaves behind, written from one place.

    RUN_DIR/config.yaml          resolved config
    RUN_DIR/status.json          {"state": "running" | "finished" | "failed", ...}
    RUN_DIR/metrics.csv          one row per step (step 0 = the initial policy, last = final)
    RUN_DIR/tensorboard/         TensorBoard event files (run.trackers has tensorboard, the default)
    RUN_DIR/trackers.json        W&B / MLflow run ids (run.trackers has wandb or mlflow; fdpg_ray/train/trackers.py)
    RUN_DIR/samples/STEP.jsonl   samples at each evaluation step
    RUN_DIR/final/               the final model and tokenizer (save_pretrained)
    RUN_DIR/plots/*.png          main curves
    RUN_DIR/summary.json         before/after table, written last

A run is finished only when status.json says so; summary.json and final/ are written
through a temporary name and renamed, so a crash never leaves a run that looks finished.
On a cluster the sink is a Ray actor pinned to the driver's node (``actors/driver.py``) so that the run
directory is where the user started the run.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from pathlib import Path

import yaml

from fdpg_ray.atomic import atomic_directory, atomic_write, atomic_write_text
from fdpg_ray.train.metrics import FIRST_COLUMNS  # the fixed first columns of metrics.csv, from the metrics registry


class RunSink:
    """Writes the run directory (layout in the module docstring): config, status, metrics, samples, model, summary.

    Creating it writes config.yaml, reloads an existing metrics.csv (a resumed run), opens the
    trackers named in ``run.trackers`` and sets status.json to "running".
    """
    def __init__(self, run_dir: str | os.PathLike, config: dict, tokenizer_path: str | None = None,
                 log_role: str | None = None):
        """``log_role``: set when the sink is a Ray actor of its own; its process's output
        then goes to RUN_DIR/logs/LOG_ROLE-PID.log (:mod:`fdpg_ray.console`)."""
        if log_role is not None:
            from fdpg_ray.console import send_output_to_log

            send_output_to_log(run_dir, log_role)
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "samples").mkdir(exist_ok=True)
        self.tokenizer_path = tokenizer_path
        atomic_write_text(self.dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
        self.columns: list[str] | None = None
        self.rows: list[dict] = []
        if (self.dir / "metrics.csv").is_file():
            with open(self.dir / "metrics.csv") as f:
                reader = csv.DictReader(f)
                self.columns = reader.fieldnames
                self.rows = [{k: _num(v) for k, v in r.items()} for r in reader]
        self._tb = None
        trackers = list((config.get("run") or {}).get("trackers", ["tensorboard"]))
        self.use_tensorboard = "tensorboard" in trackers
        self.trackers = []
        if any(t != "tensorboard" for t in trackers):
            from fdpg_ray.train.trackers import open_trackers

            self.trackers = open_trackers(self.dir, config, trackers)
        self.starts = 0  # learner (re)starts seen by this sink: Ray Train restarts = starts - 1
        self.status("running")

    # -- status -----------------------------------------------------------------------
    def status(self, state: str, **extra) -> None:
        """Write status.json atomically: {"state": ``state``, "time": Unix seconds, **extra}."""
        atomic_write_text(self.dir / "status.json", json.dumps({"state": state, "time": time.time(), **extra}))

    # -- metrics ----------------------------------------------------------------------
    def truncate(self, step: int) -> None:
        """Drop rows at or after ``step`` (a resumed or restarted run redoes them).  Called
        once each time the learner (re)starts."""
        self.starts += 1
        self.rows = [r for r in self.rows if r["step"] < step]
        self._write_csv()

    def row(self, metrics: dict) -> None:
        """Append (or replace, same step) one metrics row; rewrite metrics.csv and log to TensorBoard and trackers.

        The columns are fixed by the first row (FIRST_COLUMNS of :mod:`fdpg_ray.train.metrics` first, NaN
        where unmeasured, then the row's other keys sorted); later keys not in them are dropped from the CSV.
        """
        if self.columns is None:
            self.columns = [c for c in FIRST_COLUMNS if c in metrics] + sorted(k for k in metrics if k not in FIRST_COLUMNS)
            for c in FIRST_COLUMNS:  # always present, NaN when not measured
                if c not in self.columns:
                    self.columns.insert(FIRST_COLUMNS.index(c), c)
        row = {c: metrics.get(c, math.nan) for c in self.columns}
        self.rows = [r for r in self.rows if r["step"] != row["step"]] + [row]
        self._write_csv()
        tb = self.tensorboard()
        if tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    tb.add_scalar(k, v, int(row["step"]))
            tb.flush()
        for t in self.trackers:
            t.log(row)

    def _write_csv(self) -> None:
        if self.columns is None:
            return
        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=self.columns, extrasaction="ignore")
                w.writeheader()
                for r in sorted(self.rows, key=lambda r: r["step"]):
                    w.writerow(r)

        atomic_write(self.dir / "metrics.csv", write)

    def tensorboard(self):
        """The TensorBoard SummaryWriter under RUN_DIR/tensorboard, or None (not enabled or not installed)."""
        if not self.use_tensorboard:
            return None
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: CSV is the record
                return None
            self._tb = SummaryWriter(str(self.dir / "tensorboard"))
        return self._tb

    def samples(self, step: int, records: list[dict]) -> None:
        """Write ``records`` (JSON-ready dicts) to RUN_DIR/samples/STEP.jsonl atomically, one per line."""
        atomic_write_text(self.dir / "samples" / f"{step}.jsonl", "".join(json.dumps(r) + "\n" for r in records))

    # -- model ------------------------------------------------------------------------
    def save_model(self, state_dict: dict, model_spec: str, name: str = "final") -> str:
        """Save ``state_dict`` as a transformers model + tokenizer (the architecture and the
        tokenizer come from ``model_spec``, the run's base model) under RUN_DIR/name."""
        from fdpg_ray.model.sources import load_model_and_tokenizer

        model, tokenizer = load_model_and_tokenizer(model_spec)
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        if unexpected or [k for k in missing if not k.endswith("lm_head.weight")]:
            raise RuntimeError(f"final model: state dict does not match {model_spec} "
                               f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        dest = self.dir / name
        with atomic_directory(dest) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
        return str(dest)

    # -- end --------------------------------------------------------------------------
    def finish(self, summary: dict) -> dict:
        """Write plots and summary.json (adding ``restarts`` and ``plots``), close the trackers, mark "finished".

        Returns the summary as written.
        """
        from fdpg_ray.train.report import plot_run

        summary = dict(summary)
        summary["restarts"] = max(self.starts - 1, 0)
        summary["plots"] = plot_run(self.dir)
        atomic_write_text(self.dir / "summary.json", json.dumps(summary, indent=2, default=str))
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self.trackers:
            files = [Path(p) for p in summary["plots"]] + [self.dir / n for n in ("config.yaml", "metrics.csv", "summary.json")]
            for t in self.trackers:
                t.artifacts([f for f in files if f.is_file()])
                t.close()
            self.trackers = []
        self.status("finished")
        return summary

    def fail(self, error: str) -> None:
        """Mark the run "failed" in status.json with ``error`` (one line) and close the trackers as failed."""
        self.status("failed", error=error)
        for t in self.trackers:
            t.close(failed=True)
        self.trackers = []


def _num(v: str):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in v and "e" not in v.lower() else f
