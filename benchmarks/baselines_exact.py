"""Baselines x divergences on the exact task (configs/toy.yaml): gradient error and training
speed for ``loss.baseline`` none | moving | leave_one_out | self_normalized, divergences kl,
rkl, tv, js.  The table in docs/baselines.md comes from

    python benchmarks/baselines_exact.py        # 27 min on one shared core (2026-11-29)
    python benchmarks/baselines_exact.py --batches 50 --seeds 2 --cap 20   # a quick look

Setting (both parts): configs/toy.yaml with batch N (--n, 32), lr --lr (3e-5) constant, one
torch thread.  (At the toy's own lr 1e-3 one Adam update takes kl from 0.90 to 0.20; at batch
256 the none and leave_one_out runs reached half at the same update: docs/baselines.md.)

(a) Gradient error.  ExactTask lists all 625 sequences, so with J the (625 x P) Jacobian of
log pi(x) and a batch's coefficients c_x = -(1/N) sum_{i: x_i = x} w_i (r_i - B_i) the f-DPG
gradient is J^T c, the exact gradient of D_f is J^T d (d = dD_f/dlog pi, autograd through the
exact sum; D_f in the generator's scale, as the loss), and the squared error is
(c - d)^T K (c - d) with the Gram matrix K = J J^T.  Exact Z, the loss's clamps (|log t| <= 20,
w <= 10).  M batches (--batches, 200), the same batches for every baseline (paired).  Three
policy states per divergence:

  step 0 / on-policy   pi = q = a (the base model).  The moving baseline is 0 here: it has
                       seen no batch (what a run's first update uses).
  step K / on-policy   pi = the policy after K (--later, 10) updates of a run with the moving
                       baseline (seed 0), q = pi; the moving baseline is that run's EMA after
                       K batches.
  step K / q = a       the same pi, samples from the base model (rollout.proposal: base),
                       w = pi/a truncated at 10.  leave_one_out as the controller computes it
                       (r at log q, unweighted); self_normalized with r and w at pi (the
                       controller's extra no-grad pass); moving: the on-policy run's EMA.

Reported: mean squared error +- its SE over the batches, and for self_normalized vs
leave_one_out the paired t statistic of the difference.

(b) Steps to half.  Short runs through the real controller (transformers rollout, scorer,
running Z_hat), --seeds seeds (4) per baseline x divergence, on-policy and with
rollout.proposal=base: the number of updates until the exact D_f first falls to half its
starting value, evaluated after every update, capped at --cap (30) updates ("not reached");
mean +- SE over the seeds that reached it, and how many did; and the exact D_f after --cap
updates, mean +- SE over the seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time

import torch

from fdpg_ray.config import load_config
from fdpg_ray.objective.divergences import get_divergence
from fdpg_ray.objective.estimators import LeaveOneOutBaseline, SelfNormalizedBaseline
from fdpg_ray.train.local import build_local
from fdpg_ray.objective.loss import fdpg_loss

DIVERGENCES = ["kl", "rkl", "tv", "js"]
BASELINES = ["none", "moving", "leave_one_out", "self_normalized"]


def bench_config(name: str, baseline: str, a, seed: int = 0, proposal: str = "policy"):
    return load_config("configs/toy.yaml", {
        "divergence": name, "loss.baseline": baseline, "learner.lr": a.lr, "learner.lr_schedule": "constant",
        "learner.batch_size": a.n, "learner.micro_batch_size": a.n, "run.steps": a.cap, "run.eval_every": 10 ** 6,
        "run.checkpoint_every": 10 ** 6, "run.progress": False, "run.seed": seed, "rollout.proposal": proposal})


def gram(exact, policy) -> tuple[torch.Tensor, torch.Tensor]:
    """(K = J J^T (S, S) float64, log pi (S,) with its graph) for the S listed sequences."""
    policy.eval()  # dropout off, as in the learner
    params = [p for p in policy.parameters() if p.requires_grad]
    lp = exact.log_pi(policy)
    rows = []
    for i in range(len(lp)):
        g = torch.autograd.grad(lp[i], params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(x if x is not None else torch.zeros_like(p)).flatten() for x, p in zip(g, params)]))
    J = torch.stack(rows).double()
    return J @ J.T, lp


def exact_coef(exact, name: str, lp: torch.Tensor) -> torch.Tensor:
    """d = dD_f/dlog pi (S,), D_f in the f-DPG generator's scale (divided by report_scale)."""
    x = lp.detach().double().requires_grad_(True)
    (d,) = torch.autograd.grad(exact.divergence(name, x) / get_divergence(name).report_scale, x)
    return d


