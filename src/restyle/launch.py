"""Starting a training job the same way on a laptop and on a SLURM GPU node.

One launcher: `torchrun` (as `python -m torch.distributed.run`) on a single node with one
process per GPU the job was given (or `train.cpu_processes` processes on CPU, gloo backend).
This is `torchrun --standalone`, except that the rendezvous port is chosen here: derived from
SLURM_JOB_ID (so two jobs sharing a node never meet on the default port 29500) and checked
free, or any free port outside SLURM. DeepSpeed, when configured, runs inside these processes
through transformers' Trainer, never through DeepSpeed's own launcher (which SLURM's
environment confuses into making every process rank 0).

Before anything starts, the GPUs the job can see are counted: a job that asked for N GPUs and
sees another number stops with a message saying so.

torchrun starts its workers in sessions of their own, out of reach of a signal to the job's
process group; so on Linux each process is tied to its parent by the parent-death signal
(`die_with_parent`): torchrun to this launcher, each worker to torchrun. However the launcher
ends, kill -9 included, the workers end within seconds.

Command line (what the Snakemake rule does, by hand):
    python -m restyle.launch --gpus 2 --cpus 16 --log train.log -- --job job.json
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
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
    """The job cannot start as asked (GPU count, ports); the message says what to change."""


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
    """Stop unless the job sees exactly the GPUs it asked for (0 means a CPU job)."""
    if requested <= 0:
        return
    visible = visible_gpus() if visible is None else visible
    if visible != requested:
        where = os.environ.get("CUDA_VISIBLE_DEVICES")
        seen = f"CUDA_VISIBLE_DEVICES={where!r}" if where is not None else "CUDA_VISIBLE_DEVICES unset"
        slurm = (f", SLURM job {os.environ['SLURM_JOB_ID']}" if "SLURM_JOB_ID" in os.environ else "")
        raise LaunchError(
            f"training asked for {requested} GPU(s) (config train.resources.gpu) but "
            f"{visible} {'is' if visible == 1 else 'are'} visible ({seen}{slurm}). Run it where "
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


def command(nproc: int, port: int, entry_args: list[str], python: str = sys.executable) -> list[str]:
    """`torchrun --standalone --nproc-per-node=N` with the rendezvous on `port`."""
    return [python, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={nproc}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}",
            f"--rdzv-id=restyle-{os.environ.get('SLURM_JOB_ID', os.getpid())}-{port}",
            "--max-restarts=0", "-m", ENTRY_MODULE, *entry_args]


def child_env(gpus: int, nproc: int, cpus: int, port: int) -> dict[str, str]:
    env = dict(os.environ)
    if gpus <= 0:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU job trains on CPU even where a GPU is present
    # torchrun sets 1 thread per process when it starts several; share the job's cores instead
    env.setdefault("OMP_NUM_THREADS", str(max(1, cpus // max(1, nproc))))
    env["MASTER_PORT"] = str(port)  # for tools that read it; torchrun sets it for the workers
    env[LAUNCHER_PID] = str(os.getpid())
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    # the workers import restyle from the same place this process did (a checkout without install)
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def run(entry_args: list[str], gpus: int, cpus: int, cpu_processes: int = 1,
        log_path: str | os.PathLike | None = None) -> None:
    """Check the GPUs, then run `restyle.train` under torchrun: one process per GPU (gpus > 0) or
    `cpu_processes` on CPU. Output of every process goes to `log_path` (appended) or stderr.
    Raises LaunchError on a GPU mismatch, CalledProcessError when training fails."""
    check_gpus(gpus)
    nproc = gpus if gpus > 0 else max(1, cpu_processes)
    port = job_port()
    cmd = command(nproc, port, entry_args)
    log.info("launching %d process(es) on %s, rendezvous port %d: %s", nproc,
             f"{gpus} GPU(s)" if gpus > 0 else "CPU (gloo)", port, " ".join(cmd))
    out = open(log_path, "a", buffering=1) if log_path else None  # noqa: SIM115
    launcher = os.getpid()
    try:
        # torchrun ends with this process, however it ends (the preexec_fn makes system calls
        # only, safe after fork); SIGTERM: torchrun stops its workers, as for a forwarded signal
        proc = subprocess.Popen(cmd, env=child_env(gpus, nproc, cpus, port),
                                stdout=out or sys.stderr, stderr=subprocess.STDOUT,
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", type=int, default=0, help="GPUs the job was given (0 = CPU)")
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="CPU cores of the job")
    parser.add_argument("--cpu-processes", type=int, default=1, help="processes on CPU (gloo)")
    parser.add_argument("--log", default=None, help="append every process's output here")
    parser.add_argument("entry_args", nargs=argparse.REMAINDER,
                        help="after --: arguments for restyle.train (e.g. --job job.json)")
    args = parser.parse_args(argv)
    entry = args.entry_args[1:] if args.entry_args[:1] == ["--"] else args.entry_args
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        run(entry, args.gpus, args.cpus, args.cpu_processes, args.log)
    except LaunchError as e:
        sys.exit(f"error: {e}")
    except subprocess.CalledProcessError as e:
        sys.exit(f"error: training failed (exit status {e.returncode})"
                 + (f", see {args.log}" if args.log else ""))


if __name__ == "__main__":
    main()
