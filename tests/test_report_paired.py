"""Reports compare divergences by paired differences over seeds (issue 10): a synthetic
results table with a large seed effect shared by every divergence (as runs that share a
seed share the base batch) and a small, consistent difference between divergences."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


def test_t_quantile_matches_tables():
    from tuning.report import t_quantile

    # Student t 0.975 quantiles (any statistics table)
    for df, q in [(1, 12.7062), (2, 4.3027), (4, 2.7764), (9, 2.2622), (30, 2.0423)]:
        assert t_quantile(df) == pytest.approx(q, abs=1e-4)
    with pytest.raises(ValueError, match="df >= 1"):
        t_quantile(0)


def _final(seed_effect, diffs, seeds=range(5)):
    """One final row per (divergence, seed): value = seed_effect[s] + diffs[div][s]."""
    return pd.DataFrame([{"divergence": d, "run.seed": s, "exact_kl": seed_effect[s] + diffs[d][s]}
                         for d in diffs for s in seeds])


def test_paired_difference_interval_and_verdict_by_hand():
    from tuning.report import paired_differences

    effect = [0.0, 1.0, -1.0, 2.0, 0.5]          # shared by every divergence of a seed
    d_js = [-0.10, -0.12, -0.08, -0.11, -0.09]    # js - kl per seed
    final = _final(effect, {"kl": [0.0] * 5, "js": d_js, "tv": [0.3, -0.3, 0.2, -0.2, 0.0]})
    pairs = paired_differences(final, "exact_kl", way="lower").set_index(["a", "b"])
    # order of the divergences: kl, tv, js; pairs (kl, tv), (kl, js), (tv, js)
    assert list(pairs.index) == [("kl", "tv"), ("kl", "js"), ("tv", "js")]
    r = pairs.loc[("kl", "js")]
    d = -np.array(d_js)                            # kl - js
    half = 2.7764451 * d.std(ddof=1) / math.sqrt(5)
    assert r["n"] == 5
    assert r["mean"] == pytest.approx(d.mean(), abs=1e-12)
    assert (r["lo"], r["hi"]) == (pytest.approx(d.mean() - half, abs=1e-6), pytest.approx(d.mean() + half, abs=1e-6))
    assert r["verdict"] == "kl higher" and r["better"] == "js"
    # tv - kl: mean 0, wide interval -> no verdict either way
    assert pairs.loc[("kl", "tv"), "verdict"] == "no difference shown"
    assert pairs.loc[("kl", "tv"), "better"] == ""


def test_pairing_finds_a_difference_that_mean_and_std_hide():
    """Unpaired, the seed effect (sd about 1) swamps a 0.1 difference; paired, it cancels."""
    from tuning.report import paired_differences, shown_best

    effect = [0.0, 1.0, -1.0, 2.0, 0.5]
    final = _final(effect, {"kl": [0.0] * 5, "rkl": [0.2, 0.21, 0.19, 0.2, 0.22], "js": [-0.1, -0.11, -0.09, -0.1, -0.1]})
    means = final.groupby("divergence")["exact_kl"].agg(["mean", "std"])
    assert abs(means.loc["kl", "mean"] - means.loc["js", "mean"]) < means.loc["kl", "std"] / 5  # hidden unpaired
    pairs = paired_differences(final, "exact_kl", way="lower")
    assert set(pairs["better"]) == {"kl", "js"}
    assert shown_best(pairs) == "js"
    # the same table with the pairing broken (each divergence its own seeds) gives no pairs
    shifted = final.assign(**{"run.seed": final["run.seed"] + 10 * final["divergence"].map({"kl": 0, "rkl": 1, "js": 2})})
    assert (paired_differences(shifted, "exact_kl")["n"] == 0).all()
    assert shown_best(paired_differences(shifted, "exact_kl", way="lower")) is None


def test_one_seed_gives_no_interval_and_infinite_values_are_not_paired():
    from tuning.report import paired_differences

    final = pd.DataFrame([{"divergence": "kl", "run.seed": 0, "exact_rkl": 1.0},
                          {"divergence": "js", "run.seed": 0, "exact_rkl": 0.5},
                          {"divergence": "kl", "run.seed": 1, "exact_rkl": math.inf},
                          {"divergence": "js", "run.seed": 1, "exact_rkl": 0.4}])
    r = paired_differences(final, "exact_rkl", way="lower").iloc[0]
    assert (r["a"], r["b"], r["n"], r["verdict"], r["better"]) == ("kl", "js", 1, "n < 2", "")
    assert math.isnan(r["lo"]) and r["mean"] == pytest.approx(0.5)


def test_report_prints_the_rule_and_paired_tables(tmp_path):
    from tuning.report import PAIRED_RULE, write_report

    rows = []
    effect = [0.0, 1.0, -1.0]
    for i, (div, delta) in enumerate([("kl", 0.0), ("rkl", 0.3), ("js", -0.2)]):
        for s in range(3):
            for step in (0, 5):
                rows.append({"trial_id": f"t{i}{s}", "task": "toy", "divergence": div, "run.seed": s,
                             "state": "finished", "step": step, "exact_kl": 2.0 + effect[s] + (delta + 0.01 * s * (i + 1)) * step / 5,
                             "alignment": 0.5, "exact_kl_pi_a": 0.1 * step, "distinct_2": 0.5})
    sdir = tmp_path / "sw"
    sdir.mkdir()
    pd.DataFrame(rows).to_parquet(sdir / "results.parquet")
    (sdir / "sweep.json").write_text(json.dumps({"name": "p", "params": ["divergence", "run.seed"],
                                                 "grid": ["divergence", "run.seed"], "random": []}))
    text = Path(write_report(sdir)).read_text()
    assert PAIRED_RULE in text
    assert "| kl − rkl | 3 | -0.31 | [-0.335, -0.285] | kl lower |" in text
    assert "| kl − js | 3 | +0.18 | [+0.13, +0.23] | kl higher |" in text
    assert "KL(p‖π): js shown best (better than every other divergence)." in text
    # equal alignment everywhere: a zero difference with n = 3 has a zero-width interval at 0
    assert "alignment: no divergence shown best." in text


def test_exact_study_plateau_rule():
    """The exact study's plateau verdict: a fall is 'falling' only when it is material (>= 5%
    and >= 0.01 nats) and resolved (beyond 2 SE of the per-seed changes); noise is 'flat'."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from exact_study import plateau, plateau_verdict

    assert plateau_verdict(-0.002, -0.30, 0.001) == "flat"      # 30% of a tiny value: under 0.01 nats
    assert plateau_verdict(-0.04, -0.03, 0.001) == "flat"       # under 5%
    assert plateau_verdict(-0.10, -0.20, 0.08) == "flat"        # within 2 SE: not resolved
    assert plateau_verdict(-0.10, -0.20, 0.02) == "falling"
    assert plateau_verdict(+0.10, +0.20, 0.02) == "rising"
    rows = []
    for seed, (a, b) in enumerate([(1.0, 0.8), (1.0, 0.79), (1.0, 0.81)]):  # falls 0.2, SE ~0.006
        rows += [{"kind": "pointwise", "width": 64, "divergence": "kl", "seed": seed, "step": s, "exact_kl": v}
                 for s, v in [(0, 2.0), (60, a), (80, b)]]
    for seed, (a, b) in enumerate([(1.0, 0.6), (1.0, 1.4), (1.0, 0.8)]):  # falls 0.067, SE 0.24
        rows += [{"kind": "pointwise", "width": 64, "divergence": "tv", "seed": seed, "step": s, "exact_kl": v}
                 for s, v in [(0, 2.0), (60, a), (80, b)]]
    lines = plateau(pd.DataFrame(rows), order=lambda d: ["kl", "tv"].index(d))
    kl = next(line for line in lines if "| kl |" in line)
    tv = next(line for line in lines if "| tv |" in line)
    assert kl.endswith("| falling |") and "-0.200 ± 0.006" in kl
    assert tv.endswith("| flat |")


def test_exact_study_tables_are_well_formed_markdown(tmp_path):
    """Every row of the exact study's tables.md has as many cells as its table's header: a
    metric label holding '|' (the distributional target's distance to its moment) split its
    rows into extra columns."""
    import sys
    from argparse import Namespace

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "benchmarks"))
    from exact_study import tables

    data = root / "docs" / "study" / "exact3" / "half"
    keep = lambda d: d[(d["width"] == 64) & d["kind"].isin(["pointwise", "distributional"])  # noqa: E731
                       & d["divergence"].isin(["kl", "tv"])]
    for name in ("final.csv", "curves.csv"):
        keep(pd.read_csv(data / name)).to_csv(tmp_path / name, index=False)
    text = tables(Namespace(out=str(tmp_path)))
    assert "distributional" in text
    cells = lambda line: len(line.strip().strip("|").split("|"))  # noqa: E731
    header = None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
        elif header is None:
            header = cells(line)
        else:
            assert cells(line) == header, line
