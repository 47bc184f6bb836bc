"""The metrics registry: every column a run writes to metrics.csv, in one place.

Each :class:`Metric` says what a column means, its unit, how it is estimated, which
direction is better and, where reports show it, its display label.  The consumers read
their lists from here: the sink's first columns (:data:`FIRST_COLUMNS`), the sweep's metric
check (:func:`tune_metric_kind`), the sweep report's tables, curves and paired differences
(:data:`COMPARISONS`), a run's before/after table (:data:`SUMMARY_METRICS`) and plots
(:data:`PLOT_METRICS`).

Families: ``feature_<name>`` (one per constraint), ``exact_<divergence>`` (exact tasks),
and ``<name>_se`` / ``<name>_ess`` for every metric with ``se=True`` (standard error in
the metric's unit; Kish effective sample size, a count).

``python -m fdpg_ray.train.metrics --markdown [--out docs/metrics.md]`` writes the table of every
metric; tests/test_metrics_registry.py fails when docs/metrics.md is out of date.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

# Units of a metric's value.
UNITS = {
    "nats": "natural-log units (divergences, log-densities)",
    "share": "a fraction in [0, 1]",
    "tokens": "generated tokens",
    "seconds": "wall-clock seconds",
    "MiB": "mebibytes (2^20 bytes)",
    "count": "a number of things (steps, samples, effective samples, file descriptors)",
    "ratio": "a dimensionless ratio of densities or a plain number",
    "score": "the constraint's own scale: a share for b(x) in {0, 1}, phi's or r's units otherwise",
}

# How a metric's value is obtained.
ESTIMATES = {
    "exact": "computed exactly by enumerating the sequence space (exact tasks only)",
    "importance-sampled": "importance-sampling estimate from samples, with standard error (_se) and Kish "
                          "effective sample size (_ess) where the metric has them",
    "plain mean": "mean over the step's batch (or the evaluation batch); no importance weights",
    "timing": "wall-clock time measured in the process that did the work",
    "state": "a counter or setting of the run, or a quantity of the update itself",
}

BETTER = ("lower", "higher", None)
WHEN = {"step": "every step", "eval": "evaluation steps only (run.eval_every and the last step)"}


@dataclass(frozen=True)
class Metric:
    """One metrics.csv column (or a family of them: ``name`` holds ``<...>``).

    ``unit`` is a key of :data:`UNITS`, ``estimate`` of :data:`ESTIMATES`, ``when`` of
    :data:`WHEN`; ``better`` is "lower", "higher" or None (no better direction);
    ``se``: the run also writes ``<name>_se`` (same unit) and ``<name>_ess`` (count);
    ``label``: the display label reports use (e.g. "KL(p‖π)"), shared by the estimates of one
    quantity; ``note``: how the estimate is made, in a few words, shown beside the label;
    ``tune``: a sweep may optimise it (reported to Tune); ``condition``: when it is present
    at all, if not always; ``first``: one of the sink's fixed first columns (:data:`FIRST_COLUMNS`).
    """
    name: str
    meaning: str
    unit: str
    estimate: str
    better: str | None = None
    when: str = "step"
    se: bool = False
    label: str | None = None
    note: str = ""
    tune: bool = False
    condition: str = ""
    first: bool = False
    results_name: str | None = None  # the column's name in a sweep's results (tuning/results.py)

    @property
    def family(self) -> bool:
        """Whether ``name`` is a pattern (``feature_<name>``, ``exact_<divergence>``)."""
        return "<" in self.name

    @property
    def prefix(self) -> str:
        """The fixed part of a family's name (``feature_``), or the whole name."""
        return self.name.split("<", 1)[0]


_IS = "importance-sampled"
_KL_P_PI, _KL_PI_A = "KL(p‖π)", "KL(π‖a)"

