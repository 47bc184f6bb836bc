#!/usr/bin/env bash
# One script for a machine with one NVIDIA GPU where torch and transformers are installed
# (Ray and vLLM may not be; nothing is downloaded: models are built from configs with random
# weights). Finishes within 5 minutes. Prints JSON lines and the pytest summary:
#   1. learner throughput and MFU in bf16 on a GPT-2-small-shaped model (batch 8/16/32 x 512);
#   2. the FSDP2 learner step (fdpg_ray.train.parallel.shard_policy, bf16 mixed precision, NCCL,
#      world size 1) with its MFU, and the gathered full weights (what a push sends);
#   3. the weight-transfer group benchmark between two processes (benchmarks/gpu_weight_transfer.py):
#      NCCL where there is a GPU per rank, else gloo over the CUDA tensors (it says which), and
#      the same over gloo on the CPU for comparison;
#   4. the mathematics tests on CUDA.
#
#   bash benchmarks/gpu_check.sh             # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry-run   # CPU: every step on CPU (gloo, tiny shapes), so
#                                            # the script is not shipped untested
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD:${PYTHONPATH:-}"
PY="${PYTHON:-python3}"
status=0
run() {  # run a step, remember a failure, go on with the next step
  echo "== $*" >&2
  "$@" || { echo "FAILED ($?): $*" >&2; status=1; }
}
if [[ "${1:-}" == "--dry-run" ]]; then
  "$PY" -c "import torch; print('device: cpu (dry run)', 'torch', torch.__version__)"
  run timeout 120 "$PY" benchmarks/learner.py --model gpt2-small --device cpu --dtype float32 --batch 2 --seq 64 --steps 1
  run timeout 120 "$PY" benchmarks/fsdp_step.py --dry-run
  run timeout 120 "$PY" benchmarks/fsdp_step.py --dry-run --world 2
  run timeout 120 "$PY" benchmarks/fsdp_step.py --dry-run --dtype bfloat16
  run timeout 120 "$PY" benchmarks/gpu_weight_transfer.py --dry-run
  run timeout 120 "$PY" benchmarks/gpu_weight_transfer.py --dry-run --receivers 2
  run timeout 300 "$PY" -m pytest -q -p no:cacheprovider tests/test_divergences.py tests/test_core.py tests/test_cuda_math.py
  exit $status
fi
"$PY" -c "import torch; print('device:', torch.cuda.get_device_name(0), 'torch', torch.__version__)" || exit 1
for b in 8 16 32; do
  run timeout 60 "$PY" benchmarks/learner.py --model gpt2-small --device cuda --dtype bfloat16 --batch $b --seq 512 --steps 10
done
run timeout 90 "$PY" benchmarks/fsdp_step.py --model gpt2-small --device cuda --dtype bfloat16 --batch 16 --seq 512 --steps 10
# NCCL needs a GPU per rank: on one GPU the script says so and measures gloo over CUDA tensors.
run timeout 90 "$PY" benchmarks/gpu_weight_transfer.py
run timeout 60 "$PY" benchmarks/gpu_weight_transfer.py --device cpu --dtype float32
# The pure-math tests (divergences, loss, estimators, exact toy gradients) on CUDA.
run env FDPG_TEST_DEVICE=cuda timeout 120 "$PY" -m pytest -q -p no:cacheprovider \
  tests/test_divergences.py tests/test_core.py tests/test_cuda_math.py
exit $status
