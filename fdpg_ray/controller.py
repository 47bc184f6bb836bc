"""The training controller: one f-DPG step, written once, run locally or on Ray Train.

The controller knows nothing about Ray.  It is handed:

* ``rollout``: ``submit(prompt_ids, n, seed) -> handle`` and ``collect(handle) -> list[dict]``
  (the samples of :class:`actors.hf_engine.HFSampler` / ``VLLMSampler``), and
  ``push_weights(state_dict)``;
* ``scorer``: ``score(batch) -> {"log_a", "features", "log_P"}``, ``fit(batch) -> {"lambdas",
  "moments"}`` and ``set_lambdas`` (a :class:`~fdpg_ray.scoring.TargetScorer` or a scorer actor group);
* ``sink``: where rows, samples, checkpoints and the final model go (:mod:`fdpg_ray.sink`);
* ``world``: the data-parallel group (:class:`SingleProcess` or :class:`TorchDistributed`).

Every worker runs the same code.  Rank 0 samples and scores, then broadcasts the scored
batch; each worker takes a contiguous shard, computes log pi with gradient, the f-DPG loss
and backward (DDP averages gradients); the detached log pi of all shards is gathered so
that Z_hat, the baseline and the metrics are identical on every worker.
"""

from __future__ import annotations

import math
import os
import random
import time
from contextlib import nullcontext

import numpy as np
import torch

from .config import Config
from .divergences import get_divergence
from .diversity import distinct_n, self_bleu
from .estimators import LogPartition, MovingBaseline, is_metrics
from .loss import SequenceLogProbs, collate, fdpg_loss
from .models import bos_prompt_ids
from .seeding import BASE, PROMPT_ORDER, STEP, derive_seed


# ----------------------------------------------------------------------------- world

class SingleProcess:
    rank, size = 0, 1

    def broadcast(self, obj):
        return obj

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def sum(self, x: float) -> float:
        return x


class TorchDistributed:
    """torch.distributed group as set up by Ray Train (gloo on CPU, NCCL on GPU)."""

    def __init__(self):
        import torch.distributed as dist

        self.dist = dist
        self.rank, self.size = dist.get_rank(), dist.get_world_size()

    def broadcast(self, obj):
        box = [obj if self.rank == 0 else None]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, t: torch.Tensor) -> torch.Tensor:
        parts = [None] * self.size
        self.dist.all_gather_object(parts, t.cpu())
        return torch.cat(parts)

    def sum(self, x: float) -> float:
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
            from .data import load_prompts

            self.texts = load_prompts(cfg.prompts.file, cfg.prompts.field, cfg.prompts.limit)
            self.per_step = min(cfg.prompts.per_step, len(self.texts))
            self.rng.shuffle(self.texts)
        self.ids = [bos_prompt_ids(tokenizer, t) for t in self.texts]

    @property
    def conditional(self) -> bool:
        return self.cfg.prompts.file is not None

    def next(self, batch_size: int) -> tuple[list[str], list[list[int]], int]:
        """(contexts, prompt ids, samples per prompt) for one step."""
        idx = [(self.cursor + i) % len(self.texts) for i in range(self.per_step)]
        self.cursor = (self.cursor + self.per_step) % len(self.texts)
        return [self.texts[i] for i in idx], [self.ids[i] for i in idx], batch_size // self.per_step

    def state_dict(self):
        return {"cursor": self.cursor, "texts": self.texts}

    def load_state_dict(self, state):
        self.cursor = state["cursor"]
        if state["texts"] != self.texts:
            self.texts = state["texts"]
            self.ids = [bos_prompt_ids(self.tokenizer, t) for t in self.texts]


def make_batch(samples: list[dict], contexts: list[str], prompt_ids: list[list[int]]) -> dict:
    return {
        "prompt_ids": [prompt_ids[s["prompt_index"]] for s in samples],
        "completion_ids": [s["token_ids"] for s in samples],
        "texts": [s["text"] for s in samples],
        "contexts": [contexts[s["prompt_index"]] for s in samples],
        "log_q": torch.tensor([s["log_q"] for s in samples], dtype=torch.float64),
    }


# ----------------------------------------------------------------------------- controller

