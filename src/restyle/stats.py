"""Statistics for comparing evaluation runs honestly.

An MMLU subject can have 100 questions; near 25 % accuracy one standard error is about 4 points,
so a 5-point difference between two runs is not a finding by itself. Comparisons here are paired
(the same questions under both runs) and resampled over questions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Delta:
    delta: float  # mean(a) - mean(b)
    low: float  # bootstrap interval
    high: float
    n: int  # questions

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0,
                     level: float = 0.95) -> Delta:
    """Difference of mean scores of two runs on the same questions, with a percentile interval.

    `a` and `b` hold one score per question (0/1 correctness, or its mean over seeds), aligned;
    each bootstrap sample draws questions with replacement and keeps the pairs together, so the
    interval reflects question-to-question variation, not the (much larger) spread of each run.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores must be two aligned vectors, got {a.shape} and {b.shape}")
    n = len(a)
    if n == 0:
        return Delta(float("nan"), float("nan"), float("nan"), 0)
    diff = a - b
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    means = diff[draws].mean(axis=1)
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Delta(float(diff.mean()), float(low), float(high), n)


def rule_agreement(effects: pd.DataFrame) -> float:
    """Mean Spearman correlation, over pairs of rules, of their effects across subjects.

    `effects` has one row per subject and one column per rule. Near 1: rules move the same
    subjects the same way (the subject matters more than the rule); near 0: no shared pattern.
    """
    ranks = effects.rank()
    corr = ranks.corr().to_numpy()
    upper = corr[np.triu_indices_from(corr, k=1)]
    upper = upper[~np.isnan(upper)]
    return float(upper.mean()) if len(upper) else float("nan")


def variance_shares(effects: pd.DataFrame) -> dict[str, float]:
    """Shares of the total sum of squares of a subjects x rules table of effects explained by
    the subject (row means), the rule (column means) and what remains (two-way, no replication)."""
    values = effects.to_numpy(dtype=float)
    grand = values.mean()
    total = ((values - grand) ** 2).sum()
    if total == 0:
        return {"subject": float("nan"), "rule": float("nan"), "residual": float("nan")}
    subject = effects.shape[1] * ((values.mean(axis=1) - grand) ** 2).sum()
    rule = effects.shape[0] * ((values.mean(axis=0) - grand) ** 2).sum()
    return {"subject": subject / total, "rule": rule / total,
            "residual": (total - subject - rule) / total}
