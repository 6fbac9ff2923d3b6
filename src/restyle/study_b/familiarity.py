"""Familiarity: how likely a model finds the responses of an SFT set before (or after) training.

For every SFTRecord the prompt and the completion are rendered by the model's own chat template
with `restyle.chat.encode`, the function training uses, so exactly the tokens that training puts
the loss on (labels != IGNORE_INDEX) are scored here. Per example: the number of response tokens,
the summed and mean negative log-likelihood (nats) and the perplexity exp(mean NLL). Per
(model, set): the mean of the per-example perplexities, the corpus perplexity exp(total NLL /
total tokens) (the two differ: short responses weigh as much as long ones in the first), median,
quartiles and count.

From the per-example tables (no model needed): `set_statistics` adds bootstrap intervals over
examples to a set's corpus and mean perplexity, and `paired_perplexity` compares two sets that
answer the same questions (Study B's variants) by the ratio of their corpus perplexities on the
questions both answer, with a paired bootstrap over questions.

Speed: the prompt prefix every example of a set shares (the chat template's system turn, a common
instruction) runs once, and each example its own tokens from that key/value cache; examples are
sorted by length and batched (left-padded, with explicit position ids, so a padded row gets the
same positions as it would alone); logits are computed only for the positions that predict
response tokens (`logits_to_keep`), never for the prompt; no gradient. Batch limits
may be `auto`: the CPU defaults off CUDA, on CUDA what fits (`restyle.batching`); each
summary row records the limits its set was scored with. Models load in bf16 on GPU and fp32 on
CPU (`restyle.models.load`); a LoRA adapter goes on top with peft.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from restyle import batching, stats
from restyle.batching import Limits, left_pad
from restyle.chat import IGNORE_INDEX, Encoded, encode
from restyle.records import SFTRecord

log = logging.getLogger(__name__)

PER_EXAMPLE_COLUMNS = ["model", "run", "dataset", "id", "source_id", "tokens", "nll_sum",
                       "mean_nll", "perplexity"]
# batch_size, max_batch_tokens: the batch limits the set was scored with (`auto` picks them)
SUMMARY_COLUMNS = ["model", "run", "dataset", "count", "tokens", "mean_nll", "corpus_nll",
                   "mean_perplexity", "corpus_perplexity", "median_perplexity", "q1_perplexity",
                   "q3_perplexity", "batch_size", "max_batch_tokens"]
SET_STATISTICS_COLUMNS = ["model", "run", "dataset", "examples", "mean_response_tokens",
                          "corpus_perplexity", "corpus_ppl_low", "corpus_ppl_high",
                          "mean_perplexity", "mean_ppl_low", "mean_ppl_high"]
# What `auto` batch limits are off CUDA: the config defaults from before `auto`.
CPU_BATCH_SIZE = 16
CPU_MAX_BATCH_TOKENS = batching.CPU_MAX_BATCH_TOKENS
PAIRED_PERPLEXITY_KEYS = ["model", "run", "a", "b", "n", "tokens_a", "tokens_b", "corpus_ppl_a",
                          "corpus_ppl_b", "ratio", "ratio_low", "ratio_high", "excludes_one"]


@dataclass(frozen=True)
class Score:
    tokens: int  # response tokens scored
    nll_sum: float  # nats, summed over those tokens

    @property
    def mean_nll(self) -> float:
        return self.nll_sum / self.tokens if self.tokens else math.nan

    @property
    def perplexity(self) -> float:
        return math.exp(self.mean_nll) if self.tokens else math.nan


def encode_records(tokenizer, records: Iterable[SFTRecord],
                   max_length: int | None = None) -> list[Encoded]:
    return [encode(tokenizer, r.prompt, r.completion, max_length=max_length) for r in records]


def _forward(model, keep: int, **inputs):
    try:
        return model(**inputs, logits_to_keep=keep).logits
    except TypeError:  # a model class without logits_to_keep: compute all, keep the tail
        return model(**inputs).logits[:, -keep:]


def prompt_prefix(encoded: Sequence[Encoded]) -> int:
    """How many leading tokens every example shares within its prompt (the chat template's
    system turn, a common instruction), leaving each at least one prompt token before its
    response, whose logits predict the response's first token."""
    if not encoded:
        return 0
    first_response = min(next((i for i, t in enumerate(e.labels) if t != IGNORE_INDEX),
                              len(e.labels)) for e in encoded)
    return max(0, min(batching.shared_prefix([e.input_ids for e in encoded]), first_response - 1))


