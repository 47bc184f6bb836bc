"""The `fdpg-ray` command: train, eval, sample, qrs, sweep, report.

Errors in the user's input (config, paths, targets, cluster) print one line,
``error: <field>: <problem>; <fix>``, and exit with status 2; ``--debug`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

from fdpg_ray.errors import is_user_error
from fdpg_ray.train.preflight import preflight


VERBOSE_RUN = "show Ray's, vLLM's and torch's output live (by default it goes to RUN_DIR/logs/)"
VERBOSE_ONE_PROCESS = "show transformers' and vLLM's info messages and progress bars (hidden by default)"


def _add_common(p, verbose_help: str = VERBOSE_RUN):
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field by its dotted path, e.g. --set learner.lr=1e-5")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--verbose", action="store_true", help=verbose_help)


def build_parser() -> argparse.ArgumentParser:
    """The ``fdpg-ray`` argument parser: subcommands train, eval, sample, qrs, sweep, report."""
    ap = argparse.ArgumentParser(prog="fdpg-ray", description="f-DPG: align a language model to a target "
                                 "distribution by minimising any f-divergence, on Ray.")
    sub = ap.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a policy toward the config's target")
    t.add_argument("config", nargs="?", help="YAML config (see configs/)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last checkpoint")
    t.add_argument("--run-dir", help="where to write the run (default: run.output_dir/run.name-TIME)")
    t.add_argument("--local", action="store_true", help="one process, no Ray (same controller and math)")
    _add_common(t)
    e = sub.add_parser("eval", help="measure a run's final model (or any model) against a target")
    e.add_argument("target", metavar="RUN_DIR_OR_MODEL")
    e.add_argument("--config", help="config whose target to use (default: the run's config.yaml)")
    e.add_argument("--n", type=int, default=None, help="samples (default eval.samples)")
    _add_common(e, VERBOSE_ONE_PROCESS)
    s = sub.add_parser("sample", help="print samples from a model")
    s.add_argument("model", help="bundled:gpt2-tiny, smollm2, toy, a run directory or its final/ folder (samples "
                   "continue the run's prompts), a local path")
    s.add_argument("--n", type=int, default=8, help="samples to print (default 8), spread over the contexts")
    s.add_argument("--max-new-tokens", type=int, default=None,
                   help="new tokens per sample (default: the run's model.max_new_tokens, else 40)")
    s.add_argument("--prompt", default="", help="text the samples continue (default: a run's own contexts, else BOS alone)")
    s.add_argument("--backend", choices=["hf", "vllm"], default="hf")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (default 0); the same seed gives the same samples")
    s.add_argument("--debug", action="store_true")
    q = sub.add_parser("qrs", help="quasi-rejection sampling: approximate samples of the target p itself")
    q.add_argument("model", metavar="MODEL_OR_RUN_DIR", help="the proposal: a run directory (its final/) or any model spec")
    q.add_argument("--config", help="config whose target to sample (default: the run's config.yaml)")
    q.add_argument("--beta", default="auto", help="accept x with prob. min(1, P(x)/(beta q(x))); a positive number, "
                   "or auto (default): beta for --target-acceptance, picked on --pilot separate draws")
    q.add_argument("--target-acceptance", type=float, default=0.1, help="acceptance rate --beta auto aims at (default 0.1)")
    q.add_argument("--pilot", type=int, default=1024, help="proposals drawn to pick beta with --beta auto (default 1024)")
    q.add_argument("--n", type=int, default=1024, help="proposals drawn (default 1024); about n * acceptance are kept")
    q.add_argument("--out", help="JSONL file for the accepted samples (default: none written)")
    q.add_argument("--local", action="store_true", help="one process, no Ray (same sampling and scoring code)")
    _add_common(q, VERBOSE_ONE_PROCESS)
    sw = sub.add_parser("sweep", help="Ray Tune sweep over config fields (see configs/sweeps/)")
    sw.add_argument("sweep", help="sweep YAML")
    sw.add_argument("--resume", action="store_true", help="resume an interrupted sweep, skipping finished trials")
    sw.add_argument("--sweep-dir", help="where to write the sweep (default: sweeps/NAME)")
    _add_common(sw, "show Ray's, Ray Tune's, vLLM's and torch's output live (by default it goes to each "
                "trial's RUN_DIR/logs/ and Tune's own files)")
    r = sub.add_parser("report", help="render a sweep's tables and plots (Markdown + PNG)")
    r.add_argument("sweep_dir")
    r.add_argument("--out", help="Markdown file (default SWEEP_DIR/report.md)")
    r.add_argument("--debug", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``fdpg-ray``: parse ``argv`` (None: sys.argv), run the subcommand, return the exit status.

    A user-input error (:func:`~fdpg_ray.errors.is_user_error`) prints one ``error: ...`` line
    on stderr and returns 2; other exceptions, and any with ``--debug``, propagate.
    """
    args = build_parser().parse_args(argv)
    if getattr(args, "verbose", False):
        from fdpg_ray.console import VERBOSE_ENV

        os.environ[VERBOSE_ENV] = "1"
    if not sys.stderr.isatty():
        # Ray colours the "(NAME pid=...)" prefix of every line it relays, terminal or not: in a
        # file or a CI log the colour codes are noise.  The prefix itself stays (docs/design.md, "Console").
        os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not getattr(args, "verbose", False):
        quiet_libraries()
    try:
        return {"train": cmd_train, "eval": cmd_eval, "sample": cmd_sample, "qrs": cmd_qrs,
                "sweep": cmd_sweep, "report": cmd_report}[args.command](args)
    except Exception as e:  # noqa: BLE001 - user errors get one line, the rest a traceback
        if args.debug or not is_user_error(e):
            raise
        print(f"error: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 2


def quiet_libraries() -> None:
    """transformers' weight-loading bars and generation hints would bury our own output."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


# ----------------------------------------------------------------------------- train

def new_run_dir(cfg) -> Path:
    """A fresh RUN_DIR path: run.output_dir/run.name-YYYYmmdd-HHMMSS, with -1, -2, ... if taken (not created)."""
    base = Path(cfg.run.output_dir) / f"{cfg.run.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    d, i = base, 1
    while d.exists():
        d, i = Path(f"{base}-{i}"), i + 1
    return d


def _existing_run_advice(run_dir: Path) -> str:
    """What to do about a --run-dir that already holds a run: resume it only where that can work
    (a Ray run that did not finish; --local runs keep no checkpoints)."""
    try:
        state = json.loads((run_dir / "status.json").read_text()).get("state")
    except (OSError, ValueError):
        state = None
    resumable = state != "finished" and (run_dir / "ray").is_dir()
    if resumable:
        return f"continue it with `fdpg-ray train --resume {run_dir}` or choose another --run-dir"
    why = "it has finished" if state == "finished" else "it has no checkpoints (a --local run)"
    return f"{why}; choose another --run-dir or delete this one"


def cmd_train(args) -> int:
    """``fdpg-ray train``: start a run from CONFIG.yaml, or continue one with ``--resume RUN_DIR``; prints the summary.

    Raises ConfigError for a missing config, a RUN_DIR that already holds a run, or a resume
    that is not a run directory, has finished, or mixes in other options.
    """
    from fdpg_ray.config import ConfigError, load_config

    if args.resume:
        if args.local or args.run_dir or args.config:
            raise ConfigError("--resume: give only the run directory (fdpg-ray train --resume RUN_DIR [--set ...]); "
                              "it continues that run with its own config, on Ray (--local runs have no checkpoints)")
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"--resume: '{run_dir}' is not a run directory (no config.yaml); give RUN_DIR of an earlier run")
        status = run_dir / "status.json"
        if status.is_file() and json.loads(status.read_text()).get("state") == "finished":
            raise ConfigError(f"--resume: '{run_dir}' already finished; start a new run (fdpg-ray train CONFIG.yaml)")
        from fdpg_ray.train.fingerprint import check_resume

        cfg = load_config(run_dir / "config.yaml", args.overrides)
        # only steps, cadence, logging and resources may change; the rest is refused by name
        changes = check_resume(cfg, run_dir, load_config(run_dir / "config.yaml").to_dict())
    else:
        changes = None
        if not args.config:
            raise ConfigError("config: missing; usage: fdpg-ray train CONFIG.yaml [--set key=value ...]")
        cfg = load_config(args.config, args.overrides)
        run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(cfg)
        if (run_dir / "config.yaml").exists():
            raise ConfigError(f"--run-dir: '{run_dir}' already holds a run; {_existing_run_advice(run_dir)}")
    summary = train(cfg, run_dir, resume=bool(args.resume), local=args.local, resume_changes=changes)
    print_summary(summary)
    return 0


def train(cfg, run_dir: Path, resume: bool = False, local: bool = False, resume_changes: dict | None = None) -> dict:
    """Run training (distributed by default) and return the summary.  ``resume_changes``:
    the allowed config changes of a resume (fdpg_ray.train.fingerprint.check_resume), recorded."""
    preflight(cfg)
    if local:
        return train_local(cfg, run_dir)
    from actors.driver import run_distributed

    return run_distributed(cfg, run_dir, resume=resume, resume_changes=resume_changes)


def train_local(cfg, run_dir: Path) -> dict:
    """Train in this process with no Ray (``--local``): same controller and math; returns the summary.

    Writes RUN_DIR through :class:`~fdpg_ray.train.sink.RunSink` (marked failed on any exception,
    which is re-raised); the libraries' output goes to RUN_DIR/logs/.
    """
    from fdpg_ray.console import output_to_log
    from fdpg_ray.train.local import build_local
    from fdpg_ray.train.report import before_after
    from fdpg_ray.train.sink import RunSink

    t0 = time.time()
    from fdpg_ray.train.fingerprint import record_start

    sink = RunSink(run_dir, cfg.to_dict())
    # A local run is this process: a SIGTERM (kill, a scheduler's time limit) becomes SystemExit,
    # so that the run is marked failed below instead of staying "running" for good.
    main = threading.current_thread() is threading.main_thread()  # signal handlers live there only
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if main else None
    controller = None
    try:
        record_start(cfg, run_dir)
        with output_to_log(run_dir, "local"):  # the libraries' output: RUN_DIR/logs/ (fdpg_ray.console)
            controller, _ = build_local(cfg, sink=sink)
            controller.run()
        from fdpg_ray.train.parallel import full_weights

        # merged W0 + BA under the base names for a LoRA policy (fdpg_ray.model.lora)
        sink.save_model(dict(full_weights(controller.policy)), cfg.model.path)
        summary = {"run_dir": str(run_dir), "divergence": cfg.divergence, "steps": cfg.run.steps,
                   "wall_seconds": time.time() - t0, "before_after": before_after(run_dir).to_dict(),
                   "final_model": str(run_dir / "final")}
        return sink.finish(summary)
    except BaseException as e:
        sink.fail(f"{type(e).__name__}: {e}")
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)
        if controller is not None:
            controller.rollout.close()  # the in-process engine stops here, not at some later GC


def _exit_on_sigterm(signum, frame):
    """SIGTERM handler of a --local run: leave through SystemExit (exit status 143, as a plain SIGTERM)."""
    raise SystemExit(128 + signum)


def print_summary(summary: dict) -> None:
    """Print a finished run's before/after table, two sample texts before and after, plot paths and the final model."""
    import pandas as pd

    run_dir = Path(summary["run_dir"])
    table = pd.DataFrame(summary["before_after"])
    print()
    print(f"run: {run_dir}   divergence: {summary['divergence']}   steps: {summary['steps']}   "
          f"wall: {summary['wall_seconds']:.0f} s")
    if (run_dir / "metrics.csv").is_file():
        from fdpg_ray.train.report import before_after_text

        print(before_after_text(run_dir))  # with +- SE and '?' where the ESS is too small
    else:
        print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    samples = sorted((run_dir / "samples").glob("*.jsonl"), key=lambda p: int(p.stem))
    if samples:
        for label, path in (("before", samples[0]), ("after", samples[-1])):
            rows = [json.loads(line) for line in path.read_text().splitlines()[:2]]
            for r in rows:
                print(f"  {label:6s} (step {r['step']}): {r['text']!r}")
    for p in summary.get("plots", []):
        print(f"plot: {p}")
    print(f"final model: {summary['final_model']}")


# ----------------------------------------------------------------------------- eval / sample

def _run_of(model: str) -> tuple[Path | None, str]:
    """(run directory, model spec) when ``model`` is a run directory or its final/ folder."""
    p = Path(model)
    if (p / "config.yaml").is_file():
        if not (p / "final" / "config.json").is_file():
            from fdpg_ray.config import ConfigError

            raise ConfigError(f"model: '{model}' is a run directory without a final model (final/); the run did not finish")
        return p, str(p / "final")
    if (p / "config.json").is_file() and (p.parent / "config.yaml").is_file() and p.name == "final":
        return p.parent, model
    return None, model


def cmd_sample(args) -> int:
    """``fdpg-ray sample``: print ``--n`` samples of a model as JSON lines {"text", "log_q" (nats), "context"?}.

    A run directory's model continues the run's contexts.  Raises ValueError for ``--n`` or
    ``--max-new-tokens`` < 1, ConfigError for a run without final/, and the prompt-length
    check's error when the prompt and new tokens exceed the model's context.
    """
    from fdpg_ray.rollout.hf_sampler import HFSampler
    from fdpg_ray.model.limits import check_prompts_fit
    from fdpg_ray.train.preflight import run_contexts
    from fdpg_ray.objective.loss import bos_prompt_ids
    from fdpg_ray.model.sources import resolve_model_path
    from fdpg_ray.seeding import derive_seed

    if args.n < 1:
        raise ValueError(f"--n: must be >= 1, got {args.n}")
    run_dir, model = _run_of(args.model)
    cfg = None
    if run_dir is not None:
        from fdpg_ray.config import load_config

        cfg = load_config(run_dir / "config.yaml")
    max_new = args.max_new_tokens if args.max_new_tokens is not None else (
        cfg.model.max_new_tokens if cfg is not None else 40)
    if max_new < 1:
        raise ValueError(f"--max-new-tokens: must be >= 1, got {max_new}")
    if cfg is not None and not args.prompt:
        # a run's model continues the run's contexts (its prompts file, or its model.prompt):
        # the check eval (and a future qrs) makes, before any engine starts
        contexts = run_contexts(cfg, max_new, tokens_field="--max-new-tokens", model_path=model)
    else:
        field = "--prompt" if args.prompt else "--max-new-tokens"
        check_prompts_fit(resolve_model_path(model), [(field, "the prompt" if args.prompt else "the BOS prompt",
                                                       args.prompt)], max_new, tokens_field="--max-new-tokens")
        contexts = [args.prompt]
    if args.backend == "vllm":
        from fdpg_ray.rollout.vllm_sampler import VLLMSampler

        sampler = VLLMSampler(resolve_model_path(model), seed=args.seed)
    else:
        sampler = HFSampler(model, seed=args.seed)
    tok = sampler.tokenizer
    # --n samples in all, spread over the contexts in order (the first n % P get one more)
    P = len(contexts)
    counts = [args.n // P + (1 if j < args.n % P else 0) for j in range(P)]
    for group, count in enumerate(sorted(set(c for c in counts if c > 0), reverse=True)):
        chosen = [c for c, m in zip(contexts, counts) if m == count]
        # one call per group size; each its own stream (fdpg_ray.seeding), the first as before
        seed = args.seed if group == 0 else derive_seed(args.seed, group)
        out = sampler.sample([bos_prompt_ids(tok, c) for c in chosen], count, max_new, seed=seed)
        for s in out:
            rec = {"text": chosen[s.prompt_index] + s.text, "log_q": round(s.log_q, 4)}
            if P > 1:
                rec["context"] = chosen[s.prompt_index]
            print(json.dumps(rec))
    return 0


def cmd_eval(args) -> int:
    """``fdpg-ray eval``: measure a run's final model (or any model) against a target; prints the result as JSON."""
    from fdpg_ray.train.evaluate import evaluate

    result = evaluate(args.target, config=args.config, n=args.n, overrides=args.overrides)
    print(json.dumps(result, indent=2))
    return 0


def cmd_qrs(args) -> int:
    """`fdpg-ray qrs`: quasi-rejection sampling from the config's target (fdpg_ray/train/qrs.py).

    Proposals come from the rollout actors (vLLM or transformers, rollout.backend) and are
    scored by the scorer actors on Ray, or by the same sampler and scorer classes in this
    process with --local.  Prints one JSON object as its last line."""
    from fdpg_ray.config import ConfigError, load_config
    from fdpg_ray.model.sources import resolve_model_path
    from fdpg_ray.train.qrs import QRSError

    path = Path(args.model)
    if (path / "config.yaml").is_file():  # a run directory: its final model is the proposal
        if not (path / "final" / "config.json").is_file():
            raise ConfigError(f"qrs: '{path}' has no final model (final/); the run did not finish; give a model instead")
        proposal, config = str(path / "final"), args.config or str(path / "config.yaml")
    else:
        if not args.config:
            raise ConfigError("--config: a bare model needs the config whose target to sample; "
                              "usage: fdpg-ray qrs MODEL --config CONFIG.yaml --beta B --n N")
        proposal, config = args.model, args.config
    if str(args.beta).strip().lower() == "auto":
        beta = None
    else:
        try:
            beta = float(args.beta)
        except ValueError:
            raise QRSError(f"--beta: expected a positive number or auto, got {args.beta!r}") from None
        if not (beta > 0 and beta < float("inf")):
            raise QRSError(f"--beta: must be a positive number or auto, got {args.beta}")
    if args.n < 2:
        raise QRSError(f"--n: must be >= 2, got {args.n}; draw at least 2 proposals")
    if beta is None and not 0 < args.target_acceptance < 1:
        raise QRSError(f"--target-acceptance: must be in (0, 1), got {args.target_acceptance}; e.g. 0.1")
    if beta is None and args.pilot < 2:
        raise QRSError(f"--pilot: must be >= 2, got {args.pilot}; give more pilot draws")
    out = Path(args.out) if args.out else None
    if out is not None and not out.parent.is_dir():
        raise QRSError(f"--out: folder '{out.parent}' does not exist; create it or write elsewhere")
    cfg = load_config(config, args.overrides)
    if cfg.prompts.file is not None:
        raise ConfigError("prompts.file: qrs samples unconditional targets only (one partition function Z); "
                          "unset prompts.file (--set prompts.file=null)")
    preflight(cfg)
    resolve_model_path(proposal)
    from fdpg_ray.train.preflight import run_contexts

    run_contexts(cfg, model_path=proposal)  # prompt + max_new_tokens within the proposal's context
    summary, rows = qrs(cfg, proposal, beta=beta, n=args.n, target_acceptance=args.target_acceptance,
                        pilot=args.pilot, local=args.local)
    if out is not None:
        from fdpg_ray.atomic import atomic_write_text

        atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in rows))
        summary["out"] = str(out)
    print(json.dumps(summary))
    return 0


