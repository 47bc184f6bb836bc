"""One typed config tree, loaded from YAML, overridable with dotted keys.

``--set learner.lr=1e-5`` and a Tune search space use the same dotted paths.  Every
error is a :class:`ConfigError` whose message is one line naming the field and the fix.
"""

from __future__ import annotations

import copy
import importlib.util
import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fdpg_ray.errors import ConfigError  # noqa: F401 - defined low so every layer can raise it; re-exported here


@dataclass
class RunConfig:
    """``run.*``: name, output folder, seed, number of steps, evaluation and checkpoint cadence (steps), trackers."""
    name: str = "run"
    output_dir: str = "runs"
    seed: int = 0
    steps: int = 100
    eval_every: int = 10          # steps between evaluations (samples/STEP.jsonl, metrics)
    checkpoint_every: int = 50    # steps between Ray Train checkpoints
    max_failures: int = 1         # Ray Train FailureConfig
    progress: bool = True         # progress bar on the driver
    # Where each step's metrics go beside metrics.csv: any of tensorboard, wandb, mlflow
    # (fdpg_ray/train/trackers.py; wandb and mlflow need `pip install 'fdpg-ray[trackers]'`).
    trackers: list = field(default_factory=lambda: ["tensorboard"])


@dataclass
class ModelConfig:
    """``model.*``: the policy's starting model (spec as in :mod:`fdpg_ray.model.sources`), dtype, tokens per sample, prompt."""
    path: str = "bundled:gpt2-tiny"   # bundled:<name>, smollm2, toy, a local folder, or a hub name
    dtype: str = "float32"            # float32 | bfloat16 | float16 (learner compute dtype)
    max_new_tokens: int = 40
    # Unconditional generation starts from this text (empty: the BOS token alone).
    prompt: str = ""


@dataclass
class PromptsConfig:
    """``prompts.*``: a JSONL prompts file for conditional targets (None: unconditional), and prompts per step."""
    file: str | None = None        # JSONL read with `datasets`; one prompt per row
    field: str = "prompt"
    per_step: int = 8              # prompts per step; samples per prompt = batch_size / per_step
    limit: int | None = None


@dataclass
class TargetConfig:
    """``target.*``: the constraints that build the EBM P(x) (:mod:`fdpg_ray.target.energy`), the base-sample
    count for fitting lambdas and seeding Z_hat, and the toy task's exact mode.
    """
    # Each constraint: {kind: pointwise|distributional|reward, scorer: {...}, moment?, beta?, lam?}
    constraints: list = field(default_factory=list)
    # Base-model samples used to fit lambdas, seed Z_hat and estimate kl_p_pi_base; conditional
    # targets spread them over every prompt, at least 8 per prompt (docs/design.md).
    fit_samples: int = 1024
    # Toy task only: exact p, Z and divergences by enumeration.
    exact: bool = False


@dataclass
class LossConfig:
    """``loss.*``: the baseline, the |log t| clamp (nats), the importance-weight cap, the log-softmax chunk (positions)."""
    # moving | leave_one_out | self_normalized | none (docs/design.md, "Baseline";
    # docs/baselines.md); older configs' true/false still load and mean moving/none.
    baseline: str = "leave_one_out"
    baseline_momentum: float = 0.9
    clip_log_t: float = 20.0              # |log t| clamp before the pseudo-reward (p(x)=0 policy)
    max_importance_weight: float | None = 10.0
    chunk_size: int = 128                 # positions per chunk in the log-softmax


@dataclass
class LoraConfig:
    """LoRA adapter (peft): W = W0 + (alpha / r) B A on the ``target_modules`` (module names as
    peft matches them, e.g. c_attn for GPT-2, q_proj/v_proj for Llama-style models)."""
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list = field(default_factory=lambda: ["c_attn"])


@dataclass
class LearnerConfig:
    """``learner.*``: optimiser (lr, schedule, clipping), batch sizes in samples, Ray Train workers, DDP/FSDP, LoRA."""
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 64          # samples per step (all workers together)
    micro_batch_size: int = 32    # per worker forward/backward chunk
    num_workers: int = 2          # Ray Train workers (DDP)
    cpus_per_worker: float = 0.5
    use_gpu: bool = False
    strategy: str = "ddp"         # ddp | fsdp
    max_grad_norm: float = 1.0
    lr_schedule: str = "constant"  # constant | cosine (decays to 5% of lr at run.steps)
    warmup_steps: int = 0         # linear warm-up from lr/(W+1) to lr over the first W updates
    lora: LoraConfig | None = None  # null: full fine-tuning; else only the LoRA adapter trains


