"""Render a sweep: ``fdpg-ray report SWEEP_DIR [--out FILE]``.

Reads SWEEP_DIR/results.parquet (written by :mod:`tuning.results`) and writes Markdown with
PNG figures next to it:

* a table per task (and per value of any other swept key): divergences as rows, the final
  step's KL(p‖π), alignment, KL(π‖a), Distinct-2 and Self-BLEU as mean ± std over seeds;
* learning curves: a metric against the step, one line per divergence (mean over seeds,
  band = ± std);
* the alignment-versus-drift trade-off: final alignment against final KL(π‖a), one point
  per run, coloured by divergence;
* scaling plots when ``model.path`` was swept: a metric against the model's parameter
  count, one line per divergence, and the order of the divergences at each size;
* paired differences: every pair of divergences compared on the runs that share a seed
  (and hence, with seeds derived per stream, the same base-model batch, the same initial
  weights and the same rollout seeds), with a 95% t-interval over seeds and the rule
  :data:`PAIRED_RULE` for which is lower or higher (:func:`paired_differences`).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pandas as pd

from fdpg_ray.config import ConfigError
from fdpg_ray.atomic import atomic_write, atomic_write_text
from fdpg_ray.train.metrics import BY_NAME as METRIC_BY_NAME, COMPARISONS, label_of

# The quantities compared, from the metrics registry (fdpg_ray/train/metrics.py, COMPARISONS):
# (label, candidate columns in order of preference, note for each)
TABLE_METRICS = [(c.label, [(col, METRIC_BY_NAME[col].note) for col in c.columns]) for c in COMPARISONS]
CURVE_METRICS = [c.label for c in COMPARISONS if c.curves]
SCALING_METRICS = [c.label for c in COMPARISONS if c.scaling]
# Keys that are not a "setting" of a table: rows (divergence), repeats (seeds), sections (task).
NOT_SETTINGS = {"divergence", "run.seed", "task"}
DIVERGENCE_ORDER = ["kl", "rkl", "tv", "js", "hellinger", "chi2"]


# (label, way): the metrics compared by paired differences; ``way`` names the better
# direction ("lower" / "higher") or None where neither direction is better (drift).
PAIRED_METRICS = [(c.label, c.better) for c in COMPARISONS if c.paired]
PAIRED_RULE = ("Divergences are compared by paired differences: for divergences A and B, d_s = M_A(s) − M_B(s) "
               "over the n seeds s that both ran with the same other settings (runs that differ only in the "
               "divergence share the seed, hence the base-model batch, the initial weights and the rollout seeds); "
               "the 95% confidence interval is mean(d) ± t(0.975, n−1)·sd(d)/√n. A is shown lower (higher) than B "
               "on M when the whole interval lies below (above) 0; otherwise the verdict is \"no difference "
               "shown\"; with n < 2 there is no interval and no verdict. Better means lower KL(p‖π), higher "
               "alignment (pointwise and reward targets; for a distributional target, compare alignment "
               "with its moment instead), higher Distinct-2 (more diverse); KL(π‖a) (drift) has no better "
               "direction. \"X shown best on M\" means X beats every other divergence of the table by this rule.")


def t_quantile(df: int, p: float = 0.975) -> float:
    """The p-quantile of Student's t with ``df`` >= 1 degrees of freedom (e.g. 12.706 for
    df = 1, 2.776 for df = 4), by bisection on the CDF 1 − ½·I_{df/(df+t²)}(df/2, ½)
    (mpmath's regularised incomplete beta; mpmath ships with torch's sympy).

    Raises:
        ValueError: if df < 1 or p is not in (0.5, 1).
    """
    import mpmath

    if df < 1 or not 0.5 < p < 1:
        raise ValueError(f"t_quantile: need df >= 1 and 0.5 < p < 1, got df={df}, p={p}")
    cdf = lambda t: 1 - 0.5 * mpmath.betainc(df / 2, 0.5, 0, df / (df + t * t), regularized=True)  # noqa: E731
    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        hi *= 2
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


def paired_differences(final: pd.DataFrame, col: str, *, by: str = "divergence", pair_on: str = "run.seed",
                       way: str | None = None, order=None, level: float = 0.95) -> pd.DataFrame:
    """Every pair (A, B) of the values of ``by`` (A before B in ``order``, default the
    divergences' order) compared by the paired difference of ``col``:

        d_s = M_A(s) − M_B(s)  for the values s of ``pair_on`` that both A and B have,
        mean ± t(1 − (1 − level)/2, n − 1) · sd(d)/√n   (Student t-interval over the n pairs).

    Several runs of one (A, s) (e.g. Tune's num_samples > 1) are averaged first; runs whose
    ``col`` is missing or NaN are left out.  +inf values (an exact divergence that is
    infinite) make the difference undefined: such a pair gets n = 0 of finite pairs.

    Returns one row per pair: ``a, b, n, mean, sd, lo, hi, verdict`` where verdict is
    "A lower" / "A higher" (interval entirely below / above 0), "no difference shown", or
    "n < 2" (no interval); ``better`` names the better of the two by ``way`` ("lower" /
    "higher") when the interval excludes 0, else "".  Units: those of ``col``.
    """
    cols = ["a", "b", "n", "mean", "sd", "lo", "hi", "verdict", "better"]
    if col not in final or pair_on not in final or final[pair_on].isna().all():
        return pd.DataFrame(columns=cols)
    d = final[[by, pair_on, col]].copy()
    d[by] = d[by].astype(str)
    d[col] = pd.to_numeric(d[col], errors="coerce")
    d = d[d[col].notna() & d[col].map(lambda v: math.isfinite(v))]
    table = d.groupby([pair_on, by])[col].mean().unstack(by)
    names = list(table.columns)
    names = sorted(names, key=order or _div_key)
    rows = []
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            diff = (table[a] - table[b]).dropna()
            n = len(diff)
            mean = float(diff.mean()) if n else math.nan
            sd = float(diff.std(ddof=1)) if n > 1 else math.nan
            if n < 2:
                lo = hi = math.nan
                verdict, better = "n < 2", ""
            else:
                half = t_quantile(n - 1, 1 - (1 - level) / 2) * sd / math.sqrt(n)
                lo, hi = mean - half, mean + half
                if hi < 0:
                    verdict = f"{a} lower"
                elif lo > 0:
                    verdict = f"{a} higher"
                else:
                    verdict = "no difference shown"
                better = ""
                if way in ("lower", "higher") and verdict != "no difference shown":
                    a_lower = hi < 0
                    better = a if a_lower == (way == "lower") else b
            rows.append({"a": a, "b": b, "n": n, "mean": mean, "sd": sd, "lo": lo, "hi": hi,
                         "verdict": verdict, "better": better})
    return pd.DataFrame(rows, columns=cols)


def shown_best(pairs: pd.DataFrame) -> str | None:
    """The value that is better than every other one by the paired rule, or None."""
    if pairs.empty:
        return None
    names = sorted(set(pairs["a"]) | set(pairs["b"]), key=_div_key)
    for x in names:
        mine = pairs[(pairs["a"] == x) | (pairs["b"] == x)]
        if len(mine) == len(names) - 1 and (mine["better"] == x).all():
            return x
    return None


def _num(v: float) -> str:
    if v is None or not math.isfinite(v):
        return "–"
    return f"{v:+.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:+.2e}"


def paired_table(final: pd.DataFrame, metric_cols: dict, metrics=None) -> list[str]:
    """Markdown: for each metric of PAIRED_METRICS present, every pair of divergences with the
    mean paired difference, its 95% CI, n and the verdict; then which divergence (if any) is
    shown best."""
    lines: list[str] = []
    for label, way in (metrics or PAIRED_METRICS):
        col = metric_cols.get(label, (None, None))[0]
        if not col:
            continue
        pairs = paired_differences(final, col, way=way)
        if pairs.empty:
            continue
        if not lines:
            lines = ["**Paired differences over seeds** (A − B of the final value, 95% t-interval; n = seeds "
                     "both ran; rule above)", ""]
        lines += [f"{label} (`{col}`" + (f", {way} is better" if way else ", no better direction") + ")", "",
                  "| A − B | n | mean | 95% CI | verdict |", "|---|---:|---:|---|---|"]
        for _, r in pairs.iterrows():
            ci = f"[{_num(r['lo'])}, {_num(r['hi'])}]" if r["n"] >= 2 else "–"
            lines.append(f"| {r['a']} − {r['b']} | {r['n']} | {_num(r['mean'])} | {ci} | {r['verdict']} |")
        lines.append("")
        if way:
            best = shown_best(pairs)
            lines += [f"{label}: " + (f"{best} shown best (better than every other divergence)." if best
                                      else "no divergence shown best."), ""]
    return lines


class ReportError(ConfigError):
    """The sweep directory holds nothing to report; one line naming the fix."""


def _pick(df: pd.DataFrame, candidates):
    for col, note in candidates:
        if col in df and df[col].notna().any():
            return col, note
    return None, None


def _div_key(name: str):
    name = str(name)
    return (DIVERGENCE_ORDER.index(name), "") if name in DIVERGENCE_ORDER else (len(DIVERGENCE_ORDER), name)


def _fmt(mean: float, std: float, n: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    digits = 4 if abs(mean) < 10 else 2
    if n < 2 or std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")[:80] or "all"


def _settings_label(keys: list[str], values: tuple) -> str:
    return ", ".join(f"{k}={v}" for k, v in zip(keys, values))


def load_results(sweep_dir: str | os.PathLike) -> tuple[pd.DataFrame, dict]:
    """(per-step results table, sweep.json metadata or {}) of a sweep directory; adds missing key columns.

    Raises ReportError when SWEEP_DIR/results.parquet is missing or holds no rows.
    """
    sdir = Path(sweep_dir)
    path = sdir / "results.parquet"
    if not path.is_file():
        if (sdir / "config.yaml").is_file() and (sdir / "metrics.csv").is_file():
            raise ReportError(f"sweep_dir: '{sdir}' is a training run, not a sweep; its table is in summary.json and "
                              f"its plots in plots/ (`fdpg-ray report` reads a folder written by `fdpg-ray sweep`)")
        if (sdir / "sweep.json").is_file():  # a sweep that stopped before its first result
            raise ReportError(f"sweep_dir: '{sdir}' has no results.parquet yet; finish the sweep with "
                              f"`fdpg-ray sweep SWEEP.yaml --resume --sweep-dir {sdir}`")
        raise ReportError(f"sweep_dir: '{sdir}' is not a sweep directory (no results.parquet); give the folder "
                          f"`fdpg-ray sweep` wrote (sweeps/NAME by default)")
    df = pd.read_parquet(path)
    if df.empty:
        raise ReportError(f"sweep_dir: '{sdir}/results.parquet' holds no rows; no trial reported a step yet")
    meta = json.loads((sdir / "sweep.json").read_text()) if (sdir / "sweep.json").is_file() else {}
    for col in ("task", "divergence", "run.seed", "model.path"):
        if col not in df:
            df[col] = "run" if col == "task" else None
    return df, meta


def final_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Each trial's final values: the last step's, and for metrics measured only at
    evaluation steps, the last evaluation's (a run stopped early by a scheduler or an
    interruption may end between two evaluations). ``final_step`` is the last step."""
    d = df.sort_values(["trial_id", "step"], kind="stable")
    out = d.groupby("trial_id", sort=True).last()  # last non-null value of each column
    out["final_step"] = d.groupby("trial_id")["step"].max()
    return out.reset_index()


def write_report(sweep_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> str:
    """Write the Markdown report (and its PNGs next to it); returns the Markdown path."""
    import matplotlib

    matplotlib.use("Agg")

    df, meta = load_results(sweep_dir)
    sdir = Path(sweep_dir)
    out = Path(out) if out is not None else sdir / "report.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    stem = out.stem
    swept = [k for k in meta.get("params", []) if k in df]
    # Tables and figures are drawn per value of the other *grid* keys (model, lr, ...);
    # randomly searched keys are listed per run instead.
    settings = [k for k in meta.get("grid", swept) if k in df and k not in NOT_SETTINGS]
    random_keys = [k for k in meta.get("random", []) if k in df]
    final = final_rows(df)

    metric_cols = {label: _pick(final, cands) for label, cands in TABLE_METRICS}
    lines = [f"# Sweep report: {meta.get('name', sdir.name)}", ""]
    states = final["state"].value_counts().to_dict() if "state" in final else {}
    lines += [f"{len(final)} runs ({', '.join(f'{n} {s}' for s, n in sorted(states.items())) or 'state unknown'}); "
              f"swept: {', '.join(f'`{k}`' for k in swept) or '(unknown)'}; source: `{sdir / 'results.parquet'}`.", ""]
    lines += ["Tables: the final step of each run, mean ± std over seeds (n = runs). Metric sources: "
              + "; ".join(f"{label}: `{col}`" + (f" ({note})" if note else "")
                          for label, (col, note) in metric_cols.items() if col) + ".", ""]
    if "run.seed" in final and final["run.seed"].notna().any() and final["divergence"].nunique() > 1:
        lines += [PAIRED_RULE, ""]
    best = _best_line(final, meta)
    if best:
        lines += [best, ""]

    images: list[str] = []
    for task in sorted(final["task"].astype(str).unique()):
        tf = final[final["task"].astype(str) == task]
        td = df[df["task"].astype(str) == task]
        lines += [f"## Task: {task}", ""]
        groups = [((), tf)] if not settings else list(tf.groupby(settings, dropna=False, sort=True))
        for values, gf in groups:
            values = values if isinstance(values, tuple) else (values,)
            label = _settings_label(settings, values)
            if label:
                lines += [f"### {label}", ""]
            lines += _table(gf, metric_cols) + [""]
            lines += paired_table(gf, metric_cols)
            unfinished = gf[gf["state"].astype(str) != "finished"] if "state" in gf else gf.iloc[:0]
            if len(unfinished):
                lines += [f"{len(unfinished)} of these runs did not finish (stopped early or interrupted; last "
                          f"step {', '.join(str(int(x)) for x in unfinished['final_step'])}): their last values "
                          f"are included.", ""]
            gd = td[td["trial_id"].isin(gf["trial_id"])]
            name = _slug(f"{stem}-{task}" + (f"-{label}" if label else ""))
            curves = _plot_curves(gd, metric_cols, out.parent / f"{name}-curves.png",
                                  f"{task}" + (f" ({label})" if label else ""))
            trade = _plot_tradeoff(gf, metric_cols, out.parent / f"{name}-tradeoff.png",
                                   f"{task}" + (f" ({label})" if label else ""))
            for title, img in (("Learning curves (mean over seeds, band ± std)", curves),
                               ("Alignment against drift KL(π‖a), final step, one point per run", trade)):
                if img:
                    images.append(img)
                    lines += [f"**{title}**", "", f"![{title}]({os.path.relpath(img, out.parent)})", ""]
        if "model.path" in swept and tf["model.path"].nunique() > 1:
            others = [k for k in settings if k != "model.path"]
            sgroups = [((), tf)] if not others else list(tf.groupby(others, dropna=False, sort=True))
            for values, gf in sgroups:
                values = values if isinstance(values, tuple) else (values,)
                label = _settings_label(others, values)
                name = _slug(f"{stem}-{task}" + (f"-{label}" if label else "") + "-scaling")
                img = _plot_scaling(gf, metric_cols, out.parent / f"{name}.png",
                                    f"{task}" + (f" ({label})" if label else ""))
                if img:
                    images.append(img)
                    title = "Scaling: final metric against model size" + (f" ({label})" if label else "")
                    lines += [f"**{title}**", "", _sizes_line(gf), "",
                              f"![{title}]({os.path.relpath(img, out.parent)})", ""]
                lines += _ordering_table(gf, metric_cols)
    if random_keys:
        lines += _random_section(final, random_keys, metric_cols, meta)
    atomic_write_text(out, "\n".join(lines).rstrip() + "\n")
    return str(out)


def _best_line(final: pd.DataFrame, meta: dict) -> str | None:
    metric, mode = meta.get("metric"), meta.get("mode", "min")
    if not metric or metric not in final or final[metric].isna().all():
        return None
    row = final.loc[final[metric].idxmin() if mode == "min" else final[metric].idxmax()]
    keys = [k for k in meta.get("params", []) if k in final]
    return (f"Best run by final `{metric}` ({mode}): {row[metric]:.4g} with "
            + ", ".join(f"{k}={row[k]}" for k in keys) + f" (`{row.get('run_dir', row['trial_id'])}`).")


def _random_section(final: pd.DataFrame, keys: list[str], metric_cols: dict, meta: dict) -> list[str]:
    """Every run with its randomly drawn values, best first by the sweep's metric."""
    metric, mode = meta.get("metric"), meta.get("mode", "min")
    cols = [c for c, _ in metric_cols.values() if c]
    sort = metric if metric in final else cols[0]
    f = final.sort_values(sort, ascending=mode == "min", na_position="last")
    shown = list(dict.fromkeys(["task", "divergence", "run.seed", *keys, *([sort] if sort not in cols else []), *cols]))
    lines = ["## Random search", "", f"Final step of every run, sorted by `{sort}` ({mode}).", "",
             "| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    for _, r in f.iterrows():
        lines.append("| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in shown) + " |")
    return lines + [""]


def _table(gf: pd.DataFrame, metric_cols: dict) -> list[str]:
    labels = [label for label, (col, _) in metric_cols.items() if col]
    header = "| divergence | n | " + " | ".join(labels) + " |"
    rule = "|---|---:|" + "---:|" * len(labels)
    rows = [header, rule]
    for div in sorted(gf["divergence"].astype(str).unique(), key=_div_key):
        d = gf[gf["divergence"].astype(str) == div]
        cells = []
        for label in labels:
            col = metric_cols[label][0]
            v = d[col].dropna().astype(float)
            cells.append(_fmt(v.mean() if len(v) else math.nan, v.std(ddof=1) if len(v) > 1 else math.nan, len(v)))
        rows.append(f"| {div} | {len(d)} | " + " | ".join(cells) + " |")
    return rows


def _colors(divs):
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10")
    return {d: cmap(i % 10) for i, d in enumerate(sorted(divs, key=_div_key))}


def _panels_by_divergence(frame: pd.DataFrame, panels: list[tuple[str, str]], x: str, path: Path, title: str,
                          draw, log_x: bool = False) -> str:
    """One panel per (label, column), one series per divergence: ``draw(ax, stats, color, div)``
    plots the mean and spread over seeds (``stats``: columns x, mean, std, count)."""
    import matplotlib.pyplot as plt

    colors = _colors(frame["divergence"].astype(str).unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.2), squeeze=False)
    for ax, (label, col) in zip(axes.flat, panels):
        for div in sorted(colors, key=_div_key):
            d = frame[frame["divergence"].astype(str) == div][[x, col]].dropna()
            if not d.empty:
                draw(ax, d.groupby(x)[col].agg(["mean", "std", "count"]).reset_index().sort_values(x), colors[div], div)
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel("parameters" if x == "model_params" else x)
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8, title="divergence", title_fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _plot_curves(gd: pd.DataFrame, metric_cols: dict, path: Path, title: str) -> str | None:
    panels = [(label, metric_cols[label][0]) for label in CURVE_METRICS if metric_cols[label][0]]
    panels = [(lab, c) for lab, c in panels if c in gd and gd[c].notna().any()]
    if not panels:
        return None

    def draw(ax, s, color, div):
        ax.plot(s["step"], s["mean"], marker=".", color=color, label=div)
        band = s["count"] > 1
        if band.any():
            ax.fill_between(s["step"][band], (s["mean"] - s["std"])[band], (s["mean"] + s["std"])[band],
                            color=color, alpha=0.15, lw=0)

    return _panels_by_divergence(gd, panels, "step", path, title, draw)


def _plot_tradeoff(gf: pd.DataFrame, metric_cols: dict, path: Path, title: str) -> str | None:
    import matplotlib.pyplot as plt

    a, k = metric_cols[label_of("alignment")][0], metric_cols[label_of("kl_pi_a")][0]
    if not a or not k:
        return None
    d = gf[["divergence", a, k]].dropna()
    if d.empty:
        return None
    colors = _colors(d["divergence"].astype(str).unique())
    fig, ax = plt.subplots(figsize=(4.8, 3.8))
    for div in sorted(colors, key=_div_key):
        e = d[d["divergence"].astype(str) == div]
        ax.scatter(e[k], e[a], color=colors[div], label=div, s=36, alpha=0.85, edgecolor="k", lw=0.4)
    ax.set_xlabel(f"{label_of('kl_pi_a')}  (drift from the base model)")
    ax.set_ylabel(label_of("alignment"))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="divergence", title_fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _plot_scaling(gf: pd.DataFrame, metric_cols: dict, path: Path, title: str) -> str | None:
    if "model_params" not in gf or gf["model_params"].isna().all():
        return None
    panels = [(label, metric_cols[label][0]) for label in SCALING_METRICS if metric_cols[label][0]]
    if not panels:
        return None

    def draw(ax, s, color, div):
        ax.errorbar(s["model_params"], s["mean"], yerr=s["std"].fillna(0), marker="o", capsize=3, color=color, label=div)

    return _panels_by_divergence(gf, panels, "model_params", path, title, draw, log_x=True)


# Metrics whose ordering of divergences is compared across model sizes, and which way is better.
ORDERING_METRICS = [(c.label, {"lower": "lowest", "higher": "highest"}[c.better]) for c in COMPARISONS if c.ordering]


def _ordering_table(gf: pd.DataFrame, metric_cols: dict) -> list[str]:
    """Per model size, the divergences ordered by their mean final value, best first, and
    whether the order (and the best divergence) is the same at every size."""
    panels = [(label, metric_cols[label][0], way) for label, way in ORDERING_METRICS if metric_cols[label][0]]
    if not panels or gf["model.path"].nunique() < 2:
        return []
    sizes = gf[["model.path", "model_params"]].drop_duplicates("model.path").sort_values("model_params")
    lines = ["**Ordering of the divergences at each model size** (mean of the final step over seeds, best first)", "",
             "| model | " + " | ".join(f"{label}, {way} first" for label, _, way in panels) + " |",
             "|---|" + "---|" * len(panels)]
    orders: dict[str, list[tuple[str, ...]]] = {label: [] for label, _, _ in panels}
    for model in sizes["model.path"]:
        cells = []
        for label, col, way in panels:
            means = gf[gf["model.path"] == model].groupby(gf["divergence"].astype(str))[col].mean().dropna()
            means = means.reindex(sorted(means.index, key=_div_key))  # ties keep the tables' order
            means = means.sort_values(ascending=way == "lowest", kind="stable")
            orders[label].append(tuple(means.index))
            cells.append(" · ".join(f"{d} {v:.3g}" for d, v in means.items()))
        lines.append(f"| `{model}` | " + " | ".join(cells) + " |")
    lines.append("")
    for label, _, _ in panels:
        seen = [o for o in orders[label] if o]
        if len(seen) < 2:
            continue
        same = len(set(seen)) == 1
        best = sorted({o[0] for o in seen})
        lines.append(f"{label}: the order is {'the same' if same else 'not the same'} at every size; "
                     + (f"best at every size: {best[0]}." if len(best) == 1 else f"the best differs ({', '.join(best)})."))
    return lines + [""]


def _sizes_line(gf: pd.DataFrame) -> str:
    sizes = gf[["model.path", "model_params"]].drop_duplicates().sort_values("model_params")
    return "Model sizes: " + ", ".join(
        f"`{r['model.path']}` = {r['model_params'] / 1e6:.2f}M" if not math.isnan(r["model_params"])
        else f"`{r['model.path']}` = unknown" for _, r in sizes.iterrows()) + "."


def _save(fig, path: Path) -> str:
    import matplotlib.pyplot as plt

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110))
    finally:
        plt.close(fig)
    return str(path)
