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
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, TypeAdapter,
                      ValidationError, ValidationInfo, create_model, field_validator, model_validator)

from fdpg_ray.config import (Config, ConfigError, Float, Int, PosInt, Str, _checked, _split_override, load_config,
                             read_mapping, set_dotted)
from fdpg_ray.errors import one_line
from fdpg_ray.train.metrics import BY_NAME as METRIC_BY_NAME, tune_metric_kind, tune_metrics

REPO_ROOT = Path(__file__).resolve().parent.parent


TUNE_NAME = "tune"


RUNS = "runs"


TASK_KEY = "task"


TRIALS_FILE = "trials.json"   # Tune's saved status of every trial, written when the Tuner ends


# What every step reports to Tune (actors/learner.py -> fdpg_ray/train/controller.py), and what
# only evaluation steps (every run.eval_every steps, and the last) add: the metrics the
# registry (fdpg_ray/train/metrics.py) marks as sweep metrics; families as patterns.
EVERY_STEP_METRICS = tuple(tune_metrics("step"))


EVAL_METRICS = tuple(tune_metrics("eval"))


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


def _check_key(key, where: str, task: str | None = None) -> None:
    """The same checks and message as --set, prefixed with the sweep field; ``task``: why the
    key ``task`` may not be given here (None: it may)."""
    if key == TASK_KEY:
        if task is not None:
            raise SweepError(f"{where}.task: {task}")
        return
    if not isinstance(key, str) or not key:
        raise SweepError(f"{where}: keys must be dotted config keys such as learner.lr, got {key!r}")
    try:
        set_dotted({}, key, None)
    except ConfigError as e:
        raise SweepError(f"{where}.{e}") from None


NOT_BY = "task is chosen by `base` or by a grid over task, not by "


def _check_metric(metric: str, scheduler_given: bool) -> str:
    """Whether a sweep may optimise ``metric`` (the registry's sweep metrics,
    :func:`fdpg_ray.train.metrics.tune_metric_kind`), and with a scheduler (every-step metrics only).

    Raises:
        ValueError: the problem (and fix), for the validated field to name: the metric is not one a
            run reports to Tune, or it is eval-only and a scheduler would use it.
    """
    kind = tune_metric_kind(metric)
    if kind == "step":
        return metric
    if kind == "eval":
        if scheduler_given:
            every = [m for m in EVERY_STEP_METRICS if METRIC_BY_NAME[m].label in ("KL(p‖π)", "alignment", "KL(π‖a)")]
            raise ValueError(f"'{metric}' is measured only at evaluation steps (run.eval_every); a scheduler "
                             f"needs a metric reported every step, such as {', '.join(every[:-1])} or {every[-1]}")
        return metric
    shown = [m for m in EVERY_STEP_METRICS + EVAL_METRICS if METRIC_BY_NAME[m].label and m.isidentifier()]
    raise ValueError(f"'{metric}' is not a reported metric; use one of {', '.join(shown)}, "
                     f"feature_<constraint name>, exact_<divergence> (toy task) or another sweep metric of "
                     f"docs/metrics.md")


def is_eval_metric(metric: str) -> bool:
    """True for a metric reported only at evaluation steps."""
    return tune_metric_kind(metric) == "eval"


# ----------------------------------------------------------------------------- the schema

def _min_or_max(v):
    if v not in ("min", "max"):
        raise ValueError(f"expected min or max, got {v!r}")
    return v


def _given(what: str, tp: type):
    """A validator that refuses anything but a non-empty ``tp`` (dict or list): 'expected <what>, got ...'."""
    def check(v):
        if not isinstance(v, tp) or not v:
            raise ValueError(f"expected {what}, got {v!r}")
        return v

    return BeforeValidator(check)


