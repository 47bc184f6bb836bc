"""``fdpg-ray sweep SWEEP.yaml``: check the sweep (:mod:`tuning.spec`) and every trial's config
before Ray starts, run the trials (:mod:`tuning.trials`) with Ray Tune's ``Tuner`` (or resume it), and
collect the results (:mod:`tuning.results`)."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path


from fdpg_ray.console import verbose
from fdpg_ray.atomic import atomic_write_text
from tuning.results import collect_results, tune_trial_status
from tuning.spec import (RUNS, TASK_KEY, TRIALS_FILE, TUNE_NAME, SweepError, build_config, config_digests,
                         is_eval_metric, load_sweep, param_space, spec_hash, swept_keys, HASHED_FIELDS)
from tuning.trials import trainable, trial_tag

def _scheduler(spec: dict):
    if spec["scheduler"] is None:
        return None
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule

    (kind, opts), = spec["scheduler"].items()
    opts = dict(opts or {})
    opts.setdefault("metric", spec["metric"])
    opts.setdefault("mode", spec["mode"])
    if kind == "asha":  # Tune's unit is training_iteration = step + 1; never stop a run at its last step
        opts.setdefault("max_t", spec.get("max_steps", 10**6) + 2)
    cls = {"asha": ASHAScheduler, "median": MedianStoppingRule}[kind]
    try:
        return cls(**opts)
    except TypeError as e:
        raise SweepError(f"scheduler.{kind}: {e}; see the options of {cls.__name__}") from None


def _connect(spec: dict) -> None:
    """Start or join Ray as the base config says. Under `ray job submit` (RAY_ADDRESS set)
    join the cluster with address="auto", which also picks up the cluster's auth token."""
    import ray

    from actors.driver import init_ray

    if ray.is_initialized():
        return
    cfg = build_config(spec, _first_params(spec))
    if cfg.ray.address is None and os.environ.get("RAY_ADDRESS"):
        cfg.ray.address = "auto"
    init_ray(cfg)


def _preflight(spec: dict) -> None:
    """What `fdpg-ray train` checks before starting anything, for every task and every model
    of the sweep: a model that is not built or a scorer that does not load fails here, in
    one line, not in every trial."""
    from fdpg_ray.train.preflight import preflight
    from fdpg_ray.model.sources import resolve_model_path

    first = _first_params(spec)
    for task in (spec["tasks"] or {None: None}):
        params = dict(first, **({TASK_KEY: task} if task is not None else {}))
        preflight(build_config(spec, params))
    for model in spec["grid"].get("model.path", []):
        resolve_model_path(str(model))


def _first_params(spec: dict) -> dict:
    p = {k: v[0] for k, v in spec["grid"].items()}
    for k, s in spec["random"].items():
        (kind, args), = s.items()
        p[k] = args[0]
    return p


