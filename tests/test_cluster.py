"""cluster.yaml passes Ray's own cluster-config validation, and a sweep runs across a real
two-node Ray cluster started on this machine (two raylets with separate resources, token
authentication on)."""

from __future__ import annotations

import copy
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


# ----------------------------------------------------------------------------- cluster.yaml

def _cluster_config() -> dict:
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def _alternative(name: str) -> dict:
    """The commented `# >>> name ... # <<< name` block of cluster.yaml, uncommented."""
    text = (ROOT / "cluster.yaml").read_text()
    m = re.search(rf"^# >>> {name}\n(.*?)^# <<< {name}", text, re.S | re.M)
    assert m, f"cluster.yaml has no '# >>> {name}' block"
    return yaml.safe_load("\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                                    for line in m.group(1).splitlines()))


def _ray_validates(config: dict) -> dict:
    """What `ray up` does before it talks to a cloud: merge the provider's defaults, then
    validate against Ray's JSON schema and its extra checks."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_yaml_passes_rays_validation():
    cfg = _cluster_config()
    prepared = _ray_validates(cfg)
    assert prepared["provider"]["type"] == "aws"
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] in types
    gpu_types = [t for t, v in types.items() if v.get("resources", {}).get("GPU", 0) > 0]
    assert gpu_types and all(types[t]["max_workers"] > types[t]["min_workers"] for t in gpu_types)  # autoscaling
    setup = " ".join(prepared["setup_commands"])
    assert "pip install" in setup and ".[gpu]" in setup
    mounts = prepared["file_mounts"]
    assert "." in mounts.values() and any("auth_token" in k for k in mounts)
    starts = " ".join(prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2


@pytest.mark.parametrize("name", ["gcp", "local"])
def test_cluster_yaml_alternatives_pass_rays_validation(name):
    cfg = _cluster_config()
    if name == "local":  # the local provider brings its own single node type
        cfg.pop("available_node_types")
        cfg.pop("head_node_type")
    cfg.update(_alternative(name))
    assert _ray_validates(cfg)["provider"]["type"] == name


def test_rays_validation_rejects_a_broken_cluster_yaml():
    import jsonschema

    cfg = _cluster_config()
    cfg["available_node_types"]["gpu_1x"]["min_workerz"] = 1
    with pytest.raises(jsonschema.ValidationError):
        _ray_validates(cfg)
    cfg = _cluster_config()
    cfg["head_node_type"] = "nope"
    with pytest.raises(ValueError):
        _ray_validates(cfg)


# ----------------------------------------------------------------------------- a real 2-node cluster

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_ports() -> list[str]:
    # Two raylets on one machine: every per-node port must differ.
    return [f"--node-manager-port={_free_port()}", f"--object-manager-port={_free_port()}",
            f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
            f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}",
            "--min-worker-port=0", "--max-worker-port=0"]


class TwoNodeCluster:
    """`ray start --head` + `ray start --address` as two blocking processes (ours, by pid).

    Its own --temp-dir keeps the address file out of /tmp/ray, so that nobody else's
    ray.init() on this machine joins it; we never call `ray stop` (it would stop every Ray
    on the machine). Token authentication is on with a token of our own."""

    def __init__(self, head_cpus: int, worker_cpus: int):
        self.tmp = tempfile.mkdtemp(prefix="fdpgc-", dir="/tmp")  # short: Ray's socket paths
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        self.env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16), HF_HUB_OFFLINE="1",
                        TOKENIZERS_PARALLELISM="false", PYTHONPATH=str(ROOT),
                        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0")  # stop at once on SIGTERM
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        common = ["--block", "--disable-usage-stats", f"--temp-dir={self.tmp}", "--object-store-memory=100000000"]
        self.procs: list[subprocess.Popen] = []
        self.head = self._start("head", ["--head", f"--port={self.port}", f"--num-cpus={head_cpus}",
                                         "--include-dashboard=false", f"--ray-client-server-port={_free_port()}",
                                         '--resources={"head_node": 1}', *_node_ports(), *common])
        self._wait_port()
        self.worker = self._start("worker", [f"--address={self.address}", f"--num-cpus={worker_cpus}",
                                             '--resources={"worker_node": 1}', *_node_ports(), *common])

    def _start(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(Path(self.tmp) / f"{name}.log", "w")
        p = subprocess.Popen([str(BIN / "ray"), "start", *args], env=self.env, stdout=log, stderr=subprocess.STDOUT,
                             start_new_session=True, cwd=ROOT)
        self.procs.append(p)
        return p

    def _wait_port(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.head.poll() is not None:
                raise RuntimeError(f"ray start --head exited: {self.log('head')[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("the head node did not come up")

    def log(self, name: str) -> str:
        return (Path(self.tmp) / f"{name}.log").read_text(errors="replace")

    def python(self, code: str, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", code], env=env or self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)

    def shutdown(self) -> None:
        for p in reversed(self.procs):  # worker first; SIGTERM drains and stops that node's processes
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in reversed(self.procs):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        # Anything of this cluster still alive (found by our private temp dir), by pid.
        for _ in range(20):
            out = subprocess.run(["pgrep", "-f", self.tmp], capture_output=True, text=True).stdout.split()
            pids = [int(x) for x in out if int(x) != os.getpid()]
            if not pids:
                return
            time.sleep(0.5)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def cluster():
    # head: 1 CPU, worker: 3 CPUs. A trial reserves 0.1 CPU for its driver on the head plus
    # 0.5 + 0.25 for its rollout and scorer actors; its Ray Train learner asks for 0.5 more:
    # two concurrent trials cannot fit on the head alone.
    c = TwoNodeCluster(head_cpus=1, worker_cpus=3)
    try:
        r = c.python(f"""
import ray, time, json
ray.init(address="{c.address}", logging_level="ERROR")
for _ in range(120):
    nodes = [n for n in ray.nodes() if n["Alive"]]
    if len(nodes) == 2:
        break
    time.sleep(0.5)
print(json.dumps([n["Resources"] for n in nodes]))
""", timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        c.nodes = json.loads(r.stdout.strip().splitlines()[-1])
        yield c
    finally:
        c.shutdown()


SWEEP = """
name: cluster-smoke
base: {base}
set:
  run.steps: 2
  run.eval_every: 1
  run.checkpoint_every: 2
  rollout.backend: hf
  learner.num_workers: 1
  learner.batch_size: 64
  learner.micro_batch_size: 64
  target.fit_samples: 64
  eval.base_samples: 64
  eval.samples: 64
grid:
  divergence: [kl, js]
max_concurrent_trials: 2
trial_resources: {{CPU: 0.1}}
metric: kl_p_pi
mode: min
"""


@pytest.mark.slow
def test_sweep_runs_across_a_real_two_node_cluster(cluster, tmp_path):
    assert len(cluster.nodes) == 2
    head, worker = sorted(cluster.nodes, key=lambda r: "head_node" not in r)
    assert head["CPU"] == 1 and worker["CPU"] == 3 and "worker_node" in worker and "node:__internal_head__" in head

    sweep_file = tmp_path / "cluster.yaml"
    sweep_file.write_text(SWEEP.format(base=ROOT / "configs" / "toy.yaml"))
    sweep_dir = tmp_path / "sweep"
    # The CLI's own code path, connected to the cluster by ray.address, then the actor
    # table (from the GCS: where every actor of the sweep ran).
    r = cluster.python(f"""
import json, sys
from fdpg_ray.cli import main
rc = main(["sweep", {str(sweep_file)!r}, "--sweep-dir", {str(sweep_dir)!r}, "--set", "ray.address={cluster.address}"])
import ray
from ray._private import state
nodes = {{n["NodeID"]: ("head" if "head_node" in n["Resources"] else "worker") for n in ray.nodes()}}
placed = {{}}
for a in state.actors().values():
    placed.setdefault(a["ActorClassName"], []).append(nodes.get(a["Address"]["NodeID"], "?"))
print("PLACED " + json.dumps(placed))
sys.exit(rc)
""", timeout=540)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-5000:])
    placed = json.loads(next(line for line in r.stdout.splitlines() if line.startswith("PLACED "))[7:])

    df = pd.read_parquet(sweep_dir / "results.parquet")
    finals = df.groupby("trial_id").agg(step=("step", "max"), state=("state", "first"), divergence=("divergence", "first"))
    assert sorted(finals["divergence"]) == ["js", "kl"]
    assert (finals["step"] == 2).all() and (finals["state"] == "finished").all(), finals
    assert len(df) == 2 * 3
    # The run spans the two raylets: drivers on the head, learners on the worker (the head
    # has no CPU left for them), and the run's actors on both.
    assert set(placed.get("RayTrainWorker", [])) == {"worker"}, placed
    drivers = [n for name, nodes in placed.items() if name.endswith("ImplicitFunc") for n in nodes]
    assert len(drivers) == 2 and set(drivers) == {"head"}, placed  # Tune's trial driver functions
    assert set(placed.get("RunSink", [])) == {"head"}, placed       # so the run directories are on the head
    everything = [n for names in placed.values() for n in names]
    assert {"head", "worker"} <= set(everything), placed


@pytest.mark.slow
def test_the_cluster_refuses_a_wrong_auth_token(cluster):
    env = dict(cluster.env, RAY_AUTH_TOKEN="not-the-token")
    r = cluster.python(f"import ray; ray.init(address='{cluster.address}'); print('CONNECTED')", timeout=120, env=env)
    assert r.returncode != 0 and "CONNECTED" not in r.stdout
    assert "auth" in r.stderr.lower() or "token" in r.stderr.lower(), r.stderr[-2000:]