@dataclass
class RolloutConfig:
    """``rollout.*``: the sampling backend and its actors, temperature, weight-sync cadence and transport
    (bucket size in MiB), and the proposal q (:mod:`fdpg_ray.rollout.proposals`).
    """
    backend: str = "vllm"          # vllm | hf
    num_actors: int = 1
    cpus_per_actor: float = 0.5
    gpus_per_actor: float = 0.0
    gpu_memory_utilization: float = 0.2
    temperature: float = 1.0
    sync_every: int = 1            # push weights to rollout actors every k steps
    overlap: bool = False          # sample step k+1 while step k learns (one-step stale; w corrects)
    enforce_eager: bool = True
    # The proposal q the samples come from: policy | base | fixed:PATH | dataset:PATH
    # (fdpg_ray/rollout/proposals.py).  Off-policy samples are corrected by the importance weight pi/q.
    proposal: str = "policy"
    # GDC's adaptive proposal, {every: K, when: kl_improves}: every K steps the policy replaces
    # a base/fixed proposal when its estimated KL(p||pi) is below KL(p||q).  null: never.
    proposal_update: dict | None = None
    weight_sync: str = "group"     # group (broadcast through a process group) | object_store (fallback)
    sync_bucket_mb: float = 64.0   # bucket size of the weight broadcast, MiB


@dataclass
class ScorerConfig:
    """``scorer.*``: scorer actors, CPUs per actor and sequences per forward pass of the base model."""
    num_actors: int = 1
    cpus_per_actor: float = 0.25
    batch_size: int = 64


@dataclass
class EvalConfig:
    """``eval.*``: policy samples per evaluation, texts kept, and the base samples of kl_p_pi_base."""
    samples: int = 128             # policy samples per evaluation
    n_texts: int = 8               # sample texts kept in metrics / printed
    # Base-model samples kept as the fixed evaluation set of kl_p_pi_base (drawn at the start
    # with the lambda-fit batch: max(target.fit_samples, eval.base_samples) samples of a).
    # 4096: on the RLHF-like toy task (weights P/a up to e^8) the SE of kl_p_pi_base at pi = a
    # was too small in 30% of runs at 1280 samples and in 2.5% at 4096 (docs/estimators.md).
    base_samples: int = 4096


@dataclass
class RayConfig:
    """``ray.*``: the cluster address (None: start a local instance) and a local instance's logical CPUs."""
    address: str | None = None     # None: start a local instance; "auto" or ray://... for clusters
    num_cpus: float | None = 8     # logical CPUs for a local instance (see SPEC §3); None: detect


