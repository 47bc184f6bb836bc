"""Bad input: one line naming the field and the fix, exit status 2, nothing passed off as a result."""

import json
from pathlib import Path

import pytest

from fdpg_ray.cli import main

TINY = ["--set", "run.steps=1", "--set", "target.fit_samples=32", "--set", "eval.base_samples=32", "--set", "learner.batch_size=8",
        "--set", "learner.micro_batch_size=8", "--set", "rollout.backend=hf", "--set", "run.progress=false",
        "--set", "model.max_new_tokens=12", "--set", "learner.num_workers=1"]


@pytest.fixture
def files(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "bad.jsonl").write_text("this is { not json\n")
    (tmp_path / "other.jsonl").write_text('{"text": "hello"}\n')
    (tmp_path / "notyaml.yaml").write_text("divergence: [unclosed\n")
    (tmp_path / "notok").mkdir()
    (tmp_path / "notok" / "config.json").write_text("{}")
    (tmp_path / "bad_scorers.py").write_text(
        "def boom(texts):\n    raise KeyError('oops')\n"
        "def nan(texts):\n    return [float('nan')] * len(texts)\n"
        "def short(texts):\n    return [1.0]\n")
    return tmp_path


def wordtarget(word):
    return ["--set", f"target.constraints=[{{kind: pointwise, scorer: {{kind: word, words: [{word}]}}}}]"]


def callable_target(fn):
    return ["--set", f"target.constraints=[{{kind: pointwise, scorer: {{kind: callable, path: 'bad_scorers:{fn}'}}}}]"]


