"""Ray Tune sweeps over any config field: ``fdpg-ray sweep SWEEP.yaml``.

A sweep file names a base run config, fixed overrides, a grid and/or a random search
space over dotted config keys (the keys of ``--set``), and how Tune runs the trials::

    name: divergences
    base: configs/toy.yaml          # run config (or sweep `task` with `tasks:`, see below)
    set: {run.steps: 20}            # fixed overrides
    grid:                           # grid search over dotted keys
      divergence: [kl, rkl, tv, js]
      run.seed: [0, 1]
    random:                         # random search: uniform, loguniform, choice, randint, ...
      learner.weight_decay: {loguniform: [1e-4, 1e-1]}
    per_value:                      # settings that go with one value of a grid key
      divergence:
        rkl: {learner.lr: 1e-4}
    num_samples: 1                  # repeats of the grid (x random draws)
    max_concurrent_trials: 1
    scheduler: null                 # or {asha: {metric: kl_p_pi, mode: min, grace_period: 5}}
    trial_resources: {CPU: 0.1}     # the trial's driver function only
    metric: kl_p_pi
    mode: min

``per_value`` ties settings to a grid value, such as a learning rate for each model size in
a scaling study; a trial's config is base + set + per_value of its grid values + its values.

The special search key ``task`` sweeps the base config itself: its values are task names,
each mapped to a run config by ``tasks: {name: path}`` or, without that mapping, to
``configs/<name>.yaml``.

This module holds the sweep file's schema and checks, the trial configs it expands to,
and the sweep's resume hash.  Layout of SWEEP_DIR (default ``sweeps/<name>``)::

    sweep.json            the resolved sweep (keys swept, metric, base config per task)
    tune/                 Ray Tune's experiment (RunConfig(storage_path=SWEEP_DIR, name="tune"))
    runs/<trial>/         each trial's run directory (metrics.csv, summary.json, final/, ...)
    results.parquet/.csv  every trial's every step, one row per (trial, step)
"""

from __future__ import annotations

import itertools
import math
import os
import re
from pathlib import Path
from typing import Any

import yaml

from fdpg_ray.config import Config, ConfigError, load_config, set_dotted
from fdpg_ray.train.metrics import BY_NAME as METRIC_BY_NAME, tune_metric_kind, tune_metrics

REPO_ROOT = Path(__file__).resolve().parent.parent


TUNE_NAME = "tune"


RUNS = "runs"


TASK_KEY = "task"


TRIALS_FILE = "trials.json"   # Tune's saved status of every trial, written when the Tuner ends


SWEEP_KEYS = {
    "name": "sweep name; the default sweep dir is sweeps/<name>",
    "base": "run config the trials start from",
    "tasks": "mapping task name -> run config, for a grid over `task`",
    "set": "fixed overrides {dotted.key: value}",
    "grid": "grid search {dotted.key: [values]}",
    "random": "random search {dotted.key: {loguniform: [lo, hi]}}",
    "per_value": "settings tied to a grid value {grid.key: {value: {dotted.key: value}}}",
    "num_samples": "repeats of the grid (times random draws)",
    "max_concurrent_trials": "trials running at once",
    "scheduler": "null or {asha: {...}} / {median: {...}}",
    "trial_resources": "resources of each trial's driver function",
    "driver_on_head": "run every trial's driver function on the head node (default true)",
    "metric": "metric Tune optimises / reports best of",
    "mode": "min or max",
    "max_failures": "Tune-level retries of a failed trial (its run resumes from its last checkpoint)",
}


SAMPLERS = {  # name -> (number of arguments, description)
    "uniform": (2, "[low, high]"), "loguniform": (2, "[low, high]"), "quniform": (3, "[low, high, q]"),
    "qloguniform": (3, "[low, high, q]"), "randint": (2, "[low, high)"), "lograndint": (2, "[low, high)"),
    "randn": (2, "[mean, sd]"), "choice": (None, "[values...]"),
}


SCHEDULERS = ("asha", "median")

# What every step reports to Tune (actors/learner.py -> fdpg_ray/train/controller.py), and what
# only evaluation steps (every run.eval_every steps, and the last) add: the metrics the
# registry (fdpg_ray/train/metrics.py) marks as sweep metrics; families as patterns.


