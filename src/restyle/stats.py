"""Statistics for comparing evaluation runs honestly.

An MMLU subject can have 100 questions; near 25 % accuracy one standard error is about 4 points,
so a 5-point difference between two runs is not a finding by itself. Comparisons here are paired
(the same questions under both runs) and resampled over questions.
"""

from __future__ import annotations

import math

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


def bootstrap_sums(values: np.ndarray, n_boot: int = 2000, seed: int = 0,
                   max_cells: int = 1 << 22) -> np.ndarray:
    """Column sums of `values` (n rows x k columns, or a vector) over `n_boot` resamples of its
    rows with replacement: an (n_boot, k) array (or (n_boot,) for a vector).

    Every column of one resample sums the same drawn rows, so quantities kept in separate columns
    of a row (an example's NLL and its token count; two sets' scores of one question) stay
    together. Vectorised: an index matrix of drawn rows per block of resamples, summed along its
    axis; blocks hold at most `max_cells` indices to bound memory. The seeded generator makes the
    result a function of (values, n_boot, seed, max_cells) alone.
    """
    values = np.asarray(values, dtype=float)
    vector = values.ndim == 1
    if vector:
        values = values[:, None]
    if values.ndim != 2:
        raise ValueError(f"values must be a vector or a rows x columns matrix, got {values.shape}")
    n, k = values.shape
    if n == 0:
        raise ValueError("cannot resample zero rows")
    rng = np.random.default_rng(seed)
    columns = [np.ascontiguousarray(values[:, j]) for j in range(k)]
    out = np.empty((n_boot, k))
    block = max(1, max_cells // n)
    for start in range(0, n_boot, block):  # blocks of resamples, not single resamples
        stop = min(n_boot, start + block)
        draws = rng.integers(0, n, size=(stop - start, n))
        for j, column in enumerate(columns):
            out[start:stop, j] = column[draws].sum(axis=1)
    return out[:, 0] if vector else out


def percentile_interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The central `level` percentile interval of bootstrap `samples` (as paired_bootstrap)."""
    tail = (1 - level) / 2
    low, high = np.quantile(np.asarray(samples, dtype=float), [tail, 1 - tail])
    return float(low), float(high)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from n samples of which c passed (Chen et al. 2021, the
    Codex paper): 1 - C(n-c, k) / C(n, k), computed as a product to stay exact for large n."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))