@dataclass
class Config:
    """The whole config tree; ``divergence`` names the f (:func:`~fdpg_ray.objective.divergences.get_divergence`).

    Every field has a default; load from YAML with dotted ``--set`` overrides.
    """
    divergence: str = "js"
    run: RunConfig = field(default_factory=RunConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    target: TargetConfig = field(default_factory=TargetConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def to_dict(self) -> dict:
        """The config as nested plain dicts and lists (``dataclasses.asdict``)."""
        return dataclasses.asdict(self)

    def validate(self) -> "Config":
        """Check every field together (:func:`validate`); returns self, raises ConfigError."""
        return validate(self)


# --------------------------------------------------------------------------- loading

def _is_optional(tp) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return True, args[0]
    return False, tp


def _coerce(path: str, value, tp):
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{path}: must not be null; give a {getattr(inner, '__name__', inner)}")
    if dataclasses.is_dataclass(inner):
        return _from_dict(inner, value, path)
    origin = typing.get_origin(inner) or inner
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        return copy.deepcopy(value)
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{path}: expected true or false, got {value!r}")
    if inner is int:
        if isinstance(value, bool) or not isinstance(value, (int, str, float)):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        try:
            f = float(value)
        except ValueError:
            raise ConfigError(f"{path}: expected an integer, got {value!r}") from None
        if f != int(f):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return int(f)
    if inner is float:
        if isinstance(value, bool):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{path}: expected a number, got {value!r}") from None
    if inner is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return str(value)
    return value


def _from_dict(cls, data, path: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{path}.{key}" if path else str(key)
            raise ConfigError(f"{where}: unknown key; valid keys here: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(f"{path}.{k}" if path else k, v, hints[k]) for k, v in data.items()}
    return cls(**kwargs)


def parse_value(text: str, key: str | None = None):
    """A --set value.

    For a string field of the config (``model.prompt``, ``model.path``, ``prompts.file``, ...)
    the value is the string the user typed: ``--set model.prompt=Review: great`` is the text
    'Review: great', not the YAML mapping {'Review': 'great'}.  Only a fully quoted value
    ('"..."' or "'...'") is unquoted, and ``null`` unsets an optional string field.  Every other
    field takes a YAML scalar/list/mapping ('1e-5', 'true', '[a, b]', 'null'); inside the
    free-form constraint mappings a value that YAML would read as a mapping although it does
    not start with '{' (text containing ': ') stays the string typed.
    """
    tp = field_type(key) if key is not None else None
    if tp is not None:
        optional, inner = _is_optional(tp)
        if inner is str:
            quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'"
            if quoted:
                try:
                    return str(yaml.safe_load(text))
                except yaml.YAMLError:
                    return text
            if optional and text.strip() in ("null", "~"):
                return None
            return text
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, dict) and not text.lstrip().startswith("{"):
        return text
    return value


def field_type(key: str):
    """The declared type of a dotted config field ('model.prompt' -> str), or None for keys
    that are not typed fields (inside target.constraints, unknown keys, sections)."""
    cls: Any = Config
    for part in key.split("."):
        if not dataclasses.is_dataclass(cls) or part not in {f.name for f in dataclasses.fields(cls)}:
            return None
        cls = typing.get_type_hints(cls)[part]
    return None if dataclasses.is_dataclass(_is_optional(cls)[1]) else cls


def set_dotted(data: dict, key: str, value) -> None:
    """Set data['a']['b'] = value for key 'a.b', checking the path against Config.

    Inside a list field an integer picks the element: ``target.constraints.0.beta=0.1``.
    """
    parts = key.split(".")
    cls: Any = Config
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if cls is list or cls is dict:  # inside target.constraints: free-form mappings
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise ConfigError(f"{key}: '{part}' is not an index of this list (it has {len(node)} items)")
                if last:
                    node[int(part)] = value
                    return
                node, cls = node[int(part)], dict
            else:
                if last:
                    node[part] = value
                    return
                node = node.setdefault(part, {})
            continue
        if not dataclasses.is_dataclass(cls) or part not in {f.name for f in dataclasses.fields(cls)}:
            valid = ", ".join(sorted(f.name for f in dataclasses.fields(cls))) if dataclasses.is_dataclass(cls) else "(none)"
            raise ConfigError(f"{key}: unknown key '{part}'; valid keys here: {valid}")
        cls = _is_optional(typing.get_type_hints(cls)[part])[1]
        cls = typing.get_origin(cls) or cls
        if last:
            node[part] = value
            return
        if cls is list:
            if part not in node:
                defaults = getattr(Config(), parts[0]) if i == 1 else None
                node[part] = copy.deepcopy(getattr(defaults, part, [])) if defaults is not None else []
            node = node[part]
        else:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{key}: '{part}' is not a section")
            node = child


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | dict | None = None) -> Config:
    """Load YAML (or start from defaults), apply overrides, build and validate the tree.

    ``overrides`` is a list of 'dotted.key=value' strings or a {dotted.key: value} dict.
    """
    data: dict = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config: file '{path}' does not exist; pass the path of a YAML config (see configs/)")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config: '{path}' is not valid YAML ({str(e).splitlines()[0]}); fix the syntax") from None
        data = loaded or {}
        if not isinstance(data, dict):
            raise ConfigError(f"config: '{path}' must hold a mapping at the top level")
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides or []]
    for key, value in items:
        set_dotted(data, key, value)
    return absolutize_paths(_from_dict(Config, data).validate())


