"""Wire one distributed f-DPG run together: Ray, the actors, the TorchTrainer, the outputs.

The driver only builds things and moves handles: rollout actors and scorer actors with
the resources the config asks for, a sink actor pinned to this node (so that the run
directory is here even when the learner's rank 0 runs elsewhere), then a TorchTrainer
whose workers run :func:`actors.learner.train_loop_per_worker`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import ray

from fdpg_ray.config import Config
from fdpg_ray.console import NO_API_SERVER, VERBOSE_ENV, verbose
from fdpg_ray.errors import ClusterError, is_user_error
from fdpg_ray.train.sink import RunSink

RAY_SUBDIR = "ray"          # Ray Train storage (checkpoints) inside the run directory
TRAIN_NAME = "train"


# RAY_TRAIN_HEALTH_CHECK_INTERVAL_S: Ray Train V2's controller takes one worker report per
# poll and polls every 2 s by default; the worker's report queue holds one result, so with a
# report per step every step took at least 2 s (measured: 2.01 s/step for 0.03 s of learning;
# benchmarks/RESULTS.md).  Polling every 50 ms removes that floor.
ENV_VARS = {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_TRAIN_V2_ENABLED": "1",
            "VLLM_LOGGING_LEVEL": "WARNING", "TRANSFORMERS_VERBOSITY": "error",
            "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.05", VERBOSE_ENV: "0"}


def init_ray(cfg: Config) -> None:
    """Connect to the cluster at ``ray.address`` (or $RAY_ADDRESS), or start a local Ray with ``ray.num_cpus`` CPUs.

    No-op if Ray is already initialised (after probing ``ray.address``).  Actors inherit
    :data:`ENV_VARS` and this directory on PYTHONPATH.  Raises ClusterError (one line) when
    nothing answers at the address (5 s probe) or the connection fails.
    """
    if cfg.ray.address:
        _probe(cfg.ray.address)  # even when this process is already connected somewhere
    if ray.is_initialized():
        return
    for k, v in ENV_VARS.items():
        os.environ.setdefault(k, v)
    env = {"env_vars": {k: os.environ[k] for k in ENV_VARS},
           "worker_process_setup_hook": "fdpg_ray.console.ray_worker_setup"}
    # Actors and workers do not run in this directory: let them import what the user can
    # import here (callable scorers given as "module:function").
    env["env_vars"]["PYTHONPATH"] = os.pathsep.join(p for p in [os.getcwd(), os.environ.get("PYTHONPATH", "")] if p)
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")  # `ray job submit` sets RAY_ADDRESS
    if address is None:  # a local Ray without a dashboard: no state-API server (fdpg_ray.console)
        env["env_vars"]["RAY_API_SERVER_ADDRESS"] = NO_API_SERVER
        ray.init(num_cpus=cfg.ray.num_cpus, include_dashboard=False, runtime_env=env, log_to_driver=True,
                 configure_logging=True, logging_level="WARNING" if verbose() else "ERROR")
    else:
        _probe(address)
        try:
            ray.init(address=address, runtime_env=env, logging_level="WARNING")
        except (ConnectionError, RuntimeError, TimeoutError) as e:
            raise ClusterError(f"ray.address: cannot connect to '{address}' ({type(e).__name__}); start the "
                               f"cluster (`ray up cluster.yaml` or `ray start --head`) or unset ray.address") from None


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds, not minutes, when nothing listens at a host:port address (ray.init
    itself retries for minutes).  "auto" and addresses without a port are left to Ray."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parsed.hostname, parsed.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        return
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise ClusterError(f"ray.address: nothing answers at '{address}' ({e.strerror or type(e).__name__}); start the "
                           f"cluster (`ray up cluster.yaml` or `ray start --head`) or unset ray.address") from None


def check_resources(cfg: Config) -> None:
    """Raise ClusterError when the run asks for more GPUs or logical CPUs than the Ray cluster has.

    Needs: rollout actors * their CPUs/GPUs + scorer actors * CPUs + learner workers * CPUs
    (+1 GPU each with learner.use_gpu) + 0.1 CPU.
    """
    total = ray.cluster_resources()
    gpus_needed = cfg.rollout.num_actors * cfg.rollout.gpus_per_actor + (cfg.learner.num_workers if cfg.learner.use_gpu else 0)
    if gpus_needed > total.get("GPU", 0):
        raise ClusterError(f"learner.use_gpu/rollout.gpus_per_actor: the run asks for {gpus_needed:g} GPUs but the "
                           f"cluster has {total.get('GPU', 0):g}; set learner.use_gpu=false and rollout.gpus_per_actor=0")
    cpus_needed = (cfg.rollout.num_actors * cfg.rollout.cpus_per_actor + cfg.scorer.num_actors * cfg.scorer.cpus_per_actor
                   + cfg.learner.num_workers * cfg.learner.cpus_per_worker + 0.1)
    if cpus_needed > total.get("CPU", 0):
        raise ClusterError(f"ray.num_cpus: the run asks for {cpus_needed:g} logical CPUs but Ray has {total.get('CPU', 0):g}; "
                           f"raise ray.num_cpus or lower the *.cpus_per_* settings")


def start_actors(cfg: Config, run_dir: Path, resume: bool):
    """Start the sink (pinned to this node), the rollout and scorer actors; wait until they are ready.

    Returns (sink, rollout actors, scorer actors); no rollout actors for a dataset proposal.
    Actors restart up to 3 times.  ``resume`` is unused.
    """
    from actors.rollout import RolloutActor
    from actors.scorer import ScorerActor
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cfg_dict = cfg.to_dict()
    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    sink = ray.remote(RunSink).options(num_cpus=0, scheduling_strategy=here).remote(str(run_dir), cfg_dict, log_role="sink")
    # max_restarts/max_task_retries: a rollout actor that dies is restarted and its
    # sample call retried (it comes back with the base weights; the next push and the
    # importance weight pi/q keep the estimate right meanwhile).
    # An offline (dataset) proposal needs no rollout engine: the learner reads the file.
    num_rollouts = 0 if cfg.rollout.proposal.startswith("dataset:") else cfg.rollout.num_actors
    rollouts = [RolloutActor.options(num_cpus=cfg.rollout.cpus_per_actor, num_gpus=cfg.rollout.gpus_per_actor,
                                     max_restarts=3, max_task_retries=3).remote(cfg_dict, i, run_dir=str(run_dir))
                for i in range(num_rollouts)]
    scorers = [ScorerActor.options(num_cpus=cfg.scorer.cpus_per_actor, max_restarts=3, max_task_retries=3).remote(cfg_dict, run_dir=str(run_dir))
               for _ in range(cfg.scorer.num_actors)]
    ray.get([a.ready.remote() for a in rollouts + scorers])
    return sink, rollouts, scorers


def _user_error_in(error: BaseException) -> BaseException | None:
    """The first worker exception that is a user-input error (bad target, scorer, data)."""
    for failure in (getattr(error, "worker_failures", None) or {}).values():
        cause = failure
        while cause is not None and not is_user_error(cause):
            cause = getattr(cause, "cause", None) or cause.__cause__
        if cause is not None:
            return getattr(cause, "cause", None) or cause  # unwrap RayTaskError(ValueError)
    return None


def run_distributed(cfg: Config, run_dir: Path, resume: bool = False, callbacks: list | None = None,
                    resume_changes: dict | None = None) -> dict:
    """Train on Ray; returns the run summary (also written to RUN_DIR/summary.json).

    ``callbacks`` go to the TorchTrainer's RunConfig (a Tune trial passes
    ``ray.tune.integration.ray_train.TuneReportCallback()``).  ``resume_changes``: the allowed
    config changes of a resume, appended to RUN_DIR/resumes.jsonl (fdpg_ray.train.fingerprint)."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from actors.learner import train_loop_per_worker
    from fdpg_ray.train.report import before_after

    init_ray(cfg)
    check_resources(cfg)
    t0 = time.time()
    sink, rollouts, scorers = start_actors(cfg, run_dir, resume)
    try:
        from fdpg_ray.train.fingerprint import record_start

        # what the run was started on, by content (--resume compares against it)
        record_start(cfg, run_dir, resume_changes)
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"config": cfg.to_dict(), "rollout_actors": rollouts, "scorer_actors": scorers,
                               "sink": sink, "run_dir": str(run_dir)},
            scaling_config=ScalingConfig(num_workers=cfg.learner.num_workers, use_gpu=cfg.learner.use_gpu,
                                         resources_per_worker={"CPU": cfg.learner.cpus_per_worker,
                                                               **({"GPU": 1} if cfg.learner.use_gpu else {})}),
            run_config=RunConfig(name=TRAIN_NAME, storage_path=str((run_dir / RAY_SUBDIR).resolve()),
                                 failure_config=FailureConfig(max_failures=cfg.run.max_failures),
                                 checkpoint_config=CheckpointConfig(num_to_keep=2),
                                 logging_config=LoggingConfig(log_level="WARNING"), callbacks=callbacks or None),
        )
        try:
            result = trainer.fit()
        except Exception as e:  # a user error inside a worker comes back as itself, one line
            raise _user_error_in(e) or e
        if result.error is not None:
            raise _user_error_in(result.error) or result.error
        table = before_after(run_dir)
        summary = {
            "run_dir": str(run_dir), "divergence": cfg.divergence, "steps": cfg.run.steps,
            "wall_seconds": time.time() - t0, "before_after": table.to_dict(),
            "final_model": str(run_dir / "final"),
        }
        return ray.get(sink.finish.remote(summary))
    except BaseException as e:
        try:
            ray.get(sink.fail.remote(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
        except Exception:
            pass
        raise
    finally:
        for a in rollouts + scorers + [sink]:
            ray.kill(a)
