"""One typed config tree, loaded from YAML, overridable with dotted keys.

``--set learner.lr=1e-5`` and a Tune search space use the same dotted paths.  The tree is
pydantic models (``extra="forbid"``, typed fields); every error is a :class:`ConfigError`
whose message is one line naming the field and the fix (:func:`fdpg_ray.errors.one_line`).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, TypeAdapter,
                      ValidationError, ValidationInfo, field_validator, model_validator)

from fdpg_ray.errors import ConfigError, NestedInvalid, one_line, unknown_key  # ConfigError: defined low so every layer can raise it; re-exported here


def _integer(v):
    """Numbers written as text ('1e3', '8') and whole floats are integers; true/false are not."""
    if isinstance(v, bool):
        raise ValueError(f"expected an integer, got {v!r}")
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    return v


def _real(v):
    if isinstance(v, bool):
        raise ValueError(f"expected a number, got {v!r}")
    return v


Int = Annotated[int, BeforeValidator(_integer)]
Float = Annotated[float, BeforeValidator(_real)]
Str = Annotated[str, BeforeValidator(lambda v: str(v) if isinstance(v, (bool, int, float)) else v)]
PosInt = Annotated[Int, Field(gt=0)]
PosFloat = Annotated[Float, Field(gt=0)]


def _checked(model):
    """A validator that checks a value against ``model`` and keeps the value as given (the resolved
    config, config.yaml and its digest keep the user's mappings, e.g. the constraints)."""
    adapter = TypeAdapter(model)

    def check(value):
        try:
            adapter.validate_python(value)
        except ValidationError as e:
            raise NestedInvalid(e, model) from None
        return value

    return AfterValidator(check)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunConfig(_Section):
    """``run.*``: name, output folder, seed, number of steps, evaluation and checkpoint cadence (steps), trackers."""
    name: Str = "run"
    output_dir: Str = "runs"
    seed: Int = 0
    steps: PosInt = 100
    eval_every: PosInt = 10          # steps between evaluations (samples/STEP.jsonl, metrics)
    checkpoint_every: PosInt = 50    # steps between Ray Train checkpoints
    max_failures: Int = 1            # Ray Train FailureConfig
    progress: bool = True            # progress bar on the driver
    # Where each step's metrics go beside metrics.csv: any of tensorboard, wandb, mlflow
    # (fdpg_ray/train/trackers.py; wandb and mlflow need `pip install 'fdpg-ray[trackers]'`).
    trackers: list[Str] = Field(default_factory=lambda: ["tensorboard"], description="e.g. [tensorboard, wandb]")


class ModelConfig(_Section):
    """``model.*``: the policy's starting model (spec as in :mod:`fdpg_ray.model.sources`), dtype, tokens per sample, prompt."""
    path: Str = "bundled:gpt2-tiny"   # bundled:<name>, smollm2, toy, a local folder, or a hub name
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # learner compute dtype
    max_new_tokens: PosInt = 40
    # Unconditional generation starts from this text (empty: the BOS token alone).
    prompt: Str = ""


class PromptsConfig(_Section):
    """``prompts.*``: a JSONL prompts file for conditional targets (None: unconditional), and prompts per step."""
    file: Optional[Str] = None     # JSONL read with `datasets`; one prompt per row
    field: Str = "prompt"
    per_step: PosInt = 8           # prompts per step; samples per prompt = batch_size / per_step
    limit: Optional[Int] = None


class _Constraint(_Section):
    """The keys of one ``target.constraints`` entry (checked; the entry stays the mapping given,
    so its values are strict: a number must be a number, not text)."""
    model_config = ConfigDict(extra="forbid", strict=True)
    kind: str
    scorer: dict = Field(description="give a scorer mapping such as {kind: word, words: [amazing]}")
    moment: Optional[float] = None
    beta: Optional[float] = None
    lam: Optional[float] = None


class PointwiseConstraint(_Constraint):
    """``kind: pointwise``: P(x) = a(x) b(x), b the scorer's output in [0, 1]."""
    kind: Literal["pointwise"]


class DistributionalConstraint(_Constraint):
    """``kind: distributional``: E_p[phi] = ``moment`` (or a fixed ``lam``)."""
    kind: Literal["distributional"]

    @model_validator(mode="after")
    def _moment_or_lam(self):
        if self.moment is None and self.lam is None:
            raise ValueError(".moment: a distributional constraint needs a moment (target E_p[phi])")
        return self


class RewardConstraint(_Constraint):
    """``kind: reward``: P(x) = a(x) exp(r(x) / ``beta``), beta > 0."""
    kind: Literal["reward"]
    beta: float = Field(gt=0, description="a reward constraint needs beta > 0")


Constraint = Annotated[Union[PointwiseConstraint, DistributionalConstraint, RewardConstraint], Discriminator("kind")]


class TargetConfig(_Section):
    """``target.*``: the constraints that build the EBM P(x) (:mod:`fdpg_ray.target.energy`), the base-sample
    count for fitting lambdas and seeding Z_hat, and the toy task's exact mode.
    """
    # Each constraint: {kind: pointwise|distributional|reward, scorer: {...}, moment?, beta?, lam?}
    constraints: Annotated[list, _checked(list[Constraint])] = Field(default_factory=list)
    # Base-model samples used to fit lambdas, seed Z_hat and estimate kl_p_pi_base: the base batch
    # has max(fit_samples, eval.base_samples) of them; conditional targets spread them over every
    # prompt, at least 8 per prompt (docs/design.md).
    fit_samples: PosInt = 1024
    # Toy task only: exact p, Z and divergences by enumeration.
    exact: bool = False


class LossConfig(_Section):
    """``loss.*``: the baseline, the |log t| clamp (nats), the importance-weight cap, the log-softmax chunk (positions)."""
    # moving | leave_one_out | self_normalized | none (docs/design.md, "Baseline";
    # docs/baselines.md); older configs' true/false still load and mean moving/none.
    baseline: Str = "leave_one_out"
    baseline_momentum: Float = Field(0.9, ge=0, lt=1)
    clip_log_t: PosFloat = 20.0           # |log t| clamp before the pseudo-reward (p(x)=0 policy)
    max_importance_weight: Optional[Float] = Field(10.0, ge=1, description="or null for no cap")
    chunk_size: PosInt = 128              # positions per chunk in the log-softmax

    @field_validator("baseline", mode="before")
    @classmethod
    def _canonical(cls, v):
        from fdpg_ray.objective.estimators import canonical_baseline

        try:
            return canonical_baseline(v)
        except ValueError as e:
            raise ConfigError(str(e)) from None


class LoraConfig(_Section):
    """LoRA adapter (peft): W = W0 + (alpha / r) B A on the ``target_modules`` (module names as
    peft matches them, e.g. c_attn for GPT-2, q_proj/v_proj for Llama-style models)."""
    r: Int = Field(8, gt=0, description="set a positive rank such as 8")
    alpha: Float = Field(16.0, gt=0, description="set a positive value such as 16")
    dropout: Float = Field(0.0, ge=0, lt=1)
    target_modules: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=lambda: ["c_attn"], min_length=1,
        description="e.g. [c_attn] for GPT-2, [q_proj, v_proj] for SmolLM2")


