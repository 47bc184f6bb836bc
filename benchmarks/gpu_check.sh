#!/usr/bin/env bash
# One script for a machine with one NVIDIA GPU where torch and transformers are installed
# (Ray and vLLM may not be; nothing is downloaded: models are built from configs with random
# weights). Takes 2-3 minutes; the per-step timeouts cap it at 9. Prints JSON lines and the
# pytest summary:
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
# The GPU image has no pydantic (fdpg_ray.config needs it): `make gpu-wheels` first, and carry
# .gpu_wheels/ along; without them the tests that load a config are left out, and it says so.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1
export GLOO_SOCKET_IFNAME="${GLOO_SOCKET_IFNAME:-lo}"  # one machine: gloo on the loopback device
PY="${PYTHON:-python3}"
status=0
TESTS=(tests/test_divergences.py tests/test_cuda_math.py tests/test_core.py)
if ! "$PY" -c "import pydantic" 2>/dev/null; then
  if compgen -G ".gpu_wheels/*.whl" >/dev/null; then
    pkgs="$(mktemp -d)"
    "$PY" -m pip install -q --no-index --no-deps --target "$pkgs" .gpu_wheels/*.whl && export PYTHONPATH="$PYTHONPATH:$pkgs"
  fi
  if ! "$PY" -c "import pydantic" 2>/dev/null; then
    echo "pydantic absent (make gpu-wheels, carry .gpu_wheels/): tests/test_core.py and the exact-gradient test not run" >&2
    TESTS=(tests/test_divergences.py tests/test_cuda_math.py
           --deselect tests/test_cuda_math.py::test_exact_gradient_identity_on_device)
  fi
fi
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
  run timeout 300 "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
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
run env FDPG_TEST_DEVICE=cuda timeout 120 "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
exit $status
