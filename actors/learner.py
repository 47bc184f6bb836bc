"""The Ray Train learner: ``train_loop_per_worker`` for ``TorchTrainer``.

Every worker builds the policy, wraps it for data parallelism (DDP, or FSDP for models
that do not fit one device) and runs the same :class:`fdpg_ray.controller.Controller`.
Rank 0 drives the rollout and scorer actors, whose handles arrive in the loop config,
and writes through the run's sink actor.  Every worker calls ``ray.train.report`` once
per step; rank 0 attaches a checkpoint every ``run.checkpoint_every`` steps.
"""

from __future__ import annotations

import logging
import os
import tempfile

import ray
import ray.train
import ray.train.torch
import torch

from actors.rollout import RolloutGroup, _config
from actors.scorer import ScorerGroup
from fdpg_ray.controller import Controller, SingleProcess, TorchDistributed
from fdpg_ray.loss import SequenceLogProbs
from fdpg_ray.models import load_model_and_tokenizer

STATE_FILE = "fdpg_state.pt"


class _SyncProxy:
    """Call an actor's methods synchronously: proxy.row(m) == ray.get(actor.row.remote(m))."""

    def __init__(self, handle):
        self._h = handle

    def __getattr__(self, name):
        method = getattr(self._h, name)
        return lambda *a, **k: ray.get(method.remote(*a, **k))


def train_loop_per_worker(loop_config: dict) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # Ray Train logs every report at INFO from the workers; keep the console for the bar.
    logging.getLogger("ray.train").setLevel(logging.WARNING)
    cfg = _config(loop_config["config"])
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    torch.manual_seed(cfg.run.seed)

    policy, tokenizer = load_model_and_tokenizer(cfg.model.path, dtype=cfg.model.dtype)
    # The module that computes log pi is what DDP/FSDP wraps, so its forward syncs gradients.
    model = ray.train.torch.prepare_model(SequenceLogProbs(policy, cfg.loss.chunk_size),
                                          parallel_strategy=cfg.learner.strategy)
    policy = (model.module if hasattr(model, "module") else model).lm
    world = TorchDistributed() if ctx.get_world_size() > 1 else SingleProcess()

    exact = None
    if rank == 0 and cfg.target.exact:
        from fdpg_ray.scoring import TargetScorer
        from fdpg_ray.toy import exact_task_for

        local = TargetScorer(cfg)
        exact = exact_task_for(cfg, local)

    controller = Controller(
        cfg, policy, tokenizer, model=model,
        rollout=RolloutGroup(loop_config["rollout_actors"]),
        scorer=ScorerGroup(loop_config["scorer_actors"]),
        sink=_SyncProxy(loop_config["sink"]) if rank == 0 else None,
        world=world, exact=exact,
    )

    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, STATE_FILE), weights_only=False)
        policy.load_state_dict(state["model"])
        resume = state["controller"]

    def on_step(metrics: dict, checkpoint_due: bool) -> None:
        metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if checkpoint_due and rank == 0:
            with tempfile.TemporaryDirectory() as d:
                torch.save({"model": {k: v.detach().cpu() for k, v in policy.state_dict().items()},
                            "controller": controller.state_dict()}, os.path.join(d, STATE_FILE))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)

    controller.run(resume=resume, on_step=on_step)
    if rank == 0:
        state = {k: v.detach().cpu() for k, v in policy.state_dict().items()}
        ray.get(loop_config["sink"].save_model.remote(state, cfg.model.path))