# Registry order: the sink's first columns in their metrics.csv order, then the rest.
METRICS: tuple[Metric, ...] = (
    # -- the sink's first columns, in order -------------------------------------------------
    Metric("step", "step index k; row k is measured on the batch sampled from θ_k before its update, the last "
           "row is the final policy (no update)", "count", "state", tune=True, first=True),
    Metric("samples", "samples seen by the learner so far", "count", "state", tune=True, first=True),
    Metric("loss", "f-DPG loss −mean_i w_i (r_i − B) log π_θ(x_i) of the step (before the update)", "ratio", "state",
           tune=True, first=True),
    Metric("z_hat", "running partition-function estimate Ẑ = mean P(x)/q(x) over every sample seen "
           "(exp of log_z_hat, for display; +inf beyond the float range)", "ratio", _IS, tune=True, first=True),
    Metric("alignment", "mean over the target's constraints of E_π[feature]: E_π[b] (pointwise), E_π[φ] "
           "(distributional; compare with its moment), E_π[r] (reward)", "score", "plain mean", "higher",
           label="alignment", note="E_π[b] or E_π[φ]", tune=True, first=True),
    Metric("kl_p_pi", "KL(p‖π) from the step's policy samples with Ẑ plugged in (blind to p's mass where π no "
           "longer samples)", "nats", _IS, "lower", se=True, label=_KL_P_PI,
           note="importance-sampled on policy samples", tune=True, first=True),
    Metric("kl_p_pi_base", "KL(p‖π) by multiple importance sampling over the fixed base-model samples pooled with "
           "on-policy batches, self-normalised per context: the number to compare runs by", "nats", _IS, "lower",
           when="eval", se=True, label=_KL_P_PI, note="importance-sampled on base-model samples", tune=True,
           first=True),
    Metric("tv_p_pi", "total variation TV(p, π) from the step's policy samples", "share", _IS, "lower", se=True,
           label="TV(p, π)", tune=True, first=True),
    Metric("js_p_pi", "Jensen–Shannon JS(p, π) from the step's policy samples", "nats", _IS, "lower", se=True,
           label="JS(p, π)", tune=True, first=True),
    Metric("kl_pi_a", "KL(π‖a), drift from the base model, from the step's samples (plain estimator v·log(π/a))",
           "nats", _IS, None, se=True, label=_KL_PI_A, note="on policy samples", tune=True, first=True),
    Metric("divergence", "the run's objective D_f(π‖p) from the step's samples (JS as JS itself; +inf where "
           "f*(0) = +inf and P(x) = 0 has been seen)", "nats", _IS, "lower", se=True, label="D_f(π‖p)",
           tune=True, first=True, results_name="divergence_value"),
    Metric("distinct_1", "Distinct-1: distinct unigrams / all unigrams of the step's texts", "share", "plain mean",
           "higher", label="Distinct-1", tune=True, first=True),
    Metric("distinct_2", "Distinct-2: distinct bigrams / all bigrams of the step's texts", "share", "plain mean",
           "higher", label="Distinct-2", tune=True, first=True),
    Metric("distinct_3", "Distinct-3: distinct trigrams / all trigrams of the step's texts", "share", "plain mean",
           "higher", label="Distinct-3", tune=True, first=True),
    Metric("self_bleu", "Self-BLEU of the evaluation batch (each text against up to 64 others)", "share",
           "plain mean", "lower", when="eval", label="Self-BLEU", tune=True, first=True),
    Metric("mean_length", "mean completion length", "tokens", "plain mean", tune=True, first=True),
    Metric("seconds", "wall-clock time since the controller started", "seconds", "timing", tune=True, first=True),
    # -- every step -------------------------------------------------------------------------
    Metric("log_z_hat", "log Ẑ, mean over the contexts whose Ẑ > 0 (running over every sample seen)", "nats", _IS,
           se=True, label="log Ẑ", tune=True),
    Metric("z_zero_contexts", "share of the contexts seen so far with no sample of P > 0 (Ẑ_c = 0)", "share",
           "state", "lower"),
    Metric("kl_pi_a_k3", "KL(π‖a) by the never-negative k3 estimator v·[(a/π − 1) − log(a/π)] (a check on "
           "kl_pi_a)", "nats", _IS, None, se=True, label=_KL_PI_A),
    Metric("kl_pi_a_k3_a_mass", "mean a/q over the step's samples: the share of a's mass the samples reach "
           "(expectation 1; k3 is off by about a_mass − 1)", "ratio", _IS),
    Metric("pseudo_reward_mean", "mean pseudo-reward r = −f′(π/p) over the step's batch", "ratio", "plain mean",
           tune=True),
    Metric("baseline", "the baseline B subtracted from the pseudo-rewards (moving average; all contexts)", "ratio",
           "state", tune=True),
    Metric("importance_weight_mean", "mean importance weight w = π_θ/q (clipped at loss.max_importance_weight)",
           "ratio", "plain mean", tune=True),
    Metric("logq_logpi_gap", "mean |log q − log π_θ| between rollout engine and learner on the same sequences "
           "(weight-sync and numerics mismatch)", "nats", "plain mean", "lower", tune=True),
    Metric("grad_norm", "gradient norm before clipping (NaN on the final row, which has no update)", "ratio",
           "state", tune=True),
    Metric("skipped_steps", "updates skipped so far because the gradient was not finite", "count", "state", "lower",
           tune=True),
    Metric("lr", "learning rate after the step's scheduler step", "ratio", "state", tune=True),
    Metric("learn_seconds", "time of the learner's step (Ẑ update, forward/backward, optimizer, metrics)", "seconds",
           "timing", tune=True),
    Metric("rollout_wait_seconds", "time the learner waited for the step's samples", "seconds", "timing"),
    Metric("score_seconds", "time the learner waited for the step's scores", "seconds", "timing"),
    Metric("sync_seconds", "time of the weight push that preceded this step (0 when none)", "seconds", "timing"),
    Metric("rss_mib", "resident memory of the learner process (rank 0)", "MiB", "state",
           condition="where psutil tells"),
    Metric("open_fds", "open file descriptors of the learner process (rank 0)", "count", "state",
           condition="where psutil tells (not Windows)"),
    Metric("kl_p_q", "KL(p‖q) of the adaptive proposal from the step's samples", "nats", _IS, "lower",
           se=True, condition="rollout.proposal_update is set"),
    Metric("proposal_updates", "times the adaptive proposal was replaced by the policy so far", "count", "state",
           condition="rollout.proposal_update is set"),
    Metric("feature_<name>", "E_π[feature] of one constraint of the target, over the step's batch", "score",
           "plain mean", tune=True, condition="one per constraint"),
    # -- evaluation steps ---------------------------------------------------------------------
    Metric("base_samples", "size of the fixed base-model batch in the pool of kl_p_pi_base (max(target.fit_samples, "
           "eval.base_samples)); below 4096 the pool's estimates are flagged '?'", "count", "state", when="eval"),
    Metric("log_z_base", "log Z by multiple importance sampling over the pool of kl_p_pi_base, mean over "
           "contexts", "nats", _IS, when="eval", se=True),
    Metric("tv_p_pi_base", "TV(p, π) on the pool of kl_p_pi_base", "share", _IS, "lower", when="eval", se=True,
           label="TV(p, π)"),
    Metric("js_p_pi_base", "JS(p, π) on the pool of kl_p_pi_base", "nats", _IS, "lower", when="eval", se=True,
           label="JS(p, π)"),
    Metric("divergence_base", "the run's D_f(π‖p) on the pool of kl_p_pi_base", "nats", _IS, "lower", when="eval",
           se=True, label="D_f(π‖p)"),
    Metric("exact_kl", "exact KL(p‖π), mean over contexts", "nats", "exact", "lower", when="eval",
           label=_KL_P_PI, note="exact, enumerated sequence space", tune=True, condition="exact tasks"),
    Metric("exact_kl_pi_a", "exact KL(π‖a), mean over contexts", "nats", "exact", None, when="eval",
           label=_KL_PI_A, note="exact", tune=True, condition="exact tasks"),
    Metric("exact_log_z", "exact log Z, mean over contexts", "nats", "exact", when="eval", tune=True,
           condition="exact tasks"),
    Metric("exact_<divergence>", "exact D_f(π‖p) of a standard divergence (rkl, tv, js, hellinger, chi2) or of the "
           "run's own (':' written '_', e.g. exact_alpha_0.5)", "nats", "exact", "lower", when="eval", tune=True,
           condition="exact tasks"),
)

BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}
FAMILIES: tuple[Metric, ...] = tuple(m for m in METRICS if m.family)

# The sink's fixed first columns of metrics.csv (NaN where not measured).
FIRST_COLUMNS: list[str] = [m.name for m in METRICS if m.first]

# A run's before/after table (fdpg_ray/train/report.py, the CLI summary), in this order.
SUMMARY_METRICS: tuple[str, ...] = ("alignment", "kl_p_pi_base", "kl_p_pi", "tv_p_pi", "js_p_pi", "kl_pi_a",
                                    "divergence", "distinct_2", "self_bleu", "z_hat", "log_z_hat")
# A run's plot panels (RUN_DIR/plots/curves.png), then one panel of the exact divergences.
PLOT_METRICS: tuple[str, ...] = ("alignment", "kl_p_pi_base", "kl_pi_a", "divergence", "log_z_hat", "distinct_2")


@dataclass(frozen=True)
class Comparison:
    """A quantity sweep reports compare divergences on (tuning/report.py): its display
    ``label``, its estimates (metrics.csv columns, best first: the report uses the first
    one present) and the report sections that show it."""
    label: str
    columns: tuple[str, ...]
    curves: bool = False   # learning curves
    scaling: bool = False  # final value against model size
    paired: bool = False   # paired differences over seeds
    ordering: bool = False  # order of the divergences at each model size

    @property
    def better(self) -> str | None:
        """The better direction, that of its estimates ("lower", "higher" or None)."""
        return BY_NAME[self.columns[0]].better