class Controller:
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
        self.optimizer = optimizer or torch.optim.AdamW(self.model.parameters(), lr=cfg.learner.lr,
                                                        weight_decay=cfg.learner.weight_decay)
        steps = max(cfg.run.steps, 1)
        schedule = (lambda k: 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps))) \
            if cfg.learner.lr_schedule == "cosine" else (lambda k: 1.0)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.log_partition = LogPartition()
        self.baseline = MovingBaseline(cfg.loss.baseline_momentum, enabled=cfg.loss.baseline)
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
        self.base_batch: dict | None = None  # samples of a (rank 0), the fixed evaluation set
        self.t0 = time.time()

    # ---- state (checkpoints) ------------------------------------------------------
    def state_dict(self) -> dict:
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
            "achieved_moments": self.achieved_moments, "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(), "python_rng": python_rng,
            "base_batch": self.base_batch,
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.samples_seen = state["samples_seen"]
        self.skipped_steps = state["skipped_steps"]
        self.log_partition.load_state_dict(state["log_partition"])
        self.baseline.load_state_dict(state["baseline"])
        self.prompts.load_state_dict(state["prompts"])
        self.prompts.rng.setstate(state["python_rng"])
        self.lambdas = state["lambdas"]
        self.achieved_moments = state["achieved_moments"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        self.base_batch = state.get("base_batch")

    # ---- sampling -----------------------------------------------------------------
    def _submit(self, n_total: int, seed: int):
        contexts, prompt_ids, n = self.prompts.next(n_total)
        return contexts, prompt_ids, self.rollout.submit(prompt_ids, n, seed)

    def _collect(self, pending) -> dict:
        contexts, prompt_ids, handle = pending
        return make_batch(self.rollout.collect(handle), contexts, prompt_ids)

    # ---- one step -----------------------------------------------------------------
    def _seed(self, step: int) -> int:
        """The rollout seed of step ``step``: hashed from (run.seed, step), never a neighbour of
        another step's (see :mod:`fdpg_ray.seeding`)."""
        return derive_seed(self.cfg.run.seed, STEP, step)

    def next_batch(self) -> dict:
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
            batch.update(self.scorer.score(batch))
            # Seconds the learner waited for this step's samples, and for their scores.
            batch["timing"] = {"rollout_wait_seconds": t1 - t0, "score_seconds": time.perf_counter() - t1}
        return self.world.broadcast(batch)

    def log_pi(self, batch: dict, rows: slice, grad: bool) -> torch.Tensor:
        ids, attn, comp = collate(batch["prompt_ids"][rows], batch["completion_ids"][rows], self.pad_id,
                                  next(self.policy.parameters()).device)
        with torch.set_grad_enabled(grad):
            return self.model(ids, attn, comp)

    def train_step(self, batch: dict, update: bool = True) -> dict:
        """Update Z_hat, compute the loss on this worker's shard, step, gather, return metrics."""
        cfg, n = self.cfg, len(batch["texts"])
        t_start = time.time()
        contexts = batch["contexts"] if self.prompts.conditional else None
        self.log_partition.update(batch["log_P"], batch["log_q"], contexts)
        log_Z = self.log_partition.log_z_for(contexts, n)
        B = self.baseline.value_for(contexts, n)

        shard = n // self.world.size
        lo, hi = self.world.rank * shard, (self.world.rank + 1) * shard
        micro = cfg.learner.micro_batch_size
        local_log_pi, loss_sum = [], 0.0
        # Dropout stays off (eval mode) while learning: log pi must be the same function
        # of theta that the rollout engine samples from, or the ratios pi/q and pi/p drift.
        self.model.eval()
        if update:
            self.optimizer.zero_grad(set_to_none=True)
        for s in range(lo, hi, micro):
            e = min(s + micro, hi)
            last = e >= hi
            sync = nullcontext() if (last or not update or not hasattr(self.model, "no_sync")) else self.model.no_sync()
            with sync:
                lp = self.log_pi(batch, slice(s, e), grad=update)
                out = fdpg_loss(lp, batch["log_P"][s:e], log_Z[s:e], self.divergence, log_q=batch["log_q"][s:e],
                                baseline=B[s:e], clip_log_t=cfg.loss.clip_log_t,
                                max_importance_weight=cfg.loss.max_importance_weight, normalizer=hi - lo)
                if update:
                    out.loss.backward()
            loss_sum += out.loss.item()
            local_log_pi.append(lp.detach().double())
        grad_norm = math.nan
        if update:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.learner.max_grad_norm))
            if math.isfinite(grad_norm):
                self.optimizer.step()
                self.scheduler.step()
            else:  # never let a NaN/inf reach the weights: skip this update
                self.optimizer.zero_grad(set_to_none=True)
                self.skipped_steps += 1
        log_pi = self.world.all_gather(torch.cat(local_log_pi))
        loss = self.world.sum(loss_sum) / self.world.size

        # Same arithmetic as the loss, on the whole batch, for the baseline and metrics.
        full = fdpg_loss(log_pi, batch["log_P"], log_Z, self.divergence, log_q=batch["log_q"], baseline=B,
                         clip_log_t=cfg.loss.clip_log_t, max_importance_weight=cfg.loss.max_importance_weight)
        informative = torch.isfinite(log_Z)  # contexts with Z_hat = 0 say nothing about p yet
        self.baseline.update(full.pseudo_reward, torch.where(informative, full.importance_weight, 0.0), contexts)
        self.samples_seen += n
        metrics = self.metrics(batch, log_pi, log_Z, full, loss, grad_norm)
        metrics["learn_seconds"] = time.time() - t_start
        return metrics

    # ---- metrics ------------------------------------------------------------------
    def metrics(self, batch, log_pi, log_Z, full, loss, grad_norm) -> dict:
        texts = batch["texts"]
        m = {
            "step": self.step, "samples": self.samples_seen, "loss": loss,
            "z_hat": math.exp(self.log_partition.mean_log_z()), "log_z_hat": self.log_partition.mean_log_z(),
            "z_zero_contexts": self.log_partition.zero_fraction(),
            "alignment": self.alignment(batch["features"]),
        }
        m.update(is_metrics(batch["log_P"], log_Z, log_pi, batch["log_q"], batch["log_a"], self.divergence))
        m.update({
            "distinct_1": distinct_n(texts, 1), "distinct_2": distinct_n(texts, 2), "distinct_3": distinct_n(texts, 3),
            "mean_length": float(np.mean([len(c) for c in batch["completion_ids"]])),
            "pseudo_reward_mean": full.pseudo_reward.mean().item(),
            "baseline": self.baseline.value.get("*", 0.0),
            "importance_weight_mean": full.importance_weight.mean().item(),
            "logq_logpi_gap": (batch["log_q"] - log_pi).abs().mean().item(),
            "grad_norm": grad_norm, "skipped_steps": self.skipped_steps, "lr": self.scheduler.get_last_lr()[0],
            "seconds": time.time() - self.t0,
            **process_stats(),
        })
        for name, value in self.feature_means(batch["features"]).items():
            m[f"feature_{name}"] = value
        return m

    def feature_means(self, features) -> dict[str, float]:
        return {k: float(np.mean(v)) for k, v in features.items()}

    def alignment(self, features) -> float:
        """Mean over the target's constraints of E_pi[feature]: E_pi[b] for pointwise ones,
        E_pi[phi] for distributional ones (compare with the moment), E_pi[r] for rewards.
        Each feature's mean is also logged as feature_<name>."""
        means = list(self.feature_means(features).values())
        return float(np.mean(means)) if means else math.nan

    def evaluation(self, batch) -> dict:
        """Extra metrics at evaluation steps: Self-BLEU, KL(p||pi) on the base samples, exact
        divergences on the toy task."""
        extra = {"self_bleu": self_bleu(batch["texts"], max_refs=64)}
        if self.base_batch is not None:
            extra["kl_p_pi_base"] = self.kl_p_pi_on_base_samples()
        if self.exact is not None:
            if hasattr(self.exact, "set_lambdas"):
                self.exact.set_lambdas(self.lambdas)
            extra.update(self.exact.metrics(self.policy, extra=(self.divergence.name,)))
        return extra

    @torch.no_grad()
    def kl_p_pi_on_base_samples(self) -> float:
        """KL(p || pi) estimated with the base model a as the proposal, on the fixed set of
        ``target.fit_samples`` samples of a drawn at the start:

            KL = sum_i wbar_i [log P_i - log Z_c - log pi(x_i)],  w_i = P_i / a_i,

        self-normalised per context (Z_c = mean_i w_i over that context's samples).  Unlike the
        per-step estimate from policy samples, its weights P/a are bounded (b <= 1, exp(r/beta),
        exp(lambda phi)), so it stays accurate as pi moves; it is the number to compare runs by.
        """
        b = self.base_batch
        policy = SequenceLogProbs(self.policy, self.cfg.loss.chunk_size)  # not the DDP wrapper: rank 0 only
        policy.eval()
        device = next(self.policy.parameters()).device
        log_pi = []
        for s in range(0, len(b["texts"]), self.cfg.learner.micro_batch_size):
            e = s + self.cfg.learner.micro_batch_size
            ids, attn, comp = collate(b["prompt_ids"][s:e], b["completion_ids"][s:e], self.pad_id, device)
            log_pi.append(policy(ids, attn, comp).double().cpu())
        log_pi = torch.cat(log_pi)
        log_w = b["log_P"] - b["log_q"]
        keys = b["contexts"] if self.prompts.conditional else [""] * len(log_w)
        total, n = 0.0, len(log_w)
        for key in dict.fromkeys(keys):
            idx = torch.tensor([k == key for k in keys])
            lw = log_w[idx]
            if not torch.isfinite(lw).any():
                continue
            log_z = torch.logsumexp(lw, 0) - math.log(len(lw))
            wbar = torch.softmax(lw, 0)
            terms = torch.where(wbar > 0, wbar * (b["log_P"][idx] - log_z - log_pi[idx]), torch.zeros_like(wbar))
            total += terms.sum().item() * len(lw) / n
        return total

    # ---- the whole run --------------------------------------------------------------
    def start(self, resume: dict | None = None) -> None:
        """Fresh start: fit lambdas and seed Z_hat on base samples.  Resume: restore state."""
        if resume is not None:
            self.load_state_dict(resume)
            if self.world.rank == 0:
                self.scorer_set_lambdas(self.lambdas)
                self.rollout.push_weights(self.policy.state_dict())
            return
        info = None
        if self.world.rank == 0:
            n = self.cfg.target.fit_samples
            batch = self._collect(self._submit(n, seed=derive_seed(self.cfg.run.seed, BASE)))
            fit = self.scorer.fit(batch)
            batch.update(self.scorer.score(batch))
            info = {"log_P": batch["log_P"], "log_q": batch["log_q"], "contexts": batch["contexts"], **fit}
            self.base_batch = batch  # kept as the fixed evaluation set drawn from a
        info = self.world.broadcast(info)
        self.lambdas, self.achieved_moments = info["lambdas"], info["moments"]
        if not torch.isfinite(info["log_P"]).any():
            from .targets import TargetError

            raise TargetError(f"target: none of the {len(info['log_P'])} initial samples has P(x) > 0 (Z_hat = 0); "
                              f"raise target.fit_samples or soften the constraint")
        self.log_partition.update(info["log_P"], info["log_q"], info["contexts"] if self.prompts.conditional else None)

    def scorer_set_lambdas(self, lambdas):
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
            from tqdm import tqdm

            bar = tqdm(total=cfg.run.steps + 1, initial=self.step, desc=f"{cfg.run.name} [{self.divergence.name}]")
        rows = []
        while self.step <= cfg.run.steps:
            update = self.step < cfg.run.steps
            batch = self.next_batch()
            evaluate = self.world.rank == 0 and (self.step % cfg.run.eval_every == 0 or not update)
            extra = self.evaluation(batch) if evaluate else {}  # before the update: row k is theta_k
            m = self.train_step(batch, update=update)
            m.update(extra)
            m.update(batch.get("timing", {}))
            m["sync_seconds"], self.last_sync_seconds = self.last_sync_seconds, 0.0
            if evaluate:
                if self.sink is not None:
                    self.sink.samples(self.step, sample_records(batch, m["step"], cfg.eval.n_texts * 8))
            if self.sink is not None and self.world.rank == 0:
                self.sink.row(m)
            rows.append(m)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(alignment=f"{m['alignment']:.3f}", kl_p_pi=f"{m['kl_p_pi']:.3f}",
                                D=f"{m['divergence']:.3f}")
            self.step += 1
            if update and self.world.rank == 0 and self.step % cfg.rollout.sync_every == 0:
                t0 = time.perf_counter()
                self.rollout.push_weights(self.policy.state_dict())
                self.last_sync_seconds = time.perf_counter() - t0  # logged in the next row
            if on_step is not None:
                on_step(m, update and self.step % cfg.run.checkpoint_every == 0)
        if bar is not None:
            bar.close()
        return rows


def process_stats() -> dict:
    """Resident memory (MiB) and open file descriptors of this process (Linux; {} elsewhere):
    logged every step so that a leak shows as a slope."""
    try:
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
        return {"rss_mib": rss, "open_fds": len(os.listdir("/proc/self/fd"))}
    except OSError:
        return {}


def sample_records(batch: dict, step: int, limit: int) -> list[dict]:
    out = []
    for i, text in enumerate(batch["texts"][:limit]):
        rec = {"step": step, "context": batch["contexts"][i], "text": text,
               "log_q": float(batch["log_q"][i]), "log_P": float(batch["log_P"][i]),
               "log_a": float(batch["log_a"][i])}
        rec.update({f"feature_{k}": float(v[i]) for k, v in batch["features"].items()})
        out.append(rec)
    return out
