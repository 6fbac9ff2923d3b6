"""How far a run is, read from its work folder while it runs (`make status`, or
`python -m restyle.status [WORKDIR] [SNAKEMAKE ARGS...]` with the arguments the run was given).

Light enough for a SLURM login node: no torch, no model; two dry runs of Snakemake and the
files the jobs write. Everything comes from a record, nothing is guessed:

- jobs: Snakemake's own dry runs, `--nolock` (a running snakemake's lock does not stop them)
  and `--rerun-incomplete` (a started job's output is marked incomplete until it ends): the
  whole DAG's jobs per rule (`--forceall`) less those still to run is what is done. A job to run
  whose output is marked incomplete (.snakemake/incomplete) was started and has not ended: running while a snakemake
  works in the folder, else cut off (a killed run). A job whose output the latest run's log
  (.snakemake/log) names in an "Error in rule" block failed. The other jobs to run carry
  Snakemake's reasons (missing output, code, params or input changed).
- teacher: the accounting CSVs every teacher stage rewrites after each call
  (results/study_*/**/accounting.csv, `restyle.teacher.Session`), beside the TOTAL row of
  results/estimate.csv.
- training steps: each train job's train_metrics.json (`steps`, written at its end), else its
  newest checkpoints/checkpoint-N, against the steps of results/compute.csv.
- GPU-hours: the wall seconds (`s`) of the finished train and evaluate jobs' benchmarks
  (logs/benchmarks/{train,evaluate}), one device per job, against results/compute.csv.
- ETA: the jobs still to run times the latest run's time per finished job so far (its log's
  start and its "Finished jobid" lines); none when that run has ended or finished nothing yet.
  Jobs differ in length (a training job against a data one), so it is a rough figure.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from restyle.locks import snakemake_alive, work_folder

TOTAL = "TOTAL"  # restyle.accounting.TOTAL and restyle.sizing.TOTAL (both import pandas or torch)
JOB_HEAD = re.compile(r"^(?:local)?(?:rule|checkpoint) (\S+):$")
STATS_ROW = re.compile(r"^(\S+)\s+(\d+)$")


class StatusError(Exception):
    pass


@dataclass
class Job:
    """A job still to run, as Snakemake's dry run shows it."""

    rule: str
    output: list[str]
    wildcards: str
    reason: str


@dataclass
class Status:
    folder: Path
    total: int  # jobs in the workflow's DAG
    done: int
    running: list[Job]
    incomplete: list[Job]  # started, not ended, and no snakemake at work here
    failed: list[Job]
    pending: list[Job]  # to run, not started: out of date or not made yet
    live: bool  # a snakemake works in the folder (seen on this machine)
    lock_held: bool
    requests: int | None = None  # teacher requests answered so far (accounting CSVs)
    sent: int | None = None
    paid: float | None = None  # USD; None: a price unknown
    est_requests: int | None = None  # results/estimate.csv's TOTAL, None without it
    est_to_send: int | None = None
    est_cost: float | None = None
    steps_done: int = 0
    steps_total: int | None = None
    train_jobs: int = 0  # train jobs with a step recorded
    gpu_hours: float = 0.0
    gpu_jobs: int = 0
    est_gpu_hours: float | None = None
    eta_s: float | None = None
    pace: str = ""  # how the ETA was measured
    notes: list[str] = field(default_factory=list)

    @property
    def to_run(self) -> int:
        return len(self.running) + len(self.incomplete) + len(self.failed) + len(self.pending)


def snakemake_command() -> str:
    """The snakemake beside this Python (the virtualenv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "snakemake"
    return str(beside) if beside.exists() else (shutil.which("snakemake") or "snakemake")


def dry_run(command: list[str], force_all: bool) -> str:
    cmd = [*command, "--dry-run", "--nolock", "--rerun-incomplete", "--nocolor",
           *(["--forceall", "--quiet", "rules"] if force_all else [])]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise StatusError(f"{' '.join(cmd)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def job_counts(text: str) -> dict[str, int]:
    """Jobs per rule of a dry run's "Job stats" table ({} when nothing is to be done)."""
    counts, lines = {}, text.splitlines()
    if "Job stats:" not in lines:
        return counts
    for line in lines[lines.index("Job stats:") + 3:]:
        match = STATS_ROW.match(line.strip())
        if not match or match[1] == "total":
            break
        counts[match[1]] = int(match[2])
    return counts


def jobs(text: str) -> list[Job]:
    """The job blocks of a dry run's (or a run log's) text: `rule X:` and its indented keys."""
    out, current = [], None
    for line in text.splitlines():
        head = JOB_HEAD.match(line)
        if head:
            current = {"rule": head[1]}
            out.append(current)
        elif current is not None and line.startswith("    ") and ": " in line:
            key, value = line.strip().split(": ", 1)
            current.setdefault(key, value)
        else:
            current = None
    return [Job(j["rule"], [o.strip() for o in j.get("output", "").split(",") if o.strip()],
                j.get("wildcards", ""), j.get("reason", "")) for j in out]


