"""`fdpg-ray eval`: measure a model against a run's target from fresh samples."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .config import ConfigError, load_config
from .seeding import EVAL, EVAL_BASE, derive_seed


def evaluate(target: str, config: str | None = None, n: int | None = None, overrides=None) -> dict:
    """Sample ``n`` texts from the model (a run's final/ or any model spec), score them
    with the config's target (base model = the config's model.path) and report the
    metrics of SPEC §1.  Z is estimated from the same samples (Z_hat = mean P/pi)."""
    from actors.hf_engine import HFSampler

    from .diversity import diversity_metrics
    from .estimators import is_metrics
    from .scoring import TargetScorer

    path = Path(target)
    if config is None:
        if not (path / "config.yaml").is_file():
            raise ConfigError(f"eval: '{target}' is not a run directory; pass --config CONFIG.yaml for a bare model")
        config = str(path / "config.yaml")
        model_spec = str(path / "final")
        if not (path / "final" / "config.json").is_file():
            raise ConfigError(f"eval: '{target}' has no final model (final/); the run did not finish")
    else:
        model_spec = target
    cfg = load_config(config, overrides)
    n = n or cfg.eval.samples
    if n < 2:
        raise ConfigError(f"--n: must be >= 2, got {n}")
    scorer = TargetScorer(cfg)
    if scorer.target.distributional:
        # lambdas: fitted on base samples exactly as at the start of training
        base = HFSampler(cfg.model.path, seed=derive_seed(cfg.run.seed, EVAL_BASE))
        from .controller import make_batch
        from .models import bos_prompt_ids

        ids = [bos_prompt_ids(base.tokenizer, cfg.model.prompt)]
        fit_batch = make_batch(base.sample(ids, cfg.target.fit_samples, cfg.model.max_new_tokens), [cfg.model.prompt], ids)
        scorer.fit(fit_batch)
    sampler = HFSampler(model_spec, seed=derive_seed(cfg.run.seed, EVAL))
    from .controller import make_batch
    from .models import bos_prompt_ids

    ids = [bos_prompt_ids(sampler.tokenizer, cfg.model.prompt)]
    batch = make_batch(sampler.sample(ids, n, cfg.model.max_new_tokens, temperature=1.0), [cfg.model.prompt], ids)
    scored = scorer.score(batch)
    log_pi = batch["log_q"]
    log_z = (torch.logsumexp(scored["log_P"] - log_pi, 0) - math.log(n)).item()
    out = {"model": model_spec, "samples": n, "log_z_hat": log_z}
    out.update({f"feature_{k}": float(np.mean(v)) for k, v in scored["features"].items()})
    out["alignment"] = float(np.mean([np.mean(v) for v in scored["features"].values()]))
    out.update(is_metrics(scored["log_P"], log_z, log_pi, log_pi, scored["log_a"]))
    out.update(diversity_metrics(batch["texts"], max_refs=64))
    out["examples"] = batch["texts"][:4]
    return out
