"""The real rule `train` through `snakemake --profile profiles/slurm` on a two-node SLURM cluster
on this machine (tests/slurm/two_nodes.sh: each node a slurmd in network, UTS and mount
namespaces of its own): a job on both nodes trains what one node of two processes trains, and a
scancel ends it on both; a job with a one-minute time limit stops, requeues and resumes until it
is done, with the adapter of an uninterrupted run."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from restyle.train import launch_job, run
from test_train import default_settings, make_job, toy_records

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
CLUSTER = REPO / "tests" / "slurm" / "two_nodes.sh"
PROFILE = REPO / "profiles" / "slurm"
NODES = ("restyle-n1", "restyle-n2")
TARGET = "results/train/tiny/toy/seed0/train_metrics.json"
# test-only overrides of the profile: the first status check 2 s after submitting, short waits
FAST = ["--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5"]
# of the time-limit job, steps of 5 to 10 s here: an allocation has 30 s to the stop, of which
# starting takes 13 to 35 s, so it trains 1 to 3 of them (at least one each), and the job needs
# 2 to 4 allocations (3 steps once fitted in one allocation of a quick start)
STEPS = 4


def _missing() -> str | None:
    if os.geteuid() != 0:
        return "the two-node cluster needs root (network namespaces, veth pairs, daemons)"
    for tool in ("ip", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"the two-node cluster needs {tool} (iproute2, util-linux)"
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        return "no SLURM installed and no apt-get to install it"
    probe = subprocess.run(["unshare", "--net", "--uts", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"no network/UTS namespaces here: {probe.stderr.strip()}"
    return None


def _leftovers() -> list[str]:
    """Namespaces, links and daemons of the two-node cluster still on this machine."""
    found = [n for n in NODES if Path("/run/netns", n).exists()]
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    found += re.findall(r"\d+: (rsl-[^:@]+)", links)
    for pid in os.listdir("/proc"):
        try:
            cmd = Path("/proc", pid, "cmdline").read_bytes()
        except OSError:
            continue
        if b"restyle-slurm2" in cmd or b"-N\x00restyle-n" in cmd:
            found.append(cmd.replace(b"\x00", b" ").decode())
    return found


@pytest.fixture(scope="module")
def cluster() -> dict[str, str]:
    """The environment that points SLURM's clients at the two-node cluster; the cluster is
    started for the module and stopped after it, leaving nothing behind."""
    if why := _missing():
        pytest.skip(why)
    result = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=600)
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        env = dict(os.environ)
        env.update(line.split("=", 1) for line in subprocess.run(
            ["bash", str(CLUSTER), "env"], capture_output=True, text=True, check=True
        ).stdout.splitlines())
        yield env
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop"], timeout=120)
        assert _leftovers() == []


def workdir(tmp: Path, manifest: Path, settings: dict, resources: dict, examples: int) -> Path:
    """A work folder whose only missing output is rule train's for model `tiny` and SFT set
    `toy` (`examples` of them), and the config that trains it with `settings` on `resources`."""
    work = tmp / "work"
    sft = work / "results" / "sft" / "toy.jsonl"
    sft.parent.mkdir(parents=True)
    sft.write_text("".join(json.dumps(r) + "\n" for r in toy_records(examples)))
    (work / "resources" / "models" / "tiny").mkdir(parents=True)
    shutil.copy(manifest, work / "resources" / "models" / "tiny" / "manifest.json")
    train = {k: v for k, v in settings.items() if k not in ("per_model", "deepspeed")}
    train["resources"] = {**settings["resources"], **resources}
    config = {"models": {"tiny": {"source": str(manifest.parent / "hf")}},
              "target_models": ["tiny"], "train": train}
    (work / "test-config.yaml").write_text(yaml.safe_dump(config))
    return work


@pytest.fixture()
def snakemake(cluster):
    """Starts `snakemake --profile profiles/slurm` for rule train's output in a work folder, on
    the two-node cluster (output appended to work/snakemake.log); any still running at the end
    of the test is stopped as a user would (SIGINT: it cancels its SLURM jobs)."""
    started = []

    def start(work: Path, *args: str) -> subprocess.Popen:
        cmd = [SNAKEMAKE, TARGET, "--profile", str(PROFILE), "-s", str(REPO / "Snakefile"),
               "-d", str(work), "--configfile", str(REPO / "config" / "config.yaml"),
               str(work / "test-config.yaml"), *FAST, *args]
        with (work / "snakemake.log").open("a") as out:
            started.append(subprocess.Popen(cmd, cwd=work, env=cluster, stdout=out,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
        return started[-1]

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=120)


def finish(proc: subprocess.Popen, work: Path, timeout: float) -> str:
    proc.wait(timeout=timeout)
    return (work / "snakemake.log").read_text()


def job_processes(node: str) -> dict[int, str]:
    """PID -> command line of every process in a node's network namespace but its slurmd."""
    pids = subprocess.run(["ip", "netns", "pids", node], capture_output=True, text=True,
                          check=True).stdout.split()
    found = {}
    for pid in map(int, pids):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\x00", b" ").decode()
        except OSError:
            continue
        if not cmd.startswith("slurmd "):
            found[pid] = cmd
    return found