class LearnerConfig(_Section):
    """``learner.*``: optimiser (lr, schedule, clipping), batch sizes in samples, Ray Train workers, DDP/FSDP, LoRA."""
    lr: PosFloat = 1e-4
    weight_decay: Float = 0.0
    batch_size: PosInt = 64          # samples per step (all workers together)
    micro_batch_size: PosInt = 32    # per worker forward/backward chunk
    num_workers: PosInt = 2          # Ray Train workers (DDP)
    cpus_per_worker: Float = 0.5
    use_gpu: bool = False
    strategy: Literal["ddp", "fsdp"] = "ddp"
    max_grad_norm: Float = 1.0
    lr_schedule: Literal["constant", "cosine"] = "constant"  # cosine decays to 5% of lr at run.steps
    # linear warm-up from lr/(W+1) to lr over the first W updates
    warmup_steps: Int = Field(0, ge=0, description="use 0 for no warm-up")
    lora: Optional[LoraConfig] = None  # null: full fine-tuning; else only the LoRA adapter trains


class ProposalUpdate(_Section):
    """``rollout.proposal_update``: GDC's adaptive proposal rule (checked; the mapping stays as given, strict values)."""
    model_config = ConfigDict(extra="forbid", strict=True)
    every: int = Field(1, ge=1)
    when: Literal["kl_improves"] = "kl_improves"


class RolloutConfig(_Section):
    """``rollout.*``: the sampling backend and its actors, temperature, weight-sync cadence and transport
    (bucket size in MiB), and the proposal q (:mod:`fdpg_ray.rollout.proposals`).
    """
    backend: Literal["vllm", "hf"] = "vllm"
    num_actors: PosInt = 1
    cpus_per_actor: Float = 0.5
    gpus_per_actor: Float = 0.0
    gpu_memory_utilization: Float = Field(0.2, gt=0, le=1)
    temperature: PosFloat = 1.0
    sync_every: PosInt = 1         # push weights to rollout actors every k steps
    overlap: bool = False          # sample step k+1 while step k learns (one-step stale; w corrects)
    enforce_eager: bool = True
    # The proposal q the samples come from: policy | base | fixed:PATH | dataset:PATH
    # (fdpg_ray/rollout/proposals.py).  Off-policy samples are corrected by the importance weight pi/q.
    proposal: Str = "policy"
    # GDC's adaptive proposal, {every: K, when: kl_improves}: every K steps the policy replaces
    # a base/fixed proposal when its estimated KL(p||pi) is below KL(p||q).  null: never.
    proposal_update: Optional[Annotated[dict, _checked(ProposalUpdate)]] = None
    # group (broadcast through a process group) | object_store (fallback)
    weight_sync: Literal["group", "object_store"] = "group"
    sync_bucket_mb: PosFloat = 64.0  # bucket size of the weight broadcast, MiB

    @field_validator("proposal")
    @classmethod
    def _proposal(cls, v):
        parse_proposal(v)
        return v


