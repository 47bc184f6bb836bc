"""Quasi-rejection sampling (fdpg_ray/train/qrs.py, `fdpg-ray qrs`) on the enumerable toy task.

Exact: p_beta(x) = min(q(x), P(x)/beta) / Z_beta over all 625 sequences.  Checked:
* exact TV(p_beta, p) and KL(p || p_beta) fall as beta grows, TV < 0.02 once beta >= max P/q;
* a proposal trained toward p accepts more than the base model at the same exact TV;
* the importance-sampling estimates (acceptance rate, TV, KL) agree with the exact values
  within their standard errors, and those SEs are the right size (z-scores over replicates);
* the command, in one process (transformers sampler) and on Ray through the rollout and
  scorer actors with vLLM: its accepted samples follow p_beta (chi-square), its estimates
  agree with the exact values.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from fdpg_ray.train import qrs as Q
from fdpg_ray.config import load_config
from fdpg_ray.model.sources import load_model_and_tokenizer
from fdpg_ray.target.scoring import TargetScorer
from fdpg_ray.model.toy import ExactTask

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def task():
    cfg = load_config(os.path.join(ROOT, "configs/toy.yaml"))
    scorer = TargetScorer(cfg)
    exact = ExactTask(scorer.base, scorer.log_P_of_texts)
    with torch.no_grad():
        log_q_base = exact.log_pi(scorer.base).double()
    return exact, log_q_base


@pytest.fixture(scope="module")
def trained(task, tmp_path_factory):
    """The toy model moved toward p by 30 Adam steps on the exact KL(p || pi), saved as a
    model folder (the 'trained policy' proposal); returns (path, exact log q over all x)."""
    exact, _ = task
    model, tokenizer = load_model_and_tokenizer("toy")
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(30):
        opt.zero_grad()
        exact.divergence("kl", exact.log_pi(model)).backward()
        opt.step()
    out = tmp_path_factory.mktemp("qrs-trained")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    with torch.no_grad():
        log_q = exact.log_pi(model).double()
    return str(out), log_q


def test_exact_tv_and_kl_fall_as_beta_grows_and_vanish_at_max_ratio(task):
    exact, log_q = task
    top = Q.max_log_ratio(exact.log_P, log_q)
    log_betas = [top - 6, top - 4, top - 2, top - 1, top - 0.5, top, top + 1]
    rows = [Q.exact(exact.log_P, log_q, lb) for lb in log_betas]
    tv = [r["exact_tv"] for r in rows]
    kl = [r["exact_kl"] for r in rows]
    acc = [r["exact_acceptance_rate"] for r in rows]
    assert tv[0] > 0.2  # the smallest beta is far from p: the test is not vacuous
    for a, b in zip(tv, tv[1:]):
        assert b <= a + 1e-12
    for a, b in zip(kl, kl[1:]):
        assert b <= a + 1e-12
    for a, b in zip(acc, acc[1:]):
        assert b < a
    assert tv[-2] < 0.02 and tv[-1] < 0.02 and kl[-2] < 1e-6
    # beyond max P/q the acceptance rate is exactly Z / beta
    assert acc[-1] == pytest.approx(math.exp(exact.log_Z - log_betas[-1]), rel=1e-9)


def _beta_for_exact_tv(log_P, log_q, tv: float) -> float:
    """log beta at which the exact TV(p_beta, p) equals tv (TV falls in beta: bisection)."""
    lo, hi = (log_P - log_q).min().item() - 5, Q.max_log_ratio(log_P, log_q)
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if Q.exact(log_P, log_q, mid)["exact_tv"] > tv:
            lo = mid
        else:
            hi = mid
    return hi


@pytest.mark.parametrize("tv", [0.1, 0.05, 0.02])
def test_trained_proposal_accepts_more_than_the_base_model_at_the_same_tv(task, trained, tv):
    exact, log_q_base = task
    _, log_q_trained = trained
    assert exact.divergence("kl", log_q_trained).item() < 0.5 * exact.divergence("kl", log_q_base).item()
    acc = {}
    for name, log_q in (("base", log_q_base), ("trained", log_q_trained)):
        lb = _beta_for_exact_tv(exact.log_P, log_q, tv)
        r = Q.exact(exact.log_P, log_q, lb)
        assert r["exact_tv"] == pytest.approx(tv, abs=1e-6)
        acc[name] = r["exact_acceptance_rate"]
    assert acc["trained"] > 1.5 * acc["base"], acc


def test_estimates_agree_with_exact_values_and_their_standard_errors_are_the_right_size(task, trained):
    """200 replicate batches of 2000 proposals of the trained policy, at the betas where the
    exact TV is 0.1, 0.05 and 0.02: z = (estimate - exact) / SE over the replicates.
    The acceptance rate (a plain mean) has E[z^2] ~ 1.  TV and KL are ratio estimators over
    heavy-tailed weights (ESS ~ 1400 of 2000): their delta-method SEs run small (measured
    E[z^2]: TV 1.2-2.2, KL 3-8, docs/design.md), so for them the test asks for a small bias
    of the replicate mean and bounds E[z^2] at those measured levels (a wrong formula, e.g.
    the normalisers' terms left out of the influence function, or a wrong sign, fails)."""
    exact, _ = task
    _, log_q = trained
    gen = torch.Generator().manual_seed(0)
    q = log_q.exp()
    for tv in (0.1, 0.05, 0.02):
        lb = _beta_for_exact_tv(exact.log_P, log_q, tv)
        truth = Q.exact(exact.log_P, log_q, lb)
        est = {"acceptance_rate": [], "tv": [], "kl": []}
        z = {"acceptance_rate": [], "tv": [], "kl": []}
        for _ in range(200):
            idx = torch.multinomial(q, 2000, replacement=True, generator=gen)
            e = Q.estimate(exact.log_P[idx], log_q[idx], lb)
            for key in z:
                value, se = getattr(e, key), getattr(e, f"{key}_se")
                est[key].append(value)
                z[key].append((value - truth[f"exact_{key}"]) / se)
        zz = {k: torch.tensor(v) for k, v in z.items()}
        assert abs(zz["acceptance_rate"].mean().item()) < 0.3
        assert 0.6 < (zz["acceptance_rate"] ** 2).mean().item() < 1.5
        assert abs(zz["tv"].mean().item()) < 0.6 and (zz["tv"] ** 2).mean().item() < 3.0, (tv, zz["tv"])
        assert (zz["kl"] ** 2).mean().item() < 10.0, (tv, zz["kl"])
        for key in ("tv", "kl"):
            mean = torch.tensor(est[key]).mean().item()
            assert abs(mean - truth[f"exact_{key}"]) < 0.15 * truth[f"exact_{key}"], (tv, key, mean, truth)


def test_acceptance_follows_min_one_ratio(task):
    exact, log_q = task
    lb = Q.max_log_ratio(exact.log_P, log_q) - 3
    a = Q.log_acceptance(exact.log_P, log_q, lb).exp()
    assert torch.allclose(a, torch.clamp((exact.log_P - log_q - lb).exp(), max=1.0))
    # 200 uniform draws per sequence: the share accepted matches a within 4 SE
    gen = torch.Generator().manual_seed(1)
    rep = 200
    hits = Q.accept(exact.log_P.repeat(rep), log_q.repeat(rep), lb, generator=gen).view(rep, -1).double().mean(0)
    se = (a * (1 - a) / rep).sqrt().clamp(min=1e-3)
    assert ((hits - a).abs() / se).max().item() < 5


def test_beta_auto_hits_the_target_acceptance_and_rejects_unreachable_targets(task):
    exact, log_q = task
    gen = torch.Generator().manual_seed(2)
    idx = torch.multinomial(log_q.exp(), 3000, replacement=True, generator=gen)
    for target in (0.5, 0.1, 0.01):
        lb = Q.beta_for_acceptance(exact.log_P[idx], log_q[idx], target)
        assert Q.estimate(exact.log_P[idx], log_q[idx], lb).acceptance_rate == pytest.approx(target, rel=1e-6)
    log_P = exact.log_P[idx].clone()
    log_P[::2] = -math.inf  # half the draws have P = 0: at most 1/2 can be accepted
    with pytest.raises(Q.QRSError, match="--target-acceptance: 0.6 is not reachable"):
        Q.beta_for_acceptance(log_P, log_q[idx], 0.6)


def _chi_square_by_d_count(rows, log_p_beta, exact):
    """Pearson chi-square of accepted samples against p_beta, grouped by the number of 'd'
    tokens (5 cells); returns (statistic, degrees of freedom)."""
    d_id = exact.tokens.index("d")
    groups = torch.tensor([sum(1 for t in c if t == d_id) for c in exact.completions])
    p_beta = log_p_beta.exp()
    n = len(rows)
    observed = torch.zeros(int(groups.max()) + 1, dtype=torch.float64)
    for r in rows:
        observed[sum(1 for t in r["token_ids"] if t == d_id)] += 1
    expected = torch.zeros_like(observed).index_add_(0, groups, p_beta) * n
    keep = expected >= 5
    return (((observed - expected) ** 2 / expected)[keep].sum().item(), int(keep.sum()) - 1)


def _check_command_output(summary, rows, exact, log_q, n):
    assert summary["n_proposals"] == n and summary["n_accepted"] == len(rows) > 50
    for key in ("tv", "kl", "expected_acceptance_rate"):
        truth = summary["exact_acceptance_rate" if key == "expected_acceptance_rate" else f"exact_{key}"]
        assert abs(summary[key] - truth) < 4 * summary[f"{key}_se"], (key, summary)
    assert abs(summary["acceptance_rate"] - summary["exact_acceptance_rate"]) < 4 * summary["acceptance_rate_se"]
    # log q is computed in float32 by the model, here and in the command's own process; the
    # two reductions may differ in order (thread count, CPU features), which moved exact_tv by
    # a relative 6e-6 on CI. 1e-4 still catches a wrong formula or a wrong beta.
    assert summary["exact_tv"] == pytest.approx(Q.exact(exact.log_P, log_q, summary["log_beta"])["exact_tv"], rel=1e-4)
    # the accepted samples follow p_beta: chi-square over 5 cells (99.9% quantile ~18.5 at 4 df)
    log_m = torch.minimum(log_q, exact.log_P - summary["log_beta"])
    stat, df = _chi_square_by_d_count(rows, log_m - torch.logsumexp(log_m, 0), exact)
    assert df >= 2 and stat < 18.5, (stat, df)


def test_command_in_one_process_with_a_trained_proposal(task, trained, tmp_path, capsys):
    from fdpg_ray.cli import main

    exact, _ = task
    path, log_q = trained
    out = tmp_path / "accepted.jsonl"
    n = 3000
    assert main(["qrs", path, "--config", os.path.join(ROOT, "configs/toy.yaml"), "--beta", "auto",
                 "--target-acceptance", "0.2", "--pilot", "1000", "--n", str(n), "--local", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["beta_source"] == "auto"
    assert abs(summary["expected_acceptance_rate"] - 0.2) < 4 * summary["expected_acceptance_rate_se"] + 0.02
    _check_command_output(summary, rows, exact, log_q, n)


@pytest.mark.parametrize("argv, words", [
    (["toy", "--config", "configs/toy.yaml", "--beta", "-1"], "--beta: must be a positive number or auto"),
    (["toy", "--config", "configs/toy.yaml", "--beta", "big"], "--beta: expected a positive number or auto"),
    (["toy", "--beta", "2"], "--config: a bare model needs the config"),
    (["toy", "--config", "configs/toy.yaml", "--target-acceptance", "1.5"], "--target-acceptance: must be in (0, 1)"),
    (["toy", "--config", "configs/toy.yaml", "--n", "1"], "--n: must be >= 2"),
    (["toy", "--config", "configs/toy.yaml", "--out", "/no/such/dir/x.jsonl"], "--out: folder '/no/such/dir'"),
])
def test_bad_input_is_one_line_and_exit_status_2(argv, words, capsys, monkeypatch):
    from fdpg_ray.cli import main

    monkeypatch.chdir(ROOT)
    assert main(["qrs", *argv, "--local"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err


@pytest.mark.slow
def test_command_on_ray_with_vllm_rollout_and_scorer_actors(task, tmp_path):
    """The real path: Ray, one vLLM rollout actor (base model as proposal), one scorer actor."""
    exact, log_q = task
    out = tmp_path / "accepted.jsonl"
    n = 4000
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.run(
        [sys.executable, "-m", "fdpg_ray.cli", "qrs", "toy", "--config", "configs/toy.yaml", "--beta", "150",
         "--n", str(n), "--out", str(out), "--set", "rollout.backend=vllm", "--set", "ray.num_cpus=4"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["beta"] == pytest.approx(150.0)
    _check_command_output(summary, rows, exact, log_q, n)
