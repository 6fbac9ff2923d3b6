"""A finished run stays current until code or prompt text it ran changes, and then exactly the
jobs that ran it (and what reads their outputs) rerun: a real study B run on a copy of the
project, then dry runs after edits to the copy's library."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from chat_server import ChatServer  # noqa: E402
from conftest import REPO  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")
PROJECT = ("Snakefile", "rules", "scripts", "config", "src", "report", "envs")
VARIANTS = ["human", "teacher", "teacher_rewrite"]
TARGETS = [*(f"results/sft/studyB-gsm8k-{v}.jsonl" for v in VARIANTS), "results/study_b/stats.csv",
           "results/familiarity/tiny/base/summary.csv"]
DOWNSTREAM = {"study_b_stats": 1, "familiarity": 1}


def copy_project(dest: Path) -> Path:
    dest.mkdir()
    for name in PROJECT:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy2(source, dest / name)
    return dest


def test_a_library_edit_reruns_exactly_the_jobs_that_run_it(tmp_path, smollm2_manifest):
    project = copy_project(tmp_path / "project")
    variants_py = project / "src" / "restyle" / "study_b" / "variants.py"
    original = variants_py.read_text()
    work = tmp_path / "work"
    # the jobs import the copy's library, as the Snakefile does (rules/common.smk)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(project / "src"), *filter(None, [os.environ.get("PYTHONPATH")])])}

    def snakemake(*args):
        cmd = [SNAKEMAKE, *TARGETS, "-s", str(project / "Snakefile"), "-d", str(work),
               "--cores", "2", "--configfile", str(config_path), *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout + result.stderr

    def planned(old: str = "", new: str = "") -> tuple[dict[str, int], set[str]]:
        """The jobs (count per rule) and study B variants a dry run plans with `old` replaced by
        `new` in variants.py, which is restored afterwards."""
        assert not old or original.count(old) == 1
        variants_py.write_text(original.replace(old, new) if old else original)
        try:
            plan = snakemake("-n")
        finally:
            variants_py.write_text(original)
        if "Nothing to be done" in plan:
            return {}, set()
        table = plan.split("Job stats:")[1].split("total")[0]
        jobs = {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
        return jobs, set(re.findall(r"label=(\w+)", plan))

    with ChatServer() as server:
        config = {
            "models": {"tiny": {"source": str(smollm2_manifest.parent / "hf")}},
            "target_models": ["tiny"],
            "teachers": {"echo": {"backend": "openai", "model": "m", "base_url": server.url,
                                  "max_retries": 0},
                         "target": {"backend": "local", "model_key": "tiny"},
                         "local": {"backend": "local", "model_key": "tiny"}},
            "data": {"gsm8k": {"per_split": {"train": 2, "test": 1}, "seed": 5}},
            "study_b": {"tasks": ["gsm8k"], "teacher": "echo", "items": 2, "variants": VARIANTS,
                        "target_teachers": {"tiny": "target"},
                        "generation": {"max_tokens": 8}},
        }
        config_path = tmp_path / "config.yaml"
        config_path.write_text(yaml.safe_dump(config))
        snakemake()
        assert planned() == ({}, set())

        # a prompt template: only the variants sending it
        rewrite = "Rewrite the answer below in your own words."
        plainly = "Rewrite the answer below plainly."
        assert planned(rewrite, plainly) == ({"study_b_variant": 1, **DOWNSTREAM},
                                             {"teacher_rewrite"})
        # library code the variants run: every variant
        assert planned("\ndef count_rows(", "\ndef _new():\n    pass\n\n\ndef count_rows(") == (
            {"study_b_variant": len(VARIANTS), **DOWNSTREAM}, set(VARIANTS))
        # a comment, a docstring, layout: nothing
        assert planned("\ndef count_rows(", "\n# why\ndef  count_rows(") == ({}, set())
        assert planned("Study B's response variants", "Study B: variants") == ({}, set())

        # the checkpoint really reruns on its changed param, and is current afterwards
        variants_py.write_text(original.replace(rewrite, plainly))
        rerun = snakemake()
        assert set(re.findall(r"label=(\w+)", rerun)) == {"teacher_rewrite"}
        assert "Nothing to be done" in snakemake("-n")


SLOW_SNAKEFILE = """
rule slow:
    output: "done.txt"
    shell: "echo partial > {output}; touch started; sleep $(cat delay); echo done > {output}"
"""


def make_run(snakemake_args: str, **popen) -> subprocess.Popen:
    """`make run` as the README gives it, with this environment's snakemake (make's own set-up
    step skipped: -o)."""
    return subprocess.Popen(
        ["make", "-s", "-C", str(REPO), "-o", f"{sys.prefix}/.installed", "run",
         f"VENV={sys.prefix}", f"SNAKEMAKE_ARGS={snakemake_args}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        **popen)


def test_after_kill_9_make_run_names_the_stale_lock_and_then_redoes_the_cut_off_job(tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (tmp_path / "Snakefile").write_text(SLOW_SNAKEFILE)
    (workdir / "delay").write_text("60")
    args = f"-s {tmp_path / 'Snakefile'} -d {workdir}"
    killed = make_run(args, start_new_session=True)
    deadline = time.time() + 120
    while not (workdir / "started").exists():
        assert killed.poll() is None and time.time() < deadline, killed.communicate()
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)  # make, snakemake and the job: a lost login node
    killed.communicate()
    (workdir / "delay").write_text("0")

    again = make_run(args)
    _, err = again.communicate(timeout=120)
    assert again.returncode != 0
    [hint] = [line for line in err.splitlines() if line.startswith("restyle:")]
    assert hint == (f"restyle: the lock on {workdir} was left by a snakemake that is gone "
                    "(killed?); if none runs there on another machine either, run: make run "
                    f"SNAKEMAKE_ARGS='{args} --unlock' && make run SNAKEMAKE_ARGS='{args}'")
    # what it says to run: unlock, then the same command, which redoes the cut-off job
    for step in (f"{args} --unlock", args):
        done = make_run(step)
        out, err = done.communicate(timeout=120)
        assert done.returncode == 0, err[-3000:]
        assert "restyle:" not in err
    assert (workdir / "done.txt").read_text() == "done\n"