@torch.inference_mode()
def score_batched(model, encoded: Sequence[Encoded], limits: Limits, pad_id: int = 0,
                  share_prefix: bool = True) -> tuple[list[Score], Limits]:
    """A Score per encoded example, in input order, from batched forward passes; and the batch
    limits the run ended with. With `share_prefix` the prompt prefix every example shares runs
    once (`batching.PrefixCache`) and each batch runs the rest."""
    device = next(model.parameters()).device
    out: list[Score | None] = [None] * len(encoded)
    start = prompt_prefix(encoded) if share_prefix else 0
    prefix = batching.PrefixCache(model, encoded[0].input_ids[:start] if start else [])

    def score(batch: list[int]) -> None:
        rows = [encoded[i] for i in batch]
        if not any(e.n_response_tokens for e in rows):
            for i in batch:
                out[i] = Score(0, 0.0)
            return
        # left padding: every response ends at the last column
        ids, mask, positions = left_pad([e.input_ids[start:] for e in rows], pad_id)
        labels = left_pad([e.labels[start:] for e in rows], IGNORE_INDEX)[0]
        width = ids.shape[1]
        # the logit at column c predicts the token at c + 1: keep columns first-1 .. width-2
        first = int((labels != IGNORE_INDEX).any(0).nonzero()[0])
        first = max(first, 1)  # column 0 has nothing before it to predict it
        keep = width - first + 1
        logits = _forward(model, keep, **prefix.continue_batch(ids.to(device), mask.to(device),
                                                               positions.to(device)))
        logits = logits[:, :-1]  # columns first-1 .. width-2
        targets = labels[:, first:].to(device)
        scored = targets != IGNORE_INDEX
        nll = torch.nn.functional.cross_entropy(logits[scored].float(), targets[scored],
                                                reduction="none")
        row_of = scored.nonzero()[:, 0]
        sums = torch.zeros(len(rows), dtype=torch.float64, device=device)
        sums.index_add_(0, row_of, nll.double())
        counts = scored.sum(-1)
        for r, i in enumerate(batch):
            out[i] = Score(int(counts[r]), float(sums[r]))

    limits = batching.run_batches([len(e.input_ids) - start for e in encoded], score, limits,
                                  "familiarity")
    return out, limits  # type: ignore[return-value]


def resolve_limits(model, batch_size: int | str | None,
                   max_batch_tokens: int | str | None) -> Limits:
    """Config `batch_size` / `max_batch_tokens` (numbers, None or `auto`) for `model`'s device."""
    return batching.resolve(next(model.parameters()).device, batch_size, max_batch_tokens,
                            cpu_rows=CPU_BATCH_SIZE, cpu_tokens=CPU_MAX_BATCH_TOKENS,
                            stretch=batching.SCORING_STRETCH)


def score_encoded(model, encoded: Sequence[Encoded], batch_size: int | str = 8,
                  max_batch_tokens: int | str | None = None, pad_id: int = 0,
                  share_prefix: bool = True) -> list[Score]:
    """A Score per encoded example, in input order (`score_batched` under config limits)."""
    return score_batched(model, encoded, resolve_limits(model, batch_size, max_batch_tokens),
                         pad_id, share_prefix)[0]


@torch.inference_mode()
def score_naive(model, encoded: Sequence[Encoded]) -> list[Score]:
    """One example at a time with the model's own loss: the reference the batched scorer must
    equal (tests) and beat (benchmarks/familiarity.py)."""
    device = next(model.parameters()).device
    out = []
    for e in encoded:
        n = e.n_response_tokens - (e.labels[0] != IGNORE_INDEX)  # the first token is never predicted
        if n == 0:
            out.append(Score(0, 0.0))
            continue
        loss = model(input_ids=torch.tensor([e.input_ids], device=device),
                     labels=torch.tensor([e.labels], device=device)).loss
        out.append(Score(n, float(loss) * n))
    return out


