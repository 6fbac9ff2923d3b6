"""Starting a training job the same way on a laptop, on a SLURM GPU node and on several nodes.

One launcher: `torchrun` (as `python -m torch.distributed.run`) on a single node with one
process per GPU the job was given (or `train.cpu_processes` processes on CPU, gloo backend).
This is `torchrun --standalone`, except that the rendezvous port is chosen here: derived from
SLURM_JOB_ID (so two jobs sharing a node never meet on the default port 29500) and checked
free, or any free port outside SLURM. DeepSpeed, when configured, runs inside these processes
through transformers' Trainer, never through DeepSpeed's own launcher (which SLURM's
environment confuses into making every process rank 0).

On N > 1 nodes (config train.resources.nodes; SLURM only) the job's command runs on the first
node, inside the one-task step Snakemake's SLURM plugin starts it in, whose environment names
that step, not the job: the job's nodes come from slurmctld (`job_hosts`). It starts this launcher
once per node with `srun --overlap` (the plugin's step holds the first node's CPUs and GPUs;
without --overlap the second step would wait for them forever), and each per-node launcher runs
`torchrun --nnodes=N` with the c10d rendezvous on the first node's hostname and the job's port.
torchrun numbers the processes across the nodes (global RANK); NCCL joins them on GPUs, gloo on
CPU. The per-node command is `node_command`, the srun line `srun_command`.

Before anything starts, the GPUs each node can see are counted: a job that asked for N GPUs
(per node) and sees another number stops with a message saying so.

torchrun starts its workers in sessions of their own, out of reach of a signal to the job's
process group; so on Linux each process is tied to its parent by the parent-death signal
(`die_with_parent`): torchrun to this launcher, each worker to torchrun. However the launcher
ends, kill -9 included, the workers end within seconds. On several nodes srun is tied to the
job's launcher the same way; srun passes SIGTERM to every node's launcher, and SLURM ends every
step of a job that ends, so each node's launcher, and through it torchrun and the workers, ends
with the job.

Command line (what the Snakemake rule does, by hand):
    python -m restyle.launch --gpus 2 --cpus 16 --log train.log -- --job job.json
    python -m restyle.launch --nodes 2 --gpus 4 --cpus 32 --log train.log -- --job job.json
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import shlex
import signal
import socket
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

ENTRY_MODULE = "restyle.train"  # what each launched process runs: `python -m restyle.train`
PORT_BASE, PORT_SPAN = 20000, 20000  # job-derived ports fall in 20000..39999
LAUNCHER_PID = "RESTYLE_LAUNCHER_PID"  # tells a worker whose child its torchrun must be
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


class LaunchError(RuntimeError):
    """The job cannot start as asked (GPU or node count, ports); the message says what to change."""


def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # after "pid (name)": state, then ppid


def die_with_parent(sig: int, parent: int | None = None, grandparent: int | None = None) -> None:
    """Have Linux send `sig` to this process when its parent ends (prctl PR_SET_PDEATHSIG; nothing
    on other systems). A parent that ended before this call sends nothing, so exit at once if the
    parent is no longer `parent` (default: the one seen just before) or its own parent is not
    `grandparent`. Safe as a Popen preexec_fn."""
    if _prctl is None:
        return
    expected = os.getppid() if parent is None else parent
    if _prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    now = os.getppid()
    if now != expected or (grandparent is not None and _parent_of(now) != grandparent):
        os._exit(1)


def visible_gpus() -> int:
    """GPUs this process can use (CUDA_VISIBLE_DEVICES applied), 0 without CUDA."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_gpus(requested: int, visible: int | None = None) -> None:
    """Stop unless this node sees exactly the GPUs the job asked for per node (0: a CPU job)."""
    if requested <= 0:
        return
    visible = visible_gpus() if visible is None else visible
    if visible != requested:
        where = os.environ.get("CUDA_VISIBLE_DEVICES")
        seen = f"CUDA_VISIBLE_DEVICES={where!r}" if where is not None else "CUDA_VISIBLE_DEVICES unset"
        slurm = (f", SLURM job {os.environ['SLURM_JOB_ID']}" if "SLURM_JOB_ID" in os.environ else "")
        raise LaunchError(
            f"training asked for {requested} GPU(s) (config train.resources.gpu) but "
            f"{visible} {'is' if visible == 1 else 'are'} visible on {socket.gethostname()} "
            f"({seen}{slurm}). Run it where "
            f"{requested} GPU(s) are given to the job (e.g. `snakemake --profile profiles/slurm`), "
            "set train.resources.gpu to the number this machine has, or 0 to train on CPU.")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def job_port(env: dict | None = None) -> int:
    """A rendezvous port unique to this job: from SLURM_JOB_ID when there is one (and free), else
    any free port. Never 29500, the default every other launch on the node would take."""
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID", "")
    if job.isdigit():
        for offset in range(8):  # the job's own port, or the next ones if a stranger holds it
            port = PORT_BASE + (int(job) + offset * 7919) % PORT_SPAN
            if _port_free(port):
                return port
    return free_port()


