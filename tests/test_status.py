"""`make status`: a real run of the data stage read back from Snakemake's records (finished,
out of date, killed halfway), and the teacher, training and GPU-hour figures from the files the
jobs write."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from conftest import REPO
from restyle import status
from restyle.teacher import ACCOUNTING_FIELDS
from test_workflow import DATA_TARGETS, SNAKEMAKE, snakemake


def args_of(workdir: Path, config: dict) -> list[str]:
    """The snakemake arguments of a run (as `make run SNAKEMAKE_ARGS=...`), its config written."""
    path = workdir / "test-config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return ["-s", str(REPO / "Snakefile"), "-d", str(workdir), *DATA_TARGETS,
            "--configfile", str(path)]


def test_a_finished_run_is_complete_and_current_until_a_param_changes(tiny):
    workdir, config = tiny
    assert snakemake(workdir, *DATA_TARGETS, config=config).returncode == 0
    state = status.status(args_of(workdir, config))
    # the model's, Ruozhiba's, MMLU's and GSM8K's (one job for all splits of a task)
    assert (state.total, state.done, state.to_run) == (4, 4, 0)
    text = status.format_status(state)
    assert "complete and current: all 4 jobs done, none out of date" in text
    assert "teacher: 0 requests answered, 0 sent, paid $0.00" in text

    config["data"]["gsm8k"]["seed"] = 6
    state = status.status(args_of(workdir, config))
    assert state.done == 3 and [j.rule for j in state.pending] == ["prepare_gsm8k"]
    text = status.format_status(state)
    assert "jobs: 3 done, 0 running, 0 failed, 0 cut off" in text
    assert re.search(r"^  prepare_gsm8k: Params have changed since last execution", text, re.M)
    assert "complete" not in text


def test_a_run_killed_halfway_counts_what_its_log_says_ran(tiny):
    workdir, config = tiny
    args = args_of(workdir, config)
    run = subprocess.Popen([SNAKEMAKE, "--cores", "1", *args], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, start_new_session=True)
    logs, deadline = workdir / ".snakemake" / "log", time.time() + 600
    while not any("Finished jobid" in p.read_text() for p in logs.glob("*.log")):
        assert run.poll() is None and time.time() < deadline
        time.sleep(0.2)
    os.killpg(run.pid, signal.SIGKILL)  # snakemake and its job: a lost login node
    run.wait()
    [log] = logs.glob("*.log")
    text = log.read_text()

    state = status.status(args)
    finished = len(re.findall(r"^Finished jobid: ", text, re.M))
    started = len(status.jobs(text))
    assert (state.total, state.done) == (4, finished) and 1 <= finished < 4
    # the job the kill cut off is marked incomplete by snakemake; no snakemake works there now
    assert len(state.incomplete) == started - finished, state.pending
    assert not state.running and not state.live
    assert state.lock_held and state.to_run == 4 - finished
    out = status.format_status(state)
    assert (f"jobs: {finished} done, 0 running, 0 failed, {started - finished} cut off "
            f"(started, not finished), {len(state.pending)} still to run; 4 in all") in out
    assert "a lock is held, but no snakemake works in this folder" in out

    # while a run goes on, the ETA is the jobs to run at its time per finished job
    now = time.mktime(time.strptime(re.search(r"Date: (.+)", text)[1].strip(),
                                    "%Y-%m-%d %H:%M:%S")) + 60 * finished
    assert status.pace(text, 3, now)[0] == 180

    # the CLI with the run's arguments prints the same
    cli = subprocess.run([sys.executable, "-m", "restyle.status", *args], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert cli.returncode == 0, cli.stderr
    assert out.splitlines()[1] in cli.stdout


def write_csv(path: Path, rows: list[dict], delimiter=",") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)


def test_teacher_steps_and_gpu_hours_are_summed_from_the_jobs_files(tmp_path):
    def accounting(stage, requests, sent, run_cost):
        return {**dict.fromkeys(ACCOUNTING_FIELDS, 0), "stage": stage, "requests": requests,
                "sent": sent, "run_cost": run_cost}

    results = tmp_path / "results"
    write_csv(results / "study_a/mmlu/studyA-rule-1/accounting.csv",
              [accounting("studyA-rule-1", 10, 4, 0.5), accounting("studyA-rule-1", 2, 2, 0.25)])
    write_csv(results / "study_b/gsm8k/teacher/accounting.csv",
              [accounting("studyB-gsm8k-teacher", 5, 5, 1.0)])
    write_csv(results / "estimate.csv", [
        {"stage": "studyA-rule-1", "requests": 12, "to_send": 12, "run_cost": 1.0},
        {"stage": "TOTAL", "requests": 40, "to_send": 30, "run_cost": 6.0}])
    assert status.teacher(tmp_path) == {"requests": 17, "sent": 11, "paid": 1.75,
                                        "est_requests": 40, "est_to_send": 30, "est_cost": 6.0}
    write_csv(results / "study_b/gsm8k/human/accounting.csv",
              [accounting("studyB-gsm8k-human", 1, 1, "")])  # a price unknown
    assert status.teacher(tmp_path)["paid"] is None

    train = results / "train" / "tiny"
    (train / "a" / "seed0").mkdir(parents=True)
    (train / "a" / "seed0" / "train_metrics.json").write_text(json.dumps({"steps": 16}))
    for n in (4, 8):  # a job on its way
        (train / "b" / "seed0" / "checkpoints" / f"checkpoint-{n}").mkdir(parents=True)
    (train / "c" / "seed0").mkdir(parents=True)  # begun, nothing saved yet
    bench = tmp_path / "logs" / "benchmarks"
    write_csv(bench / "train/tiny/a/seed0.tsv", [{"s": 1800.0, "h:m:s": "0:30:00"}], "\t")
    write_csv(bench / "evaluate/tiny/base/mmlu.tsv", [{"s": 900.0, "h:m:s": "0:15:00"}], "\t")
    write_csv(bench / "prepare_mmlu.tsv", [{"s": 3600.0, "h:m:s": "1:00:00"}], "\t")  # no GPU
    write_csv(results / "compute.csv", [
        {"model": "tiny", "job": "train", "name": "a", "jobs": 2, "steps": 16,
         "total_gpu_hours": 2.0},
        {"model": "tiny", "job": "evaluate", "name": "mmlu", "jobs": 3, "steps": "",
         "total_gpu_hours": 1.5},
        {"model": "tiny", "job": "TOTAL tiny", "name": "", "jobs": 5, "steps": "",
         "total_gpu_hours": 3.5}])
    assert status.compute(tmp_path) == {"steps_done": 24, "train_jobs": 2, "gpu_hours": 0.75,
                                        "gpu_jobs": 2, "steps_total": 32, "est_gpu_hours": 3.5}
