"""The proposal q that a run's samples come from: on-policy, off-policy and offline f-DPG.

f-DPG's gradient (Go et al. 2023, Theorem 1) is an expectation under pi_theta; with samples
from any proposal q it is estimated with the importance weight w = pi_theta(x) / q(x)
(truncated at ``loss.max_importance_weight``), and the partition function with
Z_hat = mean_i P(x_i) / q(x_i) over the proposal's samples (SPEC §1).  Both only need log q
of each sample, which the rollout engine returns for what it sampled.  ``rollout.proposal``
chooses q:

``policy``        q = the current policy, refreshed every ``rollout.sync_every`` steps (the
                  default; one step stale under ``rollout.overlap``).
``base``          q = a, the frozen base model (off-policy f-DPG, DPG's "fixed proposal"):
                  the rollout engines keep the weights they started with.
``fixed:PATH``    q = the model at PATH (a local folder or any ``model.path`` spec), which
                  must share the policy's tokenizer; the rollout engines serve it instead.
``dataset:PATH``  q = the texts of a JSONL or Parquet file read with HF ``datasets``
                  (offline f-DPG): column ``text`` (the completion), optional ``log_q`` (its
                  log-probability under whatever drew it, in nats, summed over the tokens
                  of the completion).  Without ``log_q`` the texts are taken to be samples
                  of the base model and log q := log a(x), computed once by the scorer.
                  Unconditional targets only.  Rows are read in a seeded random order,
                  ``learner.batch_size`` a step, reshuffled each pass over the file.

``rollout.proposal_update: {every: K, when: kl_improves}`` is GDC's adaptive proposal
(Khalifa et al. 2021, after Parshakova et al. 2019): every K steps the estimates
KL(p||pi) and KL(p||q) are compared on that step's proposal samples (self-normalised
importance sampling, weights P/q, per context; :func:`proposal_kl_estimates`), and when
the policy is closer to p the current policy becomes the proposal (its weights are pushed
to the rollout engines).  Only for ``base`` and ``fixed:`` proposals.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import torch

from fdpg_ray.config import Config, ConfigError, parse_proposal
from fdpg_ray.objective.estimators import mis_kl_p_pi
from fdpg_ray.rollout.samples import Sample

def rollout_model_path(cfg: Config) -> str:
    """The model the rollout engines serve: the proposal's for ``fixed:PATH``, else model.path."""
    spec = parse_proposal(cfg.rollout.proposal)
    return spec.path if spec.kind == "fixed" else cfg.model.path


def check_proposal(cfg: Config) -> None:
    """Preflight: the proposal's model shares the policy's tokenizer, its dataset is readable.
    Raises ConfigError (one line naming rollout.proposal and the fix)."""
    spec = parse_proposal(cfg.rollout.proposal)
    if spec.kind == "fixed":
        from transformers import AutoTokenizer

        from fdpg_ray.model.sources import ModelError, resolve_model_path

        try:
            theirs = AutoTokenizer.from_pretrained(resolve_model_path(spec.path))
        except (ModelError, OSError, ValueError) as e:
            raise ConfigError(f"rollout.proposal: cannot load the model '{spec.path}' ({str(e).splitlines()[0]}); "
                              f"give a model folder or spec that exists") from None
        ours = AutoTokenizer.from_pretrained(resolve_model_path(cfg.model.path))
        if theirs.get_vocab() != ours.get_vocab():
            raise ConfigError(f"rollout.proposal: '{spec.path}' has another tokenizer than model.path "
                              f"'{cfg.model.path}'; a proposal must share the policy's tokenizer")
    elif spec.kind == "dataset":
        load_proposal_texts(spec.path)


def load_proposal_texts(path: str) -> tuple[list[str], list[float] | None]:
    """(texts, log q in nats or None) of an offline proposal: a JSONL or Parquet file with a
    ``text`` column and optionally ``log_q`` (:func:`fdpg_ray.data.read_table`); ConfigError
    if unusable."""
    from fdpg_ray.data import read_table

    ds = read_table(path, "rollout.proposal", "text", ConfigError, mention_parquet=True)
    texts = [str(t) for t in ds["text"]]
    if not texts:
        raise ConfigError(f"rollout.proposal: '{path}' holds no texts")
    log_q = None
    if "log_q" in ds.column_names:
        log_q = [float(v) for v in ds["log_q"]]
        if not all(math.isfinite(v) and v <= 0 for v in log_q):
            raise ConfigError(f"rollout.proposal: '{path}' column log_q must hold finite log-probabilities <= 0 (nats)")
    return texts, log_q


