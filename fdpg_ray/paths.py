"""Where things are on disk: the checkout, the bundled models, the cache of built models.

``FDPG_RAY_CACHE`` moves the cache (default ``<checkout>/.cache``), the one folder for
everything built on first use: the toy models and ``make models``'s GPT-2 sizes in
``CACHE/models/``, the converted SmolLM2 in ``CACHE/smollm2-135m-instruct``, vLLM's
torchcodec stub in ``CACHE/torchcodec-stub``.  Imports nothing of the
project, so every module may use it.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_DIR = REPO_ROOT / "models"  # models/gpt2-tiny is committed
# the sizes `make models` builds (modelbuild/small_models.py's SIZES; a test keeps them equal)
BUNDLED_SIZES = ("micro", "tiny", "small", "medium")


def cache_dir() -> Path:
    """The cache folder, absolute: ``$FDPG_RAY_CACHE`` (a relative one is taken from the current
    directory), else ``<checkout>/.cache``."""
    return Path(os.environ.get("FDPG_RAY_CACHE") or REPO_ROOT / ".cache").expanduser().absolute()
