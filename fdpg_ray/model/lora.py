"""LoRA policies (``learner.lora``), built with the ``peft`` library.  No Ray here.

The policy stays the transformers model itself, with peft's LoRA layers injected in place:
for each module named in ``target_modules``

    W = W0 + (alpha / r) B A,   A: (r, in) Gaussian-initialised, B: (out, r) zero-initialised,

so pi_theta = a at the start (B = 0).  Only A and B train (peft freezes W0), so the
optimizer and the checkpoints hold only the adapter.  What leaves the learner is always
merged: the rollout engine receives W0 + (alpha/r) B A for the adapted modules only, under
the base model's parameter names (docs/design.md, "LoRA"), and ``final/`` is the merged
model, a plain transformers model that vLLM loads like any other.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def _lora_layer_type():
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # peft not installed: nothing can be a LoRA policy
        return None
    return LoraLayer


def apply_lora(model: torch.nn.Module, lora_cfg) -> torch.nn.Module:
    """Inject LoRA layers into ``model`` (in place) and freeze everything else; returns the
    same transformers model (``peft_model.get_base_model()``), whose forward now includes the
    adapters.  ``lora_cfg``: :class:`fdpg_ray.config.LoraConfig`.

    Raises :class:`fdpg_ray.errors.ConfigError` when no module matches ``target_modules``."""
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    from fdpg_ray.errors import ConfigError

    targets = list(lora_cfg.target_modules)
    matched = [m for n, m in model.named_modules() if n.split(".")[-1] in targets]
    if not matched:
        leaves = sorted({n.split(".")[-1] for n, m in model.named_modules()
                         if isinstance(m, (torch.nn.Linear, Conv1D))})
        raise ConfigError(f"learner.lora.target_modules: none of {targets} is a module of "
                          f"{type(model).__name__}; choose among {leaves}")
    conf = LoraConfig(r=int(lora_cfg.r), lora_alpha=float(lora_cfg.alpha), lora_dropout=float(lora_cfg.dropout),
                      target_modules=targets, bias="none",
                      # GPT-2's Conv1D stores weights as (in, out)
                      fan_in_fan_out=any(isinstance(m, Conv1D) for m in matched))
    return get_peft_model(model, conf).get_base_model()


def is_lora(policy: torch.nn.Module) -> bool:
    """Whether ``policy`` holds any peft LoRA layer (False when peft is not installed)."""
    LoraLayer = _lora_layer_type()
    return LoraLayer is not None and any(isinstance(m, LoraLayer) for m in policy.modules())


def _lora_layers(policy) -> dict[str, torch.nn.Module]:
    LoraLayer = _lora_layer_type()
    return {n: m for n, m in policy.named_modules() if isinstance(m, LoraLayer)}


@torch.no_grad()
def _merged(layer) -> torch.Tensor:
    """W0 + sum over active adapters of (alpha/r) B A, in the base layer's layout (CPU)."""
    w = layer.get_base_layer().weight.detach().clone()
    for name in layer.active_adapters:
        if name in layer.lora_A:
            w += layer.get_delta_weight(name).to(w.dtype)
    return w.cpu()


def merged_lora_weights(policy: torch.nn.Module, changed_only: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """(base-model name, tensor) pairs of the merged policy, in ``state_dict`` order; see
    :func:`fdpg_ray.train.parallel.full_weights` (which calls this for LoRA policies).

    ``changed_only``: every tensor of the *parent block* of each adapted module (e.g. all of
    ``model.layers.3.self_attn`` when q_proj and v_proj are adapted), not only the adapted
    weights: vLLM fuses sibling projections (q/k/v into qkv_proj, gate/up into gate_up_proj)
    and its in-place reload rebuilds a fused layer that receives part of its weights from
    fresh memory, so k_proj must travel with q_proj (docs/design.md, "LoRA")."""
    layers = _lora_layers(policy)
    parents = {name.rpartition(".")[0] + "." for name in layers}
    for key, t in policy.state_dict().items():
        if ".lora_" in key:
            continue
        if changed_only and not any(key.startswith(p) for p in parents):
            continue
        if ".base_layer." in key:
            module = key.split(".base_layer.")[0]
            if key.endswith(".base_layer.weight") and module in layers:
                yield f"{module}.weight", _merged(layers[module])
            else:
                yield key.replace(".base_layer.", "."), t.detach().cpu()
        else:
            yield key, t.detach().cpu()


def adapter_state(policy: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trainable tensors (LoRA A and B) by their names in ``policy``: what a LoRA
    checkpoint holds instead of the whole model."""
    return {n: p.detach().cpu().clone() for n, p in policy.named_parameters() if p.requires_grad}


def load_adapter_state(policy: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load :func:`adapter_state` back; raises RuntimeError naming the first key that does not
    belong to the adapter (a checkpoint of a different LoRA shape or of a full fine-tuning run)."""
    trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
    if set(state) != trainable:
        extra = sorted(set(state) ^ trainable)
        raise RuntimeError(f"checkpoint: its model state does not match this LoRA adapter (first differing key "
                           f"{extra[0]!r}); resume with the learner.lora settings the run was started with")
    policy.load_state_dict(state, strict=False)