def adapter(path: str | Path) -> dict:
    from safetensors.torch import load_file

    return load_file(Path(path) / "adapter_model.safetensors")


def assert_same_adapter(a: dict, b: dict) -> None:
    import torch

    assert a.keys() == b.keys() and any(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-6), name


def test_two_node_job_trains_what_one_node_of_two_does_and_scancel_ends_it_on_both(
        cluster, snakemake, tmp_path, smollm2_manifest):
    settings = default_settings(max_steps=4, batch_size=2, per_device_batch_size=1,
                                max_length=64, save_steps=1, cpu_processes=1)
    resources = {"gpu": 0, "nodes": 2, "cpus_per_gpu": 1, "mem_mb": 2000, "runtime": 10,
                 "slurm_partition": "cpu"}
    work = workdir(tmp_path, smollm2_manifest, settings, resources, examples=8)
    checkpoints = work / "results" / "train" / "tiny" / "toy" / "seed0" / "checkpoints"

    first = snakemake(work, "--retries", "0")
    deadline = time.monotonic() + 300
    while not (checkpoints / "checkpoint-1" / "trainer_state.json").is_file():
        assert first.poll() is None and time.monotonic() < deadline, (work / "snakemake.log").read_text()
        time.sleep(1)
    running = {node: job_processes(node) for node in NODES}
    for node, procs in running.items():  # a worker on each node, under its own launcher
        assert any("-m restyle.train" in c for c in procs.values()), (node, procs)
        assert any("-m restyle.launch" in c for c in procs.values()), (node, procs)
    [job_id] = subprocess.run(["squeue", "-h", "-o", "%i"], env=cluster, capture_output=True,
                              text=True, check=True).stdout.split()
    subprocess.run(["scancel", job_id], env=cluster, check=True)
    deadline = time.monotonic() + 90
    while any(Path(f"/proc/{pid}").exists() for procs in running.values() for pid in procs):
        assert time.monotonic() < deadline, {n: job_processes(n) for n in NODES}
        time.sleep(1)
    assert {node: job_processes(node) for node in NODES} == {node: {} for node in NODES}
    log = finish(first, work, 120)
    assert first.returncode != 0 and f"SLURM-job '{job_id}' failed" in log, log
    saved = sorted(int(p.name.split("-")[1]) for p in checkpoints.glob("checkpoint-*"))
    assert saved and saved[-1] < 4, saved

    # the rerun's time limit sized from its set (restyle.sizing): seconds of computing on an
    # H100 at the stated MFU, x1.5, plus 5 min start-up and 5 min for the last checkpoint; a
    # scheduling key changed, yet the job resumes (no setting it computes from changed)
    config = yaml.safe_load((work / "test-config.yaml").read_text())
    config["train"]["resources"].update(runtime="auto", device="H100", startup_s=300,
                                        stop_before_end=300)
    (work / "test-config.yaml").write_text(yaml.safe_dump(config))
    rerun = snakemake(work, "--retries", "0")
    log = finish(rerun, work, 400)
    assert rerun.returncode == 0, log
    assert re.search(r"resources: .*\bruntime=11\b", log), log
    metrics = json.loads((work / TARGET).read_text())
    assert (metrics["processes"], metrics["nodes"]) == (2, 2)
    assert metrics["resumed_from_step"] == saved[-1]
    # scancel's SIGTERM: the step under way finished and was saved, and the rerun went on there
    assert metrics["runs"] == [{"from_step": 0, "to_step": saved[-1], "stopped": "SIGTERM"},
                               {"from_step": saved[-1], "to_step": 4, "stopped": None}]
    assert [e["step"] for e in metrics["loss_curve"]] == [1, 2, 3, 4]

    # the same training on one node with two processes, uninterrupted
    one = make_job(tmp_path / "one", smollm2_manifest, work / "results" / "sft" / "toy.jsonl",
                   **{**settings, "cpu_processes": 2})
    launch_job(one, gpus=0, cpus=2, log_path=str(tmp_path / "one.log"))
    reference = json.loads(Path(one.metrics).read_text())
    assert [e["loss"] for e in metrics["loss_curve"]] == pytest.approx(
        [e["loss"] for e in reference["loss_curve"]])
    assert_same_adapter(adapter(work / "results/train/tiny/toy/seed0/adapter"),
                        adapter(one.adapter_dir))


