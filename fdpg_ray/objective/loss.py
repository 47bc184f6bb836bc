"""The f-DPG update on one page.

Symbols (Go et al. 2023, Theorem 1):
    P(x)      unnormalised target (log_P), p = P / Z
    Z         partition function, estimated as Z_hat (log_Z)
    pi_theta  the policy being trained (log_pi, carries the gradient)
    q         the proposal the samples came from (log_q; = pi_theta when on-policy)
    t         pi_theta(x) / p(x),  log t = log pi - log P + log Z
    r(x)      pseudo-reward -f'(t), computed without gradient
    B         baseline (moving average of r); E_pi[grad log pi] = 0 keeps it unbiased
    w         importance weight pi_theta(x) / q(x) (1 on-policy)

    loss = - mean_i [ w_i (r_i - B) log pi_theta(x_i) ]

whose gradient is an unbiased estimate of grad D_f(pi_theta || p) when Z is exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from fdpg_ray.objective.divergences import Divergence


@dataclass
class LossOutput:
    """What :func:`fdpg_loss` returns: the scalar loss and the per-sample (n,) float64 terms it used.

    ``pseudo_reward`` r_i = -f'(t_i), ``log_t`` the clamped log t_i (nats), ``importance_weight``
    w_i = pi_theta/q (clamped); none of them carries a gradient.
    """
    loss: torch.Tensor          # scalar, carries the gradient
    pseudo_reward: torch.Tensor  # r_i (float64, no grad), after clamping log t
    log_t: torch.Tensor          # clamped log t_i (float64)
    importance_weight: torch.Tensor  # w_i (float64)


def fdpg_loss(
    log_pi: torch.Tensor,
    log_P: torch.Tensor,
    log_Z: torch.Tensor | float,
    divergence: Divergence,
    *,
    log_q: torch.Tensor | None = None,
    baseline: torch.Tensor | float = 0.0,
    clip_log_t: float = 20.0,
    max_importance_weight: float | None = None,
    normalizer: int | None = None,
) -> LossOutput:
    """f-DPG surrogate loss for a batch of sequences (all tensors shape (n,)).

    ``log_pi`` is the sequence log-probability under the policy *with* gradient;
    everything else is treated as a constant.  ``log_P`` may be -inf (p(x) = 0):
    log t is clamped to [-clip_log_t, clip_log_t] before the pseudo-reward is taken,
    so p(x) = 0 is scored as if p(x) = pi(x) e^-clip (docs/design.md, "p(x) = 0").
    A sample whose ``log_Z`` is -inf (a context for which no sample has had P > 0 yet, so
    p_c is still undefined) carries no information about p: its advantage is 0.
    ``baseline`` may be a scalar or a per-sample tensor (per-context baselines).
    ``normalizer`` divides the sum instead of n (data-parallel workers pass the global
    batch size so that averaging gradients across workers gives the global mean).
    """
    lp = log_pi.detach().to(torch.float64)
    log_P = torch.as_tensor(log_P, dtype=torch.float64, device=lp.device)
    log_Z = torch.as_tensor(log_Z, dtype=torch.float64, device=lp.device)
    log_t = lp - log_P + log_Z
    # nan_to_num maps +inf (p = 0) to the clip value rather than to the float max.
    log_t = torch.nan_to_num(log_t, nan=clip_log_t, posinf=clip_log_t, neginf=-clip_log_t)
    log_t = log_t.clamp(-clip_log_t, clip_log_t)
    r = divergence.pseudo_reward(log_t)
    if log_q is None:
        w = torch.ones_like(lp)
    else:
        log_w = lp - torch.as_tensor(log_q, dtype=torch.float64, device=lp.device)
        if max_importance_weight is not None:
            log_w = log_w.clamp(max=math.log(max_importance_weight))
        w = torch.exp(log_w.clamp(max=clip_log_t))
    advantage = (r - torch.as_tensor(baseline, dtype=torch.float64, device=lp.device)) * w
    advantage = torch.where(torch.isfinite(log_Z).expand_as(advantage), advantage, torch.zeros_like(advantage))
    n = normalizer if normalizer is not None else max(int(lp.numel()), 1)
    loss = -(advantage.to(log_pi.dtype) * log_pi).sum() / n
    return LossOutput(loss=loss, pseudo_reward=r, log_t=log_t, importance_weight=w)


def _chunk_token_logprobs(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          targets: torch.Tensor) -> torch.Tensor:
    logits = F.linear(hidden, weight, bias).float()
    return torch.gather(logits, -1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_log_probs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    chunk_size: int = 128) -> torch.Tensor:
    """log pi(x_t | x_<t) for t = 1..L-1 of right-padded ``input_ids`` (shape (B, L-1)).

    Never builds the full (B, L, V) logits: the backbone's hidden states are projected
    through the output embedding ``chunk_size`` positions at a time, and under autograd
    each chunk is checkpointed so that its logits are recomputed in the backward pass
    instead of being kept (peak memory ~ B * chunk_size * V floats instead of B * L * V).
    """
    backbone = model.base_model
    hidden = backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    head = model.get_output_embeddings()
    weight, bias = head.weight, getattr(head, "bias", None)
    hidden, targets = hidden[:, :-1], input_ids[:, 1:]
    pieces = []
    for start in range(0, hidden.shape[1], chunk_size):
        h = hidden[:, start:start + chunk_size]
        tgt = targets[:, start:start + chunk_size]
        if torch.is_grad_enabled() and h.requires_grad:
            pieces.append(checkpoint(_chunk_token_logprobs, h, weight, bias, tgt, use_reentrant=False))
        else:
            pieces.append(_chunk_token_logprobs(h, weight, bias, tgt))
    return torch.cat(pieces, dim=1)


def sequence_log_probs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       completion_mask: torch.Tensor, chunk_size: int = 128) -> torch.Tensor:
    """Sum of log pi over the generated tokens only: shape (B,).

    ``completion_mask[b, t] = 1`` where token t of row b was generated (not prompt, not pad).
    """
    tok = token_log_probs(model, input_ids, attention_mask, chunk_size)
    mask = completion_mask[:, 1:].to(tok.dtype)
    return (tok * mask).sum(dim=1)


def collate(prompts: list[list[int]], completions: list[list[int]], pad_id: int,
            device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-pad prompt+completion pairs: (input_ids, attention_mask, completion_mask)."""
    rows = [list(p) + list(c) for p, c in zip(prompts, completions)]
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    attn = torch.zeros((len(rows), length), dtype=torch.long)
    comp = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (p, r) in enumerate(zip(prompts, rows)):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        attn[i, :len(r)] = 1
        comp[i, len(p):len(r)] = 1
    return ids.to(device), attn.to(device), comp.to(device)


class SequenceLogProbs(torch.nn.Module):
    """``forward(input_ids, attention_mask, completion_mask) -> log pi`` (B,) as a module,
    so that data-parallel wrappers (DDP/FSDP) see the forward pass and sync gradients."""

    def __init__(self, lm, chunk_size: int = 128):
        super().__init__()
        self.lm = lm
        self.chunk_size = chunk_size

    def forward(self, input_ids, attention_mask, completion_mask):
        """Sequence log pi (B,) in nats over the generated tokens: :func:`sequence_log_probs`.

        ``input_ids``, ``attention_mask``, ``completion_mask``: (B, L) from :func:`collate`.
        """
        return sequence_log_probs(self.lm, input_ids, attention_mask, completion_mask, self.chunk_size)


def bos_prompt_ids(tokenizer, text: str = "") -> list[int]:
    """Token ids that start an unconditional sample: BOS (or EOS as BOS) then ``text``."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
    return ([bos] if bos is not None else []) + list(ids)
