"""One sweep trial: a Tune *function trainable* that builds the trial's config (base + set + the
trial's values) and runs a whole distributed run with
:func:`actors.driver.run_distributed`, passing
``ray.tune.integration.ray_train.TuneReportCallback()`` to the run's ``TorchTrainer`` so
that every step's metrics reach Tune (Ray Train V2 + Tune: ``Tuner(trainer)`` is
deprecated). The trial owns its rollout, scorer and sink actors and its learner, so a
stopped trial frees all of them.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path


from fdpg_ray.atomic import atomic_write_text
from tuning.spec import RUNS, build_config

def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", text)


def trial_tag(params: dict) -> str:
    parts = []
    for k, v in params.items():
        v = f"{v:.3g}" if isinstance(v, float) else str(v)
        parts.append(f"{k.split('.')[-1]}={v.removeprefix('bundled:')}")
    return _safe(",".join(parts))[:80]


def run_trial(params: dict, sweep: dict) -> None:
    """One Tune trial: a whole distributed run whose steps are reported to Tune.

    The run directory is SWEEP_DIR/runs/<trial id>_<values>; a trial that Tune starts again
    (``--resume`` of an interrupted sweep, ``max_failures``) finds its run directory and
    resumes it from its last Ray Train checkpoint."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from actors.driver import run_distributed

    # Tune runs the function in the trial's own directory; relative paths in the config mean
    # the directory the sweep was started from.
    if os.path.isdir(sweep["cwd"]):
        os.chdir(sweep["cwd"])
    params = dict(params)
    trial_id = tune.get_context().get_trial_id()
    run_dir = Path(sweep["sweep_dir"]) / RUNS / f"{trial_id}_{trial_tag(params)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    info_path = run_dir / "trial.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {
        "trial_id": trial_id, "params": params, "attempts": 0}
    info["attempts"] += 1
    info["started"] = time.time()
    atomic_write_text(info_path, json.dumps(info, indent=2, default=str))
    cfg = build_config(sweep, params)
    resume = (run_dir / "metrics.csv").is_file()
    changes = None
    if resume and (run_dir / "config.yaml").is_file():
        from fdpg_ray.train.fingerprint import check_resume

        changes = check_resume(cfg, run_dir)  # the same rule as train --resume: content, not paths
    run_distributed(cfg, run_dir, resume=resume, callbacks=[TuneReportCallback()], resume_changes=changes)


def trial_bundles(spec: dict, params: dict) -> list[dict]:
    """The resource request of one trial: its driver function (bundle 0, where Tune runs
    it), then one bundle per rollout actor and per scorer actor of its run. Tune reserves
    them as one placement group, so a trial starts only when its whole run fits, and the
    run's actors (created inside the trial, so captured by that group) use them. The Ray
    Train learner reserves its own workers through its ScalingConfig."""
    cfg = build_config(spec, params)
    head = {k: float(v) for k, v in spec["trial_resources"].items() if v}
    if spec["driver_on_head"]:
        # Ray's built-in resource of the head node: trial drivers (and so each run's sink and
        # run directory) live where the sweep directory is.
        head.setdefault("node:__internal_head__", 0.001)
    rollout = {"CPU": cfg.rollout.cpus_per_actor, "GPU": cfg.rollout.gpus_per_actor}
    scorer = {"CPU": cfg.scorer.cpus_per_actor}
    bundles = [head] + [rollout] * cfg.rollout.num_actors + [scorer] * cfg.scorer.num_actors
    return [{k: v for k, v in b.items() if v} or {"CPU": 0.001} for b in bundles]


def trainable(spec: dict):
    """:func:`run_trial` bound to ``spec`` for Tune; each trial reserves :func:`trial_bundles` as one placement group."""
    from ray import tune

    def resources(params: dict):
        return tune.PlacementGroupFactory(trial_bundles(spec, params), strategy="PACK")

    return tune.with_resources(tune.with_parameters(run_trial, sweep=spec), resources)
