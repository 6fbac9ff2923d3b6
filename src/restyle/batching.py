"""Length-sorted, left-padded batches for the forward passes that score or generate."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch


def length_batches(lengths: Sequence[int], max_rows: int | None = None,
                   max_tokens: int | None = None) -> Iterator[list[int]]:
    """Indices, longest first, cut into batches of at most `max_rows` rows and `max_tokens`
    padded tokens (rows x the longest); a single row over the budget goes alone."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batch: list[int] = []
    for i in order:
        width = lengths[batch[0]] if batch else lengths[i]  # the first row is the longest
        if batch and ((max_rows and len(batch) >= max_rows)
                      or (max_tokens and width * (len(batch) + 1) > max_tokens)):
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


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