def absolutize_paths(cfg: Config) -> Config:
    """Relative file paths are relative to where the command runs; Ray workers run elsewhere,
    so make them absolute once, here (prompts file, local model folders, classifier paths)."""
    if cfg.prompts.file is not None:
        cfg.prompts.file = os.path.abspath(cfg.prompts.file)
    if cfg.model.path.startswith((".", "~")) or os.path.isdir(cfg.model.path):
        cfg.model.path = os.path.abspath(os.path.expanduser(cfg.model.path))
    kind, sep, where = str(cfg.rollout.proposal).partition(":")
    if sep and kind in ("fixed", "dataset") and (where.startswith((".", "~")) or os.path.exists(where)):
        cfg.rollout.proposal = f"{kind}:{os.path.abspath(os.path.expanduser(where))}"
    for c in cfg.target.constraints:
        scorer = c.get("scorer", {})
        if scorer.get("kind") == "classifier" and isinstance(scorer.get("path"), str):
            scorer["path"] = os.path.abspath(os.path.expanduser(scorer["path"]))
    return cfg


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected key=value, e.g. --set learner.lr=1e-5")
    key, value = text.split("=", 1)
    return key.strip(), parse_value(value, key.strip())


TRACKERS = ("tensorboard", "wandb", "mlflow")
# importable module -> what to install
_MODULES = {"tensorboard": ("tensorboard", "pip install tensorboard"),
            "wandb": ("wandb", "pip install 'fdpg-ray[trackers]' (or pip install wandb)"),
            "mlflow": ("mlflow", "pip install 'fdpg-ray[trackers]' (or pip install mlflow-skinny)")}


def check_trackers(trackers) -> None:
    """ValueError (one line naming run.trackers) for an unknown or uninstalled tracker."""
    if not isinstance(trackers, (list, tuple)):
        raise ValueError(f"run.trackers: expected a list such as [tensorboard, wandb], got {trackers!r}")
    for t in trackers:
        if t not in TRACKERS:
            raise ValueError(f"run.trackers: unknown tracker {t!r}; use any of {', '.join(TRACKERS)}")
        module, install = _MODULES[t]
        if importlib.util.find_spec(module) is None:
            raise ValueError(f"run.trackers: {t} is not installed; {install}, or remove it from run.trackers")


