"""The metrics registry (fdpg_ray/train/metrics.py) is the one list of metric names: docs/metrics.md
is generated from it, its views are consistent, and it knows every column a real run writes."""

import math
from pathlib import Path

import pandas as pd
import pytest

from fdpg_ray.train import metrics as M

ROOT = Path(__file__).resolve().parents[1]


def test_docs_metrics_md_is_generated_from_the_registry():
    text = (ROOT / "docs" / "metrics.md").read_text()
    assert text == M.markdown(), ("docs/metrics.md is out of date with fdpg_ray/train/metrics.py; regenerate it with "
                                  "`python -m fdpg_ray.train.metrics --markdown --out docs/metrics.md`")


def test_every_entry_uses_the_registrys_vocabulary():
    names = [m.name for m in M.METRICS]
    assert len(names) == len(set(names))
    for m in M.METRICS:
        assert m.unit in M.UNITS and m.estimate in M.ESTIMATES and m.better in M.BETTER and m.when in M.WHEN, m
        assert m.meaning and not m.meaning.endswith("."), m.name
        assert not m.se or m.estimate == "importance-sampled", m.name  # SE and ESS are of importance weights
    # the sink's first columns, in their metrics.csv order
    assert M.FIRST_COLUMNS == ["step", "samples", "loss", "z_hat", "alignment", "kl_p_pi", "kl_p_pi_base", "tv_p_pi",
                               "js_p_pi", "kl_pi_a", "divergence", "distinct_1", "distinct_2", "distinct_3",
                               "self_bleu", "mean_length", "seconds"]


def test_report_views_name_registered_metrics_with_one_label_and_direction_each():
    for col in M.SUMMARY_METRICS + M.PLOT_METRICS:
        assert col in M.BY_NAME, col
    for c in M.COMPARISONS:
        for col in c.columns:
            m = M.BY_NAME[col]
            assert m.label == c.label and m.better == c.better, (c.label, col)
        assert not c.ordering or c.better is not None  # "best first" needs a direction


def test_lookup_resolves_families_and_standard_errors():
    assert M.lookup("kl_p_pi_se") is M.BY_NAME["kl_p_pi"] and M.unit_of("kl_p_pi_se") == "nats"
    assert M.unit_of("kl_p_pi_base_ess") == "count"
    assert M.lookup("loss_se") is None  # loss has no standard error
    assert M.lookup("feature_d_count").name == "feature_<name>"
    assert M.lookup("exact_alpha_0.5").name == "exact_<divergence>"
    assert M.lookup("exact_kl").name == "exact_kl" and M.lookup("exact_") is None
    assert M.exact_divergence_columns(["exact_log_z", "exact_js", "exact_kl_pi_a", "exact_kl", "kl_p_pi"]) == \
        ["exact_js", "exact_kl"]
    assert M.label_of("kl_p_pi_base") == "KL(p‖π)" and M.label_of("rss_mib") == "rss_mib"
    # what a sweep may optimise: every step, eval only, or not at all
    assert M.tune_metric_kind("kl_p_pi") == "step" and M.tune_metric_kind("feature_x") == "step"
    assert M.tune_metric_kind("kl_p_pi_base") == "eval" and M.tune_metric_kind("exact_tv") == "eval"
    assert M.tune_metric_kind("kl_p_pi_se") is None and M.tune_metric_kind("kl_pq") is None


def test_markdown_command_prints_the_table(capsys, tmp_path):
    assert M.main(["--markdown"]) == 0
    assert capsys.readouterr().out == M.markdown()
    assert M.main(["--markdown", "--out", str(tmp_path / "m.md")]) == 0
    assert (tmp_path / "m.md").read_text() == M.markdown()


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    """A short local run of the exact toy task (2 steps + the final row, evaluated every step)."""
    from fdpg_ray.config import load_config
    from fdpg_ray.train.local import build_local
    from fdpg_ray.train.sink import RunSink

    cfg = load_config("configs/toy.yaml", {"run.steps": 2, "learner.batch_size": 64, "learner.micro_batch_size": 64,
                                           "eval.base_samples": 256, "run.eval_every": 1, "run.progress": False,
                                           "run.trackers": []})
    run_dir = tmp_path_factory.mktemp("toy_run")
    controller, _ = build_local(cfg, sink=RunSink(run_dir, cfg.to_dict()))
    controller.run()
    return run_dir