def gradient_errors(exact, name: str, K, lp, log_q_all, B_moving: float, a, gen) -> dict:
    """Squared error of each baseline's gradient on --batches batches of q (paired)."""
    div = get_divergence(name)
    d = exact_coef(exact, name, lp)
    lp_all = lp.detach().double()
    S, N = len(lp_all), a.n
    errs = {b: [] for b in BASELINES}
    for _ in range(a.batches):
        idx = torch.multinomial(log_q_all.exp(), N, replacement=True, generator=gen)
        lq, lpi, lP = log_q_all[idx], lp_all[idx], exact.log_P[idx]
        at_pi = fdpg_loss(lpi, lP, exact.log_Z, div, log_q=lq, clip_log_t=20.0, max_importance_weight=10.0)
        r, w = at_pi.pseudo_reward, at_pi.importance_weight
        r_q = fdpg_loss(lq, lP, exact.log_Z, div, clip_log_t=20.0).pseudo_reward  # the controller's LOO input
        B = {"none": torch.zeros(N, dtype=torch.float64),
             "moving": torch.full((N,), B_moving, dtype=torch.float64),
             "leave_one_out": LeaveOneOutBaseline().value_for(None, N, rewards=r_q),
             "self_normalized": SelfNormalizedBaseline().value_for(None, N, rewards=r, log_weights=w.log())}
        for b in BASELINES:
            c = torch.zeros(S, dtype=torch.float64).index_add_(0, idx, -(w * (r - B[b])) / N)
            e = c - d
            errs[b].append((e @ K @ e).item())
    g2 = (d @ K @ d).item()
    out = {"exact_grad_sq": g2}
    for b in BASELINES:
        x = torch.tensor(errs[b], dtype=torch.float64)
        out[b] = {"mse": x.mean().item(), "se": (x.std() / math.sqrt(len(x))).item()}
    diff = torch.tensor(errs["self_normalized"]) - torch.tensor(errs["leave_one_out"])
    sd = diff.std().item()
    out["t_sn_vs_loo"] = diff.mean().item() / (sd / math.sqrt(len(diff))) if sd > 0 else 0.0
    return out


def moving_run(name: str, a):
    """Controller after --later updates with the moving baseline (seed 0): (policy, EMA)."""
    ctl, _ = build_local(bench_config(name, "moving", a))
    ctl.start()
    while ctl.step < a.later:
        ctl.train_step(ctl.next_batch())
        ctl.step += 1
        ctl.rollout.push_weights(ctl.policy.state_dict())
    return ctl.policy, ctl.baseline.value_for(None, 1).item()


def part_a(a) -> dict:
    from fdpg_ray.model.sources import load_model_and_tokenizer
    from fdpg_ray.target.scoring import TargetScorer
    from fdpg_ray.model.toy import ExactTask

    scorer = TargetScorer(load_config("configs/toy.yaml"))
    exact = ExactTask(scorer.base, scorer.log_P_of_texts)
    base, _ = load_model_and_tokenizer("toy")
    K0, lp0 = gram(exact, base)
    res = {}
    for name in DIVERGENCES:
        t0 = time.time()
        gen = torch.Generator().manual_seed(0)
        res[(name, "step 0 / on-policy")] = gradient_errors(exact, name, K0, lp0, lp0.detach().double(), 0.0, a, gen)
        policy, B_mov = moving_run(name, a)
        K, lp = gram(exact, policy)
        res[(name, f"step {a.later} / on-policy")] = gradient_errors(exact, name, K, lp, lp.detach().double(), B_mov, a, gen)
        res[(name, f"step {a.later} / q = a")] = gradient_errors(exact, name, K, lp, exact.log_a, B_mov, a, gen)
        print(f"# (a) {name}: {time.time() - t0:.0f} s, moving baseline at step {a.later} = {B_mov:+.4f}",
              file=sys.stderr, flush=True)
    return res


