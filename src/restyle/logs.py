"""Logging for the scripts Snakemake runs: everything, including library warnings and progress
bars written to stderr, goes to the rule's log file."""

from __future__ import annotations

import logging
import sys


def to_file(path: str, name: str) -> logging.Logger:
    """Send logging, warnings and stderr to `path`; return a logger called `name`."""
    stream = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the job
    sys.stderr = stream
    logging.basicConfig(stream=stream, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    return logging.getLogger(name)