class ScorerConfig(_Section):
    """``scorer.*``: scorer actors, CPUs per actor and sequences per forward pass of the base model."""
    num_actors: PosInt = 1
    cpus_per_actor: Float = 0.25
    batch_size: PosInt = 64


class EvalConfig(_Section):
    """``eval.*``: policy samples per evaluation, texts kept, and the base samples of kl_p_pi_base."""
    samples: PosInt = 128          # policy samples per evaluation
    n_texts: Int = 8               # sample texts kept in metrics / printed
    # Base-model samples kept as the fixed evaluation set of kl_p_pi_base (drawn at the start
    # with the lambda-fit batch: max(target.fit_samples, eval.base_samples) samples of a).
    # 4096: on the RLHF-like toy task (weights P/a up to e^8) kl_p_pi_base at pi = a lay beyond
    # 3 SE in 21-41% of batches of 64-1024 samples and in 3.7% at 4096; below 4096 the base-pool
    # estimates are flagged (estimators.MIN_BASE_SAMPLES; docs/estimators.md, "Coverage").
    base_samples: PosInt = 4096


class RayConfig(_Section):
    """``ray.*``: the cluster address (None: start a local instance) and a local instance's logical CPUs."""
    address: Optional[Str] = None     # None: start a local instance; "auto" or ray://... for clusters
    num_cpus: Optional[Float] = 8     # logical CPUs for a local instance (docs/design.md); None: detect


