"""Estimates against exact values on the enumerable tasks (docs/estimators.md).

For a config with ``target.exact`` (``configs/toy*.yaml``), run the real code in one process
(:func:`fdpg_ray.train.local.build_local`: rollout backend, scorer, controller): measure every
importance-sampled metric on the base model, train ``steps`` f-DPG steps, measure again on
the moved policy, and pair each estimate (with its SE and ESS) with the exact value.

    python benchmarks/estimators_vs_exact.py          # the table of docs/estimators.md
"""

from __future__ import annotations

import math

from fdpg_ray.objective.divergences import get_divergence
from fdpg_ray.objective.estimators import is_metrics, untrusted

# estimate key -> exact key (the run's divergence and the extra ones are added per run)
PAIRS = {"kl_p_pi": "exact_kl", "tv_p_pi": "exact_tv", "js_p_pi": "exact_js", "kl_pi_a": "exact_kl_pi_a",
         "kl_pi_a_k3": "exact_kl_pi_a", "kl_p_pi_base": "exact_kl", "kl_p_pi_base_only": "exact_kl",
         "log_z_hat": "exact_log_z",
         "log_z_base": "exact_log_z"}
EXTRA_DIVERGENCES = ("kl", "rkl", "tv", "js", "hellinger", "chi2", "alpha:0.5", "alpha:2")


def measure(controller, divergences=EXTRA_DIVERGENCES) -> dict:
    """One measured step without update (theta unchanged): the controller's own metrics and
    evaluation, plus ``divergence[<name>]`` for every name in ``divergences`` from the same batch."""
    batch = controller.next_batch()
    extra = controller.evaluation(batch)
    m = controller.train_step(batch, update=False)
    m.update(extra)
    n = len(batch)
    contexts = batch.contexts if controller.prompts.conditional else None
    log_Z = controller.log_partition.log_z_for(contexts, n)
    log_Z_se = controller.log_partition.log_z_se_for(contexts, n)
    log_pi = controller.log_pi(batch, slice(0, n), grad=False).double()
    for name in divergences:
        d = is_metrics(batch.log_P, log_Z, log_pi, batch.log_q, divergence=get_divergence(name),
                       log_Z_se=log_Z_se, contexts=contexts, p_has_zeros=controller.p_has_zeros(batch))
        key = f"divergence[{name}]"
        m[key], m[f"{key}_se"], m[f"{key}_ess"] = d["divergence"], d["divergence_se"], d["divergence_ess"]
    if controller.base_batch is not None:
        from fdpg_ray.objective.estimators import mis_divergence

        pool = controller._base_pool(batch if controller.batch_is_on_policy() else None)
        for name in divergences:
            d = mis_divergence(*pool[:4], get_divergence(name), pool[4], p_has_zeros=controller.p_has_zeros(batch))
            key = f"divergence_base[{name}]"
            m[key], m[f"{key}_se"], m[f"{key}_ess"] = d["value"], d["se"], d["ess"]
    if controller.base_batch is not None:  # base samples alone, for comparison with the pooled estimate
        alone = controller.kl_p_pi_on_base_samples(None)
        m.update({f"kl_p_pi_base_only{k.removeprefix('kl_p_pi_base')}": v for k, v in alone.items()
                  if k.startswith("kl_p_pi_base")})
    m.update(controller.exact.metrics(controller.policy, extra=tuple(divergences)))
    controller.step += 1
    return m


def train(controller, steps: int) -> None:
    """Run ``steps`` f-DPG updates, pushing the policy's weights to the rollout after each (synced every step)."""
    for _ in range(steps):
        batch = controller.next_batch()
        controller.train_step(batch, update=True)
        controller.step += 1
        controller.rollout.push_weights(controller.policy.state_dict())


def compare(m: dict, divergences=EXTRA_DIVERGENCES) -> list[dict]:
    """Rows {estimate, value, se, ess, exact, z, within_3se, flagged} for one measured step."""
    pairs = dict(PAIRS)
    pairs.update({f"divergence[{n}]": f"exact_{n.replace(':', '_')}" for n in divergences})
    pairs.update({"tv_p_pi_base": "exact_tv", "js_p_pi_base": "exact_js"})
    pairs.update({f"divergence_base[{n}]": f"exact_{n.replace(':', '_')}" for n in divergences})
    rows = []
    for est, ex in pairs.items():
        v, se, exact = m[est], m.get(f"{est}_se", math.nan), m[ex]
        ess = m.get(f"{est}_ess", math.nan)
        if math.isinf(exact) or math.isinf(v):
            within, z = v == exact, (0.0 if v == exact else math.inf)
        else:
            z = (v - exact) / se if se > 0 else (0.0 if v == exact else math.inf)
            within = abs(z) <= 3.0
        rows.append({"estimate": est, "value": v, "se": se, "ess": ess, "exact": exact, "z": z,
                     "within_3se": bool(within), "flagged": untrusted(m, est)})
    return rows


def run_check(config: str, overrides: dict | None = None, steps: int = 2) -> dict:
    """{"base": rows, "moved": rows} for one exact config (see module docstring)."""
    from fdpg_ray.config import load_config
    from fdpg_ray.train.local import build_local

    cfg = load_config(config, {"run.progress": False, **(overrides or {})})
    controller, _ = build_local(cfg)
    controller.start()
    base = compare(measure(controller))
    train(controller, steps)
    moved = compare(measure(controller))
    return {"base": base, "moved": moved}
