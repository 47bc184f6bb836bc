"""The training controller: one f-DPG step, written once, run locally or on Ray Train.

The controller knows nothing about Ray.  It is handed:

* ``rollout``: ``submit(prompt_ids, n, seed) -> handle`` and ``collect(handle) -> list[Sample]``
  (:class:`fdpg_ray.rollout.samples.Sample`, from :class:`fdpg_ray.rollout.hf_sampler.HFSampler` /
  ``VLLMSampler``), and ``push_weights(named_tensors)`` (a Mapping or an iterable of (name, tensor) pairs);
* ``scorer``: ``score(batch) -> Scores`` (:class:`fdpg_ray.target.scoring.Scores`), ``fit(batch) ->
  {"lambdas", "moments"}`` and ``set_lambdas`` (a :class:`~fdpg_ray.target.scoring.TargetScorer` or a
  scorer actor group);
* ``sink``: where rows, samples, checkpoints and the final model go (:mod:`fdpg_ray.train.sink`);
* ``world``: the data-parallel group (:class:`SingleProcess` or :class:`TorchDistributed`).

Every worker runs the same code.  Rank 0 samples and scores, then broadcasts the scored
batch (:class:`fdpg_ray.train.batch.ScoredBatch`); each worker takes a contiguous shard, computes log pi with gradient, the f-DPG loss
and backward (DDP averages gradients); the detached log pi of all shards is gathered so
that Z_hat, the baseline and the metrics are identical on every worker.
"""

from __future__ import annotations

import math
import random
import time
from contextlib import nullcontext

import numpy as np
import torch

from fdpg_ray.config import Config, parse_proposal
from fdpg_ray.console import Progress
from fdpg_ray.objective.divergences import get_divergence
from fdpg_ray.train.batch import ScoredBatch
from fdpg_ray.train.diversity import distinct_n, self_bleu
from fdpg_ray.train.metrics import estimate_columns
from fdpg_ray.objective.estimators import LogPartition, is_metrics, make_baseline, mis_divergence, mis_kl_p_pi, untrusted
from fdpg_ray.objective.loss import SequenceLogProbs, bos_prompt_ids, collate, fdpg_loss
from fdpg_ray.rollout.proposals import proposal_kl_estimates
from fdpg_ray.train.parallel import drain, full_state_dict, full_weights, grad_norm_value, is_sharded, load_optimizer_state, optimizer_state
from fdpg_ray.seeding import BASE, PROMPT_ORDER, STEP, derive_seed


# ----------------------------------------------------------------------------- world

class SingleProcess:
    """The one-process data-parallel "group" (rank 0 of 1): every collective returns its input."""
    rank, size = 0, 1

    def broadcast(self, obj):
        """Return ``obj`` (nothing to broadcast to)."""
        return obj

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """Return ``t`` (the only shard is the whole batch)."""
        return t

    def sum(self, x: float) -> float:
        """Return ``x`` (the sum over one process)."""
        return x


class TorchDistributed:
    """torch.distributed group as set up by Ray Train (gloo on CPU, NCCL on GPU)."""

    def __init__(self):
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.size = dist.get_rank(), dist.get_world_size()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (any picklable object; ``broadcast_object_list``)."""
        box = [obj if self.rank == 0 else None]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's 1-D ``t`` in rank order (CPU tensor, length sum of the shards)."""
        parts = [None] * self.size
        self.dist.all_gather_object(parts, t.cpu())
        return torch.cat(parts)

    def sum(self, x: float) -> float:
        """The sum of ``x`` over all ranks (float64 all-reduce), on every rank."""
        t = torch.tensor([x], dtype=torch.float64)
        self.dist.all_reduce(t)  # gloo and NCCL both sum by default
        return t.item()


# ----------------------------------------------------------------------------- prompts

class PromptSource:
    """Unconditional (BOS + model.prompt) or conditional (prompts from a JSONL file)."""

    def __init__(self, cfg: Config, tokenizer, seed: int):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.rng = random.Random(seed)
        self.cursor = 0
        if cfg.prompts.file is None:
            self.texts = [cfg.model.prompt]
            self.per_step = 1
        else:
            from fdpg_ray.data import load_prompts

            self.texts = load_prompts(cfg.prompts.file, cfg.prompts.field, cfg.prompts.limit)
            self.per_step = min(cfg.prompts.per_step, len(self.texts))
            self.rng.shuffle(self.texts)
        if cfg.model.path == "toy" or cfg.model.path.startswith("toy:"):
            from fdpg_ray.model.toy import check_toy_prompt, parse_toy_spec

            tokens = parse_toy_spec(cfg.model.path).tokens
            for t in self.texts:
                check_toy_prompt(tokens, t, "prompts.file" if cfg.prompts.file else "model.prompt")
        self.ids = [bos_prompt_ids(tokenizer, t) for t in self.texts]

    @property
    def conditional(self) -> bool:
        """Whether prompts come from a file (a conditional target, one Z_c per prompt)."""
        return self.cfg.prompts.file is not None

    def next(self, batch_size: int) -> tuple[list[str], list[list[int]], int]:
        """(contexts, prompt ids, samples per prompt) for one step."""
        idx = [(self.cursor + i) % len(self.texts) for i in range(self.per_step)]
        self.cursor = (self.cursor + self.per_step) % len(self.texts)
        return [self.texts[i] for i in idx], [self.ids[i] for i in idx], batch_size // self.per_step

    def state_dict(self):
        """The cursor and the shuffled prompt list, for checkpoints."""
        return {"cursor": self.cursor, "texts": self.texts}

    def load_state_dict(self, state):
        """Restore the cursor and prompt order of :meth:`state_dict` (re-tokenising if the list changed)."""
        self.cursor = state["cursor"]
        if state["texts"] != self.texts:
            self.texts = state["texts"]
            self.ids = [bos_prompt_ids(self.tokenizer, t) for t in self.texts]


