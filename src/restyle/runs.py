"""Run names: "base" (the untrained model) or "{sft_set}/seed{seed}" (a checkpoint trained on
one SFT set), the {run} of results/eval/{model}/{run}/ and results/familiarity/{model}/{run}/."""

from __future__ import annotations

import re

BASE = "base"
RUN_RE = r"base|[^/]+/seed\d+"  # the {run} wildcard
_CHECKPOINT = re.compile(r"([^/]+)/seed(\d+)")


def run_name(sft_set: str, seed: int) -> str:
    return f"{sft_set}/seed{seed}"


def parse_run(run: str) -> tuple[str, int | None]:
    """(sft_set, seed) of a checkpoint's run, ("base", None) of the base model."""
    if run == BASE:
        return BASE, None
    m = _CHECKPOINT.fullmatch(run)
    if not m:
        raise ValueError(f"run '{run}' is neither '{BASE}' nor '<sft_set>/seed<seed>'")
    return m.group(1), int(m.group(2))


def checkpoint_dir(model: str, run: str) -> str:
    """Where rule train writes a checkpoint run's adapter/ and train_metrics.json."""
    return f"results/train/{model}/{run}"


def checkpoint_file(model: str, run: str, name: str) -> str | None:
    """`name` (adapter, train_metrics.json) in a checkpoint run's folder; None for the base
    model, which has none."""
    return None if run == BASE else f"{checkpoint_dir(model, run)}/{name}"
