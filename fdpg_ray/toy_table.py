"""The exact-verification table: train on the toy task with every divergence and report
its exact D_f(pi || p) before and after (docs/exact-verification.md).

    python -m fdpg_ray.toy_table            # prints the Markdown table
"""

from __future__ import annotations

import time

from .config import load_config
from .local import build_local

DIVERGENCES = ["kl", "rkl", "tv", "js", "hellinger", "chi2", "rchi2", "jeffreys", "alpha:0.5", "alpha:2"]
# Steps per divergence (configs/toy.yaml: lr 2e-3 with cosine decay, batch 256).
STEPS = {name: 120 for name in DIVERGENCES}


def train_toy(name: str, steps: int | None = None, seed: int = 0) -> dict:
    """Train configs/toy.yaml with divergence ``name`` for ``steps`` (default :data:`STEPS`) in one process.

    Returns {divergence, start, end (exact D_f before/after, nats), steps, reduction (fraction),
    log_z, log_z_hat (nats), seconds (wall)}.
    """
    steps = steps or STEPS[name]
    cfg = load_config("configs/toy.yaml", {"divergence": name, "run.steps": steps, "run.eval_every": steps,
                                           "run.progress": False, "run.seed": seed})
    t0 = time.time()
    controller, _ = build_local(cfg)
    rows = controller.run()
    key = "exact_" + name.replace(":", "_")
    first, last = rows[0], rows[-1]
    return {"divergence": name, "start": first[key], "end": last[key], "steps": steps,
            "reduction": 1 - last[key] / first[key], "log_z": first["exact_log_z"],
            "log_z_hat": last["log_z_hat"], "seconds": time.time() - t0}


def main() -> None:
    """Train every divergence in :data:`DIVERGENCES` and print the Markdown table of docs/exact-verification.md."""
    rows = [train_toy(n) for n in DIVERGENCES]
    print("| divergence | exact D_f at start | exact D_f at end | reduction | steps | log Z_hat - log Z | seconds |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['divergence']}` | {r['start']:.4f} | {r['end']:.5f} | {100 * r['reduction']:.1f}% | {r['steps']} "
              f"| {r['log_z_hat'] - r['log_z']:+.4f} | {r['seconds']:.0f} |")


if __name__ == "__main__":
    main()