def steps_to_half(name: str, baseline: str, seed: int, proposal: str, a) -> tuple[int | None, float, float]:
    """(updates until the exact D_f <= half its start or None, D_f at the start, D_f after --cap updates)."""
    ctl, _ = build_local(bench_config(name, baseline, a, seed, proposal))
    exact = ctl.exact

    def D() -> float:
        ctl.policy.eval()
        with torch.no_grad():
            return exact.divergence(name, exact.log_pi(ctl.policy)).item()

    start = D()
    hit, last = [], []

    def on_step(m, due):
        if m["step"] >= a.cap:  # the final, measure-only step
            return
        d = D()  # after update m["step"]
        if not hit and d <= 0.5 * start:
            hit.append(m["step"] + 1)
        last[:] = [d]

    ctl.run(on_step=on_step)
    return (hit[0] if hit else None), start, last[0]


def part_b(a) -> dict:
    res = {}
    for proposal in ("policy", "base"):
        for name in DIVERGENCES:
            t0 = time.time()
            for b in BASELINES:
                res[(proposal, name, b)] = [steps_to_half(name, b, s, proposal, a) for s in range(a.seeds)]
            print(f"# (b) {proposal} {name}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return res


def mean_se(x: list) -> str:
    m = sum(x) / len(x)
    se = math.sqrt(sum((v - m) ** 2 for v in x) / (len(x) - 1) / len(x)) if len(x) > 1 else math.nan
    return f"{m:.4f} ± {se:.4f}"


def fmt_steps(runs: list) -> str:
    v = [r[0] for r in runs]
    got = [x for x in v if x is not None]
    if not got:
        return f"not reached (0/{len(v)})"
    m = sum(got) / len(got)
    se = (math.sqrt(sum((x - m) ** 2 for x in got) / (len(got) - 1)) / math.sqrt(len(got))) if len(got) > 1 else math.nan
    tail = "" if len(got) == len(v) else f" ({len(got)}/{len(v)} reached)"
    return f"{m:.1f} ± {se:.1f}{tail}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-5)
    p.add_argument("--later", type=int, default=10)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--cap", type=int, default=30)
    p.add_argument("--parts", default="ab", help="a, b or ab")
    p.add_argument("--divergences", default=",".join(DIVERGENCES))
    p.add_argument("--json", default=None, help="also write the raw numbers here")
    a = p.parse_args(argv)
    DIVERGENCES[:] = a.divergences.split(",")
    torch.set_num_threads(1)
    t0 = time.time()
    raw = {}
    if "a" in a.parts:
        ra = part_a(a)
        print(f"\n(a) mean squared error of the f-DPG gradient to the exact gradient ± SE ({a.batches} batches of "
              f"{a.n}; ||exact gradient||^2 in the last column)\n")
        print("| divergence | policy / samples | " + " | ".join(BASELINES) + " | t (sn − loo) | ‖∇D_f‖² |")
        print("|---|---|" + "---|" * (len(BASELINES) + 2))
        for (name, state), r in ra.items():
            cells = [f"{r[b]['mse']:.4g} ± {r[b]['se']:.2g}" for b in BASELINES]
            print(f"| {name} | {state} | " + " | ".join(cells) + f" | {r['t_sn_vs_loo']:+.2f} | {r['exact_grad_sq']:.4g} |")
        raw["a"] = {f"{k[0]}|{k[1]}": v for k, v in ra.items()}
    if "b" in a.parts:
        rb = part_b(a)
        for proposal in ("policy", "base"):
            print(f"\n(b) updates until exact D_f <= half its start, proposal {proposal}, mean ± SE over "
                  f"{a.seeds} seeds, cap {a.cap}\n")
            print("| divergence | " + " | ".join(BASELINES) + " |")
            print("|---|" + "---|" * len(BASELINES))
            for name in DIVERGENCES:
                print(f"| {name} | " + " | ".join(fmt_steps(rb[(proposal, name, b)]) for b in BASELINES) + " |")
            print(f"\nexact D_f after {a.cap} updates (start in the first column), proposal {proposal}, mean ± SE\n")
            print("| divergence | start | " + " | ".join(BASELINES) + " |")
            print("|---|---|" + "---|" * len(BASELINES))
            for name in DIVERGENCES:
                start = rb[(proposal, name, BASELINES[0])][0][1]
                print(f"| {name} | {start:.4f} | " + " | ".join(mean_se([r[2] for r in rb[(proposal, name, b)]])
                                                               for b in BASELINES) + " |")
        raw["b"] = {"|".join(k): v for k, v in rb.items()}
    print(f"\n# {time.time() - t0:.0f} s; args {vars(a)}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"args": vars(a), **raw}, f, indent=1)


if __name__ == "__main__":
    main()