COMPARISONS: tuple[Comparison, ...] = (
    Comparison(_KL_P_PI, ("exact_kl", "kl_p_pi_base", "kl_p_pi"), curves=True, scaling=True, paired=True,
               ordering=True),
    Comparison("alignment", ("alignment",), curves=True, scaling=True, paired=True, ordering=True),
    Comparison(_KL_PI_A, ("exact_kl_pi_a", "kl_pi_a"), curves=True, scaling=True, paired=True),
    Comparison("Distinct-2", ("distinct_2",), curves=True, paired=True),
    Comparison("Self-BLEU", ("self_bleu",)),
)


def lookup(column: str) -> Metric | None:
    """The registry entry of a metrics.csv ``column``: its own, its family's
    (``feature_<name>``, ``exact_<divergence>``), or, for ``<name>_se`` / ``<name>_ess``, that
    of ``<name>`` when it has them.  None for a column the registry does not know."""
    if column in BY_NAME:
        return BY_NAME[column]
    for suffix in ("_se", "_ess"):
        if column.endswith(suffix):
            parent = lookup(column[: -len(suffix)])
            if parent is not None and parent.se:
                return parent
    for m in FAMILIES:
        if column.startswith(m.prefix) and len(column) > len(m.prefix):
            return m
    return None


def estimate_columns(name: str) -> tuple[str, str, str]:
    """(``name``, ``name_se``, ``name_ess``): the columns of a registered estimate that has a
    standard error (same unit as ``name``) and an effective sample size (count).  KeyError for
    a name the registry does not list with ``se``, so a misspelt column fails where it is written."""
    m = BY_NAME.get(name)
    if m is None or not m.se:
        raise KeyError(f"{name}: not a registered metric with a standard error (fdpg_ray/train/metrics.py)")
    return name, f"{name}_se", f"{name}_ess"


def known(column: str) -> bool:
    """Whether the registry knows metrics.csv ``column`` (:func:`lookup`)."""
    return lookup(column) is not None


def unit_of(column: str) -> str | None:
    """The unit of ``column`` (``_ess`` columns: count), or None when unknown."""
    m = lookup(column)
    if m is None:
        return None
    return "count" if column.endswith("_ess") and column not in BY_NAME else m.unit


def label_of(column: str) -> str:
    """The display label of ``column``, or the column name itself when it has none."""
    m = BY_NAME.get(column)
    return m.label if m is not None and m.label else column


def tune_metric_kind(column: str) -> str | None:
    """What a sweep may do with ``column`` as its metric: "step" (reported every step, so a
    scheduler may use it too), "eval" (evaluation steps only: reported, but not for a
    scheduler) or None (a sweep may not optimise it)."""
    m = lookup(column)
    if m is None or not m.tune or column != m.name and not m.family:
        return None  # _se / _ess columns are not sweep metrics
    return m.when


