"""The exact-verification table: train on the toy task with every divergence and report
its exact D_f(pi || p) before and after (docs/exact-verification.md).

    python -m fdpg_ray.train.toy_table            # prints the Markdown table
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from fdpg_ray.config import load_config
from fdpg_ray.train.local import build_local

DIVERGENCES = ["kl", "rkl", "tv", "js", "hellinger", "chi2", "rchi2", "jeffreys", "alpha:0.5", "alpha:2"]
# Steps per divergence (configs/toy.yaml: lr 1e-3 with cosine decay, batch 256).
STEPS = {name: 120 for name in DIVERGENCES}


@contextmanager
def torch_threads(n: int | None):
    """Run the block with ``n`` intra-op threads (None: leave torch's setting), then restore.

    The toy model's tensors are tiny (width 64, batch 256): a second thread saves nothing,
    and when other processes hold the cores (the test suite beside a benchmark, on this 2-core
    machine) the threads wait for each other: measured under load ~8, 30 steps of `rchi2` took
    226 s with torch's default 2 threads and 43 s with 1 (docs/exact-verification.md)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def train_toy(name: str, steps: int | None = None, seed: int = 0, overrides: dict | None = None,
              threads: int | None = 1) -> dict:
    """Train on configs/toy.yaml with divergence ``name`` for ``steps`` steps (default
    STEPS[name]) in one process; ``overrides`` are extra dotted config keys.  Returns the exact
    D_f at the first and last step ({"start", "end", "reduction", "log_z", "log_z_hat",
    "seconds", "rows"}; "rows" are the controller's metric rows)."""
    steps = steps or STEPS[name]
    cfg = load_config("configs/toy.yaml", {"divergence": name, "run.steps": steps, "run.eval_every": steps,
                                           "run.progress": False, "run.seed": seed, **(overrides or {})})
    t0 = time.time()
    with torch_threads(threads):
        controller, _ = build_local(cfg)
        rows = controller.run()
    key = "exact_" + name.replace(":", "_")
    first, last = rows[0], rows[-1]
    return {"divergence": name, "start": first[key], "end": last[key], "steps": steps,
            "reduction": 1 - last[key] / first[key], "log_z": first["exact_log_z"],
            "log_z_hat": last["log_z_hat"], "seconds": time.time() - t0, "rows": rows}


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
