"""The Ray Train learner: ``train_loop_per_worker`` for ``TorchTrainer``.

Every worker builds the policy (with a LoRA adapter when ``learner.lora`` is set), wraps it
for data parallelism (DDP, or FSDP2 ``fully_shard`` for models that do not fit one device)
and runs the same :class:`fdpg_ray.train.controller.Controller`.
Rank 0 drives the rollout and scorer actors, whose handles arrive in the loop config,
and writes through the run's sink actor.  Every worker calls ``ray.train.report`` once
per step; rank 0 attaches a checkpoint every ``run.checkpoint_every`` steps.
"""

from __future__ import annotations

import os
import tempfile

import ray
import ray.train
import ray.train.torch
import torch

from actors.rollout import RolloutGroup, _config
from actors.scorer import ScorerGroup
from fdpg_ray.config import parse_proposal
from fdpg_ray.console import send_output_to_log
from fdpg_ray.train.controller import Controller, SingleProcess, TorchDistributed
from fdpg_ray.model.lora import adapter_state, apply_lora, load_adapter_state
from fdpg_ray.objective.loss import SequenceLogProbs
from fdpg_ray.model.sources import load_model_and_tokenizer
from fdpg_ray.train.parallel import drain, full_state_dict, full_weights, shard_policy
from fdpg_ray.rollout.proposals import DatasetProposal
from fdpg_ray.seeding import PROPOSAL_DATA, derive_seed

STATE_FILE = "fdpg_state.pt"


class _SyncProxy:
    """Call an actor's methods synchronously: proxy.row(m) == ray.get(actor.row.remote(m))."""

    def __init__(self, handle):
        self._h = handle

    def __getattr__(self, name):
        method = getattr(self._h, name)
        return lambda *a, **k: ray.get(method.remote(*a, **k))


def train_loop_per_worker(loop_config: dict) -> None:
    """One learner worker of Ray Train's TorchTrainer: builds the policy (DDP/FSDP/LoRA), the
    :class:`~fdpg_ray.train.controller.Controller` with the run's rollout, scorer and sink actors,
    runs it (rank 0 reports metrics and checkpoints), and hands the final weights to the sink.
    ``loop_config``: config (dict), rollout_actors, scorer_actors, sink, run_dir."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    # Ray Train logs every report at INFO from the workers (under a logger named by its file,
    # which RunConfig's LoggingConfig does not reach): with the libraries' output it goes to
    # RUN_DIR/logs/, and the console keeps the progress bar (fdpg_ray.console).
    send_output_to_log(loop_config.get("run_dir"), f"learner{rank}")
    cfg = _config(loop_config["config"])
    torch.manual_seed(cfg.run.seed)

    policy, tokenizer = load_model_and_tokenizer(cfg.model.path, dtype=cfg.model.dtype)
    lora = cfg.learner.lora is not None
    if lora:
        policy = apply_lora(policy, cfg.learner.lora)  # only the adapter trains

    # Checkpoints hold whole tensors (or the LoRA adapter alone), loaded before any wrapping;
    # docs/design.md ("Checkpoints under FSDP").
    resume = None
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = torch.load(os.path.join(d, STATE_FILE), weights_only=False)
        if lora:
            load_adapter_state(policy, state["model"])
        else:
            policy.load_state_dict(state["model"])
        resume = state["controller"]

    # The module that computes log pi is what DDP/FSDP wraps, so its forward syncs gradients.
    wrapper = SequenceLogProbs(policy, cfg.loss.chunk_size)
    if cfg.learner.strategy == "fsdp":
        # FSDP2 applied here: Ray Train's prepare_model(parallel_strategy="fsdp") is FSDP1 and
        # refuses CPU ("FSDP is only available with GPU-enabled training").
        wrapper.to(ray.train.torch.get_device())
        model = shard_policy(wrapper, policy)
    else:
        model = ray.train.torch.prepare_model(wrapper, parallel_strategy=cfg.learner.strategy)
        policy = (model.module if hasattr(model, "module") else model).lm
    world = TorchDistributed() if ctx.get_world_size() > 1 else SingleProcess()

    exact = None
    if rank == 0 and cfg.target.exact:
        from fdpg_ray.target.scoring import TargetScorer
        from fdpg_ray.model.toy import exact_task_for

        local = TargetScorer(cfg)
        exact = exact_task_for(cfg, local)

    proposal = parse_proposal(cfg.rollout.proposal)
    rollout = (DatasetProposal(proposal.path, tokenizer, derive_seed(cfg.run.seed, PROPOSAL_DATA))
               if proposal.kind == "dataset" else
               RolloutGroup(loop_config["rollout_actors"], weight_sync=cfg.rollout.weight_sync,
                            bucket_mb=cfg.rollout.sync_bucket_mb,
                            use_gpu=cfg.learner.use_gpu and cfg.rollout.gpus_per_actor > 0))
    controller = Controller(
        cfg, policy, tokenizer, model=model,
        rollout=rollout,
        scorer=ScorerGroup(loop_config["scorer_actors"]),
        sink=_SyncProxy(loop_config["sink"]) if rank == 0 else None,
        world=world, exact=exact,
    )
    sharded = controller.sharded

    def on_step(metrics: dict, checkpoint_due: bool) -> None:
        metrics = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if checkpoint_due and (rank == 0 or sharded):
            # Under FSDP both gathers are collective: every rank takes part, rank 0 writes.
            model_state = adapter_state(policy) if lora else full_state_dict(policy)
            controller_state = controller.state_dict()
            if rank == 0:
                with tempfile.TemporaryDirectory() as d:
                    torch.save({"model": model_state, "controller": controller_state}, os.path.join(d, STATE_FILE))
                    ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
                return
        ray.train.report(metrics)

    controller.run(resume=resume, on_step=on_step)
    weights = full_weights(policy)  # LoRA: merged W0 + BA under the base names
    if rank == 0:
        ray.get(loop_config["sink"].save_model.remote(dict(weights), cfg.model.path))
    elif sharded:
        drain(weights)