def test_a_job_past_its_time_limit_saves_requeues_and_resumes_to_the_uninterrupted_adapter(
        snakemake, cluster, tmp_path, smollm2_manifest):
    """A one-minute time limit, training stopping 30 s before it: each allocation trains what it
    can, saves a checkpoint at the end of its step and requeues the job, until the last step."""
    settings = default_settings(max_steps=STEPS, batch_size=8, per_device_batch_size=4,
                                max_length=64, save_steps=100, logging_steps=1)
    resources = {"gpu": 0, "nodes": 1, "cpus_per_gpu": 1, "mem_mb": 2000, "runtime": 1,
                 "stop_before_end": 30, "slurm_partition": "cpu"}
    work = workdir(tmp_path, smollm2_manifest, settings, resources, examples=16)
    proc = snakemake(work, "--retries", "0")
    log = finish(proc, work, 600)
    assert proc.returncode == 0, log
    [job_id] = re.findall(r"submitted with SLURM jobid (\d+)", log)  # one job, requeued
    show = subprocess.run(["scontrol", "show", "job", job_id], env=cluster, capture_output=True,
                          text=True, check=True).stdout
    restarts = int(re.search(r"Restarts=(\d+)", show).group(1))
    assert restarts in (1, 2, 3), show

    metrics = json.loads((work / TARGET).read_text())
    runs = metrics["runs"]  # each allocation resumed where the one before stopped: no step twice
    assert len(runs) == restarts + 1
    assert [r["from_step"] for r in runs] == [0] + [r["to_step"] for r in runs[:-1]]
    assert [r["stopped"] for r in runs] == ["time limit"] * restarts + [None]
    assert runs[-1]["to_step"] == STEPS and metrics["resumed_from_step"] == runs[-1]["from_step"]
    assert [e["step"] for e in metrics["loss_curve"]] == list(range(1, STEPS + 1))

    uninterrupted = make_job(tmp_path / "one", smollm2_manifest,
                             work / "results" / "sft" / "toy.jsonl", **settings)
    reference = run(uninterrupted)
    assert [e["loss"] for e in metrics["loss_curve"]] == pytest.approx(
        [e["loss"] for e in reference["loss_curve"]])
    assert_same_adapter(adapter(work / "results/train/tiny/toy/seed0/adapter"),
                        adapter(uninterrupted.adapter_dir))
