"""The transformers rollout backend (fallback for vLLM), in-process, no Ray.

Same interface as :class:`fdpg_ray.rollout.vllm_sampler.VLLMSampler`: ``sample``, ``score`` and
``load_weights``.  Sampling is exactly scorable: temperature as given, no top-k/top-p,
and ``log_q`` is the log-probability of the generated tokens under the distribution that
was sampled (the processed scores that ``generate`` drew from).
"""

from __future__ import annotations

import torch

from fdpg_ray.objective.loss import collate, sequence_log_probs
from fdpg_ray.model.sources import load_model_and_tokenizer
from fdpg_ray.rollout.samples import Sample


class HFSampler:
    """The transformers rollout backend: exact-log-prob sampling, scoring and weight loading in-process.

    Loads ``model_path`` (any spec :func:`~fdpg_ray.model.sources.load_model_and_tokenizer` takes) in
    ``dtype`` on ``device``; ``batch_size`` sequences per ``generate`` call; ``seed`` seeds torch.
    """
    def __init__(self, model_path: str, *, seed: int = 0, dtype: str = "float32", device: str = "cpu",
                 batch_size: int = 256, **_ignored):
        self.model, self.tokenizer = load_model_and_tokenizer(model_path, dtype=dtype, device=device)
        self.model.eval()
        self.device = device
        self.batch_size = batch_size
        self.generator_seed = seed
        torch.manual_seed(seed)
        self.eos_id = self.model.generation_config.eos_token_id
        if isinstance(self.eos_id, list):
            self.eos_id = self.eos_id[0]
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else (self.eos_id or 0)

    @torch.no_grad()
    def sample(self, prompt_token_ids: list[list[int]], n: int, max_new_tokens: int, temperature: float = 1.0,
               min_new_tokens: int = 0, ignore_eos: bool = False, seed: int | None = None) -> list[Sample]:
        """Draw ``n`` completions of up to ``max_new_tokens`` tokens for each prompt (pure sampling at ``temperature``).

        Returns len(prompts) * n :class:`~fdpg_ray.rollout.samples.Sample`, prompt by prompt: prompt_index, token_ids (EOS kept),
        text, log_q (sum of the sampled tokens' log-probs under the processed distribution, nats),
        finish_reason ("stop" | "length").  ``seed`` reseeds torch first.  Raises ConfigError when
        a prompt plus ``max_new_tokens`` exceeds the model's context (refused, never truncated).
        """
        from fdpg_ray.model.limits import check_fits, context_length

        context = context_length(self.model.config)
        for p in prompt_token_ids:  # refused, never truncated: the same rule as the vLLM backend
            check_fits(len(p), max_new_tokens, context)
        if seed is not None:
            torch.manual_seed(seed)
        jobs = [(i, p) for i, p in enumerate(prompt_token_ids) for _ in range(n)]
        out: list[Sample] = []
        for start in range(0, len(jobs), self.batch_size):
            out.extend(self._sample_batch(jobs[start:start + self.batch_size], max_new_tokens, temperature,
                                          min_new_tokens, ignore_eos))
        return out

    def _sample_batch(self, jobs, max_new_tokens, temperature, min_new_tokens, ignore_eos):
        prompts = [p for _, p in jobs]
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for i, p in enumerate(prompts):  # left padding for generation
            ids[i, width - len(p):] = torch.tensor(p)
            attn[i, width - len(p):] = 1
        eos = None if ignore_eos else self.eos_id
        gen = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=attn.to(self.device), do_sample=True,
            temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens or None, eos_token_id=eos, pad_token_id=self.pad_id,
            output_scores=True, return_dict_in_generate=True, use_cache=True,
        )
        new = gen.sequences[:, width:]
        # processed scores: the distribution each token was actually drawn from
        logp = torch.stack([torch.log_softmax(s.float(), -1) for s in gen.scores], 1)
        tok_lp = torch.gather(logp, 2, new.unsqueeze(-1)).squeeze(-1)
        out = []
        for row, (pi, _) in enumerate(jobs):
            toks = new[row].tolist()
            length = len(toks)
            if eos is not None and eos in toks:
                length = toks.index(eos) + 1
            toks = toks[:length]
            out.append(Sample(
                prompt_index=pi, token_ids=toks,
                text=self.tokenizer.decode(toks, skip_special_tokens=True),
                log_q=float(tok_lp[row, :length].sum()),
                finish_reason="stop" if eos is not None and toks and toks[-1] == eos else "length",
            ))
        return out

    @torch.no_grad()
    def score(self, prompt_token_ids: list[list[int]], completion_token_ids: list[list[int]]) -> list[float]:
        """Sequence log-probabilities (nats) of the completions after their prompts, one float per pair."""
        ids, attn, comp = collate(prompt_token_ids, completion_token_ids, self.pad_id, self.device)
        return sequence_log_probs(self.model, ids, attn, comp).tolist()

    @torch.no_grad()
    def load_weights(self, named_tensors: dict[str, torch.Tensor]) -> None:
        """Copy ``named_tensors`` (state_dict names) into the model, non-strict (missing names keep their values)."""
        self.model.load_state_dict(named_tensors, strict=False)

    # -- weight transfer through a process group (fdpg_ray/rollout/weight_group.py), as vLLM's worker -- #
    def init_weight_group(self, master_addr: str, master_port: int, rank_offset: int, world_size: int,
                          backend: str, plan: dict, timeout_s: float = 600.0) -> None:
        """Join the weight-transfer group as rank ``rank_offset``; allocate two bucket buffers."""
        from fdpg_ray.rollout.weight_group import BucketPlan, WeightGroup, WeightReceiver

        self.close_weight_group()
        group = WeightGroup(master_addr, master_port, int(rank_offset), world_size, backend=backend,
                            timeout_s=timeout_s)
        self._receiver = WeightReceiver(group, BucketPlan.from_dict(plan), keep=False)
        # state_dict(keep_vars=True): the live parameters and buffers by checkpoint name,
        # tied weights (lm_head / embeddings) under both names.
        self._targets = self.model.state_dict(keep_vars=True)
        for name, dt, shape, _, _ in self._receiver.plan.entries:
            dst = self._targets.get(name)
            if dst is None or tuple(dst.shape) != tuple(shape):
                self.close_weight_group()
                raise ValueError(f"weight push: {name!r} {tuple(shape)} does not match the rollout model "
                                 f"({None if dst is None else tuple(dst.shape)}); push the same architecture")

    @torch.no_grad()
    def receive_weights(self) -> dict:
        """Receive one push and copy each tensor into the parameter of that name, in place."""
        receiver = getattr(self, "_receiver", None)
        if receiver is None:
            raise RuntimeError("receive_weights: no weight group; call init_weight_group first")
        targets = self._targets

        def load(items):
            for name, t in items:
                dst = targets.get(name)
                if dst is None:
                    raise KeyError(f"pushed weight {name!r} is not a parameter or buffer of the rollout model")
                dst.data.copy_(t)

        total = receiver.receive(load)
        return {"total": total, "wait": receiver.last_wait_seconds or 0.0}

    def close_weight_group(self) -> None:
        """Leave the weight-transfer group, if joined (idempotent)."""
        receiver = getattr(self, "_receiver", None)
        if receiver is not None:
            receiver.group.close()
        self._receiver = None

