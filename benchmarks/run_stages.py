"""Where the time of a finished run goes, per stage (Snakemake rule), from Snakemake's own log.

    .venv/bin/python benchmarks/run_stages.py [WORKDIR] [--log .snakemake/log/....snakemake.log]

Reads the newest Snakemake log of WORKDIR (default: the current folder), or the one given: each
job's start (the timestamp before its `rule X:` block) and end (`Finished jobid: N`), at the
log's one-second resolution. Prints, per rule, the jobs, their summed and mean seconds and the
share of all job time, then the run's wall-clock time (first start to last end) and the machine
(CPU model, cores, load average now). Jobs run side by side (`--cores`), so job time adds up to
more than the wall-clock time. Nothing is run: time a run with `make run`, then read it here.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections import defaultdict
from datetime import datetime
from pathlib import Path

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def jobs(log: Path) -> list[tuple[str, datetime, datetime]]:
    """(rule, start, end) of every job the log saw finish."""
    stamp = rule = None
    started: dict[str, tuple[str, datetime]] = {}
    out = []
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if m := _STAMP.match(line):
            stamp, rule = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y"), None
        elif m := _RULE.match(line):
            rule = m.group(1)
        elif (m := _JOBID.match(line)) and rule and stamp:
            started.setdefault(m.group(1), (rule, stamp))
        elif (m := _FINISHED.match(line)) and m.group(1) in started and stamp:
            name, begin = started.pop(m.group(1))
            out.append((name, begin, stamp))
    return out


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU") \
        if Path("/proc/cpuinfo").exists() else "unknown CPU"
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, load average now {load}"


def table(done: list[tuple[str, datetime, datetime]]) -> list[str]:
    per_rule: dict[str, list[float]] = defaultdict(list)
    for rule, begin, end in done:
        per_rule[rule].append((end - begin).total_seconds())
    total = sum(sum(v) for v in per_rule.values()) or 1.0
    lines = [f"{'stage (rule)':<28}{'jobs':>6}{'job s':>9}{'mean s':>9}{'share':>8}"]
    for rule, secs in sorted(per_rule.items(), key=lambda kv: -sum(kv[1])):
        lines.append(f"{rule:<28}{len(secs):>6}{sum(secs):>9.0f}{sum(secs) / len(secs):>9.1f}"
                     f"{100 * sum(secs) / total:>7.1f}%")
    wall = (max(e for _, _, e in done) - min(b for _, b, _ in done)).total_seconds()
    lines += [f"{'all jobs':<28}{len(done):>6}{total:>9.0f}",
              f"wall-clock {wall:.0f} s ({wall / 60:.1f} min), first start to last end"]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", nargs="?", type=Path, default=Path("."))
    parser.add_argument("--log", type=Path, help="a Snakemake log (default: the newest)")
    args = parser.parse_args(argv)
    logs = sorted((args.workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    log = args.log or (logs[-1] if logs else None)
    if log is None:
        print(f"{args.workdir}: no Snakemake log in .snakemake/log", file=sys.stderr)
        return 1
    done = jobs(log)
    if not done:
        print(f"{log}: no finished job", file=sys.stderr)
        return 1
    print(f"{log}\n")
    print("\n".join(table(done)))
    print(f"machine: {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
