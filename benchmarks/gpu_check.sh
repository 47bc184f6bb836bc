#!/usr/bin/env bash
# One script for a machine with one NVIDIA GPU where torch and transformers are installed
# (Ray and vLLM may not be): learner throughput and MFU in bf16 on a GPT-2-small-sized
# model, then the mathematics tests on CUDA. Finishes within 5 minutes.
#   bash benchmarks/gpu_check.sh            (prints JSON lines and the pytest summary)
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
python3 -c "import torch; print('device:', torch.cuda.get_device_name(0), 'torch', torch.__version__)"
for b in 8 16 32; do
  timeout 120 python3 benchmarks/learner.py --model gpt2-small --device cuda --dtype bfloat16 --batch $b --seq 512 --steps 10
done
# The pure-math tests (divergences, loss, estimators, exact toy gradients) on CUDA.
FDPG_TEST_DEVICE=cuda timeout 150 python3 -m pytest -q -p no:cacheprovider \
  tests/test_divergences.py tests/test_core.py tests/test_cuda_math.py
