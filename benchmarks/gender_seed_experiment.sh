#!/usr/bin/env bash
# The gender experiment of issue 10, item 1: seeds fixed (this tree) vs not fixed (the
# commit before the fix, 0683cb0, checked out at $OLD) x two learning rates x kl/rkl/tv,
# the study's old setting (gender, gpt2-tiny, 20 steps x 64, cosine lr), run.seed 0.
# Every run is `fdpg-ray train --local` with the vLLM backend (the backend whose seeds were
# wrong), evaluated at every step so that samples/STEP.jsonl holds the whole batch of 64.
# Analysis: benchmarks/gender_seed_experiment.py OUT_DIR.
#   OLD=/work/wt/old OUT=runs/gender-seeds bash benchmarks/gender_seed_experiment.sh
set -u
NEW=${NEW:-$(pwd)}
OLD=${OLD:-/work/wt/old}
OUT=${OUT:-runs/gender-seeds}
PY=${PY:-/work/main/.venv/bin/python}
mkdir -p "$OUT"
for lr in 0.0002 0.00005; do
  for div in kl rkl tv; do
    for arm in fixed old; do
      tree=$NEW; [ "$arm" = old ] && tree=$OLD
      dir=$(realpath -m "$OUT/$arm-$div-lr$lr")
      [ -f "$dir/summary.json" ] && continue
      rm -rf "$dir"
      start=$(date +%s)
      (cd "$tree" && PYTHONPATH=$tree timeout 900 nice -n 10 "$PY" -m fdpg_ray.cli train configs/gender.yaml \
        --local --run-dir "$dir" --set divergence=$div --set learner.lr=$lr \
        --set run.steps=20 --set run.eval_every=1 --set run.checkpoint_every=20 \
        --set learner.batch_size=64 --set learner.micro_batch_size=64 --set learner.lr_schedule=cosine \
        --set rollout.backend=vllm --set eval.n_texts=8 --set run.seed=0 --set run.progress=false) \
        > "$OUT/$arm-$div-lr$lr.log" 2>&1
      echo "$arm $div $lr rc=$? $(( $(date +%s) - start ))s" >> "$OUT/wall.txt"
    done
  done
done