def started_outputs(folder: Path) -> set[str]:
    """The outputs Snakemake marked incomplete (a job started, not ended): its file persistence,
    the default, keeps one file a path in .snakemake/incomplete, named by the path in urlsafe
    base64, split into "@"-prefixed folders where long. A dry run's reason for such a job is
    "Missing output files" until the job writes one, so the marks are read here."""
    root = folder / ".snakemake" / "incomplete"
    return {base64.urlsafe_b64decode("".join(part.lstrip("@") for part in p.relative_to(root).parts)
                                    ).decode() for p in root.rglob("*") if p.is_file()}


def run_log(folder: Path) -> Path | None:
    """The log of the latest snakemake that ran jobs here (a dry run's, status' own among them,
    selects none)."""
    logs = sorted((folder / ".snakemake" / "log").glob("*.snakemake.log"), reverse=True)
    return next((p for p in logs if "Select jobs to execute" in p.read_text(errors="replace")),
                None)


def failed_outputs(log: str) -> set[str]:
    """The outputs of the jobs an "Error in rule" block of a run log names."""
    blocks = re.split(r"^(?=Error in rule \S+:$)", log, flags=re.MULTILINE)[1:]
    return {o for block in blocks for j in jobs(block.replace("Error in rule ", "rule ", 1))
            for o in j.output}


def pace(log: str, to_run: int, now: float) -> tuple[float | None, str]:
    """(ETA in seconds, how it was measured) from a run log still being written."""
    start = re.search(r"^\s*Date: (.+)$", log, re.MULTILINE)
    finished = len(re.findall(r"^Finished jobid: ", log, re.MULTILINE))
    if not start or not finished:
        return None, "no ETA: the running snakemake has finished no job yet"
    elapsed = now - datetime.strptime(start[1].strip(), "%Y-%m-%d %H:%M:%S").timestamp()
    per_job = elapsed / finished
    return to_run * per_job, (f"{to_run} jobs to run at this run's pace so far ({finished} "
                              f"jobs in {_duration(elapsed)}, {_duration(per_job)} a job; jobs "
                              f"differ in length)")


def _rows(paths) -> list[dict]:
    rows = []
    for path in sorted(paths):
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def _number(value: str | None) -> float | None:
    return None if value in (None, "") else float(value)


def teacher(folder: Path) -> dict:
    """Requests answered, sent and dollars paid so far, and the estimate's TOTAL."""
    rows = _rows((folder / "results").glob("study_*/**/accounting.csv"))
    costs = [_number(r["run_cost"]) for r in rows]
    out = {"requests": sum(int(r["requests"]) for r in rows),
           "sent": sum(int(r["sent"]) for r in rows),
           "paid": None if None in costs else sum(costs)}
    estimate = folder / "results" / "estimate.csv"
    if estimate.exists():
        total = next((r for r in _rows([estimate]) if r["stage"] == TOTAL), None)
        if total:
            out |= {"est_requests": int(total["requests"]), "est_to_send": int(total["to_send"]),
                    "est_cost": _number(total["run_cost"])}
    return out


def compute(folder: Path) -> dict:
    """Training steps and GPU-hours done, and the totals of results/compute.csv."""
    steps, jobs_seen = 0, 0
    for seed in (folder / "results" / "train").glob("*/*/seed*"):
        metrics = seed / "train_metrics.json"
        if metrics.exists():
            steps += json.loads(metrics.read_text())["steps"]
        else:
            saved = [int(p.name.split("-")[1]) for p in (seed / "checkpoints").glob("checkpoint-*")
                     if p.name.split("-")[1].isdigit()]
            if not saved:
                continue
            steps += max(saved)
        jobs_seen += 1
    seconds = []
    for stage in ("train", "evaluate"):
        for tsv in (folder / "logs" / "benchmarks" / stage).glob("**/*.tsv"):
            with open(tsv, newline="") as f:
                seconds += [float(r["s"]) for r in csv.DictReader(f, delimiter="\t")]
    out = {"steps_done": steps, "train_jobs": jobs_seen, "gpu_hours": sum(seconds) / 3600,
           "gpu_jobs": len(seconds)}
    sized = folder / "results" / "compute.csv"
    if sized.exists():
        rows = [r for r in _rows([sized]) if not r["job"].startswith(TOTAL)]
        train = [r for r in rows if r["job"] == "train"]
        out["steps_total"] = (None if any(r["steps"] == "" for r in train)
                              else sum(int(r["steps"]) * int(r["jobs"]) for r in train))
        hours = [_number(r["total_gpu_hours"]) for r in rows]
        out["est_gpu_hours"] = None if None in hours else sum(hours)
    return out


