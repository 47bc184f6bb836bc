"""Summarise the gender seed experiment (benchmarks/gender_seed_experiment.sh): one row per
run directory OUT/<arm>-<div>-lr<lr>/ with

* kl_pi_a_step1: KL(pi||a) estimated on step 1's policy samples (nats);
* z_hat_start / z_hat_end: Z_hat after step 0 and at the last step;
* female_start / female_end: the share of female biographies in step 0's and the last batch;
* repeat_share: mean over steps k >= 1 of the share of batch k's texts that also occur in
  batch k - 1 (samples/STEP.jsonl holds the whole batch: eval every step, 64 texts kept);
* distinct: distinct texts among all samples of the run, of the total drawn.

    python benchmarks/gender_seed_experiment.py runs/gender-seeds > docs/study/gender-seeds.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd


def summarise(run: Path) -> dict:
    m = pd.read_csv(run / "metrics.csv").sort_values("step")
    batches = {}
    for f in sorted((run / "samples").glob("*.jsonl")):
        recs = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        if recs:
            batches[recs[0]["step"]] = [r["text"] for r in recs]
    steps = sorted(batches)
    repeats = [sum(t in set(batches[k - 1]) for t in batches[k]) / len(batches[k]) for k in steps if k - 1 in batches]
    every = [t for k in steps for t in batches[k]]
    arm, div, lr = run.name.split("-")
    fem = "feature_female" if "feature_female" in m else "alignment"
    return {"arm": "seeds fixed" if arm == "fixed" else "old seeds (0683cb0)", "divergence": div,
            "lr": lr[2:], "kl_pi_a_step1": float(m.loc[m["step"] == 1, "kl_pi_a"].iloc[0]),
            "z_hat_start": float(m["z_hat"].iloc[0]), "z_hat_end": float(m["z_hat"].iloc[-1]),
            "female_start": float(m[fem].iloc[0]), "female_end": float(m[fem].iloc[-1]),
            "kl_p_pi_base_start": float(m["kl_p_pi_base"].dropna().iloc[0]),
            "kl_p_pi_base_end": float(m["kl_p_pi_base"].dropna().iloc[-1]),
            "repeat_share": sum(repeats) / len(repeats) if repeats else float("nan"),
            "distinct": f"{len(set(every))}/{len(every)}", "steps": int(m["step"].max())}


def main(out: str) -> None:
    rows = [summarise(d) for d in sorted(Path(out).iterdir()) if (d / "metrics.csv").is_file()
            and json.loads((d / "status.json").read_text()).get("state") == "finished"]
    df = pd.DataFrame(rows)
    df = df.assign(_lr=df["lr"].astype(float)).sort_values(["_lr", "divergence", "arm"], ascending=[False, True, True]).drop(columns="_lr")
    cols = list(df.columns)
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for _, r in df.iterrows():
        print("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
