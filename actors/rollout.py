"""Rollout actors: vLLM (or transformers) samplers behind one Ray actor interface.

``RolloutActor`` holds one sampler; ``RolloutGroup`` spreads each step's prompts over
the actors and gathers the samples back in prompt order.  Weights travel packed, put
in the object store once per push and read by every actor.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

import ray

from fdpg_ray.config import Config
from fdpg_ray.seeding import ENGINE, derive_seed


@ray.remote
class RolloutActor:
    def __init__(self, cfg: dict, index: int = 0):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.cfg = _config(cfg)
        c = self.cfg
        seed = derive_seed(c.run.seed, ENGINE, index, bits=32)  # vLLM seeds numpy with it
        if c.rollout.backend == "vllm":
            from actors.vllm_engine import VLLMSampler
            from fdpg_ray.models import resolve_model_path

            kwargs = {}
            if c.rollout.gpus_per_actor > 0 or c.learner.use_gpu:
                kwargs["kv_cache_memory_bytes"] = None
            self.sampler = VLLMSampler(resolve_model_path(c.model.path), seed=seed,
                                       gpu_memory_utilization=c.rollout.gpu_memory_utilization,
                                       enforce_eager=c.rollout.enforce_eager, **kwargs)
        else:
            from actors.hf_engine import HFSampler

            self.sampler = HFSampler(c.model.path, seed=seed)
        self.version = 0

    def ready(self) -> str:
        return type(self.sampler).__name__

    def sample(self, prompt_ids, n, seed):
        c = self.cfg
        out = self.sampler.sample(prompt_ids, n, c.model.max_new_tokens, temperature=c.rollout.temperature, seed=seed)
        return {"samples": out, "version": self.version}

    def score(self, prompt_ids, completion_ids):
        return self.sampler.score(prompt_ids, completion_ids)

    def load_packed(self, buffers, metadata) -> float:
        """New policy weights, packed by actors.weight_sync.pack_state_dict (one buffer per dtype)."""
        from actors.weight_sync import unpack_state_dict

        t0 = time.perf_counter()
        if hasattr(self.sampler, "load_packed"):
            self.sampler.load_packed(buffers, metadata)
        else:
            self.sampler.load_weights(unpack_state_dict(buffers, metadata))
        self.version += 1
        return time.perf_counter() - t0


def _config(d: dict) -> Config:
    from fdpg_ray.config import _from_dict

    return _from_dict(Config, d)


class RolloutGroup:
    """submit/collect/push_weights over several rollout actors (the controller's rollout)."""

    def __init__(self, actors: list):
        from actors.weight_sync import CPUWeightSync

        self.actors = actors
        self.sync = CPUWeightSync(*actors)
        self.last_push_seconds = 0.0

    def submit(self, prompt_ids: list[list[int]], n: int, seed: int):
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

    def collect(self, refs) -> list[dict]:
        results = ray.get([r for _, r in refs])
        out = []
        for (idx, _), res in zip(refs, results):
            for s in res["samples"]:
                s = dict(s)
                s["prompt_index"] = idx[s["prompt_index"]]
                out.append(s)
        out.sort(key=lambda s: s["prompt_index"])  # stable: keeps each actor's order
        return out

    def push_weights(self, weights) -> None:
        """Through the weight-sync adapter (actors/weight_sync.py): packed once, put in the
        object store once, one RPC per actor, reloaded in place by each engine.  ``weights``:
        a mapping or an iterable of (name, tensor) pairs, consumed once in order (under FSDP
        each tensor is gathered from the learner's shards as it is reached)."""
        t0 = time.perf_counter()
        items = weights.items() if isinstance(weights, Mapping) else weights
        self.sync.push({k: v.detach().cpu() for k, v in items})
        self.last_push_seconds = time.perf_counter() - t0