# What every step reports to Tune (actors/learner.py -> fdpg_ray/train/controller.py), and what
# only evaluation steps (every run.eval_every steps, and the last) add: the metrics the
# registry (fdpg_ray/train/metrics.py) marks as sweep metrics; families as patterns.
EVERY_STEP_METRICS = tuple(tune_metrics("step"))


EVAL_METRICS = tuple(tune_metrics("eval"))
# Sweep-level fields that `--set` may change too (`--set max_concurrent_trials=4`).


# Sweep-level fields that `--set` may change too (`--set max_concurrent_trials=4`).
SWEEP_SET_KEYS = ("name", "num_samples", "max_concurrent_trials", "scheduler", "trial_resources", "driver_on_head",
                  "metric", "mode", "max_failures")

# The objective's value is written as `divergence` in metrics.csv; in the sweep results the
# `divergence` column is the divergence's *name* (a config field), so the value is renamed
# (the registry's results_name).


class SweepError(ConfigError):
    """Invalid sweep file; one line naming the field."""


def _find_file(value: str, sweep_file: Path | None, field: str) -> Path:
    p = Path(value).expanduser()
    candidates = [p] if p.is_absolute() else [Path.cwd() / p] + (
        [sweep_file.parent / p] if sweep_file is not None else []) + [REPO_ROOT / p]
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise SweepError(f"{field}: file '{value}' does not exist; give the path of a run config (see configs/)")


def _check_key(key: str, where: str) -> None:
    """The same checks and message as --set, prefixed with the sweep field."""
    if key == TASK_KEY:
        return
    if not isinstance(key, str) or not key:
        raise SweepError(f"{where}: keys must be dotted config keys such as learner.lr, got {key!r}")
    try:
        set_dotted({}, key, None)
    except ConfigError as e:
        raise SweepError(f"{where}.{e}") from None


def _sampler(key: str, spec) -> Any:
    from ray import tune

    where = f"random.{key}"
    if not isinstance(spec, dict) or len(spec) != 1:
        raise SweepError(f"{where}: expected one sampler such as {{loguniform: [1e-5, 1e-3]}}; "
                         f"valid samplers: {', '.join(SAMPLERS)}")
    (kind, args), = spec.items()
    if kind not in SAMPLERS:
        raise SweepError(f"{where}: unknown sampler '{kind}'; valid samplers: {', '.join(SAMPLERS)}")
    n, shape = SAMPLERS[kind]
    if not isinstance(args, list) or not args or (n is not None and len(args) != n):
        raise SweepError(f"{where}.{kind}: expected {shape}, got {args!r}")
    if kind != "choice":
        try:
            args = [float(a) for a in args]
        except (TypeError, ValueError):
            raise SweepError(f"{where}.{kind}: expected numbers {shape}, got {args!r}") from None
        if kind in ("randint", "lograndint"):
            args = [int(a) for a in args]
        if kind != "randn" and not args[0] < args[1]:
            raise SweepError(f"{where}.{kind}: low must be < high, got {args!r}")
        if kind.startswith("log") or kind == "qloguniform":
            if args[0] <= 0:
                raise SweepError(f"{where}.{kind}: a log-scale range needs low > 0, got {args!r}")
    return getattr(tune, kind)(args) if kind == "choice" else getattr(tune, kind)(*args)


