"""run.trackers: every row of metrics.csv, the config and the plots reach W&B and MLflow.

A short exact-task run in one process logs to the real libraries in offline mode (W&B
offline directory, MLflow file store); the test reads the values back with the
libraries' own formats (the .wandb record file parsed into wandb's protobuf Records;
MlflowClient on the file store) and compares them with metrics.csv.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

import pytest

from fdpg_ray.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def wandb_records(path: Path):
    """The records of a .wandb file: ':W&B' + 2-byte magic + version byte, then LevelDB-log
    blocks of 32 KiB whose chunks (crc32, length, type: full/first/middle/last) carry one
    serialised wandb Record protobuf each."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        if kind == 0:  # zero padding to the end of the block
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            rec = pb.Record()
            rec.ParseFromString(buf)
            yield rec


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from fdpg_ray.cli import main

    tmp = tmp_path_factory.mktemp("trackers")
    env = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp / "wandb"), "MLFLOW_TRACKING_URI": (tmp / "mlruns").as_uri(),
           "WANDB_SILENT": "true"}
    (tmp / "wandb").mkdir()
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        rc = main(["train", str(ROOT / "configs/toy.yaml"), "--local", "--run-dir", str(tmp / "run"),
                   "--set", "run.steps=3", "--set", "run.eval_every=1", "--set", "learner.batch_size=64",
                   "--set", "learner.micro_batch_size=64", "--set", "target.fit_samples=64", "--set", "eval.base_samples=64",
                   "--set", "run.progress=false", "--set", "run.trackers=[tensorboard, wandb, mlflow]"])
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert rc == 0
    with open(tmp / "run" / "metrics.csv") as f:
        rows = [{k: float(v) for k, v in r.items() if v not in ("", None)} for r in csv.DictReader(f)]
    return tmp, rows


def _finite(rows):
    return [{k: v for k, v in r.items() if k != "step" and math.isfinite(v)} for r in rows]


def test_wandb_offline_run_holds_every_row_the_config_and_the_plots(run):
    tmp, rows = run
    files = list((tmp / "wandb").rglob("*.wandb"))
    assert len(files) == 1, files
    run_id = json.loads((tmp / "run" / "trackers.json").read_text())["wandb"]
    assert run_id in files[0].name
    history, config, artifact_files = {}, None, []
    for rec in wandb_records(files[0]):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            items = {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in rec.history.item}
            history[rec.history.step.num] = items
        elif kind == "run":
            config = {(u.key or "/".join(u.nested_key)): json.loads(u.value_json) for u in rec.run.config.update}
        elif kind == "artifact":
            artifact_files += [e.path for e in rec.artifact.manifest.contents]
    assert sorted(history) == [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    for r, want in zip(rows, _finite(rows)):
        got = history[int(r["step"])]
        assert set(want) <= set(got), set(want) - set(got)
        for k, v in want.items():
            assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-15), (k, r["step"])
    config = {k: v["value"] if isinstance(v, dict) and set(v) == {"value"} else v for k, v in config.items()}
    assert config["divergence"] == "js" and config["run"]["steps"] == 3
    assert {"plots/curves.png", "config.yaml", "metrics.csv", "summary.json"} <= set(artifact_files)


def test_mlflow_file_store_holds_every_row_the_config_and_the_plots(run):
    from mlflow.tracking import MlflowClient

    tmp, rows = run
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(tmp / "mlruns").as_uri())
    run_id = json.loads((tmp / "run" / "trackers.json").read_text())["mlflow"]
    info = client.get_run(run_id)
    assert info.info.status == "FINISHED"
    assert info.data.params["divergence"] == "js" and info.data.params["run.steps"] == "3"
    for k in _finite(rows)[0]:
        hist = {m.step: m.value for m in client.get_metric_history(run_id, k)}
        want = {int(r["step"]): r[k] for r in rows if k in r and math.isfinite(r[k])}
        assert set(hist) == set(want), k
        for step, v in want.items():
            assert hist[step] == pytest.approx(v, rel=1e-12, abs=1e-15), (k, step)
    names = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"plots/curves.png", "config.yaml", "metrics.csv", "summary.json"} <= names


def test_tensorboard_alone_is_the_default():
    assert load_config(ROOT / "configs/toy.yaml").run.trackers == ["tensorboard"]


@pytest.mark.parametrize("value, words", [("[neptune]", "unknown tracker 'neptune'"), ("wandb", "expected a list")])
def test_bad_trackers_are_one_line_naming_run_trackers(value, words):
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "configs/toy.yaml", [f"run.trackers={value}"])
    assert str(e.value).startswith("run.trackers: ") and words in str(e.value) and "\n" not in str(e.value)


def test_a_missing_library_names_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError) as e:
        load_config(ROOT / "configs/toy.yaml", ["run.trackers=[mlflow]"])
    assert str(e.value).startswith("run.trackers: mlflow is not installed; pip install 'fdpg-ray[trackers]'")
