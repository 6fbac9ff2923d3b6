"""What every benchmark here prints beside its figures: the median of repeated runs (each arm at
least three times by default) and the machine's load average, so that a reader can judge the
noise."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
REPEATS = 3


def timed(fn: Callable[[], T], repeats: int = REPEATS) -> tuple[T, float]:
    """(fn's last result, the median of `repeats` wall times of it in seconds)."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - start)
    return out, statistics.median(seconds)


def load_average() -> str:
    return "load average (1, 5, 15 min): " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
