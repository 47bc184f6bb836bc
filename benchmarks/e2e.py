"""End-to-end samples per second of f-DPG (rollout, scoring, learning, weight sync), measured
side by side in one run on the same model, batch and lengths:

  local        the same mathematics in one plain Python process, no Ray (fdpg_ray.train.local)
  ray          the distributed run (rollout actor, scorer actor, TorchTrainer), overlap off/on
  trl_grpo     TRL's GRPOTrainer with the equivalent reward (1 if the text has "amazing")

    python benchmarks/e2e.py                      # comparison (about 8 minutes on 2 cores)
    python benchmarks/e2e.py --scaling            # rollout actors x learner workers x length
    python benchmarks/e2e.py --configs            # steps/minute of each example config as shipped

Steady state only: samples/s = batch x (steps timed) / seconds between the rows of step 1 and
step S-1 (start-up, the first step and the final evaluation step are excluded).  Prints one
JSON line per variant and the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)

BASE = {"run.progress": False, "run.eval_every": 10_000, "run.checkpoint_every": 10_000,
        "learner.micro_batch_size": 64, "target.fit_samples": 128}


def steady_rate(rows: list[dict], batch: int) -> tuple[float, float]:
    """(samples/s, seconds/step) between the rows of step 1 and step S-1."""
    by = {int(r["step"]): float(r["seconds"]) for r in rows}
    last = max(by) - 1
    sec = (by[last] - by[1]) / (last - 1)
    return batch / sec, sec


def run_local(over: dict) -> dict:
    from fdpg_ray.config import load_config
    from fdpg_ray.train.local import build_local

    cfg = load_config("configs/amazing.yaml", {**BASE, **over})
    controller, _ = build_local(cfg)
    rows = controller.run()
    rate, sec = steady_rate(rows, cfg.learner.batch_size)
    return {"samples_per_s": rate, "step_seconds": sec}


def run_ray(over: dict, config: str = "configs/amazing.yaml", base: dict | None = None) -> dict:
    import pandas as pd

    from actors.driver import run_distributed
    from fdpg_ray.config import load_config

    cfg = load_config(config, {**(BASE if base is None else base), **over})
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        run_distributed(cfg, Path(d) / "run")
        rows = pd.read_csv(Path(d) / "run" / "metrics.csv").to_dict("records")
    rate, sec = steady_rate(rows, cfg.learner.batch_size)
    return {"samples_per_s": rate, "step_seconds": sec, "wall_seconds": time.time() - t0}


def run_trl(steps: int, batch: int, max_new_tokens: int, lr: float) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from fdpg_ray.model.sources import load_model_and_tokenizer

    torch.set_num_threads(2)
    model, tok = load_model_and_tokenizer("bundled:gpt2-tiny")
    word = re.compile(r"\bamazing\b", re.IGNORECASE)

    def reward(completions, **kwargs):
        return [float(bool(word.search(c))) for c in completions]

    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    prompt = tok.bos_token or tok.eos_token
    data = Dataset.from_dict({"prompt": [prompt] * (batch * (steps + 1))})
    with tempfile.TemporaryDirectory() as d:
        args = GRPOConfig(output_dir=d, per_device_train_batch_size=batch, num_generations=batch,
                          gradient_accumulation_steps=1, steps_per_generation=1, num_iterations=1, beta=0.0,
                          max_completion_length=max_new_tokens, temperature=1.0, top_p=1.0, top_k=0,
                          learning_rate=lr, max_steps=steps, logging_steps=1, save_strategy="no",
                          report_to="none", use_cpu=True, bf16=False, seed=0, disable_tqdm=True)
        trainer = GRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=data,
                              processing_class=tok, callbacks=[Clock()])
        trainer.train()
    sec = (times[-1] - times[0]) / (len(times) - 1)
    return {"samples_per_s": batch / sec, "step_seconds": sec}


def emit(name: str, res: dict, **extra) -> dict:
    rec = {"variant": name, **{k: round(v, 3) for k, v in res.items()}, **extra}
    print(json.dumps(rec), flush=True)
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--scaling", action="store_true")
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--configs", action="store_true")
    args = ap.parse_args()
    common = {"run.steps": args.steps, "learner.batch_size": args.batch, "model.max_new_tokens": args.max_new_tokens,
              "learner.lr": 1e-4}
    out = {}
    if args.configs:  # each example config as shipped (its batch, lengths, evaluation), 12 steps
        for name in ("amazing", "gender", "sentiment", "prompts", "toy"):
            res = run_ray({"run.steps": 12}, f"configs/{name}.yaml", base={"run.progress": False})
            emit(f"configs/{name}.yaml", res, steps_per_minute=round(60 / res["step_seconds"], 1))
    elif not args.scaling:
        one = {"learner.num_workers": 1, "learner.cpus_per_worker": 1}
        out["local_vllm"] = emit("local (one process, vLLM, no Ray)", run_local({**common, "rollout.backend": "vllm"}))
        out["ray_vllm_w1"] = emit("ray vllm, 1 learner worker", run_ray({**common, **one}))
        out["ray_vllm_w1_overlap"] = emit("ray vllm, 1 learner worker, overlap",
                                          run_ray({**common, **one, "rollout.overlap": True}))
        out["ray_vllm_w2"] = emit("ray vllm, 2 learner workers (demo)", run_ray(common))
        out["ray_vllm_w2_overlap"] = emit("ray vllm, 2 learner workers, overlap",
                                          run_ray({**common, "rollout.overlap": True}))
        out["ray_hf_w1"] = emit("ray transformers generate, 1 learner worker",
                                run_ray({**common, **one, "rollout.backend": "hf"}))
        if not args.skip_trl:
            out["trl_grpo"] = emit("TRL GRPOTrainer (transformers generate)",
                                   run_trl(args.steps, args.batch, args.max_new_tokens, 1e-4))
        best_ray = max(v["samples_per_s"] for k, v in out.items() if k.startswith("ray_vllm"))
        ratios = {
            "ray_cost_over_local (w1, no overlap)": 1 - out["ray_vllm_w1"]["samples_per_s"] / out["local_vllm"]["samples_per_s"],
            "overlap_speedup_w1": out["ray_vllm_w1_overlap"]["samples_per_s"] / out["ray_vllm_w1"]["samples_per_s"],
            "overlap_speedup_w2": out["ray_vllm_w2_overlap"]["samples_per_s"] / out["ray_vllm_w2"]["samples_per_s"],
        }
        if "trl_grpo" in out:
            ratios["fdpg_best_over_trl"] = best_ray / out["trl_grpo"]["samples_per_s"]
            ratios["fdpg_hf_w1_over_trl"] = out["ray_hf_w1"]["samples_per_s"] / out["trl_grpo"]["samples_per_s"]
        print(json.dumps({"bench": "e2e", "batch": args.batch, "max_new_tokens": args.max_new_tokens,
                          "steps": args.steps, **{k: round(v, 3) for k, v in ratios.items()}}))
    else:
        for actors in (1, 2):
            for workers in (1, 2):
                emit(f"rollout_actors={actors} learner_workers={workers}", run_ray({
                    **common, "rollout.num_actors": actors, "rollout.cpus_per_actor": 1 / actors,
                    "learner.num_workers": workers, "learner.cpus_per_worker": 1 / workers}),
                    rollout_actors=actors, learner_workers=workers, max_new_tokens=args.max_new_tokens)
        for length in (24, 96):
            emit(f"max_new_tokens={length}", run_ray({**common, "model.max_new_tokens": length}),
                 rollout_actors=1, learner_workers=2, max_new_tokens=length)
    print(f"rerun: python benchmarks/e2e.py {' '.join(sys.argv[1:])}")


if __name__ == "__main__":
    main()
