"""benchmarks/gpu_check.sh runs only where a GPU is lent, so its two multi-process steps are
run here on CPU (gloo, tiny shapes) through their --dry-run: a GPU session must not find them
broken.  The weight-transfer benchmark checks every received tensor bit for bit."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args: str) -> dict:
    env = {**os.environ, "PYTHONPATH": ROOT, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("receivers", [1, 2])
def test_weight_transfer_benchmark_dry_run_receives_every_tensor(receivers):
    res = _run("benchmarks/gpu_weight_transfer.py", "--dry-run", "--receivers", str(receivers))
    assert res["backend"] == "gloo" and res["receivers"] == receivers
    assert res["received_equal"] is True
    # gpt2-tiny's state dict in float32: the tied lm_head is sent under both names.
    from benchmarks.fsdp_step import build

    sd = build("gpt2-tiny").state_dict()
    assert res["bytes"] >= sum(t.numel() * 4 for t in sd.values())
    assert res["GB_per_s"] > 0


def test_fsdp_step_benchmark_dry_run_two_ranks():
    res = _run("benchmarks/fsdp_step.py", "--dry-run", "--world", "2")
    assert res["backend"] == "gloo" and res["world"] == 2
    assert res["full_weights_bytes"] > 0 and res["step_seconds"] > 0