def validate(cfg: Config) -> Config:
    """Check a loaded config; returns it (``loss.baseline`` made canonical) or raises ConfigError.

    Checks the divergence name, trackers, positive counts, step counts (:func:`check_counts`),
    ranges, backend and strategy names, LoRA settings, the proposal, the toy task's length,
    the constraints' keys, and :func:`refuse_hard_constraints`; one line naming field and fix.
    """
    from fdpg_ray.objective.divergences import get_divergence

    try:
        get_divergence(cfg.divergence)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    try:
        check_trackers(cfg.run.trackers)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    positive = {
        "run.steps": cfg.run.steps, "run.eval_every": cfg.run.eval_every,
        "run.checkpoint_every": cfg.run.checkpoint_every, "model.max_new_tokens": cfg.model.max_new_tokens,
        "learner.lr": cfg.learner.lr, "learner.batch_size": cfg.learner.batch_size,
        "learner.micro_batch_size": cfg.learner.micro_batch_size, "learner.num_workers": cfg.learner.num_workers,
        "rollout.num_actors": cfg.rollout.num_actors, "rollout.temperature": cfg.rollout.temperature,
        "rollout.sync_every": cfg.rollout.sync_every, "scorer.num_actors": cfg.scorer.num_actors,
        "scorer.batch_size": cfg.scorer.batch_size, "eval.samples": cfg.eval.samples, "eval.base_samples": cfg.eval.base_samples,
        "target.fit_samples": cfg.target.fit_samples, "prompts.per_step": cfg.prompts.per_step,
        "loss.clip_log_t": cfg.loss.clip_log_t, "loss.chunk_size": cfg.loss.chunk_size,
    }
    for name, value in positive.items():
        if not value > 0:
            raise ConfigError(f"{name}: must be > 0, got {value}; set a positive value")
    from fdpg_ray.objective.estimators import canonical_baseline

    try:
        cfg.loss.baseline = canonical_baseline(cfg.loss.baseline)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.learner.warmup_steps < 0:
        raise ConfigError(f"learner.warmup_steps: must be >= 0, got {cfg.learner.warmup_steps}; use 0 for no warm-up")
    if cfg.learner.warmup_steps >= cfg.run.steps and cfg.learner.warmup_steps > 0:
        raise ConfigError(f"learner.warmup_steps: {cfg.learner.warmup_steps} >= run.steps={cfg.run.steps}, so the "
                          f"learning rate would never reach learner.lr; use fewer warm-up steps than run.steps")
    if not 0 <= cfg.loss.baseline_momentum < 1:
        raise ConfigError(f"loss.baseline_momentum: must be in [0, 1), got {cfg.loss.baseline_momentum}")
    if cfg.loss.max_importance_weight is not None and not cfg.loss.max_importance_weight >= 1:
        raise ConfigError(f"loss.max_importance_weight: must be >= 1 or null, got {cfg.loss.max_importance_weight}")
    check_counts(cfg)  # the counts of a step, together (prompts file known: again at preflight)
    if cfg.rollout.backend not in ("vllm", "hf"):
        raise ConfigError(f"rollout.backend: unknown backend '{cfg.rollout.backend}'; use vllm or hf")
    if cfg.rollout.weight_sync not in ("group", "object_store"):
        raise ConfigError(f"rollout.weight_sync: unknown value '{cfg.rollout.weight_sync}'; use group or object_store")
    if not (isinstance(cfg.rollout.sync_bucket_mb, (int, float)) and cfg.rollout.sync_bucket_mb > 0):
        raise ConfigError(f"rollout.sync_bucket_mb: must be > 0, got {cfg.rollout.sync_bucket_mb}; set a positive size in MiB")
    if cfg.learner.lr_schedule not in ("constant", "cosine"):
        raise ConfigError(f"learner.lr_schedule: unknown schedule '{cfg.learner.lr_schedule}'; use constant or cosine")
    if cfg.learner.strategy not in ("ddp", "fsdp"):
        raise ConfigError(f"learner.strategy: unknown strategy '{cfg.learner.strategy}'; use ddp or fsdp")
    if cfg.learner.lora is not None:
        lora = cfg.learner.lora
        if not lora.r > 0:
            raise ConfigError(f"learner.lora.r: must be > 0, got {lora.r}; set a positive rank such as 8")
        if not lora.alpha > 0:
            raise ConfigError(f"learner.lora.alpha: must be > 0, got {lora.alpha}; set a positive value such as 16")
        if not 0 <= lora.dropout < 1:
            raise ConfigError(f"learner.lora.dropout: must be in [0, 1), got {lora.dropout}")
        if not lora.target_modules or not all(isinstance(m, str) and m for m in lora.target_modules):
            raise ConfigError(f"learner.lora.target_modules: expected a non-empty list of module names, got "
                              f"{lora.target_modules!r}; e.g. [c_attn] for GPT-2, [q_proj, v_proj] for SmolLM2")
        if cfg.learner.strategy == "fsdp":
            raise ConfigError("learner.lora: LoRA with learner.strategy=fsdp is not supported (untested); "
                              "use learner.strategy=ddp (the adapter is small) or learner.lora=null")
    if cfg.model.dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"model.dtype: unknown dtype '{cfg.model.dtype}'; use float32, bfloat16 or float16")
    if not 0 < cfg.rollout.gpu_memory_utilization <= 1:
        raise ConfigError(f"rollout.gpu_memory_utilization: must be in (0, 1], got {cfg.rollout.gpu_memory_utilization}")
    if cfg.rollout.backend == "vllm" and cfg.rollout.temperature > 2:
        # vLLM's SamplingParams refuses it, but only at the first sample, after start-up.
        raise ConfigError(f"rollout.temperature: vLLM samples at temperatures up to 2, got {cfg.rollout.temperature}; "
                          f"lower it or set rollout.backend=hf")
    _validate_proposal(cfg)
    if cfg.model.path == "toy" or cfg.model.path.startswith("toy:"):
        from fdpg_ray.model.toy import ToySpecError, parse_toy_spec

        try:
            toy = parse_toy_spec(cfg.model.path)
        except ToySpecError as e:
            raise ConfigError(str(e)) from None
        if cfg.target.exact and cfg.model.max_new_tokens != toy.length:
            raise ConfigError(f"model.max_new_tokens: the exact task {cfg.model.path} enumerates completions of "
                              f"{toy.length} tokens, got {cfg.model.max_new_tokens}; set model.max_new_tokens={toy.length}")
    if not cfg.target.constraints:
        raise ConfigError("target.constraints: empty; give at least one constraint (see configs/amazing.yaml)")
    for i, c in enumerate(cfg.target.constraints):
        if not isinstance(c, dict):
            raise ConfigError(f"target.constraints[{i}]: expected a mapping with kind and scorer")
        unknown = set(c) - {"kind", "scorer", "moment", "beta", "lam"}
        if unknown:
            raise ConfigError(f"target.constraints[{i}].{sorted(unknown)[0]}: unknown key; valid: kind, scorer, moment, beta, lam")
        if c.get("kind") not in ("pointwise", "distributional", "reward"):
            raise ConfigError(f"target.constraints[{i}].kind: got {c.get('kind')!r}; use pointwise, distributional or reward")
        if not isinstance(c.get("scorer"), dict):
            raise ConfigError(f"target.constraints[{i}].scorer: missing; give a scorer mapping such as {{kind: word, words: [amazing]}}")
        if c["kind"] == "reward" and not (isinstance(c.get("beta"), (int, float)) and c["beta"] > 0):
            raise ConfigError(f"target.constraints[{i}].beta: a reward constraint needs beta > 0, got {c.get('beta')!r}")
        if c["kind"] == "distributional":
            m = c.get("moment")
            if m is None and c.get("lam") is None:
                raise ConfigError(f"target.constraints[{i}].moment: a distributional constraint needs a moment (target E_p[phi])")
            if m is not None and not isinstance(m, (int, float)):
                raise ConfigError(f"target.constraints[{i}].moment: expected a number, got {m!r}")
    refuse_hard_constraints(cfg)
    return cfg


