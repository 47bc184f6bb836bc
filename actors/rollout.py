"""Rollout actors: vLLM (or transformers) samplers behind one Ray actor interface.

``RolloutActor`` holds one sampler; ``RolloutGroup`` spreads each step's prompts over
the actors and gathers the samples back in prompt order.

Weights (``rollout.weight_sync``):

* ``group`` (default): the sender (learner rank 0, where the ``RolloutGroup`` lives)
  and every actor's engine worker form one process group for weight transfer
  (:mod:`fdpg_ray.rollout.weight_group`: gloo on CPU, NCCL when the learner and the rollout
  actors have GPUs); each push is one bucketed broadcast that every actor receives at
  once and loads in place.  Weights never pass through the Ray object store; only the
  bucket plan (names, shapes, dtypes) crosses Ray, once, when the group is formed.
* ``object_store``: the old path, kept as a fallback (packed once, ``ray.put`` once,
  one RPC per actor; :class:`fdpg_ray.rollout.weight_sync.CPUWeightSync`).  Use it where the
  actors cannot open a TCP connection to the learner's node (see docs/design.md).
"""

from __future__ import annotations

import concurrent.futures
import os
import time
import uuid
from dataclasses import replace

import ray

from fdpg_ray.config import Config
from fdpg_ray.rollout.proposals import rollout_model_path
from fdpg_ray.rollout.samples import Sample
from fdpg_ray.console import send_output_to_log
from fdpg_ray.seeding import ENGINE, derive_seed


@ray.remote
class RolloutActor:
    """Ray actor holding one sampler (:class:`~fdpg_ray.rollout.vllm_sampler.VLLMSampler` or :class:`~fdpg_ray.rollout.hf_sampler.HFSampler`).

    ``cfg``: the run's config as a dict (``rollout.backend`` picks the sampler; a ``fixed:``
    proposal's model is served instead of model.path).  ``version`` counts weight loads.
    """
    def __init__(self, cfg: dict, index: int = 0, run_dir: str | None = None):
        """Rollout engine ``index`` of a run (seeded from run.seed and the index); with
        ``run_dir``, this process's output goes to RUN_DIR/logs/ (fdpg_ray.console)."""
        send_output_to_log(run_dir, f"rollout{index}")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.cfg = _config(cfg)
        c = self.cfg
        seed = derive_seed(c.run.seed, ENGINE, index, bits=32)  # vLLM seeds numpy with it
        if c.rollout.backend == "vllm":
            from fdpg_ray.rollout.vllm_sampler import VLLMSampler
            from fdpg_ray.model.sources import resolve_model_path

            kwargs = {}
            if c.rollout.gpus_per_actor > 0 or c.learner.use_gpu:
                kwargs["kv_cache_memory_bytes"] = None
            self.sampler = VLLMSampler(resolve_model_path(rollout_model_path(c)), seed=seed,
                                       gpu_memory_utilization=c.rollout.gpu_memory_utilization,
                                       enforce_eager=c.rollout.enforce_eager, **kwargs)
        else:
            from fdpg_ray.rollout.hf_sampler import HFSampler

            self.sampler = HFSampler(rollout_model_path(c), seed=seed)
        self.version = 0

    def ready(self) -> str:
        """The sampler's class name, once the engine has started (callers ``ray.get`` it to wait)."""
        return type(self.sampler).__name__

    def sample(self, prompt_ids, n, seed):
        """``n`` samples per prompt at ``rollout.temperature``, up to ``model.max_new_tokens`` tokens each.

        Returns {"samples": the sampler's :class:`~fdpg_ray.rollout.samples.Sample` list (prompt_index
        local to this call, token_ids, text, log_q in nats, finish_reason),
        "version": weight loads so far}.
        """
        c = self.cfg
        out = self.sampler.sample(prompt_ids, n, c.model.max_new_tokens, temperature=c.rollout.temperature, seed=seed)
        return {"samples": out, "version": self.version}

    def load_packed(self, buffers, metadata) -> float:
        """New policy weights, packed by fdpg_ray.rollout.weight_sync.pack_state_dict (one buffer per dtype)."""
        from fdpg_ray.rollout.weight_sync import unpack_state_dict

        t0 = time.perf_counter()
        if hasattr(self.sampler, "load_packed"):
            self.sampler.load_packed(buffers, metadata)
        else:
            self.sampler.load_weights(unpack_state_dict(buffers, metadata))
        self.version += 1
        return time.perf_counter() - t0


    def weight_timings(self) -> dict:
        """The engine's timings of its last weight load (seconds; vLLM: ``reload_worker_s`` is
        the worker's unpack + ``reload_weights``, ``load_call_s`` the whole engine call)."""
        return {"reload_worker_s": getattr(self.sampler, "last_reload_s", None),
                "load_call_s": getattr(self.sampler, "last_load_weights_s", None)}

    # -- weight transfer through a process group (fdpg_ray/rollout/weight_group.py) -------- #
    def init_weight_group(self, master_addr, master_port, rank, world_size, backend, plan, timeout_s, group_id) -> str:
        """Join the weight-transfer group (blocks until every rank has joined)."""
        self.weight_group_id_ = None
        self.sampler.init_weight_group(master_addr, master_port, rank, world_size, backend, plan, timeout_s)
        self.weight_group_id_ = group_id
        return group_id

    def weight_group_id(self):
        """The group this actor has joined (None after a restart: it must join again)."""
        return getattr(self, "weight_group_id_", None)

    def receive_weights(self) -> dict:
        """Receive one broadcast push into the engine; returns its timings (seconds)."""
        out = self.sampler.receive_weights()
        self.version += 1
        return out

    def close_weight_group(self) -> None:
        """Leave the weight-transfer group (idempotent)."""
        self.weight_group_id_ = None
        self.sampler.close_weight_group()