# ----------------------------------------------------------------------------- controller

# Conditional targets: the fewest base samples of a drawn per prompt at the start (Controller.base_plan).
MIN_BASE_SAMPLES_PER_CONTEXT = 8


def build_lr_scheduler(optimizer, schedule: str, steps: int, warmup_steps: int = 0):
    """torch's schedulers for ``learner.lr_schedule`` with ``learner.warmup_steps`` = W.

    Learning rate at update k (0-based), lr = ``learner.lr``, S = ``run.steps``:
      warm-up (k < W):  lr * (k + 1) / (W + 1)                      (LinearLR)
      constant:         lr
      cosine:           lr * (0.05 + 0.95 * (1 + cos(pi * (k - W) / (S - W))) / 2)
                        (CosineAnnealingLR to eta_min = 5% of lr at k = S; with W = 0 exactly
                        the schedule of earlier versions)
    The pieces are chained with SequentialLR at milestone W.  ValueError for an unknown schedule.
    """
    from torch.optim import lr_scheduler as sch

    if schedule == "cosine":
        main = sch.CosineAnnealingLR(optimizer, T_max=max(steps - warmup_steps, 1),
                                     eta_min=0.05 * optimizer.param_groups[0]["lr"])
    elif schedule == "constant":
        main = sch.ConstantLR(optimizer, factor=1.0, total_iters=0)
    else:
        raise ValueError(f"learner.lr_schedule: unknown schedule '{schedule}'; use constant or cosine")
    if warmup_steps <= 0:
        return main
    warm = sch.LinearLR(optimizer, start_factor=1.0 / (warmup_steps + 1), end_factor=1.0, total_iters=warmup_steps)
    return sch.SequentialLR(optimizer, [warm, main], milestones=[warmup_steps])