# Scorer outputs that are 0 for ordinary texts: as a pointwise b(x) they make p(x) = 0 there.
# (sentiment's "probability" is (c + 1) / 2 with VADER's c strictly inside (-1, 1); a
# classifier's softmax probability is > 0; a callable is unknown: those are guarded at run
# time instead, see Controller.check_hard_constraint.)
def _scorer_can_be_zero(scorer: dict) -> bool:
    kind = scorer.get("kind")
    if kind in ("word", "regex", "wordlist", "gender"):
        return True
    return kind == "sentiment" and scorer.get("output", "positive") in ("positive", "compound")


def infinite_at_p_zero(divergence) -> bool:
    """True for the divergences whose D_f(pi||p) is +inf as soon as pi puts mass where p = 0
    *and* whose pseudo-reward there grows like t^(a-1) (chi2 = alpha:2, alpha:a with a > 1):
    clamping log t then leaves pseudo-rewards of -1e9 that swamp every other sample.
    (rkl is +inf there too, but its pseudo-reward grows like -log t: the clamp gives a bounded
    -clip_log_t - 1 penalty, the documented policy; docs/design.md, "p(x) = 0".)"""
    from fdpg_ray.objective.divergences import Alpha, ChiSquared, get_divergence

    div = get_divergence(divergence)
    return isinstance(div, ChiSquared) or (isinstance(div, Alpha) and div.a > 1)


def refuse_hard_constraints(cfg: Config) -> None:
    """Raise ConfigError when the divergence is chi2 or alpha:a with a > 1 (:func:`infinite_at_p_zero`)
    and a pointwise constraint's scorer can give b(x) = 0 (docs/design.md, "p(x) = 0").
    """
    if not infinite_at_p_zero(cfg.divergence):
        return
    for i, c in enumerate(cfg.target.constraints):
        if c.get("kind") == "pointwise" and _scorer_can_be_zero(c.get("scorer", {})):
            raise ConfigError(
                f"divergence: {cfg.divergence} is +inf for every policy when a pointwise constraint can give "
                f"b(x) = 0 (target.constraints[{i}], scorer kind {c['scorer'].get('kind')}); use another divergence "
                f"(kl, js, tv, hellinger, rkl, alpha:<a> with a < 1) or a soft constraint (kind: reward)")


