"""Ray Tune sweeps for real: Tune function trainables that each run a whole distributed run
(rollout, scorer and sink actors, a Ray Train learner with TuneReportCallback), results in
one DataFrame, the report, resuming, and one-line validation errors.

One Ray instance serves the whole file; the sweeps are tiny (toy task, 2-3 steps, hf
rollouts, one learner worker)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fdpg_ray.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

FAST = {"run.steps": 2, "run.eval_every": 1, "run.checkpoint_every": 2, "rollout.backend": "hf",
        "learner.num_workers": 1, "learner.batch_size": 64, "learner.micro_batch_size": 64,
        "target.fit_samples": 64, "eval.base_samples": 64, "eval.samples": 64}


def write_sweep(path: Path, body: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def base_sweep(**extra) -> dict:
    return {"name": "t", "base": str(ROOT / "configs" / "toy.yaml"), "set": dict(FAST), **extra}


# ----------------------------------------------------------------------------- validation (no Ray)

@pytest.mark.parametrize("body, expected", [
    ({"grid": {}}, "grid: empty search space"),
    ({"grid": {"divergence": ["kl"]}, "gird": {}}, "gird: unknown sweep key 'gird' (did you mean 'grid'?)"),
    ({"grid": {"learner.lrr": [1e-4]}}, "grid.learner.lrr: unknown key 'lrr' (did you mean 'lr'?); valid keys:"),
    ({"grid": {"nope": [1]}}, "grid.nope: unknown key 'nope'; valid keys:"),
    ({"random": {"learner.foo": {"uniform": [0, 1]}}}, "random.learner.foo: unknown key 'foo'"),
    ({"grid": {"divergence": []}}, "grid.divergence: expected a non-empty list"),
    ({"random": {"learner.lr": {"logunifrom": [1e-5, 1e-3]}}}, "random.learner.lr: unknown sampler 'logunifrom'"),
    ({"random": {"learner.lr": {"loguniform": [0, 1e-3]}}}, "random.learner.lr.loguniform: a log-scale range needs low > 0"),
    ({"grid": {"divergence": ["kl", "bogus"]}}, "divergence"),  # the config's own message, before Ray starts
    ({"grid": {"learner.lr": [-1.0]}}, "learner.lr: must be > 0"),
    ({"grid": {"divergence": ["kl"]}, "mode": "lowest"}, "mode: expected min or max"),
    ({"grid": {"divergence": ["kl"]}, "scheduler": {"hyperband": {}}}, "scheduler: expected null or one of"),
    ({"grid": {"divergence": ["kl"]}, "base": "configs/nope.yaml"}, "base: file 'configs/nope.yaml' does not exist"),
    ({"grid": {"task": ["nope"]}}, "grid.task: file 'configs/nope.yaml' does not exist"),
    ({"grid": {"divergence": ["kl"]}, "per_value": {"model.path": {"m": {"learner.lr": 1e-4}}}},
     "per_value.model.path: not a grid key"),
    ({"grid": {"divergence": ["kl"]}, "per_value": {"divergence": {"js": {"learner.lr": 1e-4}}}},
     "per_value.divergence.js: 'js' is not one of grid.divergence (kl)"),
    ({"grid": {"divergence": ["kl"]}, "per_value": {"divergence": {"kl": {"learner.lrr": 1e-4}}}},
     "per_value.divergence.kl.learner.lrr: unknown key 'lrr'"),
    ({"grid": {"divergence": ["kl"]}, "per_value": {"divergence": {"kl": {"learner.lr": -1.0}}}},
     "learner.lr: must be > 0"),
    ({"grid": {"divergence": ["kl"], "run.seed": [0]}, "per_value": {"divergence": {"kl": {"run.seed": 1}}}},
     "per_value.divergence.kl.run.seed: run.seed is swept"),
    ({"grid": {"divergence": ["kl"]}, "per_value": {"divergence": {"kl": {"task": "toy"}}}},
     "per_value.divergence.kl.task: task is chosen by `base` or by a grid over task"),
    ({"grid": {"divergence": ["kl"], "run.seed": [0]},
      "per_value": {"divergence": {"kl": {"learner.lr": 1e-4}}, "run.seed": {0: {"learner.lr": 2e-4}}}},
     "per_value.run.seed.0.learner.lr: also set by per_value.divergence"),
])
def test_bad_sweep_files_fail_with_one_line(tmp_path, capsys, body, expected):
    from fdpg_ray.cli import main
    from tuning.spec import load_sweep

    path = write_sweep(tmp_path / "s.yaml", {**base_sweep(), **body})
    with pytest.raises(ConfigError) as e:
        load_sweep(path)
    assert expected in str(e.value) and "\n" not in str(e.value), str(e.value)
    # the CLI prints that one line and exits 2 (no traceback, nothing started)
    assert main(["sweep", str(path), "--sweep-dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "d").exists()


def test_set_on_the_command_line_is_checked_like_the_sweep(tmp_path):
    from tuning.spec import load_sweep

    path = write_sweep(tmp_path / "s.yaml", base_sweep(grid={"divergence": ["kl"]}))
    with pytest.raises(ConfigError, match=r"^--set learner\.nope: unknown key 'nope'"):
        load_sweep(path, ["learner.nope=1"])
    spec = load_sweep(path, ["learner.lr=0.0003", "max_concurrent_trials=3"])  # run config and sweep fields
    assert spec["set"]["learner.lr"] == 0.0003 and spec["max_concurrent_trials"] == 3


def test_set_grid_axis_replaces_its_values(tmp_path):
    from tuning.spec import build_config, load_sweep

    # one task of the NL study's two: the trials are those of gender only
    nl = load_sweep(ROOT / "configs" / "sweeps" / "study_nl.yaml", ["grid.task=[gender]", "grid.run.seed=[1]"])
    assert nl["grid"]["task"] == ["gender"] and list(nl["tasks"]) == ["gender"] and nl["grid"]["run.seed"] == [1]
    assert nl["grid"]["divergence"] == ["kl", "rkl", "tv", "js"]
    assert build_config(nl, {"task": "gender", "divergence": "kl", "run.seed": 1}).learner.lr == 5e-5  # per_value
    amazing = load_sweep(ROOT / "configs" / "sweeps" / "study_nl.yaml", ["grid.task=[amazing]"])  # gender's
    assert build_config(amazing, {"task": "amazing", "divergence": "kl", "run.seed": 0}).learner.lr == 2e-4  # left out
    path = write_sweep(tmp_path / "s.yaml", base_sweep(grid={"divergence": ["kl"]}))
    with pytest.raises(ConfigError, match=r"^--set grid\.run\.seed: 'run\.seed' is not an axis .*its axes: divergence"):
        load_sweep(path, ["grid.run.seed=[0,1]"])
    with pytest.raises(ConfigError, match=r"^--set grid\.divergence: got 'js'; give a non-empty list"):
        load_sweep(path, ["grid.divergence=js"])
    with pytest.raises(ConfigError, match=r"unknown divergence 'nope'.*in the trial with divergence=nope"):  # checked as in the file
        load_sweep(path, ["grid.divergence=[nope]"])
    # YAML reads 1e-4 as a string: it is still the file's 0.0001, whose per_value applies
    path = write_sweep(tmp_path / "lr.yaml", base_sweep(grid={"learner.lr": [0.0001, 0.001]},
                                                        per_value={"learner.lr": {0.0001: {"learner.weight_decay": 0.5}}}))
    for written in ("1e-4", "0.0001", "1.0e-4"):
        one = load_sweep(path, [f"grid.learner.lr=[{written}]"])
        assert one["grid"]["learner.lr"] == [0.0001], written
        assert build_config(one, {"learner.lr": 0.0001}).learner.weight_decay == 0.5, written
    # a swept key fixed on the command line: the hint says how to narrow the grid instead
    with pytest.raises(ConfigError, match=r"grid\.learner\.lr: also fixed in set.*--set grid\.learner\.lr=\[value\]"):
        load_sweep(path, ["learner.lr=0.01"])


def test_per_value_settings_follow_their_grid_value(tmp_path):
    from tuning.spec import spec_hash, build_config, load_sweep

    path = write_sweep(tmp_path / "s.yaml", base_sweep(
        grid={"divergence": ["kl", "rkl"], "run.seed": [0, 1]},
        per_value={"divergence": {"rkl": {"learner.lr": 3e-5, "run.steps": 3}}}))
    spec = load_sweep(path, ["learner.lr=0.0007"])
    # order: base < set (and --set) < per_value of the trial's grid values < the trial's values
    assert build_config(spec, {"divergence": "kl", "run.seed": 0}).learner.lr == 0.0007
    rkl = build_config(spec, {"divergence": "rkl", "run.seed": 1})
    assert (rkl.learner.lr, rkl.run.steps, rkl.run.seed) == (3e-5, 3, 1)
    assert spec["max_steps"] == 3  # the grid's configs are built up front, per_value included
    # an unused per_value leaves the hash of older sweep files as it was (--resume still works)
    plain = load_sweep(write_sweep(tmp_path / "p.yaml", base_sweep(grid={"divergence": ["kl", "rkl"]})))
    assert spec_hash(plain) == spec_hash({k: v for k, v in plain.items() if k != "per_value"})
    assert spec_hash(spec) != spec_hash({**spec, "per_value": {}})


def test_the_example_sweeps_are_valid():
    from tuning.spec import build_config, load_sweep, swept_keys
    from tuning.trials import trial_bundles

    quick = load_sweep(ROOT / "configs" / "sweeps" / "quick.yaml")
    assert quick["grid"]["divergence"] == ["kl", "rkl", "tv", "js"]
    study = load_sweep(ROOT / "configs" / "sweeps" / "study.yaml")
    assert set(swept_keys(study)) >= {"task", "divergence", "model.path", "run.seed"}
    assert study["grid"]["task"] == ["amazing", "gender", "sentiment"]
    assert study["grid"]["model.path"] == ["bundled:gpt2-tiny", "bundled:gpt2-small", "bundled:gpt2-medium"]
    assert len(study["grid"]["run.seed"]) == 2
    tiny = load_sweep(ROOT / "configs" / "sweeps" / "study_tiny.yaml")  # the part run on 2 cores
    assert len(tiny["grid"]["task"]) * len(tiny["grid"]["divergence"]) * len(tiny["grid"]["run.seed"]) == 24
    assert build_config(tiny, {"task": "sentiment", "divergence": "js", "run.seed": 0}).model.path == "bundled:gpt2-tiny"
    medium = load_sweep(ROOT / "configs" / "sweeps" / "study_medium_lr.yaml")  # the medium rerun
    cfg = build_config(medium, {"task": "amazing", "divergence": "kl", "run.seed": 0})
    assert (cfg.model.path, cfg.learner.lr) == ("bundled:gpt2-medium", 5.3e-5)
    cfg = build_config(study, {"task": "gender", "divergence": "tv", "model.path": "bundled:gpt2-tiny", "run.seed": 1})
    assert (cfg.run.name, cfg.divergence, cfg.run.seed) == ("gender", "tv", 1)
    # a trial reserves its driver plus its rollout and scorer actors, as one placement group
    bundles = trial_bundles(study, {"task": "amazing", "divergence": "kl", "model.path": "bundled:gpt2-tiny",
                                    "run.seed": 0})
    assert len(bundles) == 1 + cfg.rollout.num_actors + cfg.scorer.num_actors
    assert "node:__internal_head__" in bundles[0]


def test_scheduler_option_builds_asha_with_the_sweeps_metric(tmp_path):
    from ray.tune.schedulers import ASHAScheduler

    from tuning.spec import load_sweep

    from tuning.sweep import _scheduler

    spec = load_sweep(write_sweep(tmp_path / "s.yaml", base_sweep(
        grid={"divergence": ["kl"]}, scheduler={"asha": {"grace_period": 2, "max_t": 10}}, metric="kl_pi_a")))
    sched = _scheduler(spec)
    assert isinstance(sched, ASHAScheduler) and sched._metric == "kl_pi_a" and sched._mode == "min"
    # a scheduler needs a metric reported at every step, not only at evaluations
    with pytest.raises(ConfigError, match=r"^metric: 'kl_p_pi_base' is measured only at evaluation steps"):
        load_sweep(write_sweep(tmp_path / "s2.yaml", base_sweep(
            grid={"divergence": ["kl"]}, scheduler={"asha": {}}, metric="kl_p_pi_base")))
    with pytest.raises(ConfigError, match=r"^scheduler\.asha\.metric: 'self_bleu' is measured only"):
        load_sweep(write_sweep(tmp_path / "s3.yaml", base_sweep(
            grid={"divergence": ["kl"]}, scheduler={"asha": {"metric": "self_bleu"}})))
    with pytest.raises(ConfigError, match=r"^metric: 'kl_pq' is not a reported metric"):
        load_sweep(write_sweep(tmp_path / "s4.yaml", base_sweep(grid={"divergence": ["kl"]}, metric="kl_pq")))
    spec["scheduler"] = {"asha": {"grace_perod": 2}}
    with pytest.raises(ConfigError, match=r"^scheduler\.asha: .*grace_perod"):
        _scheduler(spec)


# ----------------------------------------------------------------------------- real sweeps


@pytest.fixture(scope="module")
def finished_sweep(ray_local, tmp_path_factory):
    """2 divergences x 2 seeds on the toy task (grid) x a random learning rate; js trials
    get a weight decay of their own (per_value)."""
    from tuning.sweep import run_sweep

    tmp = tmp_path_factory.mktemp("sweep")
    path = write_sweep(tmp / "s.yaml", base_sweep(
        name="small", grid={"divergence": ["kl", "js"], "run.seed": [0, 1]},
        random={"learner.lr": {"loguniform": [1e-4, 1e-2]}}, max_concurrent_trials=2,
        per_value={"divergence": {"js": {"learner.weight_decay": 0.01}}}))
    t0 = time.time()
    sweep_dir = run_sweep(path, sweep_dir=tmp / "out")
    return path, Path(sweep_dir), time.time() - t0


@pytest.mark.slow
def test_sweep_results_hold_every_trial_and_step(finished_sweep):
    _, sweep_dir, _ = finished_sweep
    df = pd.read_parquet(sweep_dir / "results.parquet")
    csv = pd.read_csv(sweep_dir / "results.csv")
    assert len(df) == len(csv) == 4 * 3 and df["trial_id"].nunique() == 4
    for col in ["trial_id", "divergence", "run.seed", "learner.lr", "task", "step", "kl_p_pi", "alignment",
                "kl_pi_a", "distinct_2", "self_bleu", "divergence_value", "state", "run_dir", "model_params"]:
        assert col in df.columns, col
    # one row per (trial, step), every trial complete
    assert not df.duplicated(["trial_id", "step"]).any()
    assert (df.groupby("trial_id")["step"].apply(sorted).map(tuple) == (0, 1, 2)).all()
    assert (df["state"] == "finished").all() and (df["task"] == "toy").all()
    trials = df.groupby("trial_id").first()
    assert sorted(zip(trials["divergence"], trials["run.seed"])) == [("js", 0), ("js", 1), ("kl", 0), ("kl", 1)]
    assert trials["learner.lr"].between(1e-4, 1e-2).all() and trials["learner.lr"].nunique() == 4
    # the swept values, and the per_value settings of js, really reached the runs
    base_decay = load_config(ROOT / "configs" / "toy.yaml").learner.weight_decay
    assert base_decay != 0.01
    for _, t in trials.iterrows():
        cfg = load_config(Path(t["run_dir"]) / "config.yaml")
        assert (cfg.divergence, cfg.run.seed) == (t["divergence"], t["run.seed"])
        assert math.isclose(cfg.learner.lr, t["learner.lr"])
        assert cfg.learner.weight_decay == (0.01 if t["divergence"] == "js" else base_decay)
    # the metrics Tune saw are the run's own (TuneReportCallback)
    tune_results = list((sweep_dir / "tune").glob("*/result.json"))
    assert len(tune_results) == 4
    for r in tune_results:
        rows = [json.loads(line) for line in r.read_text().splitlines()]
        assert [row["step"] for row in rows] == [0, 2] or [row["step"] for row in rows] == [0, 1, 2]
        tid = rows[-1]["trial_id"]
        ours = df[(df["trial_id"] == tid) & (df["step"] == rows[-1]["step"])]
        assert ours["kl_p_pi"].iloc[0] == pytest.approx(rows[-1]["kl_p_pi"])


@pytest.mark.slow
def test_report_renders_tables_curves_and_tradeoff(finished_sweep, tmp_path):
    from fdpg_ray.cli import main

    _, sweep_dir, _ = finished_sweep
    out = tmp_path / "rep" / "report.md"
    assert main(["report", str(sweep_dir), "--out", str(out)]) == 0
    text = out.read_text()
    assert "## Task: toy" in text
    table = [line for line in text.splitlines() if line.startswith("| ")]
    header = table[0]
    for col in ["KL(p‖π)", "alignment", "KL(π‖a)", "Distinct-2", "Self-BLEU"]:
        assert col in header
    rows = {line.split("|")[1].strip(): line for line in table[1:3]}
    assert set(rows) == {"kl", "js"}
    assert all(" ± " in r and r.split("|")[2].strip() == "2" for r in rows.values())  # 2 seeds each
    assert "## Random search" in text and "learner.lr" in text
    pngs = sorted(p.name for p in out.parent.glob("*.png"))
    assert pngs == ["report-toy-curves.png", "report-toy-tradeoff.png"]
    for name in pngs:
        assert f"]({name})" in text and (out.parent / name).stat().st_size > 5000


@pytest.mark.slow
def test_resume_after_a_finished_sweep_reruns_nothing(finished_sweep):
    from tuning.sweep import run_sweep

    path, sweep_dir, _ = finished_sweep
    runs = sorted((sweep_dir / "runs").iterdir())
    before = {r.name: (r / "metrics.csv").stat().st_mtime_ns for r in runs}
    t0 = time.time()
    run_sweep(path, resume=True, sweep_dir=sweep_dir)
    assert time.time() - t0 < 60
    after = {r.name: (r / "metrics.csv").stat().st_mtime_ns for r in sorted((sweep_dir / "runs").iterdir())}
    assert after == before
    assert all(json.loads((r / "trial.json").read_text())["attempts"] == 1 for r in runs)
    assert len(pd.read_parquet(sweep_dir / "results.parquet")) == 12


@pytest.mark.slow
def test_a_sweep_dir_is_not_overwritten_and_resume_needs_a_sweep(finished_sweep, tmp_path):
    from tuning.sweep import run_sweep

    path, sweep_dir, _ = finished_sweep
    with pytest.raises(ConfigError, match="already holds a sweep; pass --resume"):
        run_sweep(path, sweep_dir=sweep_dir)
    with pytest.raises(ConfigError, match="--resume: no sweep to resume"):
        run_sweep(path, resume=True, sweep_dir=tmp_path / "empty")
    # the message names what changed (set gained run.steps) and the fix
    with pytest.raises(ConfigError, match=r"changed since .*\(set was .*'run\.steps': 3.*repeat the first run's --set"):
        run_sweep(path, overrides=["run.steps=3"], resume=True, sweep_dir=sweep_dir)


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rerunning_finished_trials(ray_local, tmp_path, capsys):
    """`fdpg-ray sweep` (its own process, on this file's Ray instance) is interrupted with
    Ctrl-C while its second trial runs; --resume finishes that one and leaves the first."""
    from tuning.sweep import run_sweep

    path = write_sweep(tmp_path / "s.yaml", base_sweep(name="interrupted", grid={"divergence": ["kl", "tv"]}))
    sweep_dir = tmp_path / "out"
    env = dict(os.environ, RAY_ADDRESS=ray_local.get_runtime_context().gcs_address, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([str(BIN / "fdpg-ray"), "sweep", str(path), "--sweep-dir", str(sweep_dir)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            infos = sorted((sweep_dir / "runs").glob("*/trial.json")) if (sweep_dir / "runs").is_dir() else []
            if len(infos) == 2:
                break
            time.sleep(0.5)
        assert len(infos) == 2, "the second trial never started"
        first, second = infos[0].parent, infos[1].parent
        assert json.loads((first / "status.json").read_text())["state"] == "finished"
        proc.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves the experiment and stops
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "unfinished trials remain" in out, out[-3000:]
    assert not (second / "status.json").is_file() or \
        json.loads((second / "status.json").read_text())["state"] != "finished"
    first_mtime = (first / "metrics.csv").stat().st_mtime_ns

    run_sweep(path, resume=True, sweep_dir=sweep_dir)
    assert "unfinished trials remain" not in capsys.readouterr().out
    assert (first / "metrics.csv").stat().st_mtime_ns == first_mtime
    assert json.loads((first / "trial.json").read_text())["attempts"] == 1
    assert json.loads((second / "trial.json").read_text())["attempts"] == 2
    df = pd.read_parquet(sweep_dir / "results.parquet")
    assert sorted(df.groupby("trial_id")["step"].max()) == [2, 2] and (df["state"] == "finished").all()


# ----------------------------------------------------------------------------- report on a bigger study

def fake_study(sweep_dir: Path) -> None:
    """results.parquet of a study (2 tasks x 3 divergences x 2 models x 2 seeds) without
    running it: the report's grouping, statistics and scaling plots."""
    rng = np.random.default_rng(0)
    rows = []
    sizes = {"bundled:gpt2-tiny": 1.07e6, "bundled:gpt2-small": 3.7e6}
    i = 0
    for task in ["amazing", "gender"]:
        for div in ["kl", "rkl", "js"]:
            for model, n in sizes.items():
                for seed in [0, 1]:
                    i += 1
                    for step in range(4):
                        rows.append({"trial_id": f"t{i:03d}", "task": task, "divergence": div, "model.path": model,
                                     "run.seed": seed, "model_params": n, "state": "finished", "run_dir": f"/x/{i}",
                                     "step": step, "kl_p_pi": 2.0 - 0.3 * step + rng.normal(0, 0.05),
                                     "kl_p_pi_base": 2.0 - 0.35 * step + (seed * 0.1),
                                     "alignment": 0.1 + 0.2 * step, "kl_pi_a": 0.1 * step,
                                     "distinct_2": 0.5, "self_bleu": 0.3, "divergence_value": 0.1})
    sweep_dir.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(sweep_dir / "results.parquet")
    (sweep_dir / "sweep.json").write_text(json.dumps({
        "name": "study", "params": ["task", "divergence", "model.path", "run.seed"],
        "grid": ["task", "divergence", "model.path", "run.seed"], "random": [], "metric": "kl_p_pi", "mode": "min"}))


def test_report_of_a_study_has_a_table_per_task_and_scaling_plots(tmp_path):
    from tuning.report import write_report

    fake_study(tmp_path / "study")
    md = Path(write_report(tmp_path / "study"))
    assert md == tmp_path / "study" / "report.md"
    text = md.read_text()
    assert text.count("## Task: ") == 2
    # per task and model: divergences as rows, mean ± std over the 2 seeds of the final step
    assert "### model.path=bundled:gpt2-tiny" in text
    block = text.split("## Task: amazing")[1].split("### model.path=bundled:gpt2-tiny")[1].split("**")[0]
    rows = [line for line in block.splitlines() if line.startswith("| ") and not line.startswith("| divergence")]
    assert [r.split("|")[1].strip() for r in rows] == ["kl", "rkl", "js"]
    # final KL(p||pi) on base samples: 2 - 1.05 + {0, 0.1} -> 1.0000 ± 0.0707
    assert "1.0000 ± 0.0707" in rows[0]
    pngs = {p.name for p in md.parent.glob("*.png")}
    assert {"report-amazing-scaling.png", "report-gender-scaling.png"} <= pngs
    assert "report-amazing-model.path_bundled_gpt2-tiny-curves.png" in pngs
    assert len([p for p in pngs if p.endswith("-tradeoff.png")]) == 4
    assert "Model sizes: `bundled:gpt2-tiny` = 1.07M, `bundled:gpt2-small` = 3.70M." in text
    # the order of the divergences per size: equal means keep the table's order (kl, rkl, js)
    assert "| `bundled:gpt2-tiny` | kl 1 · rkl 1 · js 1 | kl 0.7 · rkl 0.7 · js 0.7 |" in text
    assert "KL(p‖π): the order is the same at every size; best at every size: kl." in text


def test_the_ordering_table_says_when_the_best_divergence_changes_with_size():
    from tuning.report import _ordering_table

    rows = [{"model.path": m, "model_params": n, "divergence": d, "kl_p_pi_base": v, "alignment": a}
            for m, n, vals in [("tiny", 1e6, {"kl": 1.0, "js": 2.0}), ("small", 4e6, {"kl": 3.0, "js": 2.5})]
            for d, v in vals.items() for a in [0.5]]
    lines = _ordering_table(pd.DataFrame(rows), {"KL(p‖π)": ("kl_p_pi_base", ""), "alignment": ("alignment", "")})
    assert "| `tiny` | kl 1 · js 2 | kl 0.5 · js 0.5 |" in lines
    assert "| `small` | js 2.5 · kl 3 | kl 0.5 · js 0.5 |" in lines
    assert "KL(p‖π): the order is not the same at every size; the best differs (js, kl)." in lines
    assert "alignment: the order is the same at every size; best at every size: kl." in lines


def test_report_without_results_is_one_line_that_fits_the_folder(tmp_path):
    from tuning.report import write_report

    with pytest.raises(ConfigError, match=r"^sweep_dir: .* is not a sweep directory \(no results.parquet\); give"):
        write_report(tmp_path)
    (tmp_path / "sweep.json").write_text("{}")  # a sweep stopped before its first result: resume it
    with pytest.raises(ConfigError, match=r"^sweep_dir: .* has no results.parquet yet; finish the sweep with .*--resume"):
        write_report(tmp_path)
    run = tmp_path / "run"  # a training run: no sweep advice
    run.mkdir()
    (run / "config.yaml").write_text("divergence: kl\n")
    (run / "metrics.csv").write_text("step\n0\n")
    with pytest.raises(ConfigError, match=r"^sweep_dir: .* is a training run, not a sweep; its table is in summary"):
        write_report(run)


def test_model_params_from_training_info_or_config():
    from tuning.results import model_params

    assert model_params("bundled:gpt2-tiny") == 1071872            # training_info.json
    assert 10_000 < model_params("toy") < 1_000_000                 # counted from config.json
    assert model_params("gpt2-xl") == pytest.approx(1.56e9, rel=0.01)  # hub name, known size


def test_run_states_tell_scheduler_stops_from_interruptions(tmp_path):
    from tuning.results import _run_state

    def run(state):
        d = tmp_path / str(state)
        d.mkdir()
        if state:
            (d / "status.json").write_text(json.dumps({"state": state}))
        return d

    assert _run_state(run("finished"), "TERMINATED") == "finished"
    assert _run_state(run("failed"), "ERROR") == "failed"
    assert _run_state(run("running"), "TERMINATED") == "stopped"      # Tune ended it first: a scheduler
    assert _run_state(tmp_path / "running", "RUNNING") == "interrupted"
    assert _run_state(tmp_path / "running", None) == "interrupted"
    assert _run_state(run(None), "ERROR") == "failed"                  # died before its run started