def load_sweep(path: str | os.PathLike, overrides: list[str] | dict | None = None) -> dict:
    """Read and validate a sweep file; returns the resolved spec (plain data).

    ``overrides`` (``--set``) are added to the sweep's ``set``. Every problem is a
    :class:`SweepError` whose message is one line naming the field."""
    p = Path(path)
    if not p.is_file():
        raise SweepError(f"sweep: file '{path}' does not exist; pass the path of a sweep YAML (see configs/sweeps/)")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise SweepError(f"sweep: '{path}' is not valid YAML ({str(e).splitlines()[0]}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise SweepError(f"sweep: '{path}' must hold a mapping at the top level (name, base, grid, ...)")
    from fdpg_ray.config import _split_override as split  # the same parsing as --set

    extra = list(overrides.items()) if isinstance(overrides, dict) else [split(o) for o in overrides or []]
    for k, v in [kv for kv in extra if kv[0] in SWEEP_SET_KEYS]:
        raw[k] = v
    extra = [kv for kv in extra if kv[0] not in SWEEP_SET_KEYS]
    for key in raw:
        if key not in SWEEP_KEYS:
            raise SweepError(f"{key}: unknown sweep key; valid keys: {', '.join(SWEEP_KEYS)}")

    name = raw.get("name") or p.stem
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SweepError(f"name: {name!r} is not a plain name; use letters, digits, '-', '_' or '.'")

    fixed = raw.get("set") or {}
    if not isinstance(fixed, dict):
        raise SweepError(f"set: expected a mapping {{dotted.key: value}}, got {fixed!r}")
    fixed = dict(fixed)
    for k, v in extra:
        fixed[k] = v
    for k in fixed:
        if k == TASK_KEY:
            raise SweepError("set.task: task is chosen by `base` or by a grid over task, not by set")
        _check_key(k, "set")

    grid = raw.get("grid") or {}
    if not isinstance(grid, dict):
        raise SweepError(f"grid: expected a mapping {{dotted.key: [values]}}, got {grid!r}")
    for k, values in grid.items():
        _check_key(k, "grid")
        if not isinstance(values, list) or not values:
            raise SweepError(f"grid.{k}: expected a non-empty list of values, got {values!r}")
        if k in fixed:
            raise SweepError(f"grid.{k}: also fixed in set; remove it from one of them")
    random = raw.get("random") or {}
    if not isinstance(random, dict):
        raise SweepError(f"random: expected a mapping {{dotted.key: {{sampler: [args]}}}}, got {random!r}")
    for k, spec in random.items():
        _check_key(k, "random")
        if k == TASK_KEY:
            raise SweepError("random.task: tasks are swept by grid, not sampled")
        if k in grid or k in fixed:
            raise SweepError(f"random.{k}: also in {'grid' if k in grid else 'set'}; keep it in one place")
        _sampler(k, spec)
    if not grid and not random:
        raise SweepError("grid: empty search space; give grid and/or random keys, e.g. grid: {divergence: [kl, js]}")
    per_value = _per_value(raw.get("per_value"), grid, random)

    # tasks: the base config of each trial
    tasks_map = raw.get("tasks")
    if tasks_map is not None and (not isinstance(tasks_map, dict) or not tasks_map):
        raise SweepError("tasks: expected a mapping {task name: run config path}")
    if TASK_KEY in grid:
        tasks = {}
        for t in grid[TASK_KEY]:
            if not isinstance(t, str):
                raise SweepError(f"grid.task: task names must be strings, got {t!r}")
            if tasks_map is not None:
                if t not in tasks_map:
                    raise SweepError(f"grid.task: '{t}' is not in tasks; known tasks: {', '.join(tasks_map)}")
                tasks[t] = str(_find_file(str(tasks_map[t]), p, f"tasks.{t}"))
            else:
                tasks[t] = str(_find_file(t if t.endswith((".yaml", ".yml")) else f"configs/{t}.yaml", p, "grid.task"))
        base = None
    else:
        if raw.get("base") is None:
            raise SweepError("base: missing; give a run config (e.g. base: configs/toy.yaml) or a grid over task")
        base = str(_find_file(str(raw["base"]), p, "base"))
        tasks = None

    def positive_int(key, default):
        v = raw.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SweepError(f"{key}: expected an integer >= 1, got {v!r}")
        return v

    num_samples = positive_int("num_samples", 1)
    max_concurrent = positive_int("max_concurrent_trials", 1)
    max_failures = raw.get("max_failures", 0)
    if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < -1:
        raise SweepError(f"max_failures: expected an integer >= 0 (or -1: retry forever), got {max_failures!r}")
    mode = raw.get("mode", "min")
    if mode not in ("min", "max"):
        raise SweepError(f"mode: expected min or max, got {mode!r}")
    metric = raw.get("metric", "kl_p_pi")
    if not isinstance(metric, str) or not metric:
        raise SweepError(f"metric: expected a metric name such as kl_p_pi, got {metric!r}")
    resources = raw.get("trial_resources", {"CPU": 0.1})
    if not isinstance(resources, dict) or not resources or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in resources.values()):
        raise SweepError(f"trial_resources: expected a mapping such as {{CPU: 0.1}}, got {resources!r}")
    driver_on_head = raw.get("driver_on_head", True)
    if not isinstance(driver_on_head, bool):
        raise SweepError(f"driver_on_head: expected true or false, got {driver_on_head!r}")
    scheduler = raw.get("scheduler")
    if scheduler is not None:
        if not isinstance(scheduler, dict) or len(scheduler) != 1 or next(iter(scheduler)) not in SCHEDULERS:
            raise SweepError(f"scheduler: expected null or one of {{asha: {{...}}}}, {{median: {{...}}}}; got {scheduler!r}")
        (kind, opts), = scheduler.items()
        if opts is not None and not isinstance(opts, dict):
            raise SweepError(f"scheduler.{kind}: expected a mapping of options, got {opts!r}")
        if opts and "metric" in opts:
            try:
                _check_metric(str(opts["metric"]), scheduler_given=True)
            except SweepError as e:
                raise SweepError(f"scheduler.{kind}.{e}") from None
    _check_metric(metric, scheduler_given=scheduler is not None and "metric" not in (next(iter(scheduler.values())) or {}))

    spec = {
        "name": name, "sweep_file": str(p.resolve()), "base": base, "tasks": tasks, "set": fixed,
        "grid": grid, "random": random, "per_value": per_value, "num_samples": num_samples,
        "max_concurrent_trials": max_concurrent,
        "scheduler": scheduler, "trial_resources": dict(resources), "driver_on_head": driver_on_head,
        "metric": metric, "mode": mode, "max_failures": max_failures,
    }
    _check_configs(spec)
    if scheduler is not None and "asha" in scheduler:
        max_t = (scheduler["asha"] or {}).get("max_t")
        reports = spec["max_steps"] + 1  # steps 0..run.steps, one Tune iteration each
        if max_t is not None and (not isinstance(max_t, int) or max_t <= reports):
            raise SweepError(f"scheduler.asha.max_t: {max_t!r} would stop runs at or before their last step (a run "
                             f"reports run.steps + 1 = {reports} iterations) before they save their model; leave it out "
                             f"or use more than {reports}")
    return spec