def slurm_job(job_id: str) -> dict[str, str]:
    """The fields of `scontrol show job --oneliner` for a SLURM job (NodeList, EndTime, ...), as
    slurmctld knows them now: inside a rule's job the one source of the allocation's facts, as
    Snakemake's jobstep plugin drops every SLURM_* variable but the job id before its srun."""
    out = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise LaunchError(f"scontrol show job {job_id} failed: {out.stderr.strip()}")
    # "Key=Value Key=Value ..."; values never hold spaces but for Command/WorkDir-like paths,
    # which come after the fields read here and are not used
    return dict(f.split("=", 1) for f in out.stdout.split() if "=" in f)


def job_hosts(nodes: int, env: dict | None = None) -> list[str]:
    """The hostnames of this SLURM job's nodes, first node first (`scontrol show hostnames` of
    the job's NodeList, asked of slurmctld), checked to be `nodes` of them. Not from the
    environment: in the one-node step Snakemake's jobstep plugin runs the rule in, after it
    dropped the job's SLURM_* variables, srun sets SLURM_JOB_NODELIST to that step's node (and
    SLURM_NNODES counts the step's nodes either way)."""
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID")
    if not job:
        raise LaunchError(
            f"training asked for {nodes} nodes (config train.resources.nodes) but runs outside a "
            "SLURM job. Run it with `snakemake --profile profiles/slurm`, or set "
            "train.resources.nodes to 1.")
    nodelist = slurm_job(job)["NodeList"]
    hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                           text=True, check=True).stdout.split()
    if len(hosts) != nodes:
        raise LaunchError(
            f"training asked for {nodes} nodes (config train.resources.nodes) but SLURM job "
            f"{job} has {len(hosts)} ({nodelist}).")
    return hosts


def job_end(env: dict | None = None) -> float | None:
    """When this SLURM job reaches its time limit (epoch seconds; slurmctld's EndTime of the
    running job), None outside SLURM or without a limit."""
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID")
    if not job:
        return None
    end = slurm_job(job).get("EndTime", "Unknown")
    if not end[:1].isdigit():  # Unknown, or no time limit
        return None
    import datetime

    return datetime.datetime.fromisoformat(end).timestamp()  # slurmctld's local time


def requeue(env: dict | None = None) -> bool:
    """Put this SLURM job back in the queue (`scontrol requeue`): SLURM ends it now and starts it
    again, same job id, when resources are free. False outside SLURM or when SLURM refuses
    (a job submitted with --no-requeue)."""
    env = os.environ if env is None else env
    job = env.get("SLURM_JOB_ID")
    if not job:
        return False
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode != 0:
        log.warning("scontrol requeue %s: %s", job, result.stderr.strip())
    return result.returncode == 0