class Config(_Section):
    """The whole config tree; ``divergence`` names the f (:func:`~fdpg_ray.objective.divergences.get_divergence`).

    Every field has a default; load from YAML with dotted ``--set`` overrides (:func:`load_config`).
    Validating a mapping checks every field and then the fields together (:meth:`_together`);
    errors are pydantic ValidationErrors, which :func:`load_config` turns into one-line ConfigErrors.
    """
    divergence: Str = "js"
    run: RunConfig = Field(default_factory=RunConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    prompts: PromptsConfig = Field(default_factory=PromptsConfig)
    target: TargetConfig = Field(default_factory=TargetConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    learner: LearnerConfig = Field(default_factory=LearnerConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    scorer: ScorerConfig = Field(default_factory=ScorerConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    ray: RayConfig = Field(default_factory=RayConfig)

    def to_dict(self) -> dict:
        """The config as nested plain dicts and lists (what RUN_DIR/config.yaml holds and the resume digest hashes)."""
        return self.model_dump()

    @classmethod
    def from_dict(cls, data: dict) -> "Config":
        """Rebuild a resolved config (:meth:`to_dict`, e.g. in a Ray actor) with its types, without the
        checks that depend on this machine or on several fields (they passed when it was loaded).
        Raises ConfigError for a mapping that does not fit the tree."""
        try:
            return cls.model_validate(data, context={"resolved": True})
        except ValidationError as e:
            raise ConfigError(one_line(e, cls)) from None

    @field_validator("divergence")
    @classmethod
    def _divergence(cls, v):
        from fdpg_ray.objective.divergences import get_divergence

        try:
            get_divergence(v)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        return v

    @model_validator(mode="after")
    def _together(self, info: ValidationInfo):
        """The checks of several fields together, and of what is installed (trackers, toy spec)."""
        if not (info.context or {}).get("resolved"):
            _check_together(self)
        return self


def _check_together(cfg: Config) -> None:
    try:
        check_trackers(cfg.run.trackers)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if cfg.learner.warmup_steps >= cfg.run.steps and cfg.learner.warmup_steps > 0:
        raise ConfigError(f"learner.warmup_steps: {cfg.learner.warmup_steps} >= run.steps={cfg.run.steps}, so the "
                          f"learning rate would never reach learner.lr; use fewer warm-up steps than run.steps")
    check_counts(cfg)  # the counts of a step, together (prompts file known: again at preflight)
    if cfg.learner.lora is not None and cfg.learner.strategy == "fsdp":
        raise ConfigError("learner.lora: LoRA with learner.strategy=fsdp is not supported (untested); "
                          "use learner.strategy=ddp (the adapter is small) or learner.lora=null")
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
    refuse_hard_constraints(cfg)


# --------------------------------------------------------------------------- loading

def _field(cls, part: str):
    """The type of field ``part`` of model ``cls`` without Optional and Annotated (None: no such field)."""
    info = getattr(cls, "model_fields", {}).get(part)
    if info is None:
        return None
    tp = info.annotation
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) is Union and len(args) == 1:
        tp = args[0]
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


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
    if key is not None and field_type(key) is str:
        quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'"
        if quoted:
            try:
                return str(yaml.safe_load(text))
            except yaml.YAMLError:
                return text
        section, _, name = key.rpartition(".")
        optional = type(None) in typing.get_args(_section(section).model_fields[name].annotation)
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


def _section(key: str):
    """The model class of a dotted section ('' -> Config, 'learner.lora' -> LoraConfig)."""
    cls: Any = Config
    for part in filter(None, key.split(".")):
        cls = _field(cls, part)
    return cls


def field_type(key: str):
    """The declared type of a dotted config field ('model.prompt' -> str), or None for keys
    that are not typed fields (inside target.constraints, unknown keys, sections)."""
    cls: Any = Config
    for part in key.split("."):
        cls = _field(cls, part)
        if cls is None:
            return None
    return None if hasattr(cls, "model_fields") else cls


def set_dotted(data: dict, key: str, value) -> None:
    """Set data['a']['b'] = value for key 'a.b', checking the path against Config.

    Inside a list field an integer picks the element: ``target.constraints.0.beta=0.1``.
    Raises ConfigError (one line) for an unknown key or index.
    """
    parts = key.split(".")
    cls: Any = Config
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if cls is list or cls is dict:  # inside target.constraints: free-form mappings
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    n = len(node)
                    span = f"indices 0 to {n - 1}" if n else "no index is valid"
                    fix = "add it in the config file first" if part.isdigit() else "give a number"
                    raise ConfigError(f"{'.'.join(parts[:i + 1])}: not an element of this list: it has {n} "
                                      f"element{'' if n == 1 else 's'} ({span}); {fix}")
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
        field = _field(cls, part)
        if field is None:
            raise ConfigError(unknown_key(".".join(parts[:i + 1]), part, getattr(cls, "model_fields", ())))
        cls = typing.get_origin(field) or field
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
    Raises ConfigError (one line naming the field and the fix) for a missing or unreadable
    file, an unknown key and any invalid value.
    """
    data = {} if path is None else read_mapping(path, "config", "pass the path of a YAML config (see configs/)")
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides or []]
    for key, value in items:
        set_dotted(data, key, value)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError(one_line(e, Config)) from None
    return absolutize_paths(cfg)


def read_mapping(path: str | os.PathLike, what: str, fix: str, keys: str = "", error: type = ConfigError) -> dict:
    """The mapping a YAML file holds ({} for an empty file); ``error``, one line naming ``what``
    (``config``, ``sweep``), for a missing file (then ``fix``), bad YAML or another value at the top
    level (``keys``: the keys expected there, shown after the problem)."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{what}: file '{path}' does not exist; {fix}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise error(f"{what}: '{path}' is not valid YAML ({str(e).splitlines()[0]}); fix the syntax") from None
    if not isinstance(data, dict):
        raise error(f"{what}: '{path}' must hold a mapping at the top level{keys}")
    return data


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
    if cfg.rollout.proposal_update is None:
        return
    if spec.kind not in ("base", "fixed"):
        raise ConfigError(f"rollout.proposal_update: only a base or fixed:PATH proposal can be updated, "
                          f"rollout.proposal is '{cfg.rollout.proposal}'; remove rollout.proposal_update")


def check_counts(cfg: Config, n_prompts: int | None = None) -> None:
    """The counts of a step, checked together: samples per step (learner.batch_size), prompts
    per step, samples per prompt, target.fit_samples, learner workers and micro-batches.

    ``n_prompts``: how many prompts the prompts file holds (after prompts.limit), when known.
    Every rule keeps the number of samples a step trains on exactly ``learner.batch_size`` and
    every backend call at n >= 1.  The base batch needs no rule: it covers every prompt of the
    file with max(ceil(n / C), 8) samples each (Controller.base_plan)."""
    b, w = cfg.learner.batch_size, cfg.learner.num_workers
    if b % w:
        raise ConfigError(f"learner.batch_size: {b} is not divisible by learner.num_workers={w}; use a multiple")
    if cfg.prompts.file is None:
        return
    k = cfg.prompts.per_step
    if b % k:
        raise ConfigError(f"prompts.per_step: learner.batch_size={b} is not divisible by "
                          f"prompts.per_step={k}; use a divisor")
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