def status(snakemake_args: list[str], command: str | None = None) -> Status:
    """The status of the work folder of `snakemake_args` (those the run was given)."""
    folder = work_folder(snakemake_args)
    lock_held = any((folder / ".snakemake" / "locks").glob("*.lock"))
    live = lock_held and snakemake_alive(folder)  # before our own dry runs start there
    cmd = [command or snakemake_command(), *snakemake_args]
    with ThreadPoolExecutor(2) as pool:
        planned, everything = pool.map(lambda f: dry_run(cmd, f), (False, True))
    to_run, total = jobs(planned), sum(job_counts(everything).values())
    log_path = run_log(folder)
    log = log_path.read_text(errors="replace") if log_path else ""
    failed, started = failed_outputs(log), started_outputs(folder)
    state = Status(folder, total, total - len(to_run), [], [], [], [], live, lock_held)
    for job in to_run:
        if started & set(job.output):
            (state.running if live else state.incomplete).append(job)
        elif failed & set(job.output):
            state.failed.append(job)
        else:
            state.pending.append(job)
    for key, value in (teacher(folder) | compute(folder)).items():
        setattr(state, key, value)
    if live and "Complete log(s):" not in log:
        state.eta_s, state.pace = pace(log, state.to_run, time.time())
    elif lock_held and not live:
        state.notes.append("a lock is held, but no snakemake works in this folder on this "
                           "machine: a killed run's (python -m restyle.locks says what to run), "
                           "or one running on another machine")
    return state


def _duration(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else (
        f"{minutes} min" if minutes else f"{seconds:.0f} s")


def _of(done, total, fmt="{:,}") -> str:
    return fmt.format(done) + ("" if total is None else " of " + fmt.format(total))


def _job(job: Job) -> str:
    return f"{job.rule}" + (f" ({job.wildcards})" if job.wildcards else "")


def format_status(s: Status, limit: int = 15) -> str:
    lines = [f"restyle status of {s.folder}"]
    if not s.to_run:
        lines.append(f"complete and current: all {s.total} jobs done, none out of date")
    else:
        lines.append(f"jobs: {s.done} done, {len(s.running)} running, {len(s.failed)} failed, "
                     f"{len(s.incomplete)} cut off (started, not finished), {len(s.pending)} "
                     f"still to run; {s.total} in all")
    for label, group in (("running", s.running), ("failed", s.failed),
                         ("cut off", s.incomplete)):
        lines += [f"  {label}: {_job(j)}" for j in group[:limit]]
    if s.pending:
        # a job only waiting for its inputs to be made is not out of date; name the others
        stale = [j for j in s.pending if not j.reason.startswith(("Missing output files",
                                                                  "Input files updated"))]
        if stale:
            lines.append("out of date (Snakemake's reasons):")
        lines += [f"  {_job(j)}: {j.reason[:160]}" for j in stale[:limit]]
        if len(stale) > limit:
            lines.append(f"  ... and {len(stale) - limit} more")
    cost = "unknown (a price is missing)" if s.paid is None else f"${s.paid:,.2f}"
    est = "" if s.est_requests is None else (
        f" (estimate: {s.est_requests:,} requests, {s.est_to_send:,} to send, "
        + ("cost unknown)" if s.est_cost is None else f"${s.est_cost:,.2f})"))
    lines.append(f"teacher: {s.requests:,} requests answered, {s.sent:,} sent, paid {cost}{est}")
    lines.append(f"training steps: {_of(s.steps_done, s.steps_total)} ({s.train_jobs} train jobs "
                 "begun)" + ("" if s.steps_total is not None else "; no results/compute.csv"))
    lines.append(f"GPU-hours (wall time of {s.gpu_jobs} finished train/evaluate jobs): "
                 + _of(s.gpu_hours, s.est_gpu_hours, "{:,.2f}")
                 + (" estimated" if s.est_gpu_hours is not None else ""))
    if s.eta_s is not None:
        lines.append(f"ETA: {_duration(s.eta_s)} ({s.pace})")
    elif s.pace:
        lines.append(s.pace)
    return "\n".join(lines + s.notes)


def main(argv: list[str]) -> int:
    # `python -m restyle.status WORKDIR ...`: the folder as snakemake's -d
    if argv and not argv[0].startswith("-") and Path(argv[0]).is_dir():
        argv = ["-d", argv[0], *argv[1:]]
    try:
        print(format_status(status(argv)))
    except StatusError as e:
        print(f"restyle.status: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
