"""`snakemake --profile profiles/slurm` against a real one-node SLURM cluster on this machine
(started by tests/slurm/cluster.sh), the sbatch line of a GPU job, and of a job on two nodes with
the srun line its launcher runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from restyle.io import read_jsonl
from restyle.records import MathItem, MCItem

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
CLUSTER = REPO / "tests" / "slurm" / "cluster.sh"
PROFILE = REPO / "profiles" / "slurm"
# Test-only overrides: check status 2 s after submitting (the profile says 40), and a short wait
# for outputs (one node, no network file system).
FAST = ["--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5"]
# The data rules and the model check (the later study stages need a teacher; not here).
DATA_TARGETS = ["resources/models/tiny/manifest.json", "resources/data/ruozhiba.jsonl",
                *(f"resources/data/mmlu/{r}.jsonl" for r in ("train", "dev", "test")),
                *(f"resources/data/gsm8k/{s}.jsonl" for s in ("train", "test"))]


def _cluster_up() -> bool:
    return shutil.which("sinfo") is not None and subprocess.run(
        ["sinfo", "-h"], capture_output=True, timeout=20).returncode == 0


@pytest.fixture(scope="session")
def slurm_cluster():
    """The one-node cluster: installed and started by cluster.sh, stopped at the end (unless it
    was already running before the tests, then it is left as found)."""
    if _cluster_up():
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("a SLURM cluster is started only as root (tests/slurm/cluster.sh start)")
    if not (shutil.which("slurmctld") or shutil.which("apt-get")):
        pytest.skip("no SLURM installed and no apt-get to install it")
    result = subprocess.run(["bash", str(CLUSTER), "start"], capture_output=True, text=True,
                            stdin=subprocess.DEVNULL, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    try:
        yield
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop"], timeout=60)


def run_profile(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "test-config.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [SNAKEMAKE, *DATA_TARGETS, "--profile", str(PROFILE), "-s", str(REPO / "Snakefile"),
           "-d", str(workdir), "--configfile", str(path), *FAST, *args]
    return subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=400,
                          stdin=subprocess.DEVNULL)


def slurm_jobs(result: subprocess.CompletedProcess) -> dict[str, str]:
    """Rule -> SLURM state of every job this snakemake run submitted, as slurmctld reports them.
    The plugin names every job after the run's id and puts `rule_<name>[_wildcards_<w>]` in its
    comment."""
    log = result.stdout + result.stderr
    [run_id] = re.findall(r"SLURM run ID: (\S+)", log)
    out = subprocess.run(["squeue", "--states=all", "--noheader", "--name", run_id,
                          "--format=%i|%k|%T"], capture_output=True, text=True, check=True).stdout
    jobs = {}
    for line in out.splitlines():
        jobid, comment, state = line.strip().split("|")
        assert f"has been submitted with SLURM jobid {jobid} " in log
        jobs[comment.removeprefix("rule_").split("_wildcards_")[0]] = state
    return jobs


def test_profile_runs_the_data_rules_on_slurm_and_resubmits_only_what_changed(slurm_cluster, tiny):
    workdir, config = tiny
    result = run_profile(workdir, config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert slurm_jobs(result) == {rule: "COMPLETED" for rule in (
        "prepare_model", "prepare_mmlu", "prepare_ruozhiba", "prepare_gsm8k")}
    data = workdir / "resources" / "data"
    counts = {r: len(read_jsonl(data / "mmlu" / f"{r}.jsonl", MCItem.from_dict))
              for r in ("train", "dev", "test")}
    assert counts == {"train": 4, "dev": 2, "test": 5}
    assert "test: 5 items, 1 subjects" in (workdir / "logs" / "prepare_mmlu.log").read_text()
    first = read_jsonl(data / "gsm8k" / "test.jsonl", MathItem.from_dict)
    assert len(first) == 2

    assert "Nothing to be done" in run_profile(workdir, config, "-n").stdout

    config["data"]["gsm8k"]["seed"] = 6  # a changed parameter resubmits that rule only
    plan = run_profile(workdir, config, "-n")
    assert plan.returncode == 0, plan.stderr
    assert "rule prepare_gsm8k:" in plan.stdout
    assert re.search(r"prepare_gsm8k\s+1\n", plan.stdout)  # the job-count table of the plan
    for other in ("prepare_mmlu", "prepare_ruozhiba", "prepare_model"):
        assert other not in plan.stdout

    rerun = run_profile(workdir, config)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert slurm_jobs(rerun) == {"prepare_gsm8k": "COMPLETED"}
    assert read_jsonl(data / "gsm8k" / "test.jsonl", MathItem.from_dict) != first
    assert "Nothing to be done" in run_profile(workdir, config, "-n").stdout


FAKE_SBATCH = """#!{python}
# Records its arguments (one JSON list per call) and refuses, so that nothing is submitted.
import json, os, sys
with open(os.environ["RESTYLE_SBATCH_RECORD"], "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
sys.exit("sbatch: error: recorded by the test, not submitted")
"""

# Only what the plugin asks before it submits: the account check and the MinJobAge lookup.
FAKE_TOOLS = {
    "sacctmgr": "#!/bin/sh\necho myproject\n",
    "scontrol": "#!/bin/sh\necho 'MinJobAge               = 300 sec'\n",
    "squeue": "#!/bin/sh\nexit 0\n",
}

# The training rule's resource names, fed from config `train.resources` as rules/train.smk does.
GPU_SNAKEFILE = """
configfile: "config.yaml"

rule all:
    input: "trained", "prepared"

rule train:
    output: "trained"
    threads: 4
    resources:
        **config["train"]["resources"],
    shell: "touch {output}"

rule prepare:
    output: "prepared"
    shell: "touch {output}"
"""


def recorded_sbatch(tmp_path: Path, work: Path, *args: str) -> dict[str, list[str]]:
    """`snakemake --profile profiles/slurm *args` in `work` with an sbatch that records its
    arguments and refuses every job: the sbatch argv of each job submitted, by the job's comment
    (rule_<rule>[_wildcards_<values>])."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in {"sbatch": FAKE_SBATCH.format(python=sys.executable), **FAKE_TOOLS}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    record = tmp_path / "sbatch.jsonl"
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
           "RESTYLE_SBATCH_RECORD": str(record)}
    result = subprocess.run([SNAKEMAKE, "--profile", str(PROFILE), "--retries", "0", *FAST, *args],
                            cwd=work, env=env, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode != 0  # every submission was refused
    calls = {}
    for line in record.read_text().splitlines() if record.exists() else []:
        argv = json.loads(line)
        calls[argv[argv.index("--comment") + 1]] = argv
    assert calls, result.stdout + result.stderr
    return calls


def flags(argv: list[str]) -> list[str]:
    """The sbatch options, without the job command itself."""
    return [a for a in argv if not a.startswith("--wrap")]


def test_sbatch_line_of_a_gpu_job_asks_for_exactly_its_gpus(tmp_path):
    """What the profile makes of the training rule's resources, read off the sbatch argv."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "Snakefile").write_text(GPU_SNAKEFILE)
    resources = {"gpu": 2, "cpus_per_gpu": 8, "mem_mb": 64000, "runtime": 240,
                 "slurm_partition": "gpu-a100", "slurm_account": "myproject",
                 "slurm_extra": "--exclusive"}
    (work / "config.yaml").write_text(yaml.safe_dump({"train": {"resources": resources}}))
    calls = recorded_sbatch(tmp_path, work)
    assert set(calls) == {"rule_train", "rule_prepare"}

    train = flags(calls["rule_train"])
    assert "--gpus=2" in train
    assert "--cpus-per-gpu=8" in train
    assert train[train.index("--mem") + 1] == "64000"
    assert train[train.index("-t") + 1] == "240"
    assert train[train.index("-p") + 1] == "gpu-a100"
    assert train[train.index("-A") + 1] == "myproject"
    assert "--exclusive" in train
    assert "--requeue" in train  # the profile's slurm-requeue
    # one task holding both GPUs (the launcher starts one process per GPU inside it)
    assert not [a for a in train if a.startswith(("--ntasks", "--cpus-per-task", "--gres"))]

    prepare = flags(calls["rule_prepare"])  # a CPU rule: the profile's default resources
    assert prepare[prepare.index("-p") + 1] == "cpu"
    assert prepare[prepare.index("--mem") + 1] == "4000"
    assert prepare[prepare.index("-t") + 1] == "60"
    assert "--ntasks=1" in prepare and "--cpus-per-task=1" in prepare
    assert not [a for a in prepare if a.startswith("--gpus")]


def test_a_two_gpu_job_runs_once_holding_both_gpus(slurm_cluster, tmp_path):
    """On the test cluster's stand-in GPUs: the job asks for 2 GPUs and runs once with both
    (plugins before 2.7.1 ran such a job twice, with one GPU each)."""
    (tmp_path / "Snakefile").write_text(GPU_SNAKEFILE.replace(
        'shell: "touch {output}"',
        'shell: "echo $SLURM_JOB_PARTITION $CUDA_VISIBLE_DEVICES $SLURM_GPUS_ON_NODE >> runs.txt;'
        ' touch {output}"', 1))
    resources = {"gpu": 2, "cpus_per_gpu": 1, "mem_mb": 500, "runtime": 10,
                 "slurm_partition": "gpu"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"train": {"resources": resources}}))
    result = subprocess.run([SNAKEMAKE, "--profile", str(PROFILE), *FAST, "trained"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert slurm_jobs(result) == {"train": "COMPLETED"}
    assert (tmp_path / "runs.txt").read_text().splitlines() == ["gpu 0,1 2"]


# ---------------------------------------------------------------- more than one node

TRAIN_TARGET = "results/train/smollm2-135m/toy/seed0/train_metrics.json"


@pytest.fixture(scope="module")
def two_node_sbatch(tmp_path_factory) -> list[str]:
    """The sbatch argv the profile makes of the real rule `train` (rules/train.smk) with
    train.resources.nodes 2 and 2 GPUs per node (its inputs stand in: nothing runs)."""
    tmp = tmp_path_factory.mktemp("two_nodes")
    work = tmp / "work"
    for path, text in {"results/sft/toy.jsonl": "{}\n",
                       "resources/models/smollm2-135m/manifest.json": "{}\n"}.items():
        (work / path).parent.mkdir(parents=True, exist_ok=True)
        (work / path).write_text(text)
    resources = {"gpu": 2, "nodes": 2, "cpus_per_gpu": 1, "mem_mb": 1000, "runtime": 10,
                 "slurm_partition": "gpu"}
    (work / "test-config.yaml").write_text(yaml.safe_dump({"train": {"resources": resources}}))
    calls = recorded_sbatch(tmp, work, TRAIN_TARGET, "-s", str(REPO / "Snakefile"), "-d", str(work),
                            "--configfile", str(REPO / "config" / "config.yaml"),
                            str(work / "test-config.yaml"))
    assert set(calls) == {"rule_train_wildcards_smollm2-135m_toy_0"}
    return calls.popitem()[1]


def test_sbatch_line_of_a_two_node_training_job_asks_for_gpus_per_node(two_node_sbatch):
    train = flags(two_node_sbatch)
    assert "--nodes=2" in train
    assert "--gres=gpu:2" in train and "--cpus-per-gpu=1" in train  # per node: 2 GPUs, 2 cores
    assert train[train.index("--mem") + 1] == "1000"  # per node
    assert train[train.index("-p") + 1] == "gpu"
    # not --gpus (the job's total, which SLURM may split 3 + 1), no task geometry: the job's
    # command runs once, on the first node, and starts the other nodes' launchers itself
    assert not [a for a in train if a.startswith(("--gpus", "--ntasks", "--cpus-per-task"))]


def test_the_test_cluster_takes_the_two_node_line_but_for_its_node_count(slurm_cluster,
                                                                        two_node_sbatch):
    """slurmctld checks the plugin's line (sbatch --test-only submits nothing): it refuses 2 nodes
    only because this cluster has one, and would start the same job on 1 node."""
    def test_only(argv):
        return subprocess.run(["sbatch", "--test-only", *argv], capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)

    two = test_only(two_node_sbatch)
    assert two.returncode != 0 and "Requested node configuration is not available" in two.stderr
    one = test_only([a.replace("--nodes=2", "--nodes=1") for a in two_node_sbatch])
    assert one.returncode == 0 and re.search(
        r"to start at .* using 2 processors on nodes \S+ in partition gpu", one.stderr), one.stderr


FAKE_SRUN = """#!{python}
# Records its arguments and what the launcher gives it in the environment; starts nothing.
import json, os, sys
with open(os.environ["RESTYLE_SRUN_RECORD"], "w") as f:
    json.dump({{"argv": sys.argv[1:], "PYTHONPATH": os.environ.get("PYTHONPATH")}}, f)
"""

# slurmctld's answer about job 4242 (no controller here); anything else goes to the real scontrol
FAKE_SCONTROL = """#!/bin/sh
if [ "$1 $2" = "show job" ]; then echo "JobId=4242 JobName=x NodeList=$RESTYLE_NODELIST"; exit; fi
exec {scontrol} "$@"
"""


def test_launcher_runs_one_launcher_per_node_through_srun(slurm_cluster, tmp_path, monkeypatch):
    """The job's launcher on a 2-node job (slurmctld's answer faked, srun recording): srun starts
    this launcher once per node with the rendezvous on the first node at the job's port; each
    of those checks its own node's GPUs before torchrun starts. The cluster: for scontrol, which
    expands the node list from its configuration."""
    from restyle import launch

    (tmp_path / "srun").write_text(FAKE_SRUN.format(python=sys.executable))
    (tmp_path / "scontrol").write_text(FAKE_SCONTROL.format(scontrol=shutil.which("scontrol")))
    for tool in ("srun", "scontrol"):
        (tmp_path / tool).chmod(0o755)
    record = tmp_path / "srun.json"
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv("RESTYLE_SRUN_RECORD", str(record))
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("RESTYLE_NODELIST", "gpu[07-08]")
    # what the plugin's one-node step sets; not the job's nodes
    monkeypatch.setenv("SLURM_JOB_NODELIST", "gpu07")
    monkeypatch.setenv("SLURM_NNODES", "1")
    entry = ["--job", "results/train/x/checkpoints/job.json"]
    port = launch.job_port()
    launch.run(entry, gpus=4, cpus=32, nodes=2)
    srun = json.loads(record.read_text())
    node = [sys.executable, "-m", "restyle.launch", "--gpus=4", "--cpus=32", "--cpu-processes=1",
            "--nodes=2", f"--rdzv-endpoint=gpu07:{port}", "--", *entry]
    assert srun["argv"] == ["--overlap", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1",
                            "--cpus-per-task=32", "--kill-on-bad-exit=1", "--label", *node]
    assert srun["PYTHONPATH"].split(os.pathsep)[0] == str(REPO / "src")
    # what each node's launcher then runs
    assert launch.command(4, f"gpu07:{port}", entry, nnodes=2) == [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=4",
        "--rdzv-backend=c10d", f"--rdzv-endpoint=gpu07:{port}", "--rdzv-id=restyle-4242",
        "--max-restarts=0", "-m", "restyle.train", *entry]
    # ... after counting its GPUs: none here
    result = subprocess.run(node, capture_output=True, text=True, timeout=120, env={
        **os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode != 0
    assert ("asked for 4 GPU(s) (config train.resources.gpu) but 0 are visible on "
            f"{socket.gethostname()}") in result.stderr

    with pytest.raises(launch.LaunchError, match=r"asked for 3 nodes .* SLURM job 4242 has 2"):
        launch.run(entry, gpus=4, cpus=32, nodes=3)
    monkeypatch.delenv("SLURM_JOB_ID")
    with pytest.raises(launch.LaunchError, match="runs outside a SLURM job"):
        launch.run(entry, gpus=4, cpus=32, nodes=2)


STEP_SNAKEFILE = """
configfile: "config.yaml"

