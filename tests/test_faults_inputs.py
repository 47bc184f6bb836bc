"""Issue 14: faults found by replaying public bug reports against this project.

1. limits checked before start (context length, counts that must agree),
2. no overflow outside log space,
3. eval/sample of a conditional run use the run's prompts,
4. --resume refuses changed inputs (compared by content, not by path),
5. --set string values and scorers that return None.

Each case runs the real CLI (``fdpg_ray.cli.main``) on the toy model or the bundled tiny
GPT-2, in-process (--local) unless the point is Ray.
"""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from fdpg_ray.cli import main

ROOT = Path(__file__).resolve().parent.parent
TOY = str(ROOT / "configs/toy.yaml")
PROMPTS = str(ROOT / "configs/prompts.yaml")
AMAZING = str(ROOT / "configs/amazing.yaml")

# a toy run that takes seconds
TOY_FAST = ["--local", "--set", "run.steps=2", "--set", "learner.batch_size=32", "--set", "learner.micro_batch_size=32",
            "--set", "target.fit_samples=64", "--set", "eval.base_samples=64", "--set", "run.progress=false", "--set", "run.eval_every=1",
            "--set", "target.exact=false"]


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    for n in needles:
        assert n in err, err
    return err


# ----------------------------------------------------------------------------- 2. overflow

EXTREME_TARGETS = [
    # (id, constraint) - the toy's reward r = number of "d" tokens (0..4)
    ("reward beta=1e-3", "{kind: reward, beta: 0.001, scorer: {kind: wordlist, name: d_count, words: [d], mode: count}}"),
    ("reward beta=1e3", "{kind: reward, beta: 1000.0, scorer: {kind: wordlist, name: d_count, words: [d], mode: count}}"),
    ("distributional moment near its low end",
     "{kind: distributional, moment: 0.02, scorer: {kind: wordlist, name: d_count, words: [d], mode: count}}"),
    ("distributional moment near its high end",
     "{kind: distributional, moment: 1.9, scorer: {kind: wordlist, name: d_count, words: [d], mode: count}}"),
    ("pointwise b = 1e-300", "{kind: pointwise, scorer: {kind: callable, path: 'tiny_b:tiny'}}"),
]