def _config(d: dict) -> Config:
    return Config.from_dict(d)


class RolloutGroup:
    """submit/collect/push_weights over several rollout actors (the controller's rollout).

    Args:
        actors: ``RolloutActor`` handles.
        weight_sync: ``"group"`` (broadcast through a process group) or
            ``"object_store"`` (fallback); see the module docstring.
        bucket_mb: bucket size of the broadcast, MiB.
        backend: ``"gloo"`` or ``"nccl"``; ``None`` picks NCCL when CUDA is available
            here and ``use_gpu`` says the actors have GPUs, else gloo.
        timeout_s: how long forming the group or one broadcast may take (seconds).
    """

    def __init__(self, actors: list, weight_sync: str = "group", bucket_mb: float = 64.0,
                 backend: str | None = None, use_gpu: bool = False, timeout_s: float = 600.0):
        from fdpg_ray.rollout.weight_sync import CPUWeightSync

        if weight_sync not in ("group", "object_store"):
            raise ValueError(f"rollout.weight_sync: unknown value {weight_sync!r}; use group or object_store")
        self.actors = actors
        self.weight_sync = weight_sync
        self.bucket_bytes = int(bucket_mb * (1 << 20))
        if backend is None:
            import torch

            backend = "nccl" if use_gpu and torch.cuda.is_available() else "gloo"
        self.backend = backend
        self.timeout_s = timeout_s
        self.sync = CPUWeightSync(*actors)
        self._sender = None
        self._group_id = None
        self.last_push_seconds = 0.0
        self.last_push_stats: dict = {}

    def submit(self, prompt_ids: list[list[int]], n: int, seed: int):
        """Start sampling ``n`` completions per prompt across the actors; returns the handle for :meth:`collect`.

        With at least as many prompts as actors, actor k takes prompts k, k + A, ...; otherwise
        the n samples per prompt are split between actors.  Actor k's seed is derive_seed(seed, k).
        """
        A = len(self.actors)
        jobs = []  # (actor, prompt indices, n)
        if len(prompt_ids) >= A:  # split prompts
            for k in range(A):
                idx = list(range(k, len(prompt_ids), A))
                if idx:
                    jobs.append((k, idx, n))
        else:  # one (or few) prompts: split the n samples
            for k in range(A):
                nk = n // A + (1 if k < n % A else 0)
                if nk:
                    jobs.append((k, list(range(len(prompt_ids))), nk))
        # Each actor's share gets its own derived seed: actors never share a random stream.
        refs = [(idx, self.actors[k].sample.remote([prompt_ids[i] for i in idx], nk, derive_seed(seed, k)))
                for k, idx, nk in jobs]
        return refs

    def collect(self, refs) -> list[Sample]:
        """Wait for :meth:`submit`'s samples; returns them ordered by prompt index (global indices)."""
        results = ray.get([r for _, r in refs])
        out = []
        for (idx, _), res in zip(refs, results):
            for s in res["samples"]:
                out.append(replace(s, prompt_index=idx[s.prompt_index]))
        out.sort(key=lambda s: s.prompt_index)  # stable: keeps each actor's order
        return out

    def push_weights(self, named_tensors) -> None:
        """Make every actor sample from ``named_tensors`` (a Mapping such as
        ``state_dict()``, or an iterable of (name, tensor) pairs, read once in order;
        full, unsharded tensors) from its next request on.  Blocking.  Seconds spent in
        ``last_push_seconds``; a breakdown in ``last_push_stats``."""
        t0 = time.perf_counter()
        if self.weight_sync == "object_store":
            from fdpg_ray.rollout.weight_group import iter_named

            self.sync.push({k: v.detach().cpu() for k, v in iter_named(named_tensors)})
            self.last_push_stats = {"seconds": self.sync.last_push_s}
        else:
            self._push_group(named_tensors)
        self.last_push_seconds = time.perf_counter() - t0

    # -- the process-group path ---------------------------------------------------- #
    def _push_group(self, named_tensors) -> None:
        from collections.abc import Mapping

        from fdpg_ray.rollout.weight_group import iter_named

        t0 = time.perf_counter()
        items = iter_named(named_tensors)
        opened = False
        if self._sender is not None:
            # An actor restarted by Ray comes back outside the group: form it again.
            ids = ray.get([a.weight_group_id.remote() for a in self.actors])
            if any(i != self._group_id for i in ids):
                self.close()
        if self._sender is None:
            items = [(n, t.detach()) for n, t in items]  # the plan needs every name, shape, dtype first
            # Tied weights (lm_head = embeddings) are sent under both names: vLLM's layerwise
            # reload gives a tied head that receives nothing a stale copy (measured: log q off
            # by ~1 nat on the tiny GPT-2), so sending them once is not an option.
            self._open(items)
            opened = True
            items = iter(items)
        t1 = time.perf_counter()
        refs = [a.receive_weights.remote() for a in self.actors]
        try:
            self._sender.send(items)
            stats = ray.get(refs)
        except Exception:
            self.close()  # a half-done broadcast leaves the group unusable; the next push forms a new one
            if isinstance(named_tensors, Mapping) and not opened:
                return self._push_group(named_tensors)  # once more, through a fresh group
            raise
        self.last_push_stats = {
            "seconds": time.perf_counter() - t0, "open_seconds": t1 - t0 if opened else 0.0,
            "send_seconds": self._sender.last_seconds, "bytes": self._sender.plan.total_bytes,
            "receive_seconds": max(s["total"] for s in stats), "receive_wait_seconds": max(s["wait"] for s in stats),
        }

    def _open(self, items) -> None:
        from fdpg_ray.rollout.weight_group import WeightGroup, WeightSender, free_port, plan_push

        plan = plan_push(items, self.bucket_bytes)
        addr = ray.util.get_node_ip_address()
        port = free_port()
        world = 1 + len(self.actors)  # one engine worker per actor (tensor parallel size 1)
        group_id = uuid.uuid4().hex
        refs = [a.init_weight_group.remote(addr, port, 1 + i, world, self.backend, plan.to_dict(), self.timeout_s,
                                           group_id) for i, a in enumerate(self.actors)]
        # The rendezvous blocks until every rank joins: run it beside a watch on the
        # actors, so that an actor that fails to join raises here at once.
        pool = concurrent.futures.ThreadPoolExecutor(1)
        fut = pool.submit(WeightGroup, addr, port, 0, world, self.backend, self.timeout_s)
        pool.shutdown(wait=False)
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, timeout=0.5)
            ray.get(done)  # raises the actor's error
        group = fut.result(timeout=self.timeout_s)
        self._sender = WeightSender(group, plan)
        self._group_id = group_id

    def close(self) -> None:
        """Leave the weight-transfer group (the actors leave it at their next join)."""
        if self._sender is not None:
            self._sender.group.close()
        self._sender = None
        self._group_id = None
