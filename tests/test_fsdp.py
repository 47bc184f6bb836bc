"""FSDP2 (``learner.strategy: fsdp``) for real: ``torch.distributed.fsdp.fully_shard`` over
gloo with 2 CPU processes, in process (torch.multiprocessing, exact resume) and under Ray
Train's TorchTrainer (checkpoint, a killed worker resumed, weights pushed to vLLM, final
model saved)."""

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from fdpg_ray.config import load_config
from tests.vllm_checks import assert_final_model_matches_vllm

pytestmark = pytest.mark.slow

SHORT = {"run.progress": False, "rollout.backend": "hf", "learner.batch_size": 16, "learner.micro_batch_size": 4,
         "target.fit_samples": 32, "eval.base_samples": 32, "model.max_new_tokens": 24, "learner.lr": 5e-4, "run.eval_every": 2, "learner.lr_schedule": "cosine",
         "run.steps": 4, "learner.strategy": "fsdp"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exact_resume_worker(rank: int, world: int, port: int, out: str) -> None:
    """4 steps straight vs 2 steps, checkpoint (full weights + controller state, gathered
    collectively), rebuild everything, resume, 2 more steps; rank 0 writes what it saw."""
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from fdpg_ray.train.controller import Controller, TorchDistributed
        from fdpg_ray.train.local import LocalRollout
        from fdpg_ray.objective.loss import SequenceLogProbs
        from fdpg_ray.model.sources import load_model_and_tokenizer
        from fdpg_ray.train.parallel import full_state_dict, is_sharded, shard_policy
        from fdpg_ray.target.scoring import TargetScorer

        cfg = load_config("configs/amazing.yaml", SHORT)

        def build(model_state=None):
            torch.manual_seed(cfg.run.seed)
            policy, tok = load_model_and_tokenizer(cfg.model.path)
            if model_state is not None:
                policy.load_state_dict(model_state)
            model = shard_policy(SequenceLogProbs(policy, cfg.loss.chunk_size), policy)
            assert is_sharded(model)
            rollout = LocalRollout(cfg) if rank == 0 else None
            scorer = TargetScorer(cfg) if rank == 0 else None
            return Controller(cfg, policy, tok, rollout=rollout, scorer=scorer, world=TorchDistributed(), model=model)

        straight = build()
        rows_straight = straight.run()
        final_straight = full_state_dict(straight.policy)
        shard_numel = sum(p.to_local().numel() for p in straight.model.parameters())

        first = build()
        first.start()
        while first.step < 2:
            first.train_step(first.next_batch())
            first.step += 1
            first.push_weights()
        state = {"model": full_state_dict(first.policy), "controller": first.state_dict()}
        torch.manual_seed(12345)  # whatever happens in between must not matter

        second = build(state["model"])
        rows_resumed = second.run(resume=state["controller"])
        final_resumed = full_state_dict(second.policy)
        if rank == 0:
            torch.save({"straight": rows_straight, "resumed": rows_resumed, "shard_numel": shard_numel,
                        "numel": sum(t.numel() for k, t in final_straight.items() if k != "lm_head.weight"),
                        "optimizer_keys": sorted(state["controller"]["optimizer"]["state"])[:3],
                        "weights_equal": all(torch.equal(final_straight[k], final_resumed[k]) for k in final_straight),
                        "changed": any(not torch.equal(final_straight[k], v) for k, v in
                                       load_model_and_tokenizer(cfg.model.path)[0].state_dict().items())}, out)
    finally:
        dist.destroy_process_group()


def test_fsdp2_two_gloo_processes_train_push_and_resume_exactly(tmp_path):
    out = str(tmp_path / "rows.pt")
    mp.spawn(_exact_resume_worker, args=(2, _free_port(), out), nprocs=2, join=True)
    res = torch.load(out, weights_only=False)
    # Each rank holds about half of every tensor: the parameters really are sharded.
    assert res["shard_numel"] < 0.6 * res["numel"], (res["shard_numel"], res["numel"])
    # The gathered optimizer state is keyed by parameter name (full, not a shard's).
    assert res["optimizer_keys"][0].startswith("lm."), res["optimizer_keys"]
    straight, resumed = res["straight"], res["resumed"]
    assert [r["step"] for r in straight] == [0, 1, 2, 3, 4]
    # The rollout engine got the gathered full weights after every step: it samples from
    # exactly the learner's policy (the DDP tests' tolerance).
    assert max(r["logq_logpi_gap"] for r in straight) < 2e-3, [r["logq_logpi_gap"] for r in straight]
    assert res["changed"]
    for a, b in zip(straight[2:], resumed):
        assert a["step"] == b["step"]
        for key in ("loss", "z_hat", "alignment", "baseline", "lr", "samples", "logq_logpi_gap"):
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), key
    assert res["weights_equal"]



def test_fsdp2_on_ray_train_checkpoint_killed_worker_resume_vllm_sync_and_final_model(ray_local, tmp_path):
    """TorchTrainer, 2 CPU workers over gloo, FSDP2; vLLM rollout engine.  A learner worker is
    killed once step 3 is written: Ray Train restarts the group from the step-2 checkpoint
    (full weights + gathered optimizer state).  After every push vLLM samples from exactly the
    learner's policy, before and after the restart."""
    from actors.driver import run_distributed
    from tests.test_faults import assert_complete, kill_when

    run_dir = tmp_path / "fsdp"
    cfg = load_config("configs/amazing.yaml", {**SHORT, "rollout.backend": "vllm", "run.steps": 5,
                                               "run.checkpoint_every": 2, "run.max_failures": 1,
                                               "learner.lr_schedule": "constant"})
    killed: list = []
    watcher = kill_when(run_dir, 3, "ray::RayTrainWorker", killed, timeout=1800)  # start-up on a busy box
    summary = run_distributed(cfg, run_dir)
    watcher.join(1)
    assert killed, "no learner worker was killed"
    df = assert_complete(run_dir, 5)
    assert summary["restarts"] >= 1
    assert df["samples"].diff().iloc[1:].eq(16).all(), df["samples"].tolist()
    assert df["logq_logpi_gap"].max() < 2e-3, df["logq_logpi_gap"].tolist()
    assert df["kl_p_pi_base"].notna().sum() >= 3  # the gathered evaluation copy ran (steps 0, 2, 4, 5)
    assert_final_model_matches_vllm(str(run_dir / "final"))