@pytest.mark.parametrize("constraint", [c for _, c in EXTREME_TARGETS], ids=[i for i, _ in EXTREME_TARGETS])
def test_extreme_targets_train_with_log_z_hat_in_log_space(constraint, tmp_path, monkeypatch, capsys):
    """log Z_hat > 709 (beta = 1e-3) used to raise OverflowError from math.exp in the metrics.
    Now every run finishes; log_z_hat is the record, z_hat is exp of it or +inf."""
    (tmp_path / "tiny_b.py").write_text("def tiny(texts):\n    return [1e-300] * len(texts)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    run = tmp_path / "run"
    rc = main(["train", TOY, *TOY_FAST, "--run-dir", str(run), "--set", f"target.constraints=[{constraint}]"])
    out = capsys.readouterr()
    assert rc == 0, out.err[-2000:]
    df = pd.read_csv(run / "metrics.csv")
    assert df["log_z_hat"].map(math.isfinite).all(), df["log_z_hat"]
    for log_z, z in zip(df["log_z_hat"], df["z_hat"]):
        assert z == (math.inf if log_z > 709.78 else pytest.approx(math.exp(log_z), rel=1e-9)), (log_z, z)
    if "1e-3" in constraint or "0.001" in constraint:
        # E_a[exp(r/beta)] >= a(d...)exp(1000): log Z_hat far beyond the float range of Z
        assert (df["log_z_hat"] > 709.78).all() and (df["z_hat"] == math.inf).all()
    if "1e-300" in constraint:
        assert (df["log_z_hat"] < -680).all()  # log b = -690.8 on every sample: Z_hat = 1e-300 a-mass
    summary = json.loads((run / "summary.json").read_text())
    assert "log_z_hat" in pd.DataFrame(summary["before_after"]).index
    assert json.loads((run / "status.json").read_text())["state"] == "finished"


# ----------------------------------------------------------------------------- 5. smaller

@pytest.mark.parametrize("key,typed,expected", [
    ("model.prompt", "Review:", "Review:"),
    ("model.prompt", "Review: the film", "Review: the film"),
    ("model.prompt", "a: b: c", "a: b: c"),
    ("model.prompt", "'quoted: text'", "quoted: text"),
    ("model.prompt", "[not, a, list]", "[not, a, list]"),
    ("model.prompt", "123", "123"),
    ("model.prompt", "true", "true"),
    ("run.name", "exp: 1", "exp: 1"),
    ("prompts.field", "text: body", "text: body"),
    ("prompts.file", "null", None),
])
def test_set_takes_a_string_field_as_typed(key, typed, expected):
    from fdpg_ray.config import load_config

    cfg = load_config(AMAZING, [f"{key}={typed}"])
    section, name = key.split(".")
    assert getattr(getattr(cfg, section), name) == expected


def test_set_keeps_yaml_for_other_fields():
    from fdpg_ray.config import load_config

    cfg = load_config(AMAZING, ["learner.lr=1e-5", "run.progress=false", "loss.max_importance_weight=null",
                                "target.constraints=[{kind: pointwise, scorer: {kind: word, words: [great]}}]",
                                "target.constraints.0.scorer.name=label: x"])
    assert cfg.learner.lr == 1e-5 and cfg.run.progress is False and cfg.loss.max_importance_weight is None
    assert cfg.target.constraints[0]["scorer"]["words"] == ["great"]
    assert cfg.target.constraints[0]["scorer"]["name"] == "label: x"  # free-form: ': ' text stays text


def test_set_model_prompt_with_colon_trains(tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", AMAZING, "--local", "--run-dir", str(run), "--set", "model.prompt=Review:", "--set", "run.steps=1",
            "--set", "target.fit_samples=16", "--set", "eval.base_samples=16", "--set", "learner.batch_size=8", "--set", "learner.micro_batch_size=8",
            "--set", "rollout.backend=hf", "--set", "run.progress=false", "--set", "model.max_new_tokens=8",
            "--set", "learner.num_workers=1", "--set", "target.constraints.0.scorer.words=[the]"]
    assert main(argv) == 0, capsys.readouterr().err[-2000:]
    records = [json.loads(line) for line in (run / "samples" / "0.jsonl").read_text().splitlines()]
    assert records and all(r["context"] == "Review:" for r in records)


@pytest.mark.parametrize("module,returned,needle", [
    ("none_all", "[None] * len(texts)", "returned None for 4 of 4 texts"),
    ("none_last", "[1.0] * (len(texts) - 1) + [None]", "returned None for 1 of 4 texts (first at index 3)"),
    ("none_bare", "None", "returned None;"),
    ("none_array", "__import__('numpy').array([0.5, None, 0.5, None])", "returned None for 2 of 4 texts (first at index 1)"),
])
def test_scorer_returning_none_says_none(module, returned, needle, tmp_path, monkeypatch):
    """It used to say "got 4 NaN": numpy turns None into NaN."""
    from fdpg_ray.target.scorers import build_scorer

    (tmp_path / f"{module}.py").write_text(f"def f(texts):\n    return {returned}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    scorer = build_scorer({"kind": "callable", "path": f"{module}:f"}, where="target.constraints[0].scorer")
    with pytest.raises(ValueError) as e:
        scorer.score(["a", "b", "c", "d"])
    assert needle in str(e.value) and "NaN" not in str(e.value), str(e.value)


# ----------------------------------------------------------------------------- 1. limits

def long_prompts_file(path: Path, long_line: int = 3, n: int = 6) -> Path:
    """A prompts file with one prompt of about 600 tokens (the tiny GPT-2 has 128 positions)."""
    rows = [{"prompt": f"Review: prompt number {i}"} for i in range(n)]
    rows[long_line - 1] = {"prompt": "Review: " + "the film was long and " * 120}
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("backend", ["hf", "vllm"])
def test_generation_past_the_toy_context_is_refused_before_start(backend, tmp_path, capsys):
    """Toy model: 16 positions, BOS prompt.  max_new_tokens=20 used to raise IndexError (hf)
    or cut every completion to 15 tokens (vllm).  Now both: exit 2 before anything starts."""
    run = tmp_path / "run"
    assert main(["train", TOY, *TOY_FAST, "--run-dir", str(run), "--set", "model.max_new_tokens=20",
                 "--set", f"rollout.backend={backend}"]) == 2
    one_line_error(capsys, "model.max_new_tokens", "21 positions", "has 16", "at most 15")
    assert not run.exists()


def test_generation_that_exactly_fills_the_context_is_accepted():
    from fdpg_ray.config import load_config
    from fdpg_ray.config import ConfigError
    from fdpg_ray.train.preflight import check_run_limits

    # the toy model has 16 positions; target.exact=false lifts the exact task's fixed length 4
    check_run_limits(load_config(TOY, ["target.exact=false", "model.max_new_tokens=15"]))  # 1 + 15 = 16
    with pytest.raises(ConfigError, match="model.max_new_tokens"):
        check_run_limits(load_config(TOY, ["target.exact=false", "model.max_new_tokens=16"]))


def test_transformers_sampler_refuses_rather_than_running_past_the_context():
    """The sampler itself (callers that bypass the CLI) refuses the same way, and fills the
    context exactly when asked to (the toy model has no EOS: every completion is full length)."""
    from fdpg_ray.rollout.hf_sampler import HFSampler
    from fdpg_ray.config import ConfigError

    s = HFSampler("toy", seed=0)
    bos = s.tokenizer.bos_token_id
    with pytest.raises(ConfigError, match="17 positions, but the model has 16"):
        s.sample([[bos]], 2, 16)
    out = s.sample([[bos]], 2, 15)
    assert [len(o.token_ids) for o in out] == [15, 15]


@pytest.mark.parametrize("argv,needles", [
    (["sample", "toy", "--max-new-tokens", "20"], ["--max-new-tokens", "has 16", "at most 15"]),
    (["sample", "toy", "--max-new-tokens", "20", "--backend", "vllm"], ["--max-new-tokens", "has 16"]),
    (["sample", "bundled:gpt2-tiny", "--prompt", "the film was long and " * 40], ["--prompt", "has 128"]),
])
def test_sample_command_checks_the_context_first(argv, needles, capsys):
    assert main(argv) == 2
    one_line_error(capsys, *needles)


def test_long_prompt_in_a_prompts_file_is_refused_with_file_and_line(tmp_path, capsys):
    """configs/prompts.yaml (vLLM, Ray) with a 600-token prompt on line 3: used to exit 1 with a
    vLLM traceback after start-up.  Now refused at preflight, before Ray starts."""
    f = long_prompts_file(tmp_path / "long.jsonl")
    run = tmp_path / "run"
    assert main(["train", PROMPTS, "--run-dir", str(run), "--set", f"prompts.file={f}", "--set", "prompts.per_step=2"]) == 2
    one_line_error(capsys, "prompts.file", "'long.jsonl' line 3", "has 128")
    assert not run.exists()


def test_long_model_prompt_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", AMAZING, "--run-dir", str(run), "--set", "model.prompt=" + "the film was long and " * 40]) == 2
    one_line_error(capsys, "model.prompt", "has 128")
    assert not run.exists()


def few_prompts(tmp_path, n=3):
    f = tmp_path / "few.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"Review: number {i}"}) + "\n" for i in range(n)))
    return f


COUNT_CASES = [
    # (id, overrides, field in the message): each used to run and silently train on fewer samples
    # (or reach a backend's n >= 1 assertion)
    ("more prompts per step than the file holds", ["prompts.per_step=8", "learner.batch_size=16"], "prompts.per_step"),
    # (target.fit_samples is no longer tied to prompts.per_step: the base batch covers every
    # prompt of the file, max(ceil(n / C), 8) each; tests/test_core.py checks it is accepted)
    ("prompts.limit below per_step", ["prompts.per_step=2", "learner.batch_size=8", "prompts.limit=1"], "prompts.per_step"),
]


@pytest.mark.parametrize("case", COUNT_CASES, ids=[c[0] for c in COUNT_CASES])
def test_counts_that_must_agree_are_checked_together_before_start(case, tmp_path, capsys):
    _, overrides, field = case
    f = few_prompts(tmp_path)
    run = tmp_path / "run"
    argv = ["train", PROMPTS, "--local", "--run-dir", str(run), "--set", f"prompts.file={f}", "--set", "rollout.backend=hf",
            "--set", "run.steps=1", "--set", "learner.micro_batch_size=8", "--set", "learner.num_workers=1",
            "--set", "model.max_new_tokens=8", "--set", "run.progress=false", "--set", "target.fit_samples=8", "--set", "eval.base_samples=8"]
    for o in overrides:
        argv += ["--set", o]
    assert main(argv) == 2
    one_line_error(capsys, field)
    assert not run.exists()


def test_every_bundled_config_passes_the_limits():
    from fdpg_ray.config import load_config
    from fdpg_ray.train.preflight import check_run_limits

    for path in sorted((ROOT / "configs").glob("*.yaml")):
        check_run_limits(load_config(path))


# ----------------------------------------------------------------------------- 4. resume

@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory):
    """A short conditional run on its own copies of the inputs (model folder, prompts file,
    callable scorer module), then marked failed as a run killed after a checkpoint would be
    (--resume refuses before Ray starts, so no checkpoint is needed to test the refusals)."""
    import shutil
    import sys

    from fdpg_ray.model.sources import resolve_model_path

    d = tmp_path_factory.mktemp("resume")
    shutil.copytree(resolve_model_path("bundled:gpt2-tiny"), d / "model")
    few = d / "prompts.jsonl"
    few.write_text("".join(json.dumps({"prompt": f"Review: number {i}"}) + "\n" for i in range(2)))
    (d / "resume_scorer.py").write_text("def b(texts, word='the'):\n    return [float(word in t) * 0.5 + 0.5 for t in texts]\n")
    sys.path.insert(0, str(d))
    run = d / "run"
    argv = ["train", PROMPTS, "--local", "--run-dir", str(run), "--set", f"model.path={d / 'model'}",
            "--set", f"prompts.file={few}", "--set", "prompts.per_step=2", "--set", "rollout.backend=hf",
            "--set", "run.steps=1", "--set", "learner.batch_size=8", "--set", "learner.micro_batch_size=8",
            "--set", "learner.num_workers=1", "--set", "target.fit_samples=8", "--set", "eval.base_samples=8", "--set", "model.max_new_tokens=8",
            "--set", "run.progress=false",
            "--set", "target.constraints=[{kind: pointwise, scorer: {kind: callable, path: 'resume_scorer:b', kwargs: {word: the}}}]"]
    assert main(argv) == 0
    (run / "status.json").write_text(json.dumps({"state": "failed"}))
    yield d, run
    sys.path.remove(str(d))


RESUME_REFUSED = [
    # (id, --set, key named in the message) - each used to be accepted, exit 0
    ("target word (the issue's case)", "target.constraints.0.scorer.kwargs.word=review", "target.constraints.0.scorer.kwargs.word"),
    ("divergence", "divergence=kl", "divergence"),
    ("model", "model.path=bundled:gpt2-tiny", "model.path"),
    ("seed", "run.seed=7", "run.seed"),
    ("batch shape", "learner.batch_size=16", "learner.batch_size"),
    ("prompts per step", "prompts.per_step=1", "prompts.per_step"),
    ("generation length", "model.max_new_tokens=6", "model.max_new_tokens"),
    ("learning rate", "learner.lr=0.5", "learner.lr"),
    ("temperature", "rollout.temperature=0.7", "rollout.temperature"),
]


@pytest.mark.parametrize("case", RESUME_REFUSED, ids=[c[0] for c in RESUME_REFUSED])
def test_resume_refuses_a_change_of_the_mathematics_by_name(case, stopped_run, capsys):
    _, override, key = case
    _, run = stopped_run
    before = (run / "config.yaml").read_text()
    assert main(["train", "--resume", str(run), "--set", override]) == 2
    one_line_error(capsys, "--resume", key, "start a new run")
    assert (run / "config.yaml").read_text() == before  # not rewritten as if it held from step 0


@pytest.mark.parametrize("what", ["prompts file", "model weights", "model config", "scorer module"])
def test_resume_refuses_inputs_whose_content_changed_at_the_same_path(what, stopped_run, capsys):
    d, run = stopped_run
    path = {"prompts file": d / "prompts.jsonl", "model config": d / "model" / "config.json",
            "scorer module": d / "resume_scorer.py",
            "model weights": next((d / "model").glob("*.safetensors"))}[what]
    key = {"prompts file": "prompts.file", "scorer module": "target.constraints.0.scorer.path"}.get(what, "model.path")
    original = path.read_bytes()
    try:
        if what == "prompts file":
            path.write_text(path.read_text().replace("number 1", "number 9"))
        elif what == "model weights":
            from safetensors.torch import load_file, save_file

            tensors = load_file(path)
            name = sorted(tensors)[0]
            tensors[name] = tensors[name] + 0.01
            save_file(tensors, path, metadata={"format": "pt"})
        elif what == "model config":
            path.write_text(path.read_text().replace("{", '{"note": "edited",', 1))
        else:
            path.write_text(path.read_text() + "# edited\n")
        assert main(["train", "--resume", str(run)]) == 2
        one_line_error(capsys, "--resume", f"content of {key} changed")
    finally:
        path.write_bytes(original)


def test_resume_allows_and_records_cadence_and_resource_changes(stopped_run):
    from fdpg_ray.config import load_config
    from fdpg_ray.train.fingerprint import RESUMES_FILE, check_resume, record_start

    _, run = stopped_run
    assert (run / "inputs.json").is_file()
    cfg = load_config(run / "config.yaml", ["run.steps=5", "run.eval_every=2", "run.checkpoint_every=2",
                                            "eval.samples=16", "rollout.num_actors=3", "ray.num_cpus=4"])
    changes = check_resume(cfg, run)
    assert changes["run.steps"] == (1, 5) and changes["rollout.num_actors"] == (2, 3) and len(changes) == 6
    record_start(cfg, run, changes)
    last = json.loads((run / RESUMES_FILE).read_text().splitlines()[-1])
    assert last["changed"]["run.steps"] == [1, 5]
    assert check_resume(load_config(run / "config.yaml"), run) == {}  # nothing changed: nothing to record


def test_sweep_resume_refuses_a_run_config_edited_in_place(tmp_path, monkeypatch):
    """The sweep's resume hash covered the config's path, not its content: a base config
    edited between a sweep and its --resume was accepted.  Now refused before Ray starts."""
    import hashlib
    import shutil

    import yaml

    from tuning import sweep as sw

    base = tmp_path / "toy.yaml"
    shutil.copy(TOY, base)
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "base": str(base), "grid": {"divergence": ["kl", "js"]}}))
    sdir = tmp_path / "sweep"
    (sdir / sw.TUNE_NAME).mkdir(parents=True)
    (sdir / sw.TUNE_NAME / "tuner.pkl").write_bytes(b"")  # what Tuner.can_restore looks for
    spec = sw.load_sweep(path)
    (sdir / "sweep.json").write_text(json.dumps({"hash": sw.spec_hash(spec), "spec": {"cwd": str(tmp_path)},
                                                 "configs": {str(base): hashlib.sha256(base.read_bytes()).hexdigest()[:16]}}))
    base.write_text(base.read_text().replace("beta: 0.5", "beta: 0.25"))

    def no_ray(spec):
        raise AssertionError("the sweep went on to start Ray")

    monkeypatch.setattr(sw, "_connect", no_ray)
    with pytest.raises(sw.SweepError, match="run config .*toy.yaml' changed"):
        sw.run_sweep(path, resume=True, sweep_dir=sdir)


