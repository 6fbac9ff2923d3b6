"""Length-sorted, left-padded batches for the forward passes that score or generate, with batch
limits that fit the device.

A batch limit from config is a number, None (no limit) or `auto`. Off CUDA `auto` is the stage's
CPU default, so a CPU run is what it was before `auto` existed. On CUDA it starts from a cap that
keeps a GPU busy and `run_batches` halves it on out-of-memory, as lm-evaluation-harness's
batch-size detection and accelerate's `find_executable_batch_size` do; unlike those it halves
what the failed batch actually held and goes on with the items not yet done, so no batch that
fitted is computed twice.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace

import torch

log = logging.getLogger(__name__)

AUTO = "auto"
# Where `auto` starts on CUDA; less where that does not fit. Tokens: an 822M model scored MMLU
# 3.6x faster at 65,536 tokens per pass than at 8,192 on an H200 (issue 16); from 32,768 tokens
# up, MMLU (0- and 5-shot) and familiarity throughput was flat within the noise (+-20 %) on
# that GPU for random-initialised 135M and 823M models, while a batch's memory kept growing
# (familiarity: 18 GiB at 65,536 tokens, 24 GiB at 131,072). Rows: generation has no token
# limit here, and 512 prompts keep a GPU busy while decoding.
GPU_START_ROWS = 512
GPU_START_TOKENS = 2 ** 16
# What `auto` max_batch_tokens is off CUDA (scoring: evaluation, familiarity): the config
# default from before `auto`.
CPU_MAX_BATCH_TOKENS = 8192
# Scoring under `auto` on CUDA also starts a new batch where a row would be padded to more than
# this many times its length: a batch big enough for everything otherwise pads the shortest rows
# to the longest (MMLU 0-shot, 823M model on an H200: 970 questions/s in batches of up to
# 262,144 tokens without this cut, 1,299 with it). Generation takes none: every batch costs a
# whole decoding loop.
SCORING_STRETCH = 2.0


@dataclass(frozen=True)
class Limits:
    """At most `rows` rows and `tokens` padded tokens (rows x the longest row) per batch, no row
    padded to more than `stretch` times its length; None = no limit. `auto` names the limits
    ("rows", "tokens") that were chosen for a CUDA device and halve on out-of-memory."""
    rows: int | None = None
    tokens: int | None = None
    auto: frozenset[str] = frozenset()
    stretch: float | None = None


def resolve(device, rows: int | str | None = None, tokens: int | str | None = None, *,
            cpu_rows: int | None = None, cpu_tokens: int | None = None,
            stretch: float | None = None) -> Limits:
    """The limits of config values `rows` and `tokens` for a model on `device`: a number or None
    is kept; `auto` is `cpu_rows` / `cpu_tokens` off CUDA and the GPU start on CUDA, where
    `stretch` then applies too."""
    cuda = torch.device(device).type == "cuda"
    auto = frozenset(name for name, value in (("rows", rows), ("tokens", tokens))
                     if value == AUTO and cuda)
    limits = Limits(GPU_START_ROWS if "rows" in auto else cpu_rows if rows == AUTO else rows,
                    GPU_START_TOKENS if "tokens" in auto else cpu_tokens if tokens == AUTO
                    else tokens, auto, stretch if auto else None)
    if AUTO in (rows, tokens):
        log.info("batch limits on %s: %s rows, %s tokens%s", device, limits.rows, limits.tokens,
                 " (auto: halved on out-of-memory)" if auto else " (auto off CUDA: the CPU default)")
    return limits


def length_batches(lengths: Sequence[int], max_rows: int | None = None,
                   max_tokens: int | None = None, shortest_first: bool = False,
                   max_stretch: float | None = None) -> Iterator[list[int]]:
    """Indices sorted by length (longest first unless `shortest_first`; ties in index order),
    cut into batches of at most `max_rows` rows and `max_tokens` padded tokens (rows x the
    longest), whose longest row is at most `max_stretch` times the shortest; a single row over
    the budget goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i] if shortest_first else -lengths[i])
    batch: list[int] = []
    for i in order:
        width, short = ((max(lengths[batch[0]], lengths[i]), min(lengths[batch[0]], lengths[i]))
                        if batch else (lengths[i], lengths[i]))
        if batch and ((max_rows and len(batch) >= max_rows)
                      or (max_tokens and width * (len(batch) + 1) > max_tokens)
                      or (max_stretch and width > max_stretch * short)):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def run_batches(lengths: Sequence[int], process: Callable[[list[int]], None], limits: Limits,
                what: str, shortest_first: bool = False) -> Limits:
    """Call `process(batch)` for every batch of `length_batches(lengths, ...)` under `limits`;
    return the limits the run ended with.

    When a batch raises torch.cuda.OutOfMemoryError, each limit in `limits.auto` drops to half of
    what that batch held (its rows; its rows x longest row) and the items not yet done, the
    failed batch's among them, are batched again: `process` must leave nothing behind for a batch
    that raised. Without auto limits, or for a batch of one row, the error propagates. Batches go
    longest first, so out-of-memory usually strikes a first batch and the run batches exactly as
    a run at its final limits; where it strikes later, the batches done before keep their larger
    size, which changes results by rounding only (`agreement_bound`)."""
    done: set[int] = set()
    pending = list(range(len(lengths)))
    while pending:
        try:
            for batch in length_batches([lengths[i] for i in pending], limits.rows,
                                        limits.tokens, shortest_first, limits.stretch):
                batch = [pending[j] for j in batch]
                process(batch)
                done.update(batch)
        except torch.cuda.OutOfMemoryError:
            if not limits.auto or len(batch) == 1:
                raise
        else:
            break
        # here, outside the except clause, the error's traceback and the tensors it held are gone
        torch.cuda.empty_cache()
        held = len(batch) * max(lengths[i] for i in batch)
        limits = replace(limits, rows=len(batch) // 2 if "rows" in limits.auto else limits.rows,
                         tokens=held // 2 if "tokens" in limits.auto else limits.tokens)
        log.warning("%s: out of memory on a batch of %d rows, %d padded tokens; now at most %s "
                    "rows, %s tokens", what, len(batch), held, limits.rows, limits.tokens)
        pending = [i for i in pending if i not in done]
    if limits.auto:
        log.info("%s: batches of at most %s rows, %s tokens (auto)", what, limits.rows,
                 limits.tokens)
    return limits


def agreement_bound(dtype: torch.dtype, reference: float = 0.0) -> float:
    """How far a log-likelihood or NLL (nats) scored in a batch may be from `reference`, the same
    score computed alone, for a model in `dtype`: they differ by rounding alone, since padding
    changes the matrix shapes and with them the kernels and the order of every sum.

    fp32: 1e-4, the bound the scorers have always met on a CPU. bf16 keeps 8 significant bits,
    so one rounding moves a value by up to 2^-8 of itself (fp16 keeps 11: the same bound covers
    it), and two passes that round the same value each their own way may differ by twice that:
    2^-7 of the value. The logits carry this into the NLL, whence 2^-7 of the NLL; below 1 nat
    the logits behind an NLL are still of order 1 and round as much, hence the floor of 2^-7
    nats. Observed on an H200 in bf16, random-initialised SmolLM2 (mean NLL about 11): 2.1e-3
    (issue 16) and 2.2e-3 to 2.7e-3 between the batched and the naive familiarity scorer, a
    thirtieth of the bound; 5-shot MMLU letter log-likelihoods (about -11) with and without the
    prefix cache, 823M model: 5.3e-2, sixteen layers of rounding in the cached keys and values,
    still inside. A real fault (a shifted label, a scored prompt token, a wrong position) moves
    an NLL by tenths of a nat or more."""
    if dtype in (torch.bfloat16, torch.float16):
        return 2.0 ** -7 * max(1.0, abs(reference))
    return 1e-4


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, ...]:
    """(ids, attention mask, position ids), left-padded so that every row ends at the last
    column; positions count real tokens only, so a padded row computes what it would alone."""
    width = max(map(len, seqs))
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def shared_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix common to `seqs`, short of the whole of any of them
    (each keeps at least its last token, whose logits are the score)."""
    n = min(len(s) for s in seqs) - 1
    first = seqs[0]
    for seq in seqs[1:]:
        n = next((i for i in range(n) if seq[i] != first[i]), n)
    return max(n, 0)


class PrefixCache:
    """The key/value cache of a token prefix that many rows share (k-shot examples, a system
    prompt, a teacher's instructions), computed once; a batch of the rows' remaining tokens then
    runs from it (`continue_batch`, `generation_inputs`), so the prefix is never computed again.
    The scores are those of a pass over the whole rows, up to rounding (`agreement_bound`). An
    empty prefix shares nothing and changes nothing."""

    def __init__(self, model, prefix: Sequence[int]):
        self.ids = list(prefix)
        self.cache = None
        if self.ids:
            device = next(model.parameters()).device
            with torch.no_grad():
                self.cache = model(input_ids=torch.tensor([self.ids], device=device),
                                   use_cache=True, logits_to_keep=1).past_key_values

    def _for_rows(self, mask: torch.Tensor):
        """A copy of the cache for every row (a forward pass appends to the cache it is given),
        and the attention mask with the prefix's columns in front."""
        rows = mask.shape[0]
        cache = copy.deepcopy(self.cache)
        cache.batch_repeat_interleave(rows)
        ones = torch.ones((rows, len(self.ids)), dtype=mask.dtype, device=mask.device)
        return cache, torch.cat([ones, mask], 1)

    def continue_batch(self, ids: torch.Tensor, mask: torch.Tensor,
                       positions: torch.Tensor) -> dict:
        """Forward arguments for left-padded rests (`left_pad`) that follow the prefix: their
        positions go on from it, and the padding (left of each rest, so between prefix and rest)
        stays masked."""
        if self.cache is None:
            return {"input_ids": ids, "attention_mask": mask, "position_ids": positions,
                    "use_cache": False}
        cache, mask = self._for_rows(mask)
        return {"input_ids": ids, "attention_mask": mask, "position_ids": positions + len(self.ids),
                "past_key_values": cache, "use_cache": True}

    def generation_inputs(self, ids: torch.Tensor, mask: torch.Tensor) -> dict:
        """`model.generate` arguments for left-padded rests that follow the prefix: the whole
        rows (prefix, padding, rest) and the prefix's cache, so generate runs only the rests;
        it numbers positions from the attention mask, across the masked padding. The new tokens
        start after column `ids.shape[1] + len(self.ids)`."""
        if self.cache is None:
            return {"input_ids": ids, "attention_mask": mask}
        cache, mask = self._for_rows(mask)
        prefix = torch.tensor([self.ids], dtype=ids.dtype, device=ids.device).expand(len(ids), -1)
        return {"input_ids": torch.cat([prefix, ids], 1), "attention_mask": mask,
                "past_key_values": cache}