def _plain_name(v):
    if not isinstance(v, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", v):
        raise ValueError(f"{v!r} is not a plain name; use letters, digits, '-', '_' or '.'")
    return v


Mode = Annotated[Literal["min", "max"], BeforeValidator(_min_or_max)]
OrEmpty = BeforeValidator(lambda v: v or {})  # null (or left empty) is an empty mapping


class _Keyed(BaseModel):
    """A mapping of one key that names what it is: ``{loguniform: [1e-5, 1e-3]}``, ``{asha: {...}}``;
    the members of a :func:`_keyed` union each have that one field."""
    model_config = ConfigDict(extra="forbid")

    @property
    def name(self) -> str:
        """The mapping's key (the sampler's or scheduler's name)."""
        return next(iter(type(self).model_fields))

    @property
    def value(self):
        """The mapping's value (the sampler's arguments, the scheduler's options)."""
        return getattr(self, self.name)


def _keyed(members, check):
    """The union of ``members`` (:class:`_Keyed` models) told apart by a mapping's one key; ``check``
    refuses anything else first (a mapping of several keys, an unknown name), in the project's words."""
    return Annotated[Union[tuple(Annotated[m, Tag(next(iter(m.model_fields)))] for m in members)],
                     Discriminator(lambda v: next(iter(v))), BeforeValidator(check)]


class Sampler(_Keyed):
    """One random-search sampler, ``{name: [args]}``: Ray Tune's sampler of that name (:data:`SAMPLERS`)."""

    @model_validator(mode="after")
    def _range(self):
        args = list(self.value)
        if self.name not in ("choice", "randn") and not args[0] < args[1]:
            raise ValueError(f".{self.name}: low must be < high, got {args!r}")
        if self.name.startswith(("log", "qlog")) and args[0] <= 0:
            raise ValueError(f".{self.name}: a log-scale range needs low > 0, got {args!r}")
        return self

    def tune(self):
        """The Ray Tune sampler (``tune.loguniform(lo, hi)``, ``tune.choice([...])``, ...)."""
        from ray import tune

        return getattr(tune, self.name)(*([list(self.value)] if self.name == "choice" else self.value))

    def middle(self):
        """A value the sampler can draw, to check the trials' configs before Ray starts: the first
        choice, the mean, low of an integer range, the (geometric) middle of the others."""
        a = self.value
        if self.name in ("choice", "randn", "randint", "lograndint"):
            return a[0]
        return math.sqrt(a[0] * a[1]) if self.name.startswith(("log", "qlog")) else (a[0] + a[1]) / 2


Range, QRange, IntRange = tuple[Float, Float], tuple[Float, Float, Float], tuple[Int, Int]
SAMPLERS = {  # name -> (arguments, as written in messages)
    "uniform": (Range, "[low, high]"), "loguniform": (Range, "[low, high]"), "quniform": (QRange, "[low, high, q]"),
    "qloguniform": (QRange, "[low, high, q]"), "randint": (IntRange, "[low, high)"),
    "lograndint": (IntRange, "[low, high)"), "randn": (Range, "[mean, sd]"), "choice": (list, "[values...]"),
}


def _one_sampler(v):
    if not isinstance(v, dict) or len(v) != 1:
        raise ValueError(f"expected one sampler such as {{loguniform: [1e-5, 1e-3]}}; valid samplers: {', '.join(SAMPLERS)}")
    (name, args), = v.items()
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler '{name}'; valid samplers: {', '.join(SAMPLERS)}")
    tp, shape = SAMPLERS[name]
    if not isinstance(args, list) or not args or (tp is not list and len(args) != len(typing.get_args(tp))):
        raise ValueError(f".{name}: expected {shape}, got {args!r}")
    return v


SamplerSpec = _keyed([create_model(name, __base__=Sampler, __doc__=f"``{name}: {shape}``",
                                   **{name: (tp, Field(description=f"give {shape}"))})
                      for name, (tp, shape) in SAMPLERS.items()], _one_sampler)
"""A ``random`` entry's value, told apart by its sampler's name."""
_SAMPLER = TypeAdapter(SamplerSpec)


class _SchedulerOptions(BaseModel):
    """The options every scheduler takes (strict: they go to Tune as written); left out: Tune's
    default, and the sweep's metric and mode."""
    model_config = ConfigDict(extra="forbid", strict=True)
    time_attr: Optional[str] = None
    metric: Optional[str] = None
    mode: Optional[Mode] = None

    @field_validator("metric")
    @classmethod
    def _every_step(cls, v):
        return v if v is None else _check_metric(v, scheduler_given=True)


class AshaOptions(_SchedulerOptions):
    """``scheduler: {asha: {...}}``: Tune's ASHAScheduler (its unit: training_iteration = step + 1)."""
    max_t: Optional[int] = Field(None, gt=0)
    grace_period: Optional[int] = Field(None, gt=0)
    reduction_factor: Optional[float] = Field(None, gt=1)
    brackets: Optional[int] = Field(None, gt=0)
    stop_last_trials: Optional[bool] = None


class MedianOptions(_SchedulerOptions):
    """``scheduler: {median: {...}}``: Tune's MedianStoppingRule."""
    grace_period: Optional[float] = Field(None, ge=0)
    min_samples_required: Optional[int] = Field(None, gt=0)
    min_time_slice: Optional[int] = Field(None, ge=0)
    hard_stop: Optional[bool] = None


class Asha(_Keyed):
    """``{asha: {options}}``."""
    asha: Optional[AshaOptions] = Field(description="give a mapping of ASHAScheduler's options")


class Median(_Keyed):
    """``{median: {options}}``."""
    median: Optional[MedianOptions] = Field(description="give a mapping of MedianStoppingRule's options")


SCHEDULERS = (Asha, Median)


def _one_scheduler(v):
    if not isinstance(v, dict) or len(v) != 1 or next(iter(v)) not in ("asha", "median"):
        raise ValueError(f"expected null or one of {{asha: {{...}}}}, {{median: {{...}}}}; got {v!r}")
    return v


SchedulerSpec = _keyed(SCHEDULERS, _one_scheduler)
"""``scheduler``'s value, told apart by the scheduler's name."""


class SweepSpec(BaseModel):
    """A sweep file (the module's docstring); the mappings, sampler and scheduler stay as written
    (:func:`spec_hash` hashes them).  Each field's description is the fix named in its errors."""
    model_config = ConfigDict(extra="forbid", title="sweep")  # title: 'unknown sweep key'
    name: Annotated[str, BeforeValidator(_plain_name)] = Field(
        description="the sweep's name; the default sweep dir is sweeps/<name>")
    base: Optional[Str] = Field(None, description="give the run config the trials start from")
    tasks: Optional[Annotated[dict[str, Str], _given("a mapping {task name: run config path}", dict)]] = None
    set: Annotated[dict[Any, Any], OrEmpty] = Field(default_factory=dict,
                                                    description="give fixed overrides {dotted.key: value}")
    grid: Annotated[dict[Any, Annotated[list, _given("a non-empty list of values", list)]], OrEmpty] = Field(
        default_factory=dict, description="give a grid search {dotted.key: [values]}")
    random: Annotated[dict[Any, Annotated[Any, _checked(SamplerSpec)]], OrEmpty] = Field(
        default_factory=dict, description="give a random search {dotted.key: {loguniform: [lo, hi]}}")
    per_value: Annotated[dict[Any, Annotated[dict[Any, Annotated[dict[Any, Any], _given(
        "a mapping {dotted.key: value}", dict)]], _given("a mapping {value: {dotted.key: value}}", dict)]], OrEmpty] = Field(
        default_factory=dict, description="give settings tied to a grid value {grid.key: {value: {dotted.key: value}}}")
    num_samples: PosInt = Field(1, description="give the repeats of the grid (times random draws)")
    max_concurrent_trials: PosInt = Field(1, description="give how many trials run at once")
    scheduler: Optional[Annotated[Any, _checked(SchedulerSpec)]] = Field(
        None, description="give null or {asha: {...}} / {median: {...}}")
    trial_resources: Annotated[dict[str, Annotated[Float, Field(ge=0)]], _given("a mapping such as {CPU: 0.1}", dict)] = (
        Field(default_factory=lambda: {"CPU": 0.1}))  # of each trial's driver function
    driver_on_head: bool = Field(True, description="true runs every trial's driver function on the head node")
    metric: str = Field("kl_p_pi", min_length=1, description="give the metric Tune optimises, such as kl_p_pi")
    mode: Mode = "min"
    max_failures: Int = Field(0, ge=-1, description="give the Tune-level retries of a failed trial (its run "
                                                    "resumes from its last checkpoint; -1: retry forever)")

    @field_validator("set", "grid", "random")
    @classmethod
    def _dotted_keys(cls, v: dict, info: ValidationInfo) -> dict:
        why = {"set": NOT_BY + "set", "random": "tasks are swept by grid, not sampled"}.get(info.field_name)
        for k in v:
            _check_key(k, info.field_name, why)
        return v

    @field_validator("metric")
    @classmethod
    def _reported(cls, metric: str, info: ValidationInfo) -> str:
        scheduler = info.data.get("scheduler")
        return _check_metric(metric, scheduler_given=scheduler is not None
                             and "metric" not in (next(iter(scheduler.values())) or {}))

    @model_validator(mode="after")
    def _each_key_once(self):
        for k in self.grid:
            if k in self.set:
                raise SweepError(f"grid.{k}: also fixed in set; remove it from one of them (on the command "
                                 f"line: --set grid.{k}=[value] narrows the grid instead)")
        for k in self.random:
            if k in self.grid or k in self.set:
                raise SweepError(f"random.{k}: also in {'grid' if k in self.grid else 'set'}; keep it in one place")
        if not self.grid and not self.random:
            raise SweepError("grid: empty search space; give grid and/or random keys, e.g. grid: {divergence: [kl, js]}")
        _per_value(self.per_value, self.grid, self.random)
        return self


def _per_value(per_value: dict, grid: dict, random: dict) -> None:
    """The keys of ``per_value: {grid key: {grid value: {dotted.key: value}}}``: grid keys and values,
    config keys not swept, each set by one grid key only."""
    owner: dict = {}  # dotted key -> the grid key whose values set it
    for gk, by_value in per_value.items():
        if gk not in grid:
            raise SweepError(f"per_value.{gk}: not a grid key; settings can follow only a key swept by grid "
                             f"(grid keys: {', '.join(grid) or 'none'})")
        for value, settings in by_value.items():
            where = f"per_value.{gk}.{value}"
            if value not in grid[gk]:
                raise SweepError(f"{where}: {value!r} is not one of grid.{gk} ({', '.join(map(str, grid[gk]))})")
            for k in settings:
                if k in grid or k in random:
                    raise SweepError(f"{where}.{k}: {k} is swept (grid/random); a trial's own value would override it")
                _check_key(k, where, NOT_BY + "per_value")
                if owner.setdefault(k, gk) != gk:
                    raise SweepError(f"{where}.{k}: also set by per_value.{owner[k]}; one trial could get two values")


def sampler(key: str, raw) -> Sampler:
    """The sampler model of ``random.<key>`` as written (``{loguniform: [1e-5, 1e-3]}``); SweepError otherwise."""
    try:
        return _SAMPLER.validate_python(raw)
    except ValidationError as e:
        raise SweepError(one_line(e, SamplerSpec, f"random.{key}")) from None


def load_sweep(path: str | os.PathLike, overrides: list[str] | dict | None = None) -> dict:
    """Read and validate a sweep file (:class:`SweepSpec`); returns the resolved spec (plain data:
    its fields, ``base`` or ``tasks`` as absolute paths, ``sweep_file`` and ``max_steps``).

    ``overrides`` (``--set``) are added to the sweep's ``set``, replace a sweep-level field
    (:data:`SWEEP_SET_KEYS`), or, as ``grid.<axis>=[...]``, replace the values of one existing
    grid axis (e.g. ``--set grid.task=[gender]`` runs one task of a multi-task sweep). Every
    problem is a :class:`SweepError` whose message is one line naming the field."""
    p = Path(path)
    raw = read_mapping(p, "sweep", "pass the path of a sweep YAML (see configs/sweeps/)", " (name, base, grid, ...)",
                       SweepError)

    extra = list(overrides.items()) if isinstance(overrides, dict) else [_split_override(o) for o in overrides or []]
    raw.update(kv for kv in extra if kv[0] in SWEEP_SET_KEYS)
    for key, value in extra:
        if key.startswith("grid."):
            _replace_grid_axis(raw, key[len("grid."):], value)
    fixed = [kv for kv in extra if kv[0] not in SWEEP_SET_KEYS and not kv[0].startswith("grid.")]
    for key, _ in fixed:  # named as the user typed them, not as the sweep's `set` they join
        try:
            set_dotted({}, key, None)
        except ConfigError as e:
            raise SweepError(f"--set {e}") from None
    if fixed and isinstance(raw.get("set") or {}, dict):
        raw["set"] = {**(raw.get("set") or {}), **dict(fixed)}
    raw["name"] = raw.get("name") or p.stem
    try:
        sweep = SweepSpec.model_validate(raw)
    except ValidationError as e:
        raise SweepError(one_line(e, SweepSpec)) from None
    base, tasks = _bases(sweep, p)
    spec = {"name": sweep.name, "sweep_file": str(p.resolve()), **dict(sweep), "base": base, "tasks": tasks}
    _check_configs(spec)
    max_t = ((spec["scheduler"] or {}).get("asha") or {}).get("max_t")
    reports = spec["max_steps"] + 1  # steps 0..run.steps, one Tune iteration each
    if max_t is not None and max_t <= reports:
        raise SweepError(f"scheduler.asha.max_t: {max_t!r} would stop runs at or before their last step (a run "
                         f"reports run.steps + 1 = {reports} iterations) before they save their model; leave it out "
                         f"or use more than {reports}")
    return spec


def _replace_grid_axis(raw: dict, axis: str, values) -> None:
    """``--set grid.<axis>=[...]``: replace the values of an axis the sweep's grid already has."""
    grid = raw.get("grid") if isinstance(raw.get("grid"), dict) else {}
    if axis not in grid:
        raise SweepError(f"--set grid.{axis}: '{axis}' is not an axis of this sweep's grid; its axes: "
                         f"{', '.join(grid) or '(none)'} (add new axes in the sweep YAML)")
    if not isinstance(values, list) or not values:
        raise SweepError(f"--set grid.{axis}: got {values!r}; give a non-empty list, e.g. grid.{axis}=[a,b]")
    by_value = (raw.get("per_value") or {}).get(axis)
    known = list(grid[axis] or []) + (list(by_value) if isinstance(by_value, dict) else [])
    # a value written differently on the command line (YAML reads 1e-4 as a string) is the
    # file's value, so that its per_value settings still apply
    grid[axis] = values = [next((k for k in known if _same_value(k, v)), v) for v in values]
    if isinstance(by_value, dict):  # settings of values this sweep leaves out are not used
        raw["per_value"][axis] = {k: v for k, v in by_value.items() if any(_same_value(k, x) for x in values)}
        if not raw["per_value"][axis]:
            del raw["per_value"][axis]


def _same_value(a, b) -> bool:
    """Grid values equal as written or as numbers (0.0001, 1e-4 and '1e-4' are one value)."""
    if a == b or str(a) == str(b):
        return True
    try:
        return not isinstance(a, bool) and not isinstance(b, bool) and float(a) == float(b)
    except (TypeError, ValueError):
        return False


def _bases(sweep: SweepSpec, sweep_file: Path) -> tuple[str | None, dict | None]:
    """The run config the trials start from: (base, None), or for a grid over ``task``
    (None, {task: its run config}) from ``tasks`` or configs/<task>.yaml."""
    if TASK_KEY not in sweep.grid:
        if sweep.base is None:
            raise SweepError("base: missing; give a run config (e.g. base: configs/toy.yaml) or a grid over task")
        return str(_find_file(sweep.base, sweep_file, "base")), None
    tasks = {}
    for t in sweep.grid[TASK_KEY]:
        if not isinstance(t, str):
            raise SweepError(f"grid.task: task names must be strings, got {t!r}")
        if sweep.tasks is not None:
            if t not in sweep.tasks:
                raise SweepError(f"grid.task: '{t}' is not in tasks; known tasks: {', '.join(sweep.tasks)}")
            tasks[t] = str(_find_file(sweep.tasks[t], sweep_file, f"tasks.{t}"))
        else:
            tasks[t] = str(_find_file(t if t.endswith((".yaml", ".yml")) else f"configs/{t}.yaml", sweep_file,
                                      "grid.task"))
    return None, tasks


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
    mid = {k: sampler(k, s).middle() for k, s in spec["random"].items()}
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
    space.update({k: sampler(k, s).tune() for k, s in spec["random"].items()})
    return space


# the fields of a sweep whose change makes it a different sweep (--resume refuses it)
HASHED_FIELDS = ("base", "tasks", "set", "grid", "random", "num_samples", "per_value")


def spec_hash(spec: dict) -> str:
    from fdpg_ray.train.fingerprint import digest  # the one content-hash helper (runs use it too)

    keep = {k: spec[k] for k in HASHED_FIELDS if k != "per_value"}
    if spec.get("per_value"):  # absent from the hash when unused: older sweeps still resume
        keep["per_value"] = spec["per_value"]
    return digest(keep)


def config_digests(spec: dict) -> dict[str, str]:
    """{run config path: content digest} of the sweep's base config or task configs: a config
    edited in place between a sweep and its --resume changes what the trials compute."""
    from fdpg_ray.train.fingerprint import file_digest

    paths = list(spec["tasks"].values()) if spec["tasks"] is not None else [spec["base"]]
    return {p: file_digest(p) for p in paths if os.path.isfile(p)}