def command(nproc: int, endpoint: str, entry_args: list[str], nnodes: int = 1,
            python: str = sys.executable) -> list[str]:
    """torchrun on one node of `nnodes`: `nproc` processes, c10d rendezvous at `endpoint`
    (host:port; with nnodes 1, 127.0.0.1 and a free port: `torchrun --standalone`)."""
    return [python, "-m", "torch.distributed.run", f"--nnodes={nnodes}",
            f"--nproc-per-node={nproc}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
            # the same on every node of the job (the endpoint's port tells jobs apart)
            f"--rdzv-id=restyle-{os.environ.get('SLURM_JOB_ID', 'local')}",
            "--max-restarts=0", "-m", ENTRY_MODULE, *entry_args]


def node_command(entry_args: list[str], gpus: int, cpus: int, cpu_processes: int, nodes: int,
                 endpoint: str, python: str = sys.executable) -> list[str]:
    """What runs on each node of a multi-node job: this launcher, for its node's part (the GPU
    check, then torchrun with `--nnodes=nodes` and the rendezvous at `endpoint`)."""
    return [python, "-m", "restyle.launch", f"--gpus={gpus}", f"--cpus={cpus}",
            f"--cpu-processes={cpu_processes}", f"--nodes={nodes}", f"--rdzv-endpoint={endpoint}",
            "--", *entry_args]


def srun_command(nodes: int, cpus: int, node_cmd: list[str]) -> list[str]:
    """srun, inside the job, running `node_cmd` once on each of its `nodes` nodes with `cpus`
    cores. Every count is explicit: the step this runs in sets SLURM_NTASKS, SLURM_NNODES and
    SLURM_CPUS_PER_TASK for itself, and srun would take them as defaults. GPUs are not asked
    for: a step gets all of the job's GPUs on each node (--gres per node, as submitted)."""
    return ["srun", "--overlap", f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1",
            f"--cpus-per-task={cpus}",
            "--kill-on-bad-exit=1",  # one node failing ends the others, not a rendezvous timeout
            "--label",  # each output line starts with the node's task number
            *node_cmd]


def srun_env(env) -> dict[str, str]:
    """`env` for an srun that starts a step across the whole job from inside another step: the
    step's SLURM_* variables describe that step (in the plugin's, one node: SLURM_JOB_NODELIST,
    SLURM_NNODES), and srun would take them for the job's allocation ("Only allocated 1 nodes
    asked for 2"); without them srun asks slurmctld for the allocation of SLURM_JOB_ID."""
    keep = {"SLURM_JOB_ID", "SLURM_CONF"}
    return {k: v for k, v in env.items() if not k.startswith("SLURM_") or k in keep}


def _with_restyle_path(env: dict[str, str]) -> dict[str, str]:
    """`env` with the folder this restyle was imported from first on PYTHONPATH, so that every
    process launched imports the same restyle (a checkout without install)."""
    src = str(Path(__file__).resolve().parents[1])
    return {**env, "PYTHONPATH": os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)}


def child_env(gpus: int, nproc: int, cpus: int, port: int) -> dict[str, str]:
    env = dict(os.environ)
    if gpus <= 0:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU job trains on CPU even where a GPU is present
    # torchrun sets 1 thread per process when it starts several; share the job's cores instead
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpus // max(1, nproc))))
    env["MASTER_PORT"] = str(port)  # for tools that read it; torchrun sets it for the workers
    env[LAUNCHER_PID] = str(os.getpid())
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return _with_restyle_path(env)