def _validate_proposal(cfg: Config) -> None:
    spec = parse_proposal(cfg.rollout.proposal)
    if spec.kind == "dataset" and cfg.prompts.file is not None:
        raise ConfigError("rollout.proposal: a dataset proposal serves unconditional runs only; "
                          "remove prompts.file or use another proposal")
    update = cfg.rollout.proposal_update
    if update is None:
        return
    if not isinstance(update, dict) or set(update) - {"every", "when"}:
        raise ConfigError(f"rollout.proposal_update: expected {{every: K, when: kl_improves}}, got {update!r}")
    every = update.get("every", 1)
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ConfigError(f"rollout.proposal_update.every: must be an integer >= 1, got {every!r}")
    if update.get("when", "kl_improves") != "kl_improves":
        raise ConfigError(f"rollout.proposal_update.when: unknown rule {update.get('when')!r}; use kl_improves")
    if spec.kind not in ("base", "fixed"):
        raise ConfigError(f"rollout.proposal_update: only a base or fixed:PATH proposal can be updated, "
                          f"rollout.proposal is '{cfg.rollout.proposal}'; remove rollout.proposal_update")


def check_counts(cfg: Config, n_prompts: int | None = None) -> None:
    """The counts of a step, checked together: samples per step (learner.batch_size), prompts
    per step, samples per prompt, target.fit_samples, learner workers and micro-batches.

    ``n_prompts``: how many prompts the prompts file holds (after prompts.limit), when known.
    Every rule keeps the number of samples a step trains on exactly ``learner.batch_size``
    (and the base sample exactly ``target.fit_samples``) and every backend call at n >= 1."""
    b, w = cfg.learner.batch_size, cfg.learner.num_workers
    if b % w:
        raise ConfigError(f"learner.batch_size: {b} is not divisible by learner.num_workers={w}; use a multiple")
    if cfg.prompts.file is None:
        return
    k = cfg.prompts.per_step
    if b % k:
        raise ConfigError(f"prompts.per_step: learner.batch_size={b} is not divisible by "
                          f"prompts.per_step={k}; use a divisor")
    if cfg.target.fit_samples % k:
        raise ConfigError(f"target.fit_samples: {cfg.target.fit_samples} is not divisible by prompts.per_step={k} "
                          f"(the base sample is spread evenly over the step's prompts); use a multiple of {k}")
    if n_prompts is not None and n_prompts < k:
        raise ConfigError(f"prompts.per_step: {k} prompts per step but '{Path(cfg.prompts.file).name}' holds "
                          f"{n_prompts}{' (after prompts.limit)' if cfg.prompts.limit is not None else ''}; "
                          f"set prompts.per_step to a divisor of {b} no larger than {n_prompts}")


# ----------------------------------------------------------------------------- rollout.proposal

KINDS = ("policy", "base", "fixed", "dataset")


@dataclass(frozen=True)
class ProposalSpec:
    """A parsed ``rollout.proposal``: ``kind`` in KINDS, ``path`` for fixed/dataset."""

    kind: str
    path: str | None = None

    @property
    def follows_policy(self) -> bool:
        """True when the rollout engines receive the policy's weights every sync_every steps."""
        return self.kind == "policy"


def parse_proposal(text: str) -> ProposalSpec:
    """``policy | base | fixed:PATH | dataset:PATH`` -> ProposalSpec; ConfigError otherwise."""
    fix = "use policy, base, fixed:PATH or dataset:PATH"
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"rollout.proposal: expected a string, got {text!r}; {fix}")
    kind, _, path = text.strip().partition(":")
    if kind in ("policy", "base"):
        if path:
            raise ConfigError(f"rollout.proposal: '{text}' takes no path; {fix}")
        return ProposalSpec(kind)
    if kind in ("fixed", "dataset"):
        if not path:
            raise ConfigError(f"rollout.proposal: '{text}' needs a path after '{kind}:'; {fix}")
        return ProposalSpec(kind, path)
    raise ConfigError(f"rollout.proposal: unknown proposal '{text}'; {fix}")