class DatasetProposal:
    """Offline proposal: serves a file's texts through the rollout interface
    (``submit(prompt_ids, n, seed) -> handle``, ``collect(handle) -> samples``,
    ``push_weights`` ignored).  A sample's ``log_q`` is NaN when the file gives none; the
    controller then sets log q := log a after scoring (docstring of this module)."""

    def __init__(self, path: str, tokenizer, seed: int):
        self.texts, self.log_q = load_proposal_texts(path)
        eos = tokenizer.eos_token_id
        self.ids = [tokenizer(t, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
                    for t in self.texts]
        self.rng = random.Random(seed)
        self.order: list[int] = []

    def submit(self, prompt_ids: list[list[int]], n: int, seed: int) -> list[Sample]:
        """Draw ``n`` rows of the file (seeded order, reshuffled each pass) as rollout samples.

        Returns n :class:`~fdpg_ray.rollout.samples.Sample` (prompt_index 0, token_ids = the text's tokens + EOS, text, log_q in nats
        or NaN when the file has none, finish_reason "stop"); ``seed`` is ignored.  Raises
        ConfigError unless there is exactly one prompt (unconditional runs only).
        """
        if len(prompt_ids) != 1:
            raise ConfigError("rollout.proposal: a dataset proposal serves unconditional runs only; "
                              "remove prompts.file or use another proposal")
        out = []
        for _ in range(n):
            if not self.order:
                self.order = list(range(len(self.texts)))
                self.rng.shuffle(self.order)
            i = self.order.pop()
            out.append(Sample(prompt_index=0, token_ids=list(self.ids[i]), text=self.texts[i],
                              log_q=self.log_q[i] if self.log_q is not None else math.nan, finish_reason="stop"))
        return out

    def collect(self, handle):
        """Return the samples :meth:`submit` drew (the handle is the list itself)."""
        return handle

    def push_weights(self, state_dict) -> None:
        """A dataset has no weights: nothing to do."""

    def state_dict(self) -> dict:
        """The RNG state and the rest of this pass's row order, for checkpoints."""
        return {"rng": self.rng.getstate(), "order": list(self.order)}

    def load_state_dict(self, state: dict) -> None:
        """Restore the RNG state and row order of :meth:`state_dict`."""
        self.rng.setstate(state["rng"])
        self.order = list(state["order"])


def proposal_kl_estimates(log_P, log_q, log_pi, contexts: Sequence[str] | None = None) -> tuple[dict, dict]:
    """Estimates of KL(p||pi) and KL(p||q) from N samples of the proposal q (nats), the
    comparison behind ``rollout.proposal_update``.  Inputs are per-sample, shape (N,): log P,
    log q, log pi and ``contexts`` (the prompt of each sample; None for an unconditional
    target).  Both are :func:`fdpg_ray.objective.estimators.mis_kl_p_pi` with q as the only
    proposal: per context c, self-normalised importance sampling with the weights
    w_i = P(x_i)/q(x_i|c), KL_c(p||r) = sum_i wbar_i (log P_i - log r_i) - log Z_hat_c, averaged
    uniformly over the contexts like every other KL(p||pi) of a run.  Both use the same
    weights, so their difference sum_i wbar_i (log q_i - log pi_i) has far less variance than
    either.  Returns two dicts {"kl_p_pi", "kl_p_pi_se", "kl_p_pi_ess", ...}: the policy's,
    then the proposal's; nan estimates when no sample has P > 0."""
    of_q = torch.zeros(len(log_P), dtype=torch.bool)
    return (mis_kl_p_pi(log_P, log_pi, log_q, of_q, contexts),
            mis_kl_p_pi(log_P, log_q, log_q, of_q, contexts))