def _supervise(cmd: list[str], env: dict[str, str], log_path: str | os.PathLike | None) -> None:
    """Run `cmd` (torchrun, or srun) tied to this process: it ends when this process ends,
    however that happens, and a SIGTERM or SIGINT here is passed on to it. Output to `log_path`
    (appended) or stderr; CalledProcessError when it fails."""
    out = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115
    launcher = os.getpid()
    try:
        # the preexec_fn makes system calls only, safe after fork; SIGTERM: torchrun stops its
        # workers, srun passes it to every node's launcher, as for a forwarded signal
        proc = subprocess.Popen(cmd, env=env, stdout=out or sys.stderr, stderr=subprocess.STDOUT,
                                preexec_fn=lambda: die_with_parent(signal.SIGTERM, launcher))

        def forward(signum, _frame):  # SLURM preemption / Snakemake stop: let torchrun stop workers
            proc.send_signal(signum)

        previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            rc = proc.wait()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    finally:
        if out:
            out.close()
    if rc != 0:
        raise subprocess.CalledProcessError(rc, cmd)


def run(entry_args: list[str], gpus: int, cpus: int, cpu_processes: int = 1,
        log_path: str | os.PathLike | None = None, nodes: int = 1,
        endpoint: str | None = None) -> None:
    """Run `restyle.train` under torchrun: one process per GPU (gpus > 0, per node) or
    `cpu_processes` on CPU, on this node or on each of `nodes` SLURM nodes. Output of every
    process goes to `log_path` (appended) or stderr.

    nodes > 1 without `endpoint`: this is the job's launcher; it starts `node_command` on every
    node through srun, the rendezvous on the first node at the job's port. With `endpoint`
    (host:port): this is one node's launcher. Raises LaunchError on a GPU or node count
    mismatch, CalledProcessError when training fails."""
    if nodes > 1 and endpoint is None:
        hosts = job_hosts(nodes)
        # the port is checked free on this node: the first, as a rule (SLURM runs the batch
        # script there and takes a one-node step's node from the front of the job's list)
        endpoint = f"{hosts[0]}:{job_port()}"
        cmd = srun_command(nodes, cpus, node_command(entry_args, gpus, cpus, cpu_processes,
                                                     nodes, endpoint))
        log.info("launching on %d nodes (%s), rendezvous %s: %s", nodes, " ".join(hosts),
                 endpoint, shlex.join(cmd))
        _supervise(cmd, _with_restyle_path(srun_env(os.environ)), log_path)
        return
    check_gpus(gpus)
    nproc = gpus if gpus > 0 else max(1, cpu_processes)
    endpoint = endpoint or f"127.0.0.1:{job_port()}"
    cmd = command(nproc, endpoint, entry_args, nnodes=nodes)
    log.info("launching %d process(es) on %s, rendezvous %s: %s", nproc,
             f"{gpus} GPU(s)" if gpus > 0 else "CPU (gloo)", endpoint, shlex.join(cmd))
    _supervise(cmd, child_env(gpus, nproc, cpus, int(endpoint.rsplit(":", 1)[1])), log_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=0,
                        help="GPUs the job was given, per node (0 = CPU)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1,
                        help="CPU cores of the job, per node")
    parser.add_argument("--cpu-processes", type=int, default=1, help="processes on CPU (gloo)")
    parser.add_argument("--log", default=None, help="append every process's output here")
    parser.add_argument("--nodes", type=int, default=1,
                        help="SLURM nodes of the job (> 1: start this launcher on each via srun)")
    parser.add_argument("--rdzv-endpoint", default=None,
                        help="host:port of the rendezvous: run this node's part of a --nodes job")
    parser.add_argument("entry_args", nargs=argparse.REMAINDER,
                        help="after --: arguments for restyle.train (e.g. --job job.json)")
    args = parser.parse_args(argv)
    entry = args.entry_args[1:] if args.entry_args[:1] == ["--"] else args.entry_args
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(entry, args.gpus, args.cpus, args.cpu_processes, args.log, args.nodes,
            args.rdzv_endpoint)
    except LaunchError as e:
        sys.exit(f"error: {e}")
    except subprocess.CalledProcessError as e:
        sys.exit(f"error: training failed (exit status {e.returncode})"
                 + (f", see {args.log}" if args.log else ""))


if __name__ == "__main__":
    main()
