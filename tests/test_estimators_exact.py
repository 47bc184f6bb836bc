"""Every importance-sampled estimate against its exact value, on exact tasks of every target
kind, through the real rollout (transformers backend), scoring and controller code: each
estimate within 3 standard errors of the exact value, on the base model and on a policy moved
by two f-DPG steps.  docs/estimators.md holds the same comparison as a table
(benchmarks/estimators_vs_exact.py) and explains the two exceptions below."""

import math

import pytest

from fdpg_ray.train.estimator_check import run_check

CONFIGS = {"rlhf": "configs/toy.yaml", "pointwise": "configs/toy_pointwise.yaml", "gdc": "configs/toy_gdc.yaml",
           "conditional": "configs/toy_conditional.yaml"}
# Documented blind spots (docs/estimators.md), allowed to miss: the
# metrics of p from the policy's own samples (kl_p_pi, tv_p_pi, js_p_pi, divergence) cannot
# see p's mass where pi no longer samples (the pooled *_base estimates are the ones for that
# and must hold), and k3 misses a's mass there (it must then be flagged as untrusted); with
# 256 samples their heavy-tailed weights also make the sample SE too small at times.
# kl_p_pi_base_only (base samples alone) is shown for comparison only.
BLIND = {"kl_p_pi", "tv_p_pi", "js_p_pi", "kl_pi_a_k3"}


@pytest.mark.parametrize("kind", CONFIGS)
def test_estimates_are_within_3_standard_errors_of_the_exact_values(kind):
    result = run_check(CONFIGS[kind], {"scorer.batch_size": 1024}, steps=2)
    for policy, rows in result.items():
        by_name = {r["estimate"]: r for r in rows}
        assert by_name["kl_pi_a"]["exact"] > (0.3 if policy == "moved" else -1), "the policy did not move"
        for r in rows:
            assert not math.isnan(r["value"]), r
            if r["within_3se"]:
                continue
            assert r["estimate"].split("[")[0] in BLIND | {"divergence", "kl_p_pi_base_only"}, (kind, policy, r)
            if r["estimate"] == "kl_pi_a_k3":
                assert r["flagged"], r
        # the pooled (base + policy samples) estimates hold on every policy
        pooled = [n for n in by_name if n.startswith(("kl_p_pi_base", "tv_p_pi_base", "js_p_pi_base", "divergence_base"))
                  and n != "kl_p_pi_base_only"]
        for name in pooled + ["log_z_hat", "log_z_base", "kl_pi_a"]:
            assert by_name[name]["within_3se"], (kind, policy, by_name[name])
        if kind in ("pointwise", "conditional"):  # p = 0 somewhere: these are +inf for any softmax policy
            for name in ("rkl", "chi2", "alpha:2"):
                assert by_name[f"divergence[{name}]"]["value"] == math.inf, (policy, name)
                assert by_name[f"divergence_base[{name}]"]["value"] == math.inf, (policy, name)