def _pad_id(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def score_records(model, tokenizer, records: Sequence[SFTRecord], batch_size: int | str = 8,
                  max_length: int | None = None,
                  max_batch_tokens: int | str | None = None) -> list[Score]:
    encoded = encode_records(tokenizer, records, max_length)
    return score_encoded(model, encoded, batch_size, max_batch_tokens, _pad_id(tokenizer))


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolation quantile (numpy's default) of a non-empty list."""
    values = sorted(values)
    pos = (len(values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def summarize(scores: Sequence[Score]) -> dict:
    """count, tokens, mean_nll (of per-example means), corpus_nll, and the perplexities: mean of
    per-example, corpus exp(total NLL / total tokens), median and quartiles of per-example.
    Examples with no response token are left out; an empty set gives count 0 and NaNs."""
    scores = [s for s in scores if s.tokens]
    tokens = sum(s.tokens for s in scores)
    if not scores:
        nan = math.nan
        return {"count": 0, "tokens": 0, "mean_nll": nan, "corpus_nll": nan,
                "mean_perplexity": nan, "corpus_perplexity": nan, "median_perplexity": nan,
                "q1_perplexity": nan, "q3_perplexity": nan}
    ppl = [s.perplexity for s in scores]
    corpus_nll = sum(s.nll_sum for s in scores) / tokens
    return {"count": len(scores), "tokens": tokens,
            "mean_nll": sum(s.mean_nll for s in scores) / len(scores),
            "corpus_nll": corpus_nll, "mean_perplexity": sum(ppl) / len(ppl),
            "corpus_perplexity": math.exp(corpus_nll), "median_perplexity": _quantile(ppl, 0.5),
            "q1_perplexity": _quantile(ppl, 0.25), "q3_perplexity": _quantile(ppl, 0.75)}


def score_sets(model, tokenizer, sets: dict[str, Sequence[SFTRecord]], model_label: str,
               run: str, batch_size: int | str = 8, max_length: int | None = None,
               max_batch_tokens: int | str | None = None) -> tuple[list[dict], list[dict]]:
    """(per-example rows, summary rows) for every named SFT set, with one loaded model. Batch
    limits found for one set carry over to the next, so an out-of-memory is met once."""
    per_example, summary = [], []
    limits = resolve_limits(model, batch_size, max_batch_tokens)
    for name, records in sets.items():
        start = time.perf_counter()
        scores, limits = score_batched(model, encode_records(tokenizer, records, max_length),
                                       limits, _pad_id(tokenizer))
        for rec, s in zip(records, scores):
            per_example.append({"model": model_label, "run": run, "dataset": name, "id": rec.id,
                                "source_id": rec.source_id, "tokens": s.tokens,
                                "nll_sum": s.nll_sum, "mean_nll": s.mean_nll,
                                "perplexity": s.perplexity})
        row = {"model": model_label, "run": run, "dataset": name, **summarize(scores),
               "batch_size": limits.rows, "max_batch_tokens": limits.tokens}
        summary.append(row)
        seconds = time.perf_counter() - start
        log.info("%s: %d examples, %d response tokens, corpus perplexity %.3f, mean %.3f "
                 "(%.1f s, %.0f tokens/s, batches of at most %s rows, %s tokens)", name,
                 row["count"], row["tokens"], row["corpus_perplexity"], row["mean_perplexity"],
                 seconds, row["tokens"] / seconds if seconds else 0, limits.rows, limits.tokens)
    return per_example, summary


def _scored_examples(per_example: pd.DataFrame) -> pd.DataFrame:
    """The rows of a per-example table that have response tokens (as `summarize`, examples with
    none are left out: their perplexity is undefined)."""
    missing = [c for c in ("model", "run", "dataset", "source_id", "tokens", "nll_sum",
                           "perplexity") if c not in per_example.columns]
    if missing:
        raise ValueError(f"per-example table lacks columns {missing}")
    return per_example[per_example["tokens"] > 0]


def set_statistics(per_example: pd.DataFrame, n_boot: int = 2000, seed: int = 0,
                   level: float = 0.95) -> pd.DataFrame:
    """One row per (model, run, dataset) of a per-example table (PER_EXAMPLE_COLUMNS, from one or
    more per_example.csv files): `examples` (those with response tokens; the others are left
    out, as in `summarize`), `mean_response_tokens`, `corpus_perplexity` exp(total NLL / total
    tokens) and `mean_perplexity` (mean of the per-example perplexities), each with a `level`
    percentile bootstrap interval over examples drawn with replacement (the statistic recomputed
    on every resample). Sets with no scored example do not appear. Every set is resampled with
    the same `seed`, so its row does not depend on what else the table holds.
    Columns: SET_STATISTICS_COLUMNS."""
    rows = []
    for (model, run, dataset), g in _scored_examples(per_example).groupby(
            ["model", "run", "dataset"], sort=True):
        values = g[["nll_sum", "tokens", "perplexity"]].to_numpy(dtype=float)
        n = len(values)
        sums = stats.bootstrap_sums(values, n_boot, seed)
        corpus_low, corpus_high = stats.percentile_interval(np.exp(sums[:, 0] / sums[:, 1]),
                                                            level)
        mean_low, mean_high = stats.percentile_interval(sums[:, 2] / n, level)
        total = values.sum(axis=0)
        rows.append({"model": model, "run": run, "dataset": dataset, "examples": n,
                     "mean_response_tokens": total[1] / n,
                     "corpus_perplexity": math.exp(total[0] / total[1]),
                     "corpus_ppl_low": corpus_low, "corpus_ppl_high": corpus_high,
                     "mean_perplexity": total[2] / n,
                     "mean_ppl_low": mean_low, "mean_ppl_high": mean_high})
    return pd.DataFrame(rows, columns=SET_STATISTICS_COLUMNS)


def paired_perplexity(per_example: pd.DataFrame, a: str, b: str, run: str = "base",
                      n_boot: int = 2000, seed: int = 0, *, model: str | None = None,
                      level: float = 0.95) -> dict | None:
    """Corpus (per-token) perplexity of SFT set `b` against set `a` under one model run, on the
    questions both sets answer (rows matched by `source_id`; an example without response tokens
    answers nothing). Keys PAIRED_PERPLEXITY_KEYS: `n` shared questions, `tokens_a`/`tokens_b`,
    `corpus_ppl_a`/`corpus_ppl_b`, `ratio` = corpus_ppl_b / corpus_ppl_a with a `level` paired
    bootstrap interval `ratio_low`/`ratio_high` (questions drawn with replacement, the same draw
    for both sets) and `excludes_one`. None when no question is shared.

    The question is the unit: several examples of one question in one set are summed (NLL and
    tokens) into one. `model` picks the model when the table holds several for `run`; without it
    that is an error."""
    rows = _scored_examples(per_example)
    rows = rows[(rows["run"] == run) & rows["dataset"].isin([a, b])
                & rows["source_id"].notna()]
    if model is not None:
        rows = rows[rows["model"] == model]
    models = sorted(rows["model"].unique())
    if len(models) > 1:
        raise ValueError(f"run {run!r} of {a!r} / {b!r} holds several models {models}; "
                         "pass model=")
    if not models:
        return None
    rows = rows.assign(source_id=rows["source_id"].astype(str))
    by_question = rows.groupby(["dataset", "source_id"], sort=True)[["nll_sum", "tokens"]].sum()
    sets = set(by_question.index.get_level_values("dataset"))
    if a not in sets or b not in sets:
        return None
    joined = by_question.loc[a].merge(by_question.loc[b], how="inner", left_index=True,
                                      right_index=True, suffixes=("_a", "_b"))
    if joined.empty:
        return None
    values = joined[["nll_sum_a", "tokens_a", "nll_sum_b", "tokens_b"]].to_numpy(dtype=float)
    sums = stats.bootstrap_sums(values, n_boot, seed)
    low, high = stats.percentile_interval(
        np.exp(sums[:, 2] / sums[:, 3] - sums[:, 0] / sums[:, 1]), level)
    total = values.sum(axis=0)
    ppl_a, ppl_b = math.exp(total[0] / total[1]), math.exp(total[2] / total[3])
    return {"model": models[0], "run": run, "a": a, "b": b, "n": len(joined),
            "tokens_a": int(total[1]), "tokens_b": int(total[3]), "corpus_ppl_a": ppl_a,
            "corpus_ppl_b": ppl_b, "ratio": ppl_b / ppl_a, "ratio_low": low, "ratio_high": high,
            "excludes_one": bool(low > 1 or high < 1)}
