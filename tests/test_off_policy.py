"""Off-policy and offline f-DPG on the exact task (rollout.proposal, rollout.proposal_update).

Each run goes through the same rollout, scoring and learning code as real runs (the --local
path, transformers backend), on the enumerable toy task where exact KL(p||pi) is known.
The divergence is forward KL (DPG, whose adaptive proposal GDC introduced).  The target is
the toy reward at beta = 0.25 (p far from a: KL(p||a) = 5.6 nats), where the truncated
importance weights pi/a (at most 10) slow a fixed base proposal down once pi has moved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fdpg_ray.cli import main  # noqa: E402
from fdpg_ray.config import load_config  # noqa: E402
from fdpg_ray.train.local import build_local  # noqa: E402
from fdpg_ray.model.sources import load_model_and_tokenizer  # noqa: E402
from fdpg_ray.model.toy import TOKENS  # noqa: E402
from fdpg_ray.objective.estimators import untrusted  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
STEPS = 30


def train(steps: int, **overrides):
    # eval.base_samples = the toy's fit_samples: kl_p_pi_base is not what these tests check
    cfg = load_config(ROOT / "configs/toy.yaml", {"run.steps": steps, "run.eval_every": 1, "run.progress": False,
                                                   "divergence": "kl", "eval.base_samples": 256, **overrides})
    controller, _ = build_local(cfg)
    return controller, controller.run()


def steps_to(rows: list[dict], fraction: float) -> int:
    """First step whose exact KL(p||pi) is at most ``fraction`` of step 0's (STEPS + 1 if none)."""
    start = rows[0]["exact_kl"]
    return next((r["step"] for r in rows if r["exact_kl"] <= fraction * start), STEPS + 1)


FAR = {"target.constraints.0.beta": 0.25, "learner.lr": 5e-4}


@pytest.fixture(scope="module")
def fixed_and_adaptive():
    _, fixed = train(STEPS, **FAR, **{"rollout.proposal": "base"})
    _, adaptive = train(STEPS, **FAR, **{"rollout.proposal": "base", "rollout.proposal_update": {"every": 1}})
    return fixed, adaptive


def test_off_policy_training_from_the_base_model_lowers_exact_kl(fixed_and_adaptive):
    fixed, _ = fixed_and_adaptive
    start, end = fixed[0]["exact_kl"], fixed[-1]["exact_kl"]
    print(f"\nbase proposal: exact KL(p||pi) {start:.3f} -> {end:.3f} in {STEPS} steps")
    assert end < 0.7 * start
    # The samples kept coming from a: log q is log a, and pi moved away from it.
    assert fixed[-1]["logq_logpi_gap"] > 0.05


def test_adaptive_proposal_gets_there_in_fewer_steps_than_a_fixed_one(fixed_and_adaptive):
    fixed, adaptive = fixed_and_adaptive
    n_fixed, n_adaptive = steps_to(fixed, 0.05), steps_to(adaptive, 0.05)
    print(f"\nsteps to 5% of the starting exact KL(p||pi): fixed {n_fixed}, adaptive {n_adaptive} "
          f"({adaptive[-1]['proposal_updates']} proposal updates)")
    assert adaptive[-1]["proposal_updates"] >= 1
    assert n_adaptive < n_fixed
    # kl_p_q, which decides the updates, at step 0 (q = a = pi there, so the exact value is
    # exact_kl): with p this far from a (5.6 nats) 256 samples of a cannot estimate it, and the
    # row must say so: the estimate is off by many of its SEs and its ESS flags it.
    first = adaptive[0]
    print(f"step 0: kl_p_q {first['kl_p_q']:.3f} +- {first['kl_p_q_se']:.3f} (ESS {first['kl_p_q_ess']:.0f}), "
          f"exact {first['exact_kl']:.3f}")
    assert 1 <= first["kl_p_q_ess"] <= load_config(ROOT / "configs/toy.yaml").learner.batch_size
    assert abs(first["kl_p_q"] - first["exact_kl"]) > 3 * first["kl_p_q_se"] and untrusted(first, "kl_p_q")
    assert adaptive[-1]["exact_kl"] < fixed[-1]["exact_kl"]


