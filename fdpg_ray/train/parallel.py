"""Sharded (FSDP2) learners and the full policy weights they must hand out.  No Ray here.

Under ``learner.strategy: fsdp`` every parameter of the policy is a ``DTensor`` sharded on
dim 0 over the data-parallel group (``torch.distributed.fsdp.fully_shard``, FSDP2); each
rank holds 1/world of every tensor.  Whatever needs whole tensors (the weight push to the
rollout engine, the checkpoint, the final model) goes through :func:`full_weights` or
:func:`full_state_dict`, which gather one tensor at a time with a collective all-gather:
**every rank must iterate them, in the same order**, or the group hangs.  Unsharded
policies (single process, DDP) pass through without any collective.

LoRA (:mod:`fdpg_ray.model.lora`): :func:`full_weights` yields the *merged* weights
W0 + (alpha/r) B A under the base model's names, so the rollout engine and the saved
model never see the adapter's own tensors.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def _dtensor_type():
    from torch.distributed.tensor import DTensor

    return DTensor


def is_sharded(module: torch.nn.Module) -> bool:
    """True when any parameter of ``module`` is a DTensor (FSDP2-sharded)."""
    DTensor = _dtensor_type()
    return any(isinstance(p, DTensor) for p in module.parameters())


def _full(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor on CPU, detached (a collective all-gather when ``t`` is a DTensor)."""
    if isinstance(t, _dtensor_type()):
        t = t.full_tensor()
    return t.detach().cpu()


def shard_policy(wrapper: torch.nn.Module, policy: torch.nn.Module, mp_policy=None) -> torch.nn.Module:
    """Apply FSDP2 in place: each transformer block is its own FSDP unit (its all-gather
    overlaps the previous block's compute on GPUs), then the wrapper (embeddings, final norm,
    output head; tied embeddings stay in one unit) is the root.  Needs an initialised
    default process group (gloo on CPU, NCCL on GPU).  Returns ``wrapper``, now an
    ``FSDPModule`` whose forward all-gathers and whose backward reduce-scatters gradients.

    ``mp_policy``: an optional ``torch.distributed.fsdp.MixedPrecisionPolicy`` (e.g. bf16
    parameters and compute with fp32 gradient reduction, as benchmarks/fsdp_step.py runs).

    Raises ValueError if no list of transformer blocks is found (GPT-2 ``transformer.h``,
    Llama-style ``model.layers``)."""
    from torch.distributed.fsdp import fully_shard

    blocks = None
    for path in ("transformer.h", "model.layers", "gpt_neox.layers", "model.decoder.layers"):
        node = policy
        try:
            for part in path.split("."):
                node = getattr(node, part)
        except AttributeError:
            continue
        blocks = node
        break
    if blocks is None:
        raise ValueError(f"learner.strategy: fsdp found no transformer blocks in {type(policy).__name__}; "
                         f"use learner.strategy=ddp")
    kw = {"mp_policy": mp_policy} if mp_policy is not None else {}
    for block in blocks:
        fully_shard(block, **kw)
    fully_shard(wrapper, **kw)
    return wrapper


def full_state_dict(policy: torch.nn.Module, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """``policy.state_dict()`` with whole CPU tensors (collective under FSDP: call on every
    rank).  ``trainable_only``: only parameters with ``requires_grad`` (a LoRA adapter)."""
    if trainable_only:
        return {n: _full(p) for n, p in policy.named_parameters() if p.requires_grad}
    return {n: _full(t) for n, t in policy.state_dict().items()}


def full_weights(policy: torch.nn.Module, changed_only: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's weights as the base model names them, streamed one tensor at a time:
    an iterator of (name, CPU tensor) in ``state_dict`` order, consumed once.

    * Full fine-tuning: every entry of ``policy.state_dict()``; under FSDP each tensor is
      all-gathered as it is reached (peak extra memory: one whole tensor), so **every rank
      must exhaust the iterator** (rank 0 hands it to the rollout engine, the others drain
      it with :func:`drain`).
    * LoRA: for each adapted module, ``<module>.weight`` = W0 + (alpha/r) B A (merged, in
      the base layer's layout, e.g. GPT-2's Conv1D (in, out)); with ``changed_only`` only the
      blocks holding them (the merged weights, the only ones that ever change, and their
      siblings, which vLLM may fuse with them), otherwise also every frozen tensor under its
      base name (``.base_layer.`` dropped); the adapter's own A and B are never sent.

    Shapes and dtypes are the base model's.  Raises nothing of its own.
    """
    from fdpg_ray.model.lora import is_lora, merged_lora_weights

    if is_lora(policy):
        yield from merged_lora_weights(policy, changed_only=changed_only)
        return
    for name, t in policy.state_dict().items():
        yield name, _full(t)


def drain(weights: Iterator) -> None:
    """Exhaust a :func:`full_weights` iterator (the ranks that only take part in the gather)."""
    for _ in weights:
        pass


def optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state to checkpoint.  Unsharded: ``optimizer.state_dict()`` unchanged.
    FSDP: the full (unsharded) state keyed by parameter name, gathered collectively
    (``torch.distributed.checkpoint.state_dict.get_optimizer_state_dict`` with
    ``full_state_dict=True, cpu_offload=True``; call on every rank; only rank 0's copy is
    complete)."""
    if not is_sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Inverse of :func:`optimizer_state`.  Under FSDP (collective) rank 0's full state is
    what counts: it is broadcast tensor by tensor and each rank keeps its own shard
    (``broadcast_from_rank0``), so the other ranks may pass an empty or partial state."""
    if not is_sharded(model):
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state,
                             options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def grad_norm_value(norm: torch.Tensor) -> float:
    """``clip_grad_norm_``'s total norm as a float (a DTensor under FSDP: replicated, so the
    local value is the global norm; ``full_tensor`` makes that explicit)."""
    if isinstance(norm, _dtensor_type()):
        norm = norm.full_tensor()
    return float(norm)