class Controller:
    """One f-DPG learner: sampling, scoring, the update, Z_hat, the baseline, metrics and checkpoints.

    The same object runs in one process (:mod:`fdpg_ray.train.local`) and on every Ray Train worker;
    the collaborators it is handed are described in the module docstring.
    """
    def __init__(self, cfg: Config, policy, tokenizer, *, rollout, scorer, sink=None, world=None,
                 exact=None, optimizer=None, model=None):
        """``policy`` is the transformers model (its state_dict is pushed and saved);
        ``model`` computes sequence log-probabilities with gradient: by default
        ``SequenceLogProbs(policy)``, under Ray Train that module wrapped in DDP/FSDP."""
        self.cfg = cfg
        self.policy = policy
        self.model = model if model is not None else SequenceLogProbs(policy, cfg.loss.chunk_size)
        self.tokenizer = tokenizer
        self.rollout, self.scorer, self.sink = rollout, scorer, sink
        self.world = world or SingleProcess()
        self.exact = exact
        self.divergence = get_divergence(cfg.divergence)
        # Only what trains (all of it, or a LoRA adapter) is in the optimizer and its state.
        self.optimizer = optimizer or torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad],
                                                        lr=cfg.learner.lr, weight_decay=cfg.learner.weight_decay)
        # FSDP2: parameters are shards; pushes, checkpoints and evaluation gather them
        # collectively (fdpg_ray.train.parallel), so every rank takes part in them.
        self.sharded = is_sharded(self.model)
        self._eval_copy = None
        self.scheduler = build_lr_scheduler(self.optimizer, cfg.learner.lr_schedule, cfg.run.steps,
                                            cfg.learner.warmup_steps)
        self.log_partition = LogPartition()
        self.baseline = make_baseline(cfg.loss.baseline, cfg.loss.baseline_momentum)
        self.prompts = PromptSource(cfg, tokenizer, derive_seed(cfg.run.seed, PROMPT_ORDER))
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.step = 0
        self.samples_seen = 0
        self.skipped_steps = 0
        self.last_sync_seconds = 0.0
        self.lambdas: dict[str, float] = {}
        self.achieved_moments: dict[str, float] = {}
        self.pending = None  # overlapped rollout for the next step
        self._prompts_before_pending = None
        self.base_batch: ScoredBatch | None = None  # samples of a (rank 0), the fixed evaluation set
        self.p_zero_seen = False  # P(x) = 0 met in the base samples or a batch (p_has_zeros)
        self.proposal = parse_proposal(cfg.rollout.proposal)
        self.proposal_updates = 0  # times the policy replaced a base/fixed proposal
        self._last_log_pi: torch.Tensor | None = None
        self.t0 = time.time()

    # ---- state (checkpoints) ------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything but the model weights.  Under FSDP the optimizer state is gathered
        collectively: call on every rank (only rank 0's copy is complete)."""
        # With an overlapped rollout in flight, resume re-draws that batch from the restored
        # policy (on-policy) rather than losing its prompts.
        if self.pending is not None:
            prompts, python_rng = self._prompts_before_pending
        else:
            prompts, python_rng = self.prompts.state_dict(), self.prompts.rng.getstate()
        return {
            "step": self.step, "samples_seen": self.samples_seen, "skipped_steps": self.skipped_steps,
            "log_partition": self.log_partition.state_dict(), "baseline": self.baseline.state_dict(),
            "prompts": prompts, "lambdas": self.lambdas,
            "achieved_moments": self.achieved_moments, "optimizer": optimizer_state(self.model, self.optimizer),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(), "python_rng": python_rng,
            "base_batch": self.base_batch,
            "proposal_updates": self.proposal_updates,
            **({"dataset_proposal": self.rollout.state_dict()} if self.proposal.kind == "dataset" else {}),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore everything :meth:`state_dict` saved except the weights (step, Z_hat, baseline,
        prompts, RNGs, optimizer, scheduler, base samples, dataset proposal cursor).
        """
        self.step = state["step"]
        self.samples_seen = state["samples_seen"]
        self.skipped_steps = state["skipped_steps"]
        self.log_partition.load_state_dict(state["log_partition"])
        self.baseline.load_state_dict(state["baseline"])
        self.prompts.load_state_dict(state["prompts"])
        self.prompts.rng.setstate(state["python_rng"])
        self.lambdas = state["lambdas"]
        self.achieved_moments = state["achieved_moments"]
        load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        base = state.get("base_batch")
        self.base_batch = ScoredBatch.from_dict(base) if isinstance(base, dict) else base  # dict: older checkpoints
        self.proposal_updates = state.get("proposal_updates", 0)
        if "dataset_proposal" in state:
            self.rollout.load_state_dict(state["dataset_proposal"])

    # ---- sampling -----------------------------------------------------------------
    def _submit(self, n_total: int, seed: int):
        contexts, prompt_ids, n = self.prompts.next(n_total)
        return contexts, prompt_ids, self.rollout.submit(prompt_ids, n, seed)

    def _collect(self, pending) -> ScoredBatch:
        contexts, prompt_ids, handle = pending
        return ScoredBatch.from_samples(self.rollout.collect(handle), contexts, prompt_ids)

    # ---- one step -----------------------------------------------------------------
    def _seed(self, step: int) -> int:
        """The rollout seed of step ``step``: hashed from (run.seed, step), never a neighbour of
        another step's (see :mod:`fdpg_ray.seeding`)."""
        return derive_seed(self.cfg.run.seed, STEP, step)

    def next_batch(self) -> ScoredBatch:
        """Rank 0 samples and scores the batch for this step (overlapping the next rollout
        with learning when rollout.overlap is on); all ranks receive the same batch."""
        batch = None
        if self.world.rank == 0:
            t0 = time.perf_counter()
            if self.pending is not None:
                batch = self._collect(self.pending)
                self.pending = None
            else:
                batch = self._collect(self._submit(self.cfg.learner.batch_size, self._seed(self.step)))
            if self.cfg.rollout.overlap and self.step + 1 < self.cfg.run.steps:
                # Sampled from the weights before this step's update: one step stale; the
                # importance weight pi_theta / q corrects for it.  (Scoring it in a background
                # thread too was measured slower on 2 cores: benchmarks/RESULTS.md.)
                # A checkpoint taken while this batch is in flight must not skip its prompts:
                # it records the prompt source as it was before they were drawn.
                self._prompts_before_pending = (self.prompts.state_dict(), self.prompts.rng.getstate())
                self.pending = self._submit(self.cfg.learner.batch_size, self._seed(self.step + 1))
            t1 = time.perf_counter()
            batch.set_scores(self.scorer.score(batch))
            batch.fill_unknown_log_q(batch.log_a)
            # Seconds the learner waited for this step's samples, and for their scores.
            batch.timing = {"rollout_wait_seconds": t1 - t0, "score_seconds": time.perf_counter() - t1}
        return self.world.broadcast(batch)

    def log_pi(self, batch: ScoredBatch, rows: slice, grad: bool) -> torch.Tensor:
        """Sequence log pi_theta (nats) over the generated tokens of the batch rows in the slice
        ``rows``: one value per row ([rows] float32/model dtype), with gradient when ``grad``.
        """
        ids, attn, comp = collate(batch.prompt_ids[rows], batch.completion_ids[rows], self.pad_id,
                                  next(self.policy.parameters()).device)
        with torch.set_grad_enabled(grad):
            return self.model(ids, attn, comp)

    def train_step(self, batch: ScoredBatch, update: bool = True) -> dict:
        """Update Z_hat, compute the loss on this worker's shard, step, gather, return metrics."""
        cfg, n = self.cfg, len(batch)
        t_start = time.time()
        contexts = batch.contexts if self.prompts.conditional else None
        self.check_hard_constraint(batch.log_P)
        self.log_partition.update(batch.log_P, batch.log_q, contexts)
        log_Z = self.log_partition.log_z_for(contexts, n)
        informative = torch.isfinite(log_Z)  # contexts with Z_hat = 0 say nothing about p yet
        mine = batch.shard_rows(self.world.rank, self.world.size)
        lo, hi = mine.start, mine.stop
        micro = cfg.learner.micro_batch_size
        # Dropout stays off (eval mode) while learning: log pi must be the same function
        # of theta that the rollout engine samples from, or the ratios pi/q and pi/p drift.
        self.model.eval()
        # The baseline's inputs, known before the gradient pass: pseudo-rewards and log weights
        # at log q (on-policy q = pi_theta, so log w = 0; docs/design.md, "Baseline"), or, for a
        # baseline that needs them at the current policy (self_normalized) on a batch not drawn
        # from it, at log pi_theta from one forward pass without gradient.
        lp_b = batch.log_q
        if self.baseline.needs_policy_log_probs and not self.batch_is_on_policy():
            with torch.no_grad():
                lp_b = self.world.all_gather(torch.cat([self.log_pi(batch, slice(s, min(s + micro, hi)), grad=False)
                                                        .double() for s in range(lo, hi, micro)]))
        pre = fdpg_loss(lp_b, batch.log_P, log_Z, self.divergence, log_q=batch.log_q,
                        clip_log_t=cfg.loss.clip_log_t, max_importance_weight=cfg.loss.max_importance_weight)
        B = self.baseline.value_for(contexts, n, rewards=pre.pseudo_reward, include=informative,
                                    log_weights=torch.log(pre.importance_weight))

        local_log_pi, loss_sum = [], 0.0
        if update:
            self.optimizer.zero_grad(set_to_none=True)
        for s in range(lo, hi, micro):
            e = min(s + micro, hi)
            last = e >= hi
            sync = nullcontext() if (last or not update) else _no_grad_sync(self.model)
            with sync:
                lp = self.log_pi(batch, slice(s, e), grad=update)
                out = fdpg_loss(lp, batch.log_P[s:e], log_Z[s:e], self.divergence, log_q=batch.log_q[s:e],
                                baseline=B[s:e], clip_log_t=cfg.loss.clip_log_t,
                                max_importance_weight=cfg.loss.max_importance_weight, normalizer=hi - lo)
                if update:
                    out.loss.backward()
            loss_sum += out.loss.item()
            local_log_pi.append(lp.detach().double())
        grad_norm = math.nan
        if update:
            grad_norm = grad_norm_value(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.learner.max_grad_norm))
            if math.isfinite(grad_norm):
                self.optimizer.step()
                self.scheduler.step()
            else:  # never let a NaN/inf reach the weights: skip this update
                self.optimizer.zero_grad(set_to_none=True)
                self.skipped_steps += 1
        log_pi = self.world.all_gather(torch.cat(local_log_pi))
        self._last_log_pi = log_pi
        loss = self.world.sum(loss_sum) / self.world.size

        # Same arithmetic as the loss, on the whole batch, for the baseline and metrics.
        full = fdpg_loss(log_pi, batch.log_P, log_Z, self.divergence, log_q=batch.log_q, baseline=B,
                         clip_log_t=cfg.loss.clip_log_t, max_importance_weight=cfg.loss.max_importance_weight)
        self.baseline.update(full.pseudo_reward, torch.where(informative, full.importance_weight, 0.0), contexts)
        self.samples_seen += n
        metrics = self.metrics(batch, log_pi, log_Z, full, loss, grad_norm)
        metrics["learn_seconds"] = time.time() - t_start
        return metrics

    # ---- metrics ------------------------------------------------------------------
    def metrics(self, batch, log_pi, log_Z, full, loss, grad_norm) -> dict:
        """The row logged for this step: loss, Z_hat, importance-sampled divergences
        (:func:`~fdpg_ray.objective.estimators.is_metrics`), diversity, lengths, pseudo-reward, baseline,
        gradient norm, timing and process stats.

        ``log_pi``, ``log_Z``: (n,) nats over the whole batch; ``full``: the batch's :class:`~fdpg_ray.objective.loss.LossOutput`.
        """
        texts = batch.texts
        m = {
            "step": self.step, "samples": self.samples_seen, "loss": loss,
            "z_hat": self.log_partition.mean_z_hat(), "log_z_hat": self.log_partition.mean_log_z(),
            "z_zero_contexts": self.log_partition.zero_fraction(),
            "alignment": self.alignment(batch.features),
        }
        contexts = batch.contexts if self.prompts.conditional else None
        m["log_z_hat_se"] = self.log_partition.mean_log_z_se()
        m["log_z_hat_ess"] = sum(self.log_partition.ess(k) for k in self.log_partition.count)
        m.update(is_metrics(batch.log_P, log_Z, log_pi, batch.log_q, batch.log_a, self.divergence,
                            log_Z_se=self.log_partition.log_z_se_for(contexts, len(texts)), contexts=contexts,
                            p_has_zeros=self.p_has_zeros(batch)))
        m.update({
            **{f"distinct_{k}": distinct_n(texts, k) for k in (1, 2, 3)},
            "mean_length": float(np.mean([len(c) for c in batch.completion_ids])),
            "pseudo_reward_mean": full.pseudo_reward.mean().item(),
            "baseline": self.baseline.value.get("*", 0.0),
            "importance_weight_mean": full.importance_weight.mean().item(),
            "logq_logpi_gap": (batch.log_q - log_pi).abs().mean().item(),
            "grad_norm": grad_norm, "skipped_steps": self.skipped_steps, "lr": self.scheduler.get_last_lr()[0],
            "seconds": time.time() - self.t0,
            **process_stats(),
        })
        for name, value in self.feature_means(batch.features).items():
            m[f"feature_{name}"] = value
        return m

    def p_has_zeros(self, batch: ScoredBatch | None = None) -> bool:
        """Whether P(x) = 0 has been seen (base samples or ``batch``): then D_f = +inf for the
        divergences whose f*(0) is infinite (a softmax policy puts mass everywhere)."""
        if not self.p_zero_seen:
            seen = [b.log_P for b in (self.base_batch, batch) if b is not None and b.scored]
            self.p_zero_seen = any(bool((torch.as_tensor(x) == -math.inf).any()) for x in seen)
        return self.p_zero_seen

    def feature_means(self, features) -> dict[str, float]:
        """{feature name: mean over the batch} (logged as feature_<name>)."""
        return {k: float(np.mean(v)) for k, v in features.items()}

    def alignment(self, features) -> float:
        """Mean over the target's constraints of E_pi[feature]: E_pi[b] for pointwise ones,
        E_pi[phi] for distributional ones (compare with the moment), E_pi[r] for rewards.
        Each feature's mean is also logged as feature_<name>."""
        means = list(self.feature_means(features).values())
        return float(np.mean(means)) if means else math.nan

    def evaluation(self, batch, policy=None) -> dict:
        """Extra metrics at evaluation steps: Self-BLEU, KL(p||pi) on the base samples, exact
        divergences on the toy task.  ``policy``: an unsharded model to evaluate (default
        ``self.policy``; under FSDP the copy :meth:`gathered_policy` returned)."""
        policy = policy if policy is not None else self.policy
        extra = {"self_bleu": self_bleu(batch.texts, max_refs=64)}
        if self.base_batch is not None:
            extra.update(self.kl_p_pi_on_base_samples(batch if self.batch_is_on_policy() else None, policy))
        if self.exact is not None:
            if hasattr(self.exact, "set_lambdas"):
                self.exact.set_lambdas(self.lambdas)
            extra.update(self.exact.metrics(policy, extra=(self.divergence.name,)))
        return extra

    def batch_is_on_policy(self) -> bool:
        """Whether a step's batch is drawn from the current policy pi_theta itself (weights
        synced every step, no overlapped stale rollout, temperature 1), so that pi_theta is
        its proposal density and it can join the base samples in kl_p_pi_base."""
        r = self.cfg.rollout
        return self.proposal.follows_policy and not r.overlap and r.sync_every == 1 and r.temperature == 1.0

    def gathered_policy(self):
        """FSDP only, collective (every rank calls it): the whole policy gathered into an
        unsharded copy on rank 0 (returned there; None elsewhere), for the rank-0-only
        evaluation.  It costs one full model of memory on rank 0's host."""
        state = full_state_dict(self.policy)
        if self.world.rank != 0:
            return None
        if self._eval_copy is None:
            from transformers import AutoModelForCausalLM

            dtype = next(iter(state.values())).dtype
            self._eval_copy = AutoModelForCausalLM.from_config(self.policy.config, dtype=dtype)
            self._eval_copy.eval()
        self._eval_copy.load_state_dict(state)
        return self._eval_copy

    def push_weights(self) -> float:
        """Send the policy's weights to the rollout engine (rank 0); under FSDP every rank takes
        part in gathering them, tensor by tensor, as rank 0's push consumes them
        (:func:`fdpg_ray.train.parallel.full_weights`).  A LoRA policy sends only its merged adapted
        modules.  Returns the seconds spent."""
        t0 = time.perf_counter()
        weights = full_weights(self.policy, changed_only=True)
        if self.world.rank == 0:
            self.rollout.push_weights(weights)
        elif self.sharded:
            drain(weights)
        return time.perf_counter() - t0

    @torch.no_grad()
    def _policy_log_probs(self, b: ScoredBatch, lm=None) -> torch.Tensor:
        """log pi(x) (nats, shape (n,)) of the rows of ``b`` under ``lm`` (an unsharded model,
        default ``self.policy``), micro-batch by micro-batch, on rank 0."""
        lm = lm if lm is not None else self.policy
        policy = SequenceLogProbs(lm, self.cfg.loss.chunk_size)  # not the DDP wrapper: rank 0 only
        policy.eval()
        device = next(lm.parameters()).device
        out = []
        for s in range(0, len(b), self.cfg.learner.micro_batch_size):
            e = s + self.cfg.learner.micro_batch_size
            ids, attn, comp = collate(b.prompt_ids[s:e], b.completion_ids[s:e], self.pad_id, device)
            out.append(policy(ids, attn, comp).double().cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    def _base_pool(self, batch: ScoredBatch | None, policy=None) -> tuple:
        """(log P, log pi, log a, from_policy, contexts) of the base samples, pooled with the
        on-policy ``batch`` (its rows whose context the base samples cover) when given."""
        b = self.base_batch
        keys = list(b.contexts) if self.prompts.conditional else [""] * len(b)
        # The fixed batch's own proposal density is its log q: log a when it was drawn from a at
        # temperature 1 (the only case in which it is pooled with policy samples), the proposal's
        # under rollout.proposal = fixed:/dataset: (fdpg_ray/rollout/proposals.py).
        log_P, log_pi, log_a = [b.log_P], [self._policy_log_probs(b, policy)], [b.log_q]
        from_policy = [torch.zeros(len(keys), dtype=torch.bool)]
        if batch is not None:
            based = set(keys)
            # only contexts that the base samples cover: the estimate's contexts stay fixed
            rows = [i for i, c in enumerate(batch.contexts) if (c if self.prompts.conditional else "") in based]
            if rows:
                sub = batch.rows(rows)
                log_P.append(sub.log_P)
                log_pi.append(self._policy_log_probs(sub, policy))
                log_a.append(sub.log_a)
                from_policy.append(torch.ones(len(rows), dtype=torch.bool))
                keys = keys + [c if self.prompts.conditional else "" for c in sub.contexts]
        return torch.cat(log_P), torch.cat(log_pi), torch.cat(log_a), torch.cat(from_policy), keys

    @torch.no_grad()
    def kl_p_pi_on_base_samples(self, batch: ScoredBatch | None = None, policy=None) -> dict:
        """KL(p || pi) on the fixed set of base-model samples drawn at the start
        (max(target.fit_samples, eval.base_samples) of them), pooled with the step's policy
        ``batch`` when it is drawn from the current policy (:meth:`batch_is_on_policy`):
        multiple importance sampling with the balance heuristic, proposal per context
        q_c = (n_a a + n_pi pi) / (n_a + n_pi), self-normalised per context
        (:func:`fdpg_ray.objective.estimators.mis_kl_p_pi`; equation in docs/design.md).  Contexts are
        averaged uniformly over the contexts of the base samples.

        Returns kl_p_pi_base with _se and _ess, log_z_base (the same pool's estimate of
        log Z, mean over contexts) with _se and _ess, and tv_p_pi_base, js_p_pi_base and
        divergence_base (the run's D_f) from the same pool (:func:`~fdpg_ray.objective.estimators.mis_divergence`);
        nats; and base_samples, the size of the fixed base batch (count).  kl_p_pi_base is the
        number to compare runs by.
        """
        *pool, keys = self._base_pool(batch, policy)
        out = mis_kl_p_pi(*pool, keys)
        res = {}
        for name, of in (("kl_p_pi_base", "kl_p_pi"), ("log_z_base", "log_z")):
            res.update(zip(estimate_columns(name), (out[of], out[f"{of}_se"], out[f"{of}_ess"])))
        for name, div in (("tv_p_pi_base", get_divergence("tv")), ("js_p_pi_base", get_divergence("js")),
                          ("divergence_base", self.divergence)):
            d = mis_divergence(*pool, div, keys, p_has_zeros=self.p_has_zeros())
            res.update(zip(estimate_columns(name), (d["value"], d["se"], d["ess"])))
        res["base_samples"] = float(len(self.base_batch))  # below MIN_BASE_SAMPLES these are flagged
        return res

    # ---- the whole run --------------------------------------------------------------
    def start(self, resume: dict | None = None) -> None:
        """Fresh start: fit lambdas and seed Z_hat on base samples.  Resume: restore state."""
        if resume is not None:
            self.load_state_dict(resume)
            if self.world.rank == 0:
                self.scorer_set_lambdas(self.lambdas)
            if self.proposal.follows_policy or self.proposal_updates:
                self.push_weights()  # every rank: under FSDP they gather the weights together
            return
        info = None
        if self.world.rank == 0:
            batch = self._collect(self._submit_base(seed=derive_seed(self.cfg.run.seed, BASE)))
            if torch.isnan(batch.log_q).any():  # a dataset proposal without log q: q := a
                batch.fill_unknown_log_q(self.scorer.score(batch).log_a)
            fit = self.scorer.fit(batch)
            batch.set_scores(self.scorer.score(batch))
            info = {"log_P": batch.log_P, "log_q": batch.log_q, "contexts": batch.contexts, **fit}
            self.base_batch = batch  # kept as the fixed evaluation set drawn from a
        info = self.world.broadcast(info)
        self.lambdas, self.achieved_moments = info["lambdas"], info["moments"]
        self.check_hard_constraint(info["log_P"])
        if not torch.isfinite(info["log_P"]).any():
            from fdpg_ray.target.energy import TargetError

            raise TargetError(f"target: none of the {len(info['log_P'])} initial samples has P(x) > 0 (Z_hat = 0); "
                              f"raise eval.base_samples or soften the constraint")
        self.log_partition.update(info["log_P"], info["log_q"], info["contexts"] if self.prompts.conditional else None)

    def base_plan(self) -> tuple[list[str], list[list[int]], int]:
        """(contexts, prompt ids, samples per context) of the base batch drawn from a at the start.

        n = max(``target.fit_samples``, ``eval.base_samples``).  Unconditional: n samples of the
        one prompt.  Conditional: every prompt of the file (after ``prompts.limit``), each with max(ceil(n / C),
        MIN_BASE_SAMPLES_PER_CONTEXT) samples, so that the lambda fit, the initial Z_hat_c and
        kl_p_pi_base cover every context the run trains and evaluates on (docs/design.md).
        Does not move the prompt cursor: step 0 starts at the first prompt."""
        # also kl_p_pi_base's evaluation set: at least eval.base_samples of them
        src, n = self.prompts, max(self.cfg.target.fit_samples, self.cfg.eval.base_samples)
        if not src.conditional:
            contexts, ids, per = src.texts, src.ids, n
        else:
            contexts, ids = list(src.texts), list(src.ids)
            per = max(math.ceil(n / len(contexts)), MIN_BASE_SAMPLES_PER_CONTEXT)
        return contexts, ids, per

    def _submit_base(self, seed: int):
        contexts, prompt_ids, per = self.base_plan()
        return contexts, prompt_ids, self.rollout.submit(prompt_ids, per, seed)

    def check_hard_constraint(self, log_P) -> None:
        """chi2 / alpha > 1 with a sample whose P(x) = 0: D_f(pi||p) = +inf for every softmax
        policy, so stop with a one-line TargetError (exit 2) instead of training on pseudo-rewards
        of -1e9.  Scorers known to give b = 0 are refused earlier, at config validation."""
        from fdpg_ray.config import infinite_at_p_zero

        if infinite_at_p_zero(self.divergence) and bool((torch.as_tensor(log_P) == -math.inf).any()):
            from fdpg_ray.target.energy import TargetError

            k = int((torch.as_tensor(log_P) == -math.inf).sum())
            raise TargetError(f"divergence: {self.divergence.name} is +inf for every policy here: {k} of "
                              f"{len(log_P)} samples have P(x) = 0 (a pointwise b(x) = 0); use another divergence "
                              f"(kl, js, tv, hellinger, rkl, alpha:<a> with a < 1) or a soft constraint (kind: reward)")

    def maybe_update_proposal(self, batch: ScoredBatch, update: bool) -> dict:
        """GDC's adaptive proposal (``rollout.proposal_update``, fdpg_ray/rollout/proposals.py): every
        K steps, when the policy's estimated KL(p||pi) on this step's proposal samples is below
        the proposal's KL(p||q), push the policy's weights (just updated by this step) to the
        rollout engines, which makes it the proposal from the next step on.  The comparison uses
        log pi before this step's update.  Returns the metrics ``kl_p_q`` (nats) with its
        ``_se`` and ``_ess`` (:func:`proposal_kl_estimates`: self-normalised per context,
        averaged over the contexts) and ``proposal_updates`` (count) when the rule is on, else {}."""
        rule = self.cfg.rollout.proposal_update
        if not rule or self.proposal.follows_policy:
            return {}
        of_pi, of_q = proposal_kl_estimates(batch.log_P, batch.log_q, self._last_log_pi,
                                            batch.contexts if self.prompts.conditional else None)
        due = update and (self.step + 1) % rule.get("every", 1) == 0
        if due and of_pi["kl_p_pi"] < of_q["kl_p_pi"]:  # the same decision on every rank: log pi was gathered
            self.proposal_updates += 1
            self.push_weights()
        return {**dict(zip(estimate_columns("kl_p_q"), (of_q["kl_p_pi"], of_q["kl_p_pi_se"], of_q["kl_p_pi_ess"]))),
                "proposal_updates": self.proposal_updates}

    def scorer_set_lambdas(self, lambdas):
        """Hand the fitted distributional lambdas ``{name: lambda}`` to the scorer."""
        self.scorer.set_lambdas(lambdas)

    def run(self, *, resume: dict | None = None, on_step=None) -> list[dict]:
        """Steps 0..S-1 update the policy; step S only measures the final policy.
        ``on_step(metrics, checkpoint_due)`` is called on every rank after every step."""
        cfg = self.cfg
        self.start(resume)
        if self.sink is not None and self.world.rank == 0:
            self.sink.truncate(self.step)
        bar = None
        if cfg.run.progress and self.world.rank == 0:
            bar = Progress(cfg.run.steps + 1, self.step, f"{cfg.run.name} [{self.divergence.name}]", first_step=0)
        rows = []
        while self.step <= cfg.run.steps:
            update = self.step < cfg.run.steps
            batch = self.next_batch()
            evaluate = self.step % cfg.run.eval_every == 0 or not update
            eval_policy = self.gathered_policy() if (evaluate and self.sharded) else None
            evaluate = evaluate and self.world.rank == 0
            extra = self.evaluation(batch, eval_policy) if evaluate else {}  # before the update: row k is theta_k
            m = self.train_step(batch, update=update)
            m.update(self.maybe_update_proposal(batch, update))
            m.update(extra)
            m.update(batch.timing)
            m["sync_seconds"], self.last_sync_seconds = self.last_sync_seconds, 0.0
            if evaluate:
                if self.sink is not None:
                    self.sink.samples(self.step, sample_records(batch, m["step"], cfg.eval.n_texts * 8))
            if self.sink is not None and self.world.rank == 0:
                self.sink.row(m)
            rows.append(m)
            if bar is not None:
                bar.update({"D": flagged(m, "divergence"), "alignment": f"{m['alignment']:.3f}",
                            "kl_p_pi": flagged(m, "kl_p_pi")})
            self.step += 1
            if update and self.proposal.follows_policy and self.step % cfg.rollout.sync_every == 0:
                self.last_sync_seconds = self.push_weights()  # logged in the next row
            if on_step is not None:
                on_step(m, update and self.step % cfg.run.checkpoint_every == 0)
        if bar is not None:
            bar.close()
        return rows


def flagged(m: dict, key: str, fmt: str = ".3f") -> str:
    """``m[key]`` formatted, with '?' appended when the estimate is not to be trusted
    (:func:`fdpg_ray.objective.estimators.untrusted`: ESS below 30, a failed mass check, or a
    base batch below 4096 samples for the base-pool estimates)."""
    value = format(m[key], fmt)
    return value + "?" if untrusted(m, key) else value


def _no_grad_sync(model):
    """Skip the gradient all-reduce of a micro-batch that is not the last: DDP's ``no_sync``,
    FSDP2's ``set_requires_gradient_sync(False)`` (restored on exit); no-op otherwise."""
    if hasattr(model, "no_sync"):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        from contextlib import contextmanager

        @contextmanager
        def off():
            model.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                model.set_requires_gradient_sync(True)
        return off()
    return nullcontext()


def process_stats() -> dict:
    """Resident memory (MiB) and open file descriptors of this process (psutil; {} where the
    platform does not tell): logged every step so that a leak shows as a slope."""
    import psutil

    try:
        proc = psutil.Process()
        return {"rss_mib": proc.memory_info().rss / 2 ** 20, "open_fds": proc.num_fds()}
    except (psutil.Error, AttributeError):  # num_fds does not exist on Windows
        return {}


def sample_records(batch: ScoredBatch, step: int, limit: int) -> list[dict]:
    """The first ``limit`` samples of ``batch`` as JSON-ready dicts for RUN_DIR/samples/STEP.jsonl.

    Each holds step, context, text, log_q, log_P, log_a (nats) and feature_<name>.
    """
    out = []
    for i, text in enumerate(batch.texts[:limit]):
        rec = {"step": step, "context": batch.contexts[i], "text": text,
               "log_q": float(batch.log_q[i]), "log_P": float(batch.log_P[i]),
               "log_a": float(batch.log_a[i])}
        rec.update({f"feature_{k}": float(v[i]) for k, v in batch.features.items()})
        out.append(rec)
    return out