rule train:
    output: "steps.txt"
    threads: 2
    resources:
        **config["resources"]
    shell: "{python} -c 'import os, sys; from restyle.launch import srun_command; "
           "os.execvp(\\"srun\\", srun_command(1, 2, sys.argv[1:]))' "
           "sh -c 'echo $SLURM_STEP_ID $SLURM_CPUS_PER_TASK $CUDA_VISIBLE_DEVICES' > {{output}}"
"""


def test_the_launchers_srun_line_runs_inside_the_plugins_job_step(slurm_cluster, tmp_path):
    """On the test cluster, a job asking for its GPUs per node (gres) as a multi-node training
    job does: the plugin runs the job's command in a step holding the node's CPUs and GPUs, and
    the launcher's srun line (for 1 node, all there is) still starts at once, with both."""
    (tmp_path / "Snakefile").write_text(STEP_SNAKEFILE.format(python=sys.executable))
    resources = {"gres": "gpu:2", "cpus_per_gpu": 1, "mem_mb": 500, "runtime": 10,
                 "slurm_partition": "gpu"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"resources": resources}))
    result = subprocess.run([SNAKEMAKE, "--profile", str(PROFILE), *FAST], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    assert slurm_jobs(result) == {"train": "COMPLETED"}
    # task 0 of the second step of the job, 2 cores, both GPUs
    assert (tmp_path / "steps.txt").read_text().splitlines() == ["0: 1 2 0,1"]
