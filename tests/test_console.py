"""Issue 13, "a quiet console": a Ray run prints its progress bar, our one-line errors and the
final table; Ray's, Ray Train's, vLLM's and torch's output goes to RUN_DIR/logs/
(fdpg_ray/console.py).  Each test runs the real CLI in a subprocess, as `make demo` does, on
the vLLM rollout backend through Ray Train, and reads what reached the console.

Before the change the same run printed Ray Train's "Reporting training result" line for every
step and vLLM's start-up warnings, each relayed by Ray."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SETS = {"run.steps": 2, "learner.batch_size": 16, "learner.micro_batch_size": 16, "eval.base_samples": 256,
        "eval.samples": 32, "learner.num_workers": 1, "run.eval_every": 1}
MAX_LINES = 40  # issue 13's goal for `make demo` after installation


@pytest.fixture(scope="module")
def second_ray_instance():
    """A second Ray instance on the machine while the runs start their own, as when a user runs
    two jobs or a sweep beside a run (Ray Train's PlacementGroupCleaner warned once a second on
    the run's console; see fdpg_ray.console.ray_worker_setup).  Shut down after the module, so
    that later test files start their own Ray."""
    import ray

    ray.shutdown()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def run_cli(tmp_path: Path, *extra: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    # the environment of a shell that runs `make demo`: none of the RAY_* variables that
    # earlier tests' Ray instances leave in this process, no FDPG_RAY_VERBOSE
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "FDPG_RAY_VERBOSE"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(cwd)])
    sets = [f"--set={k}={v}" for k, v in SETS.items()]
    return subprocess.run([sys.executable, "-m", "fdpg_ray.cli", "train", str(ROOT / "configs/amazing.yaml"),
                           "--run-dir", str(tmp_path / "run"), *sets, *extra],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


# Ray's own system processes: what they print is Ray's, not a run's (one C++ line of Ray Train's
# controller at start-up).  They are reported but not counted; the warnings of a cleaner that
# cannot find its own cluster are refused outright (console_lines).
RAY_SYSTEM = ("(TrainController", "(PlacementGroupCleaner", "(raylet", "(gcs_server", "(autoscaler")


def console_lines(out: subprocess.CompletedProcess) -> list[str]:
    """Non-empty console lines of the run, Ray's system processes' lines left out; none of
    them may be the state-API warnings of a cleaner that lost its cluster."""
    text = out.stdout + out.stderr
    for lost in ("Failed to query Ray Train Controller", "Found multiple active Ray instances"):
        assert lost not in text, f"{lost!r} reached the console:\n{text[-3000:]}"
    return [line for line in text.splitlines() if line.strip() and not any(tag in line for tag in RAY_SYSTEM)]


def test_a_ray_run_prints_its_bar_and_table_and_logs_the_libraries_to_the_run_dir(tmp_path, second_ray_instance):
    out = run_cli(tmp_path)
    lines = console_lines(out)
    assert out.returncode == 0, out.stderr[-3000:]
    text = "\n".join(lines)
    assert len(lines) <= MAX_LINES, f"{len(lines)} lines:\n{text}\n--- everything:\n{out.stdout}{out.stderr}"
    assert "amazing [js]" in text and "kl_p_pi_base" in text and "final model:" in text, text  # bar and table
    # not a terminal: Ray's relay prefix "(RayTrainWorker pid=...)" comes without colour codes
    assert "\x1b[" not in out.stdout + out.stderr, [line for line in lines if "\x1b[" in line][:3]
    for noise in ("Reporting training result", "vllm", "Loading weights", "FutureWarning"):
        assert noise not in text, f"{noise!r} reached the console:\n{text}"
    logs = tmp_path / "run" / "logs"
    names = sorted(p.name.split("-")[0] for p in logs.iterdir())
    assert names == ["learner0", "rollout0", "scorer", "sink"], names
    # what left the console is in the files: vLLM's start-up in the rollout engine's log,
    # Ray Train's report lines in the learner's
    rollout_log = next(logs.glob("rollout0-*.log")).read_text()
    learner_log = next(logs.glob("learner0-*.log")).read_text()
    assert "vllm" in rollout_log.lower(), rollout_log[-2000:]
    assert "Reporting training result" in learner_log, learner_log[-2000:]


@pytest.fixture
def boom(tmp_path):
    d = tmp_path / "user"
    d.mkdir()
    (d / "bad_scorers.py").write_text("def boom(texts):\n    raise KeyError('oops')\n")
    return d


def test_a_ray_run_that_fails_in_an_actor_still_ends_with_its_one_line_error(tmp_path, boom, second_ray_instance):
    """The scorer raises inside its Ray actor (found at run time, not at preflight): the
    tracebacks go to RUN_DIR/logs/, the console ends with the one-line error, exit code 2,
    and the run is marked failed."""
    target = "target.constraints=[{kind: pointwise, scorer: {kind: callable, path: 'bad_scorers:boom'}}]"
    out = run_cli(tmp_path, "--set", target, cwd=boom)
    assert out.returncode == 2, (out.stdout + out.stderr)[-3000:]
    lines = console_lines(out)
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0] and "raised KeyError" in errors[0], lines[-5:]
    assert len(lines) <= MAX_LINES, "\n".join(lines)
    assert json.loads((tmp_path / "run" / "status.json").read_text())["state"] == "failed"
    # the learner's traceback (Ray Train's "Error in training function") is in its log
    assert any("KeyError" in p.read_text() for p in (tmp_path / "run" / "logs").glob("learner0-*.log"))


def test_the_plain_progress_lines_count_steps_from_0_to_run_steps(capsys):
    """A 3-step run writes 4 rows (step 0, the base model, then steps 1-3): its lines said
    "step 1/4" ... "step 4/4", the first with step 0's numbers."""
    from fdpg_ray.console import Progress

    bar = Progress(4, 0, "toy [kl]", first_step=0)
    for k in range(4):
        bar.update({"k": str(k)})
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert [line.split("  ")[0] for line in lines] == [f"toy [kl]: step {k}/3" for k in range(4)], lines
    assert lines[0].split("  ")[1] == "k=0"