def _per_value(raw, grid: dict, random: dict) -> dict:
    """Validate ``per_value: {grid key: {grid value: {dotted.key: value}}}``."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SweepError(f"per_value: expected a mapping {{grid.key: {{value: {{dotted.key: value}}}}}}, got {raw!r}")
    owner: dict = {}  # dotted key -> the grid key whose values set it
    for gk, by_value in raw.items():
        if gk not in grid:
            raise SweepError(f"per_value.{gk}: not a grid key; settings can follow only a key swept by grid "
                             f"(grid keys: {', '.join(grid) or 'none'})")
        if not isinstance(by_value, dict) or not by_value:
            raise SweepError(f"per_value.{gk}: expected a mapping {{value: {{dotted.key: value}}}}, got {by_value!r}")
        for value, settings in by_value.items():
            where = f"per_value.{gk}.{value}"
            if value not in grid[gk]:
                raise SweepError(f"{where}: {value!r} is not one of grid.{gk} ({', '.join(map(str, grid[gk]))})")
            if not isinstance(settings, dict) or not settings:
                raise SweepError(f"{where}: expected a mapping {{dotted.key: value}}, got {settings!r}")
            for k in settings:
                if k == TASK_KEY:
                    raise SweepError(f"{where}.task: task is chosen by `base` or by a grid over task, not by per_value")
                if k in grid or k in random:
                    raise SweepError(f"{where}.{k}: {k} is swept (grid/random); a trial's own value would override it")
                _check_key(k, where)
                if owner.setdefault(k, gk) != gk:
                    raise SweepError(f"{where}.{k}: also set by per_value.{owner[k]}; one trial could get two values")
    return raw


def is_eval_metric(metric: str) -> bool:
    return tune_metric_kind(metric) == "eval"


def _check_metric(metric: str, scheduler_given: bool) -> None:
    """Whether a sweep may optimise ``metric`` (the registry's sweep metrics,
    :func:`fdpg_ray.train.metrics.tune_metric_kind`), and with a scheduler (every-step metrics only).

    Raises:
        SweepError: the metric is not one a run reports to Tune, or it is eval-only and a
            scheduler would use it.
    """
    kind = tune_metric_kind(metric)
    if kind == "step":
        return
    if kind == "eval":
        if scheduler_given:
            every = [m for m in EVERY_STEP_METRICS if METRIC_BY_NAME[m].label in ("KL(p‖π)", "alignment", "KL(π‖a)")]
            raise SweepError(f"metric: '{metric}' is measured only at evaluation steps (run.eval_every); a scheduler "
                             f"needs a metric reported every step, such as {', '.join(every[:-1])} or {every[-1]}")
        return
    shown = [m for m in EVERY_STEP_METRICS + EVAL_METRICS if METRIC_BY_NAME[m].label and m.isidentifier()]
    raise SweepError(f"metric: '{metric}' is not a reported metric; use one of {', '.join(shown)}, "
                     f"feature_<constraint name>, exact_<divergence> (toy task) or another sweep metric of "
                     f"docs/metrics.md")


def swept_keys(spec: dict) -> list[str]:
    """The dotted config keys the sweep varies: its grid keys, then its random keys."""
    return list(spec["grid"]) + list(spec["random"])


def _trial_overrides(spec: dict, params: dict) -> dict:
    """The overrides of one trial, in order: quiet progress bar, the sweep's set, the settings
    tied to the trial's grid values (per_value), the trial's values."""
    out: dict = {"run.progress": False}
    out.update(spec["set"])
    for gk, by_value in spec["per_value"].items():
        out.update(by_value.get(params.get(gk), {}))
    out.update({k: v for k, v in params.items() if k != TASK_KEY})
    return out


def _base_for(spec: dict, params: dict) -> str:
    return spec["tasks"][params[TASK_KEY]] if spec["tasks"] is not None else spec["base"]


def build_config(spec: dict, params: dict) -> Config:
    """The run config of one trial (base + set + per_value + the trial's values)."""
    return load_config(_base_for(spec, params), _trial_overrides(spec, params))


def _check_configs(spec: dict) -> None:
    """Build the config of every grid point now (cheap), so that a bad value fails before
    Ray starts; random keys are checked at the middle of their range."""
    grid = spec["grid"]
    mid = {}
    for k, s in spec["random"].items():
        (kind, args), = s.items()
        mid[k] = args[0] if kind == "choice" else (
            math.sqrt(float(args[0]) * float(args[1])) if kind.startswith(("log", "qlog")) else
            (float(args[0]) if kind == "randn" else (float(args[0]) + float(args[1])) / 2))
        if kind in ("randint", "lograndint"):
            mid[k] = int(args[0])
    keys = list(grid)
    combos = list(itertools.product(*[grid[k] for k in keys])) if keys else [()]
    if len(combos) > 2000:  # huge grids: every value on its own
        combos = [tuple(grid[k2][0] if k2 != k else v for k2 in keys) for k in keys for v in grid[k]]
    spec["max_steps"] = 0
    for combo in combos:
        params = {**dict(zip(keys, combo)), **mid}
        try:
            spec["max_steps"] = max(spec["max_steps"], build_config(spec, params).run.steps)
        except ConfigError as e:
            where = ", ".join(f"{k}={v}" for k, v in params.items())
            raise SweepError(f"{str(e).splitlines()[0]} (in the trial with {where})") from None


def param_space(spec: dict) -> dict:
    """Tune's param_space: ``tune.grid_search`` for each grid key, a Tune sampler for each random key.

    Raises SweepError for a malformed sampler.
    """
    from ray import tune

    space: dict = {k: tune.grid_search(list(v)) for k, v in spec["grid"].items()}
    space.update({k: _sampler(k, s) for k, s in spec["random"].items()})
    return space


def spec_hash(spec: dict) -> str:
    from fdpg_ray.train.fingerprint import digest  # the one content-hash helper (runs use it too)

    keep = {k: spec[k] for k in ("base", "tasks", "set", "grid", "random", "num_samples")}
    if spec.get("per_value"):  # absent from the hash when unused: older sweeps still resume
        keep["per_value"] = spec["per_value"]
    return digest(keep)


def config_digests(spec: dict) -> dict[str, str]:
    """{run config path: content digest} of the sweep's base config or task configs: a config
    edited in place between a sweep and its --resume changes what the trials compute."""
    from fdpg_ray.train.fingerprint import file_digest

    paths = list(spec["tasks"].values()) if spec["tasks"] is not None else [spec["base"]]
    return {p: file_digest(p) for p in paths if os.path.isfile(p)}