def run_sweep(path: str | os.PathLike, overrides: list[str] | dict | None = None, resume: bool = False,
              sweep_dir: str | os.PathLike | None = None) -> Path:
    """Run (or resume) a sweep; returns the sweep directory, which then holds
    results.parquet and results.csv (one row per trial and step)."""
    from ray import tune

    spec = load_sweep(path, overrides)
    sdir = Path(sweep_dir if sweep_dir is not None else Path("sweeps") / spec["name"]).expanduser().resolve()
    spec["sweep_dir"] = str(sdir)
    spec["cwd"] = os.getcwd()
    experiment = sdir / TUNE_NAME
    meta_path = sdir / "sweep.json"
    if resume:
        if not experiment.is_dir() or not tune.Tuner.can_restore(str(experiment)):
            raise SweepError(f"--resume: no sweep to resume in '{sdir}'; run without --resume (or give --sweep-dir)")
        if meta_path.is_file():
            old = json.loads(meta_path.read_text())
            if old.get("hash") != spec_hash(spec):
                was = old.get("spec") or {}
                as_saved = json.loads(json.dumps(spec, default=str))  # as sweep.json holds it
                changed = [f"{k} was {was.get(k)!r}, now {as_saved.get(k)!r}" for k in HASHED_FIELDS
                           if k in was and was.get(k) != as_saved.get(k)]
                raise SweepError(f"--resume: the sweep file or --set changed since '{sdir}' was started "
                                 f"({'; '.join(changed) or 'see its sweep.json'}); Tune cannot resume a different "
                                 f"search space: repeat the first run's --set options, or use a new --sweep-dir")
            before, now = old.get("configs") or {}, config_digests(spec)
            edited = [p for p in before if now.get(p, before[p]) != before[p]]
            if edited:  # sweeps started before configs were recorded have none: nothing to compare
                raise SweepError(f"--resume: the run config '{edited[0]}' changed since '{sdir}' was started; trials "
                                 f"would resume on a different target; restore it or use a new --sweep-dir")
            spec["cwd"] = old.get("spec", {}).get("cwd", spec["cwd"])
    elif experiment.exists() or (sdir / RUNS).exists():
        raise SweepError(f"--sweep-dir: '{sdir}' already holds a sweep; pass --resume to continue it, "
                         f"or give another --sweep-dir")

    _preflight(spec)
    sdir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(meta_path, json.dumps({
        "name": spec["name"], "params": swept_keys(spec), "grid": list(spec["grid"]),
        "random": list(spec["random"]), "metric": spec["metric"], "mode": spec["mode"],
        "hash": spec_hash(spec), "configs": config_digests(spec), "spec": spec, "created": time.time()},
        indent=2, default=str))

    _connect(spec)
    if is_eval_metric(spec["metric"]):
        # measured at evaluation steps only: Tune must accept the steps without it
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    if not verbose():
        # Tune's TensorBoard logger (in this process) warns "NaN or Inf found in input tensor."
        # for every step without an evaluation (NaN = not measured at that step, by design)
        logging.getLogger("tensorboardX.x2num").setLevel(logging.ERROR)
    fn = trainable(spec)
    if resume:
        # Finished trials are kept as they are; unfinished and errored ones start again and
        # their runs resume from their last Ray Train checkpoint.
        tuner = tune.Tuner.restore(str(experiment), trainable=fn, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            fn,
            param_space=param_space(spec),
            tune_config=tune.TuneConfig(
                num_samples=spec["num_samples"], max_concurrent_trials=spec["max_concurrent_trials"],
                reuse_actors=False,  # a fresh driver process per trial: stopping it frees the run's actors
                scheduler=_scheduler(spec),
                metric=None if spec["scheduler"] else spec["metric"],
                mode=None if spec["scheduler"] else spec["mode"],
                trial_dirname_creator=lambda trial: f"{trial.trial_id}_{trial_tag(trial.config)}",
            ),
            run_config=tune.RunConfig(
                name=TUNE_NAME, storage_path=str(sdir),
                failure_config=tune.FailureConfig(max_failures=spec["max_failures"]),
                verbose=1 if verbose() else 0,  # quiet: trial bars and the summary (fdpg_ray.console)
            ),
        )
    grid = tuner.fit()
    errors = [r.error for r in grid if r.error is not None]
    tune_status = tune_trial_status(sdir)
    atomic_write_text(sdir / TRIALS_FILE, json.dumps(tune_status, indent=1))
    df = collect_results(sdir)
    states = df.groupby("trial_id")["state"].first().value_counts().to_dict() if len(df) else {}
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    print(f"sweep {spec['name']}: {len(grid)} trials ({counts or 'none reported'}); "
          f"{len(df)} rows in {sdir / 'results.parquet'}")
    if errors:
        first = str(errors[0]).strip().splitlines()
        print(f"first failure: {first[-1] if first else type(errors[0]).__name__}")
    # Tune's saved state can predate a resume that finished the trial: a run that says it
    # ended (its own status.json) counts as ended whatever that state says.
    ended = set(df.loc[df["state"].isin(["finished", "failed", "stopped"]), "trial_id"]) if len(df) else set()
    if any(s not in ("TERMINATED", "ERROR") and t not in ended for t, s in tune_status.items()):
        sets = "".join(f" --set {o}" for o in overrides) if isinstance(overrides, list) else ""
        print(f"unfinished trials remain; continue with: fdpg-ray sweep {path}{sets} --resume --sweep-dir {sdir}")
    return sdir