def qrs(cfg, proposal: str, *, beta: float | None, n: int, target_acceptance: float = 0.1, pilot: int = 1024,
        local: bool = False) -> tuple[dict, list[dict]]:
    """Build the rollout (proposal ``proposal``) and the scorer (the config's target), on Ray
    or in this process, fit distributional lambdas on base samples if needed, and run
    :func:`fdpg_ray.train.qrs.run`; exact quantities are added on enumerable tasks."""
    import copy

    from fdpg_ray.train import qrs as Q
    from fdpg_ray.objective.loss import bos_prompt_ids
    from fdpg_ray.model.sources import load_model_and_tokenizer
    from fdpg_ray.target.scoring import build_target

    pcfg = copy.deepcopy(cfg)
    pcfg.model.path = proposal
    prompt_text = cfg.model.prompt
    exact_fn, local_scorer = None, None
    if cfg.target.exact:
        from fdpg_ray.target.scoring import TargetScorer

        local_scorer = TargetScorer(cfg)
    started_ray, actors = False, []
    try:
        if local:
            from fdpg_ray.train.local import LocalRollout
            from fdpg_ray.target.scoring import TargetScorer

            rollout = LocalRollout(pcfg)
            scorer = local_scorer or TargetScorer(cfg)
        else:
            import ray

            from actors.driver import init_ray
            from actors.rollout import RolloutActor, RolloutGroup
            from actors.scorer import ScorerActor, ScorerGroup

            started_ray = not ray.is_initialized()
            init_ray(cfg)
            rollouts = [RolloutActor.options(num_cpus=cfg.rollout.cpus_per_actor, num_gpus=cfg.rollout.gpus_per_actor)
                        .remote(pcfg.to_dict(), i) for i in range(cfg.rollout.num_actors)]
            scorers = [ScorerActor.options(num_cpus=cfg.scorer.cpus_per_actor).remote(cfg.to_dict())
                       for _ in range(cfg.scorer.num_actors)]
            actors = rollouts + scorers
            ray.get([a.ready.remote() for a in actors])
            rollout, scorer = RolloutGroup(rollouts), ScorerGroup(scorers)
        target, _ = build_target(cfg)
        lambdas = None
        if any(c.lam is None for c in target.distributional):
            # as `fdpg-ray eval`: lambdas fitted on samples of the base model a (not of the proposal)
            from fdpg_ray.rollout.hf_sampler import HFSampler

            from fdpg_ray.train.batch import ScoredBatch
            from fdpg_ray.seeding import EVAL_BASE, derive_seed

            base = HFSampler(cfg.model.path, seed=derive_seed(cfg.run.seed, EVAL_BASE))
            ids = [bos_prompt_ids(base.tokenizer, prompt_text)]
            fit_batch = ScoredBatch.from_samples(base.sample(ids, cfg.target.fit_samples, cfg.model.max_new_tokens),
                                                 [prompt_text], ids)
            lambdas = scorer.fit(fit_batch)["lambdas"]
            if local_scorer is not None and local_scorer is not scorer:
                local_scorer.set_lambdas(lambdas)
        policy, tokenizer = load_model_and_tokenizer(proposal)
        if cfg.target.exact and cfg.rollout.temperature == 1.0:
            from fdpg_ray.model.toy import exact_task_for

            exact = exact_task_for(cfg, local_scorer)
            if lambdas is not None:
                exact.set_lambdas(lambdas)
            import torch

            with torch.no_grad():
                log_q_all = exact.log_pi(policy).double()
            exact_fn = lambda log_beta: {**Q.exact(exact.log_P, log_q_all, log_beta),  # noqa: E731
                                         "exact_log_beta_max": Q.max_log_ratio(exact.log_P, log_q_all)}
        ids = [bos_prompt_ids(tokenizer, prompt_text)]
        del policy
        return Q.run(rollout, scorer, ids, [prompt_text], n=n, run_seed=cfg.run.seed, beta=beta,
                     target_acceptance=target_acceptance, pilot=pilot, exact_fn=exact_fn)
    finally:
        if actors:
            import ray

            for a in actors:
                ray.kill(a)
        if started_ray:
            import ray

            ray.shutdown()


def cmd_sweep(args) -> int:
    """``fdpg-ray sweep``: run (or ``--resume``) the Ray Tune sweep of a sweep YAML (:func:`tuning.sweep.run_sweep`)."""
    from tuning.sweep import run_sweep

    run_sweep(args.sweep, overrides=args.overrides, resume=args.resume, sweep_dir=args.sweep_dir)
    return 0


def cmd_report(args) -> int:
    """``fdpg-ray report``: write a sweep's Markdown report and plots; prints the report's path."""
    from tuning.report import write_report

    print(write_report(args.sweep_dir, out=args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