def tune_metrics(when: str) -> list[str]:
    """The names (families as patterns) a sweep may optimise that are reported at ``when``
    ("step" or "eval"), in registry order."""
    return [m.name for m in METRICS if m.tune and m.when == when]


def exact_divergence_columns(columns) -> list[str]:
    """The exact divergences D(π, p) among ``columns`` (exact_kl and exact_<divergence>; not
    exact_kl_pi_a or exact_log_z), in their order."""
    return [c for c in columns if c == "exact_kl" or (c not in BY_NAME and lookup(c) is BY_NAME["exact_<divergence>"])]


def markdown() -> str:
    """docs/metrics.md: the table of every metric, then the units and estimation kinds."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["# Metrics", "",
             "<!-- Generated by `python -m fdpg_ray.train.metrics --markdown --out docs/metrics.md` from "
             "fdpg_ray/train/metrics.py; do not edit by hand (tests/test_metrics_registry.py checks it). -->", "",
             "Every column of a run's `metrics.csv` (one row per step). Metrics marked *SE, ESS* also have "
             "`<name>_se` (standard error, same unit) and `<name>_ess` (Kish effective sample size "
             "(Σw)²/Σw² of the weights it uses, a count); an estimate with ESS below 30 is marked `?` in "
             "the progress bar and the before/after table, and so are the estimates on kl_p_pi_base's pool when "
             "the base batch (`base_samples`) has fewer than 4096 samples (docs/design.md, \"Metrics\"; "
             "docs/estimators.md, \"Coverage\"). *Sweep*: a sweep may "
             "optimise it (`metric:` in a sweep file); eval-only metrics cannot drive a scheduler.", "",
             "| name | meaning | unit | estimate | better | when | label | sweep |",
             "|---|---|---|---|---|---|---|---|"]
    for m in METRICS:
        estimate = m.estimate + (", SE, ESS" if m.se else "")
        when = WHEN[m.when].split(" (")[0] + (f"; {m.condition}" if m.condition else "")
        lines.append(f"| `{m.name}` | {cell(m.meaning)} | {m.unit} | {estimate} | {m.better or '–'} | {when} | "
                     f"{cell(m.label or '')} | {'yes' if m.tune else ''} |")
    lines += ["", "First columns of `metrics.csv`, in order: " + ", ".join(f"`{c}`" for c in FIRST_COLUMNS) +
              "; the others follow sorted by name.", "",
              "## Units", "", "| unit | meaning |", "|---|---|"]
    lines += [f"| {u} | {cell(d)} |" for u, d in UNITS.items()]
    lines += ["", "## Estimates", "", "| estimate | meaning |", "|---|---|"]
    lines += [f"| {e} | {cell(d)} |" for e, d in ESTIMATES.items()]
    lines += ["", "## In reports", "",
              "A run's before/after table: " + ", ".join(f"`{c}`" for c in SUMMARY_METRICS) + ". "
              "Its plot: " + ", ".join(f"`{c}`" for c in PLOT_METRICS) + ", and the exact divergences on exact tasks.",
              "", "Sweep reports compare divergences on these quantities, each from the first estimate present:", "",
              "| label | estimates, best first | better | sections |", "|---|---|---|---|"]
    for c in COMPARISONS:
        sections = ["table"] + [s for s in ("curves", "scaling", "paired", "ordering") if getattr(c, s)]
        lines.append(f"| {c.label} | {', '.join(f'`{x}`' for x in c.columns)} | {c.better or '–'} | "
                     f"{', '.join(sections)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m fdpg_ray.train.metrics --markdown [--out FILE]``: print (or write) docs/metrics.md."""
    parser = argparse.ArgumentParser(prog="python -m fdpg_ray.train.metrics", description=__doc__.split("\n")[0])
    parser.add_argument("--markdown", action="store_true", help="the Markdown table of every metric")
    parser.add_argument("--out", help="write it to this file (atomically) instead of standard output")
    args = parser.parse_args(argv)
    if not args.markdown:
        parser.error("nothing to do: pass --markdown")
    text = markdown()
    if args.out:
        from fdpg_ray.atomic import atomic_write_text

        atomic_write_text(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
