"""`fdpg-ray eval`: measure a model against a run's target from fresh samples."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from fdpg_ray.config import ConfigError, load_config
from fdpg_ray.seeding import EVAL, EVAL_BASE, derive_seed


def evaluate(target: str, config: str | None = None, n: int | None = None, overrides=None) -> dict:
    """Sample ``n`` texts from the model (a run's final/ or any model spec), score them
    with the config's target (base model = the config's model.path) and report the
    metrics of SPEC §1.

    The samples start from the contexts the run trained on (:func:`fdpg_ray.train.preflight.run_contexts`):
    for a conditional run, ``n / P`` samples for each of the P prompts of its prompts file
    (``n`` must be a multiple of P with at least 2 per prompt, else ConfigError), one
    Z_hat_c = mean P(x|c)/pi(x|c) per context, and metrics averaged over contexts (equal
    weight: every context has the same number of samples).  Unconditional: BOS + model.prompt,
    Z_hat from the same samples.  Returns ``log_z_hat`` (nats; the mean of log Z_hat_c over the
    contexts with Z_hat_c > 0) with its standard error ``log_z_hat_se`` (delta method, per
    context (k/ESS - 1)/(k - 1), combined over contexts), the effective sample size of the
    weights P/pi per context (``ess_mean``, ``ess_min``; out of ``samples_per_context``),
    ``log_z_hat_per_context``, ``contexts``, ``samples_per_context``,
    the importance-sampled divergences, alignment, diversity and example texts, and
    ``untrusted``: the keys flagged by the rule of the progress bar and the summary
    (:func:`fdpg_ray.objective.estimators.untrusted`: effective sample size below MIN_ESS),
    stated in ``untrusted_rule``.
    A run whose prompts file or model changed since it ran is refused (fdpg_ray.train.fingerprint)."""
    from fdpg_ray.rollout.hf_sampler import HFSampler

    from fdpg_ray.train.batch import ScoredBatch
    from fdpg_ray.train.diversity import diversity_metrics
    from fdpg_ray.objective.estimators import MIN_ESS, ess_too_small, is_metrics, untrusted
    from fdpg_ray.train.preflight import run_contexts
    from fdpg_ray.objective.loss import bos_prompt_ids
    from fdpg_ray.target.scoring import TargetScorer

    path = Path(target)
    run_dir = None
    if config is None:
        if not (path / "config.yaml").is_file():
            raise ConfigError(f"eval: '{target}' is not a run directory; pass --config CONFIG.yaml for a bare model")
        config = str(path / "config.yaml")
        model_spec = str(path / "final")
        run_dir = path
        if not (path / "final" / "config.json").is_file():
            raise ConfigError(f"eval: '{target}' has no final model (final/); the run did not finish")
    else:
        model_spec = target
    cfg = load_config(config, overrides)
    if run_dir is not None:
        from fdpg_ray.train.fingerprint import check_inputs

        check_inputs(cfg, run_dir, "eval", "restore it to evaluate this run on what it trained on")
    contexts = run_contexts(cfg)
    P = len(contexts)
    n = cfg.eval.samples if n is None else n
    if P == 1 and n < 2:
        raise ConfigError(f"--n: must be >= 2, got {n}")
    if n % P or n // P < 2:
        good = P * max(2, -(-n // P))
        raise ConfigError(f"--n: {n} samples over the run's {P} prompts is not the same number (>= 2) for every "
                          f"prompt, which per-context Z_hat needs; give a multiple of {P} such as --n {good}")
    k = n // P
    scorer = TargetScorer(cfg)
    if scorer.target.distributional:
        # lambdas: fitted on base samples, as at the start of training (every context; at least
        # target.fit_samples in all)
        base = HFSampler(cfg.model.path, seed=derive_seed(cfg.run.seed, EVAL_BASE))
        ids = [bos_prompt_ids(base.tokenizer, c) for c in contexts]
        fit_batch = ScoredBatch.from_samples(base.sample(ids, -(-cfg.target.fit_samples // P), cfg.model.max_new_tokens),
                                             contexts, ids)
        scorer.fit(fit_batch)
    sampler = HFSampler(model_spec, seed=derive_seed(cfg.run.seed, EVAL))
    ids = [bos_prompt_ids(sampler.tokenizer, c) for c in contexts]
    batch = ScoredBatch.from_samples(sampler.sample(ids, k, cfg.model.max_new_tokens, temperature=1.0), contexts, ids)
    batch.set_scores(scorer.score(batch))
    log_pi = batch.log_q
    log_w = batch.log_P - log_pi
    keys = batch.contexts
    per_context, se2, ess = {}, [], []
    for c in dict.fromkeys(keys):
        idx = torch.tensor([kk == c for kk in keys])
        lw = log_w[idx]
        per_context[c] = (torch.logsumexp(lw, 0) - math.log(len(lw))).item()
        if per_context[c] > -math.inf:
            # effective sample size of the weights P/pi, and the delta-method standard error of
            # log Z_hat_c: se^2 = Var(w)/(k mean(w)^2) = (k/ESS - 1)/(k - 1)
            e = 1.0 / float((torch.softmax(lw, 0) ** 2).sum())
            ess.append(e)
            se2.append(max(len(lw) / e - 1.0, 0.0) / (len(lw) - 1))
    log_z = torch.tensor([per_context[c] for c in keys], dtype=torch.float64)
    finite = [v for v in per_context.values() if v > -math.inf]
    out = {"model": model_spec, "samples": n, "contexts": P, "samples_per_context": k,
           "log_z_hat": sum(finite) / len(finite) if finite else -math.inf,
           "log_z_hat_se": math.sqrt(sum(se2)) / len(se2) if se2 else math.nan,
           "ess_mean": sum(ess) / len(ess) if ess else 0.0, "ess_min": min(ess) if ess else 0.0,
           "z_zero_contexts": sum(v == -math.inf for v in per_context.values()) / P}
    if P > 1:
        out["log_z_hat_per_context"] = per_context
    out.update({f"feature_{k_}": float(np.mean(v)) for k_, v in batch.features.items()})
    out["alignment"] = float(np.mean([np.mean(v) for v in batch.features.values()]))
    out.update(is_metrics(batch.log_P, log_z, log_pi, log_pi, batch.log_a))
    out.update(diversity_metrics(batch.texts, max_refs=64))
    # the same rule as the progress bar and the summary's '?': estimates not to be trusted
    out["untrusted"] = ((["log_z_hat"] if ess_too_small(out["ess_min"]) else [])
                        + [k_ for k_ in list(out) if f"{k_}_ess" in out and untrusted(out, k_)])
    out["untrusted_rule"] = f"effective sample size below {MIN_ESS:.0f} (log_z_hat: the smallest over contexts)"
    out["examples"] = ([c + t for c, t in zip(batch.contexts, batch.texts)][::k][:4] if P > 1
                       else batch.texts[:4])
    return out
