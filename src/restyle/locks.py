"""After `make run` fails: if Snakemake's lock on the work folder was left by a snakemake that is
gone (killed with -9, a lost login node), say in one line what to run.

`python -m restyle.locks $(SNAKEMAKE_ARGS)` (the Makefile's `run` calls it when snakemake fails)
prints the line and exits 0; it prints nothing when there is no lock or a snakemake process of
this machine still works in the folder. It never unlocks: a snakemake on another machine of a
shared file system cannot be seen from here, so the line says to check that first.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path


def work_folder(args: list[str]) -> Path:
    """The folder snakemake works in: its -d/--directory, else the current one."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-d", "--directory", default=".")
    return Path(parser.parse_known_args(args)[0].directory).resolve()


def _ancestors() -> set[int]:
    """This process and its parents (make's shell names snakemake too)."""
    pids, pid = set(), os.getpid()
    while pid > 1:
        pids.add(pid)
        # the parent is the field after the parenthesised name, which may hold spaces
        pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return pids


def snakemake_alive(folder: Path) -> bool:
    """Whether a process of this machine works in `folder` as snakemake or one of its jobs."""
    mine = _ancestors()
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cwd = Path(os.readlink(proc / "cwd"))
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:  # gone meanwhile, or another user's
            continue
        if cwd == folder and b"snakemake" in cmdline and int(proc.name) not in mine:
            return True
    return False


def stale_lock_hint(args: list[str]) -> str | None:
    folder = work_folder(args)
    if not any((folder / ".snakemake" / "locks").glob("*.lock")) or snakemake_alive(folder):
        return None
    unlock = shlex.join([*args, "--unlock"])
    return (f"restyle: the lock on {folder} was left by a snakemake that is gone (killed?); if "
            f"none runs there on another machine either, run: make run "
            f"SNAKEMAKE_ARGS={shlex.quote(unlock)} && make run"
            + (f" SNAKEMAKE_ARGS={shlex.quote(shlex.join(args))}" if args else ""))


if __name__ == "__main__":
    hint = stale_lock_hint(sys.argv[1:])
    if hint:
        print(hint, file=sys.stderr)
