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
            "--set", "target.fit_samples=64", "--set", "run.progress=false", "--set", "run.eval_every=1",
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
            "--set", "target.fit_samples=16", "--set", "learner.batch_size=8", "--set", "learner.micro_batch_size=8",
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
    from fdpg_ray.scorers import build_scorer

    (tmp_path / f"{module}.py").write_text(f"def f(texts):\n    return {returned}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    scorer = build_scorer({"kind": "callable", "path": f"{module}:f"}, where="target.constraints[0].scorer")
    with pytest.raises(ValueError) as e:
        scorer.score(["a", "b", "c", "d"])
    assert needle in str(e.value) and "NaN" not in str(e.value), str(e.value)