def test_every_column_a_run_writes_is_in_the_registry(toy_run):
    df = pd.read_csv(toy_run / "metrics.csv")
    unknown = [c for c in df.columns if not M.known(c)]
    assert not unknown, f"metrics.csv columns missing from fdpg_ray/train/metrics.py: {unknown}"
    assert list(df.columns[:len(M.FIRST_COLUMNS)]) == M.FIRST_COLUMNS
    # and the registry lists nothing such a run fails to write (conditional metrics and families aside)
    always = [m.name for m in M.METRICS if not m.family and (not m.condition or m.condition == "exact tasks")]
    assert [c for c in always if c not in df] == []
    for m in M.METRICS:
        if m.se and m.name in df:
            assert f"{m.name}_se" in df and f"{m.name}_ess" in df, m.name
    assert len(df) == 3 and all(math.isfinite(v) for v in df["kl_p_pi_base"])


def test_run_report_and_summary_read_the_registry(toy_run):
    from fdpg_ray.train.report import before_after, before_after_text, plot_run

    table = before_after(toy_run)
    assert list(table.index) == [c for c in M.SUMMARY_METRICS if c in pd.read_csv(toy_run / "metrics.csv")]
    assert before_after_text(toy_run).splitlines()[1].split()[0] == "alignment"
    paths = plot_run(toy_run)
    assert len(paths) == 1 and Path(paths[0]).is_file()


def _controller_metric_keys() -> list[tuple[int, str]]:
    """(line, name) of every metric name the controller spells out: the string keys of dict literals,
    ``m["name"] = ...`` targets and ``estimate_columns("name")`` arguments in the functions that
    build a metrics row.  f-string keys are taken with each substitution written as ``1``."""
    import ast

    tree = ast.parse((ROOT / "fdpg_ray" / "train" / "controller.py").read_text())
    writers = {"next_batch", "train_step", "metrics", "evaluation", "kl_p_pi_on_base_samples",
               "maybe_update_proposal", "run", "process_stats"}
    out = []

    def name_of(node):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.JoinedStr):
            return "".join(v.value if isinstance(v, ast.Constant) else "1" for v in node.values)
        return None

    for fn in ast.walk(tree):
        if not (isinstance(fn, ast.FunctionDef) and fn.name in writers):
            continue
        # the progress bar's display fields are not metrics.csv columns
        shown = {id(a) for c in ast.walk(fn) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
                 and getattr(c.func.value, "id", None) == "bar" for a in c.args}
        for node in ast.walk(fn):
            keys = []
            if isinstance(node, ast.Dict) and id(node) not in shown:
                keys = [k for k in node.keys if k is not None]
            elif isinstance(node, ast.DictComp):
                keys = [node.key]
            elif isinstance(node, ast.Assign):
                targets = [e for t in node.targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
                keys = [t.slice for t in targets if isinstance(t, ast.Subscript)]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "estimate_columns":
                keys = node.args[:1]
            out.extend((k.lineno, name_of(k)) for k in keys if name_of(k) is not None)
    return out


def test_every_metric_name_the_controller_spells_is_registered():
    keys = _controller_metric_keys()
    # the row's fixed names are all seen (a guard against this scan finding nothing)
    assert {"step", "loss", "alignment", "rollout_wait_seconds", "score_seconds", "self_bleu", "kl_p_q",
            "distinct_1", "feature_1", "sync_seconds", "rss_mib"} <= {k for _, k in keys}
    unknown = [f"controller.py:{line}: {k}" for line, k in keys if not M.known(k)]
    assert not unknown, f"metric names the registry (fdpg_ray/train/metrics.py) does not know: {unknown}"


def test_estimate_columns_come_from_the_registry():
    assert M.estimate_columns("kl_p_pi_base") == ("kl_p_pi_base", "kl_p_pi_base_se", "kl_p_pi_base_ess")
    for bad in ("loss", "no_such_metric"):  # no standard error / not registered
        with pytest.raises(KeyError):
            M.estimate_columns(bad)


def test_the_registry_states_the_flag_thresholds_the_estimators_use():
    """metrics.py imports nothing of the project (no torch), so the thresholds are written out
    in its text; they must be the ones fdpg_ray.objective.estimators applies."""
    from fdpg_ray.objective.estimators import MIN_BASE_SAMPLES, MIN_ESS

    assert f"below {MIN_BASE_SAMPLES}" in M.BY_NAME["base_samples"].meaning
    text = M.markdown()
    assert f"ESS below {MIN_ESS:.0f}" in text and f"fewer than {MIN_BASE_SAMPLES} samples" in text
