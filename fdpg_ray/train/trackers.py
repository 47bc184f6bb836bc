"""Experiment trackers beside TensorBoard: Weights & Biases and MLflow (``run.trackers``).

Driven by :class:`fdpg_ray.train.sink.RunSink`, the one place that sees every row of a run (the
distributed run, ``--local`` and every Tune trial alike): each row of ``metrics.csv`` is
logged at its ``step``, the resolved config at the start, and at the end the plots,
``config.yaml``, ``metrics.csv`` and ``summary.json`` as artifacts.  Ray's own
integrations were not used: in Ray 2.60 a Train V2 ``RunConfig`` takes only
``ray.train.UserCallback`` (``WandbLoggerCallback``/``MLflowLoggerCallback`` are Tune
logger callbacks, blind to ``--local`` runs and to a plain ``fdpg-ray train``), and
``setup_wandb``/``setup_mlflow`` run inside a worker, which does not see the rows the
driver-side sink writes (docs/design.md, "Experiment trackers").

The libraries are optional (``pip install 'fdpg-ray[trackers]'``); the usual environment
variables configure them: ``WANDB_MODE=offline``, ``WANDB_DIR``, ``WANDB_PROJECT``;
``MLFLOW_TRACKING_URI`` (default here: a file store ``file:<run.output_dir>/mlruns``, for
which ``MLFLOW_ALLOW_FILE_STORE=true`` is set: MLflow 3.x refuses file stores otherwise).
A run's tracker ids are kept in ``RUN_DIR/trackers.json`` so that ``--resume`` continues
the same W&B and MLflow runs.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

IDS_FILE = "trackers.json"


def _finite_numbers(row: dict) -> dict:
    return {k: float(v) for k, v in row.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


class _Ids:
    """RUN_DIR/trackers.json: {"wandb": run id, "mlflow": run id}."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / IDS_FILE
        self.data = json.loads(self.path.read_text()) if self.path.is_file() else {}

    def get(self, key):
        return self.data.get(key)

    def set(self, key, value) -> None:
        from fdpg_ray.atomic import atomic_write_text

        self.data[key] = value
        atomic_write_text(self.path, json.dumps(self.data))


class WandbTracker:
    """A Weights & Biases run for RUN_DIR (project $WANDB_PROJECT, default fdpg-ray), resumed by its id in trackers.json."""
    def __init__(self, run_dir: Path, config: dict, ids: _Ids):
        import wandb

        from wandb.sdk.lib.runid import generate_id

        run_id = ids.get("wandb") or generate_id()
        ids.set("wandb", run_id)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "fdpg-ray"), name=run_dir.name, id=run_id,
                              resume="allow", config=config, dir=os.environ.get("WANDB_DIR", str(run_dir)),
                              settings=wandb.Settings(silent=True, console="off"))
        self.last_step = -1

    def log(self, row: dict) -> None:
        """Log the row's finite numbers at its step; a step below the last one logged (a redone step) is skipped."""
        step = int(row["step"])
        if step < self.last_step:
            return  # a redone step after a restart: W&B keeps steps increasing (docs/design.md)
        self.run.log(_finite_numbers(row), step=step, commit=True)
        self.last_step = step

    def artifacts(self, paths: list[Path]) -> None:
        """Upload ``paths`` as one artifact ``run-<id>-outputs`` (plots under plots/)."""
        import wandb

        art = wandb.Artifact(f"run-{self.run.id}-outputs", type="run-outputs")
        for p in paths:
            art.add_file(str(p), name=p.name if p.parent.name != "plots" else f"plots/{p.name}")
        self.run.log_artifact(art)

    def close(self, failed: bool = False) -> None:
        """Finish the W&B run, exit code 1 if ``failed`` else 0."""
        self.run.finish(exit_code=1 if failed else 0)


class MlflowTracker:
    """An MLflow run for RUN_DIR in the experiment named run.name, resumed by the id in trackers.json.

    Tracking URI: $MLFLOW_TRACKING_URI, else a file store beside the run directory (mlruns/);
    the flattened config is logged as params at creation.
    """
    def __init__(self, run_dir: Path, config: dict, ids: _Ids):
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI") or (run_dir.resolve().parent / "mlruns").as_uri()
        if uri.startswith("file:"):
            # MLflow 3.x keeps its file store but refuses it unless opted in; a file store
            # needs no server or database, so it is the default here (docs/design.md).
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        run_id = ids.get("mlflow")
        if run_id is None:
            name = str((config.get("run") or {}).get("name", "fdpg-ray"))
            exp = self.client.get_experiment_by_name(name)
            exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
            run_id = self.client.create_run(exp_id, run_name=run_dir.name).info.run_id
            ids.set("mlflow", run_id)
            from mlflow.entities import Param

            params = [Param(k, str(v)[:6000]) for k, v in sorted(_flatten(config).items())]
            for s in range(0, len(params), 100):
                self.client.log_batch(run_id, params=params[s:s + 100])
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id
        self.uri = uri

    def log(self, row: dict) -> None:
        """Log the row's finite numbers as metrics at its step (timestamps in ms), 500 per batch."""
        import time

        from mlflow.entities import Metric

        step, ts = int(row["step"]), int(time.time() * 1000)
        metrics = [Metric(k, v, ts, step) for k, v in _finite_numbers(row).items()]
        for s in range(0, len(metrics), 500):
            self.client.log_batch(self.run_id, metrics=metrics[s:s + 500])

    def artifacts(self, paths: list[Path]) -> None:
        """Upload ``paths`` as artifacts (plots under plots/)."""
        for p in paths:
            self.client.log_artifact(self.run_id, str(p), artifact_path="plots" if p.parent.name == "plots" else None)

    def close(self, failed: bool = False) -> None:
        """End the MLflow run as FAILED if ``failed`` else FINISHED."""
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def open_trackers(run_dir: Path, config: dict, trackers) -> list:
    """The W&B / MLflow trackers named in ``trackers`` (TensorBoard stays in the sink)."""
    ids = _Ids(run_dir)
    out = []
    for t in trackers:
        if t == "wandb":
            out.append(WandbTracker(run_dir, config, ids))
        elif t == "mlflow":
            out.append(MlflowTracker(run_dir, config, ids))
    return out