CASES = [
    # (id, extra argv, text that must be in the message)
    ("unknown divergence", ["--set", "divergence=foo"], "divergence"),
    ("alpha 0", ["--set", "divergence=alpha:0"], "divergence"),
    ("alpha 1", ["--set", "divergence=alpha:1"], "divergence"),
    ("alpha no number", ["--set", "divergence=alpha:"], "divergence"),
    ("zero lr", ["--set", "learner.lr=0"], "learner.lr"),
    ("negative lr", ["--set", "learner.lr=-1e-4"], "learner.lr"),
    ("zero batch", ["--set", "learner.batch_size=0"], "learner.batch_size"),
    ("zero samples", ["--set", "target.fit_samples=0"], "target.fit_samples"),
    ("zero eval samples", ["--set", "eval.samples=0"], "eval.samples"),
    ("max_new_tokens 0", ["--set", "model.max_new_tokens=0"], "model.max_new_tokens"),
    ("model path missing", ["--set", "model.path=./no/such/model"], "model.path"),
    ("model without tokenizer", ["--set", "model.path={tmp}/notok"], "model.path"),
    ("prompts missing", ["--set", "prompts.file={tmp}/missing.jsonl"], "prompts.file"),
    ("prompts empty", ["--set", "prompts.file={tmp}/empty.jsonl"], "prompts.file"),
    ("prompts not jsonl", ["--set", "prompts.file={tmp}/bad.jsonl"], "prompts.file"),
    ("prompts field", ["--set", "prompts.file={tmp}/other.jsonl"], "prompts.field"),
    ("scorer import path", callable_target("nothere"), "scorer.path"),
    ("scorer module", ["--set", "target.constraints=[{kind: pointwise, scorer: {kind: callable, path: 'no_module_x:f'}}]"], "scorer.path"),
    ("scorer kind", ["--set", "target.constraints=[{kind: pointwise, scorer: {kind: magic}}]"], "scorer.kind"),
    ("constraint kind", ["--set", "target.constraints=[{kind: hard, scorer: {kind: word, words: [a]}}]"], "kind"),
    ("reward without beta", ["--set", "target.constraints=[{kind: reward, scorer: {kind: sentiment}}]"], "beta"),
    ("unknown set key", ["--set", "learner.lrr=1"], "learner.lrr: unknown key 'lrr' (did you mean 'lr'?); valid keys: lr,"),
    ("no such bundled size", ["--set", "model.path=bundled:gpt2-huge"], "there is no bundled model 'gpt2-huge'; the bundled"),
    ("list index out of range", ["--set", "target.constraints.5.beta=1"],
     "target.constraints.5: not an element of this list: it has 1 element (indices 0 to 0)"),
    ("set without =", ["--set", "learner.lr"], "--set"),
    ("backend", ["--set", "rollout.backend=tgi"], "rollout.backend"),
    ("temperature vLLM refuses", ["--set", "rollout.temperature=2.5"], "rollout.temperature"),
    ("gpu where none", ["--set", "learner.use_gpu=true"], "learner.use_gpu"),
    ("weight sync", ["--set", "rollout.weight_sync=nccl"], "rollout.weight_sync"),
    ("sync bucket size", ["--set", "rollout.sync_bucket_mb=0"], "rollout.sync_bucket_mb"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_before_anything_starts(case, files, capsys, tmp_path, monkeypatch):
    _, extra, field = case
    monkeypatch.chdir(files)
    monkeypatch.syspath_prepend(str(files))
    root = Path(__file__).resolve().parent.parent
    argv = ["train", str(root / "configs/amazing.yaml"), "--run-dir", str(tmp_path / "run"),
            *[a.replace("{tmp}", str(files)) for a in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert field in err, err
    assert not (tmp_path / "run").exists()  # nothing was written


def test_unknown_key_reads_the_same_in_a_file_and_in_set(files, capsys, tmp_path):
    root = Path(__file__).resolve().parent.parent
    cfg = tmp_path / "c.yaml"
    cfg.write_text((root / "configs/amazing.yaml").read_text().replace("\nlearner:\n", "\nlearner:\n  lrr: 1\n", 1))
    assert main(["train", str(cfg), "--run-dir", str(tmp_path / "a")]) == 2
    from_file = capsys.readouterr().err.strip()
    assert main(["train", str(root / "configs/amazing.yaml"), "--set", "learner.lrr=1", "--run-dir", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.strip() == from_file


def test_bundled_sizes_are_the_sizes_the_builder_knows():
    from fdpg_ray.paths import BUNDLED_SIZES
    from modelbuild.small_models import SIZES

    assert BUNDLED_SIZES == tuple(SIZES)


@pytest.mark.parametrize("env", [None, "~/elsewhere", "relative/cache"])
def test_everything_built_on_first_use_goes_to_one_cache(monkeypatch, env):
    """SmolLM2's conversion, `make models` and the bundled-model lookup share one cache folder
    (they once had two defaults: a model built by one was "not built" for the other)."""
    from fdpg_ray.model.smollm2 import SMOLLM2_DIRNAME, cache_root
    from fdpg_ray.model.sources import ModelError, resolve_model_path
    from fdpg_ray.paths import REPO_ROOT, cache_dir
    from modelbuild.small_models import default_model_dir

    if env is None:
        monkeypatch.delenv("FDPG_RAY_CACHE", raising=False)
    else:
        monkeypatch.setenv("FDPG_RAY_CACHE", env)
    expected = REPO_ROOT / ".cache" if env is None else Path(env).expanduser().absolute()  # relative: from the cwd
    assert expected.is_absolute()
    assert cache_dir() == expected
    assert cache_root() / SMOLLM2_DIRNAME == expected / "smollm2-135m-instruct"
    assert default_model_dir("medium") == expected / "models" / "gpt2-medium"
    if not (default_model_dir("micro") / "config.json").is_file():
        with pytest.raises(ModelError, match=f"--out {expected / 'models' / 'gpt2-micro'}"):
            resolve_model_path("bundled:gpt2-micro")


def test_missing_and_invalid_config_files(files, capsys):
    assert main(["train", str(files / "nope.yaml")]) == 2
    assert "config" in capsys.readouterr().err
    assert main(["train", str(files / "notyaml.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not valid YAML" in err and "\n" not in err


RUNTIME = [
    ("Z_hat = 0: no sample satisfies", wordtarget("zzzqqqx"), "Z_hat = 0"),
    ("unreachable moment", ["--set", "target.constraints=[{kind: distributional, moment: 1.0, scorer: {kind: word, words: [amazing]}}]"], "moment"),
    ("scorer raises", callable_target("boom"), "raised KeyError"),
    ("scorer NaN", callable_target("nan"), "NaN"),
    ("scorer wrong shape", callable_target("short"), "shape"),
]


@pytest.mark.parametrize("case", RUNTIME, ids=[c[0] for c in RUNTIME])
def test_bad_input_found_at_run_time_fails_the_run_cleanly(case, files, capsys, tmp_path, monkeypatch):
    _, extra, text = case
    monkeypatch.chdir(files)
    monkeypatch.syspath_prepend(str(files))
    root = Path(__file__).resolve().parent.parent
    run = tmp_path / "run"
    assert main(["train", str(root / "configs/amazing.yaml"), "--local", "--run-dir", str(run), *TINY, *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and text in err, err
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed"  # never passed off as finished
    assert not (run / "summary.json").exists() and not (run / "final").exists()


def test_run_dir_and_resume_misuse(tmp_path, capsys):
    """A run directory is never overwritten by a new run, and --resume refuses what it cannot continue."""
    root = Path(__file__).resolve().parent.parent
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("divergence: js\n")
    (run / "status.json").write_text('{"state": "finished"}')
    before = {p.name: p.read_text() for p in run.iterdir()}
    cases = [
        (["train", str(root / "configs/amazing.yaml"), "--run-dir", str(run)], "--run-dir"),
        (["train", "--resume", str(run)], "already finished"),
        (["train", "--resume", str(tmp_path / "nothing")], "--resume"),
        (["train", "--resume", str(run), "--local"], "--resume"),
        (["train", str(root / "configs/amazing.yaml"), "--resume", str(run)], "--resume"),
    ]
    for argv, text in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and text in err, err
    assert {p.name: p.read_text() for p in run.iterdir()} == before


def test_cluster_address_that_does_not_answer(tmp_path, capsys):
    root = Path(__file__).resolve().parent.parent
    argv = ["train", str(root / "configs/amazing.yaml"), "--run-dir", str(tmp_path / "run"),
            "--set", "ray.address=127.0.0.1:9"]  # discard port: nothing listens
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "ray.address" in err, err
    assert not (tmp_path / "run").exists()
