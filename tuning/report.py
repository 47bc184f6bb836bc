"""Render a sweep: ``fdpg-ray report SWEEP_DIR [--out FILE]``.

Reads SWEEP_DIR/results.parquet (written by :mod:`tuning.sweep`) and writes Markdown with
PNG figures next to it:

* a table per task (and per value of any other swept key): divergences as rows, the final
  step's KL(p‖π), alignment, KL(π‖a), Distinct-2 and Self-BLEU as mean ± std over seeds;
* learning curves: a metric against the step, one line per divergence (mean over seeds,
  band = ± std);
* the alignment-versus-drift trade-off: final alignment against final KL(π‖a), one point
  per run, coloured by divergence;
* scaling plots when ``model.path`` was swept: a metric against the model's parameter
  count, one line per divergence, and the order of the divergences at each size.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path

import pandas as pd

from fdpg_ray.config import ConfigError
from fdpg_ray.sink import atomic_write_text

# (label, candidate columns in order of preference, note for each)
TABLE_METRICS = [
    ("KL(p‖π)", [("exact_kl", "exact, enumerated sequence space"),
                 ("kl_p_pi_base", "importance-sampled on base-model samples"),
                 ("kl_p_pi", "importance-sampled on policy samples")]),
    ("alignment", [("alignment", "E_π[b] or E_π[φ]")]),
    ("KL(π‖a)", [("exact_kl_pi_a", "exact"), ("kl_pi_a", "on policy samples")]),
    ("Distinct-2", [("distinct_2", "")]),
    ("Self-BLEU", [("self_bleu", "")]),
]
CURVE_METRICS = ["KL(p‖π)", "alignment", "KL(π‖a)", "Distinct-2"]
SCALING_METRICS = ["KL(p‖π)", "alignment", "KL(π‖a)"]
# Keys that are not a "setting" of a table: rows (divergence), repeats (seeds), sections (task).
NOT_SETTINGS = {"divergence", "run.seed", "task"}
DIVERGENCE_ORDER = ["kl", "rkl", "tv", "js", "hellinger", "chi2"]


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
    sdir = Path(sweep_dir)
    path = sdir / "results.parquet"
    if not path.is_file():
        raise ReportError(f"sweep_dir: '{sdir}' has no results.parquet; run `fdpg-ray sweep` first "
                          f"(or `fdpg-ray sweep SWEEP.yaml --resume --sweep-dir {sdir}` to finish it)")
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


def _plot_curves(gd: pd.DataFrame, metric_cols: dict, path: Path, title: str) -> str | None:
    import matplotlib.pyplot as plt

    panels = [(label, metric_cols[label][0]) for label in CURVE_METRICS if metric_cols[label][0]]
    panels = [(lab, c) for lab, c in panels if c in gd and gd[c].notna().any()]
    if not panels:
        return None
    colors = _colors(gd["divergence"].astype(str).unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.2), squeeze=False)
    for ax, (label, col) in zip(axes.flat, panels):
        for div in sorted(colors, key=_div_key):
            d = gd[gd["divergence"].astype(str) == div][["step", col]].dropna()
            if d.empty:
                continue
            s = d.groupby("step")[col].agg(["mean", "std", "count"]).reset_index()
            ax.plot(s["step"], s["mean"], marker=".", color=colors[div], label=div)
            band = s["count"] > 1
            if band.any():
                ax.fill_between(s["step"][band], (s["mean"] - s["std"])[band], (s["mean"] + s["std"])[band],
                                color=colors[div], alpha=0.15, lw=0)
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8, title="divergence", title_fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _plot_tradeoff(gf: pd.DataFrame, metric_cols: dict, path: Path, title: str) -> str | None:
    import matplotlib.pyplot as plt

    a, k = metric_cols["alignment"][0], metric_cols["KL(π‖a)"][0]
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
    ax.set_xlabel("KL(π‖a)  (drift from the base model)")
    ax.set_ylabel("alignment")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, title="divergence", title_fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _plot_scaling(gf: pd.DataFrame, metric_cols: dict, path: Path, title: str) -> str | None:
    import matplotlib.pyplot as plt

    if "model_params" not in gf or gf["model_params"].isna().all():
        return None
    panels = [(label, metric_cols[label][0]) for label in SCALING_METRICS if metric_cols[label][0]]
    if not panels:
        return None
    colors = _colors(gf["divergence"].astype(str).unique())
    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.2), squeeze=False)
    for ax, (label, col) in zip(axes.flat, panels):
        for div in sorted(colors, key=_div_key):
            d = gf[gf["divergence"].astype(str) == div][["model_params", col]].dropna()
            if d.empty:
                continue
            s = d.groupby("model_params")[col].agg(["mean", "std"]).reset_index().sort_values("model_params")
            ax.errorbar(s["model_params"], s["mean"], yerr=s["std"].fillna(0), marker="o", capsize=3,
                        color=colors[div], label=div)
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8, title="divergence", title_fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# Metrics whose ordering of divergences is compared across model sizes, and which way is better.
ORDERING_METRICS = [("KL(p‖π)", "lowest"), ("alignment", "highest")]


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

    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png", dir=path.parent)
    os.close(fd)
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)
    return str(path)