@pytest.fixture(scope="module")
def base_samples(tmp_path_factory) -> Path:
    """512 samples of the toy base model as JSONL, once with their log q and once without."""
    from fdpg_ray.rollout.hf_sampler import HFSampler

    sampler = HFSampler("toy", seed=7)
    samples = sampler.sample([[0]], 512, 4)
    out = tmp_path_factory.mktemp("proposal-data")
    # Written with every token spelled out ("<s>" included: the toy model can generate it),
    # so that tokenizing a text gives back exactly the sampled completion.
    rows = [{"text": " ".join(TOKENS[i] for i in s.token_ids), "log_q": s.log_q} for s in samples]
    (out / "with_log_q.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (out / "without_log_q.jsonl").write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in rows))
    return out


def test_dataset_proposal_trains_offline_and_scores_a_missing_log_q_as_log_a(base_samples):
    _, given = train(8, **{"rollout.proposal": f"dataset:{base_samples / 'with_log_q.jsonl'}"})
    _, scored = train(8, **{"rollout.proposal": f"dataset:{base_samples / 'without_log_q.jsonl'}"})
    print(f"\ndataset proposal: exact KL(p||pi) {given[0]['exact_kl']:.3f} -> {given[-1]['exact_kl']:.3f}")
    assert given[-1]["exact_kl"] < 0.9 * given[0]["exact_kl"]
    # Without a log_q column the texts are scored once by the base model: the same log q.
    for a, b in zip(given, scored):
        assert a["exact_kl"] == pytest.approx(b["exact_kl"], rel=1e-3, abs=1e-4)
        assert a["log_z_hat"] == pytest.approx(b["log_z_hat"], abs=1e-3)


def test_fixed_proposal_is_served_by_the_rollout_engine(tmp_path):
    """fixed:PATH serves PATH's model: log q of the samples is that model's, not a's."""
    model, tokenizer = load_model_and_tokenizer("toy")
    with torch.no_grad():  # a different proposal with the same tokenizer: flatter logits
        model.transformer.ln_f.weight.mul_(0.5)
        model.transformer.ln_f.bias.mul_(0.5)
    model.save_pretrained(tmp_path / "q")
    tokenizer.save_pretrained(tmp_path / "q")
    controller, rows = train(12, **{"rollout.proposal": f"fixed:{tmp_path / 'q'}"})
    batch = controller.next_batch()
    log_q_model = controller.scorer.log_base(batch.prompt_ids, batch.completion_ids)  # log a
    assert (batch.log_q - log_q_model).abs().max() > 0.1  # q is not a ...
    from fdpg_ray.objective.loss import collate, sequence_log_probs

    with torch.no_grad():
        want = sequence_log_probs(model, *collate(batch.prompt_ids, batch.completion_ids, 0)).double()
    assert torch.allclose(batch.log_q, want, atol=2e-3)  # ... it is the fixed model
    assert rows[-1]["exact_kl"] < rows[0]["exact_kl"]


BAD = [
    ("unknown proposal", ["--set", "rollout.proposal=teacher"], "rollout.proposal"),
    ("fixed without path", ["--set", "rollout.proposal=fixed:"], "rollout.proposal"),
    ("fixed path missing", ["--set", "rollout.proposal=fixed:./no/such/model"], "rollout.proposal"),
    ("fixed other tokenizer", ["--set", "rollout.proposal=fixed:bundled:gpt2-tiny"], "tokenizer"),
    ("dataset missing", ["--set", "rollout.proposal=dataset:{tmp}/none.jsonl"], "rollout.proposal"),
    ("dataset without text", ["--set", "rollout.proposal=dataset:{tmp}/notext.jsonl"], "text"),
    ("dataset bad log_q", ["--set", "rollout.proposal=dataset:{tmp}/badlogq.jsonl"], "log_q"),
    ("update a policy proposal", ["--set", "rollout.proposal_update={every: 2}"], "rollout.proposal_update"),
    ("update rule", ["--set", "rollout.proposal=base", "--set", "rollout.proposal_update={when: always}"],
     "rollout.proposal_update.when"),
    ("update every", ["--set", "rollout.proposal=base", "--set", "rollout.proposal_update={every: 0}"],
     "rollout.proposal_update.every"),
]


@pytest.mark.parametrize("case", BAD, ids=[c[0] for c in BAD])
def test_bad_proposals_are_refused_before_anything_starts(case, tmp_path, capsys):
    _, extra, field = case
    (tmp_path / "notext.jsonl").write_text('{"completion": "a b"}\n')
    (tmp_path / "badlogq.jsonl").write_text('{"text": "a b", "log_q": 1.5}\n')
    argv = ["train", str(ROOT / "configs/toy.yaml"), "--local", "--run-dir", str(tmp_path / "run"),
            *[a.replace("{tmp}", str(tmp_path)) for a in extra]]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and field in err, err
    assert not (tmp_path / "run").exists()


def test_adaptive_proposal_compares_conditional_targets_per_context(tmp_path):
    """The comparison behind proposal_update, on a conditional exact task whose two contexts
    have very different partition functions (toy reward target; exact Z_c about 5 for "a" and
    180 for "c a"): KL(p||q) is the uniform average over the contexts of per-context
    self-normalised estimates (one Z_hat_c each), so at step 0 (q = a = pi) it must match the
    exact KL(p||pi) there within 3 SE.  Pooling the contexts into one self-normalised sum (the
    earlier code) weights them by Z_c instead and misses by many SE."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a"}\n{"prompt": "c a"}\n')
    reward = load_config(ROOT / "configs/toy.yaml").target.constraints
    cfg = load_config(ROOT / "configs/toy_conditional.yaml", {
        "prompts.file": str(prompts), "prompts.per_step": 2, "target.constraints": [dict(c) for c in reward],
        "run.steps": 1, "run.eval_every": 1, "run.progress": False, "divergence": "kl",
        "learner.batch_size": 4096, "learner.micro_batch_size": 1024, "eval.base_samples": 384,
        "rollout.proposal": "base", "rollout.proposal_update": {"every": 1}})
    controller, _ = build_local(cfg)
    first = controller.run()[0]
    err = first["kl_p_q"] - first["exact_kl"]
    print(f"step 0: kl_p_q {first['kl_p_q']:.4f} +- {first['kl_p_q_se']:.4f} (ESS {first['kl_p_q_ess']:.0f}), "
          f"exact {first['exact_kl']:.4f}: {err / first['kl_p_q_se']:+.1f} SE")
    assert first["kl_p_q_se"] > 0 and first["kl_p_q_ess"] > 500
    assert abs(err) < 3 * first["kl_p_q_se"]