# ----------------------------------------------------------------------------- 3. eval / sample of a conditional run

def test_eval_of_a_conditional_run_continues_its_prompts(stopped_run, capsys):
    """It used to sample from BOS ('Review: ...', 'Biography: ...' from scratch): every figure
    described a distribution the run never trained.  Now: the run's prompts, one Z_hat per
    context, metrics averaged over contexts."""
    d, run = stopped_run
    prompts = [json.loads(line)["prompt"] for line in (d / "prompts.jsonl").read_text().splitlines()]
    assert main(["eval", str(run), "--n", "8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["contexts"] == 2 and out["samples_per_context"] == 4 and out["samples"] == 8
    assert sorted(out["log_z_hat_per_context"]) == sorted(prompts)
    finite = [v for v in out["log_z_hat_per_context"].values() if v > -math.inf]
    assert out["log_z_hat"] == pytest.approx(sum(finite) / len(finite))
    assert len(out["examples"]) == 2 and all(any(e.startswith(p) for p in prompts) for e in out["examples"])
    assert 1.0 <= out["ess_min"] <= out["ess_mean"] <= 4.0 and out["log_z_hat_se"] >= 0.0
    # 4 samples a context cannot reach an ESS of 30: every importance-sampled figure is flagged
    assert out["untrusted"][0] == "log_z_hat" and "kl_p_pi" in out["untrusted"] and "30" in out["untrusted_rule"]
    assert all(out[f"{k}_ess"] < 30 for k in out["untrusted"][1:])


@pytest.mark.parametrize("n", ["3", "2"])
def test_eval_of_a_conditional_run_refuses_an_uneven_or_too_small_n(n, stopped_run, capsys):
    _, run = stopped_run
    assert main(["eval", str(run), "--n", n]) == 2
    one_line_error(capsys, "--n", "2 prompts", "--n 4")


def test_eval_refuses_n_zero_instead_of_taking_the_default(stopped_run, capsys):
    """`--n 0` used to be read as "not given" and 128 samples were drawn without a word."""
    _, run = stopped_run
    assert main(["eval", str(run), "--n", "0"]) == 2
    one_line_error(capsys, "--n", "0 samples")


def test_eval_refuses_a_run_whose_prompts_file_changed(stopped_run, capsys):
    d, run = stopped_run
    f = d / "prompts.jsonl"
    original = f.read_bytes()
    try:
        f.write_text(f.read_text().replace("number 0", "number 5"))
        assert main(["eval", str(run), "--n", "4"]) == 2
        one_line_error(capsys, "eval", "content of prompts.file changed")
    finally:
        f.write_bytes(original)


@pytest.mark.parametrize("which", ["run dir", "final"])
def test_sample_of_a_conditional_run_continues_its_prompts(which, stopped_run, capsys):
    d, run = stopped_run
    prompts = [json.loads(line)["prompt"] for line in (d / "prompts.jsonl").read_text().splitlines()]
    target = run if which == "run dir" else run / "final"
    assert main(["sample", str(target), "--n", "5"]) == 0
    recs = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(recs) == 5
    assert [r["context"] for r in recs].count(prompts[0]) == 3 and [r["context"] for r in recs].count(prompts[1]) == 2
    assert all(r["text"].startswith(r["context"]) for r in recs)


def test_sample_of_a_run_checks_its_prompts_against_the_context(stopped_run, capsys):
    _, run = stopped_run
    assert main(["sample", str(run), "--n", "2", "--max-new-tokens", "126"]) == 2
    one_line_error(capsys, "prompts.file", "line 1", "--max-new-tokens", "has 128")


@pytest.mark.slow
def test_vllm_sampler_refuses_like_the_transformers_one():
    """vLLM used to cut every completion at the context (15 tokens on the toy model) where the
    transformers backend failed: both now refuse the same way, and both fill the context when
    asked exactly (the toy model has no EOS)."""
    from fdpg_ray.rollout.vllm_sampler import VLLMSampler
    from fdpg_ray.config import ConfigError
    from fdpg_ray.model.sources import resolve_model_path

    s = VLLMSampler(resolve_model_path("toy"), seed=0, gpu_memory_utilization=0.2)
    try:
        bos = s.tokenizer.bos_token_id
        with pytest.raises(ConfigError, match="17 positions, but the model has 16"):
            s.sample([[bos]], 2, 16)
        assert [len(o.token_ids) for o in s.sample([[bos]], 2, 15)] == [15, 15]
    finally:
        s.shutdown()


def test_sample_refuses_zero_new_tokens(capsys):
    assert main(["sample", "toy", "--max-new-tokens", "0"]) == 2
    one_line_error(capsys, "--max-new-tokens", "got 0")
