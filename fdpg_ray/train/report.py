"""Plots and tables of one run (sweep reports live in tuning/report.py)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from fdpg_ray.train.metrics import BY_NAME, PLOT_METRICS, SUMMARY_METRICS, exact_divergence_columns

# (column, panel title) of the plot's panels: PLOT_METRICS of the metrics registry, titled by
# their display labels (with the unit where it is nats).
MAIN_CURVES = [(c, (BY_NAME[c].label or c) + (" (nats)" if BY_NAME[c].unit == "nats" else "")) for c in PLOT_METRICS]


def plot_run(run_dir: str | Path) -> list[str]:
    """PNG plots of the main curves of metrics.csv (PLOT_METRICS of :mod:`fdpg_ray.train.metrics`, then
    the exact divergences on exact tasks); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    df = pd.read_csv(run_dir / "metrics.csv")
    (run_dir / "plots").mkdir(exist_ok=True)
    curves = [(c, t) for c, t in MAIN_CURVES if c in df and df[c].notna().any()]
    exact = exact_divergence_columns(df.columns)
    panels = curves + ([("__exact__", "exact divergences (toy task)")] if exact else [])
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (col, title) in zip(axes.flat, panels):
        if col == "__exact__":
            for c in exact:
                d = df[["step", c]].dropna()
                ax.plot(d["step"], d[c], marker=".", label=c.removeprefix("exact_"))
            ax.set_yscale("log")
            ax.legend(fontsize=7)
        else:
            d = df[["step", col]].dropna()
            ax.plot(d["step"], d[col], marker=".", label=BY_NAME[col].note.removeprefix("importance-sampled "))
            if col == "kl_p_pi_base" and "kl_p_pi" in df:  # the noisy per-step estimate, for reference
                ax.plot(df["step"], df["kl_p_pi"], color="grey", alpha=0.35, lw=0.8,
                        label=BY_NAME["kl_p_pi"].note.removeprefix("importance-sampled "))
                ax.legend(fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    path = run_dir / "plots" / "curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [str(path)]


def before_after(run_dir: str | Path) -> pd.DataFrame:
    """First and last rows of metrics.csv for the main metrics (SUMMARY_METRICS of
    :mod:`fdpg_ray.train.metrics`, in that order, those present)."""
    df = pd.read_csv(Path(run_dir) / "metrics.csv")
    cols = [c for c in SUMMARY_METRICS if c in df]
    table = df.iloc[[0, -1]][cols].T
    table.columns = [f"before (step {int(df.step.iloc[0])})", f"after (step {int(df.step.iloc[-1])})"]
    return table


def before_after_text(run_dir: str | Path) -> str:
    """The before/after table as printed at the end of a run: each importance-sampled value
    as ``estimate +- SE``, marked ``?`` when its effective sample size is below
    :data:`fdpg_ray.objective.estimators.MIN_ESS`, with a footnote saying why."""
    from fdpg_ray.objective.estimators import MAX_MASS_ERROR, MIN_BASE_SAMPLES, MIN_ESS, untrusted

    df = pd.read_csv(Path(run_dir) / "metrics.csv")
    table = before_after(run_dir)
    rows = df.iloc[[0, -1]]
    cells, flagged = {}, False
    for col_name, (_, row) in zip(table.columns, rows.iterrows()):
        cells[col_name] = []
        for metric in table.index:
            v = row[metric]
            text = f"{v:.4f}"
            se = row.get(f"{metric}_se")
            if se is not None and pd.notna(se) and math.isfinite(v):
                text += f" ± {se:.4f}"
            if pd.notna(v) and untrusted({k: x for k, x in row.items() if pd.notna(x)}, metric):
                text += " ?"
                flagged = True
            cells[col_name].append(text)
    out = pd.DataFrame(cells, index=table.index).to_string()
    if flagged:
        out += (f"\n? not to be trusted: effective sample size below {MIN_ESS:.0f} (k3 also when its samples' "
                f"share of a's mass is further than {MAX_MASS_ERROR} from 1; *_base also when the base batch has "
                f"fewer than {MIN_BASE_SAMPLES} samples: docs/estimators.md)")
    return out
