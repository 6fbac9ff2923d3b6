"""Exit 0 means the study is complete: real Snakemake runs where a teacher cannot work (the stage
fails, writes no SFT set and keeps what it learnt) and where sets come out empty (the report and
the console name every missing arm)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from chat_server import ChatServer  # noqa: E402
from test_teacher import closed_port  # noqa: E402
from test_workflow import SNAKEMAKE, snakemake  # noqa: E402

from conftest import REPO  # noqa: E402

PLAIN = "results/sft/studyA-teacher_plain.jsonl"


def study_a_config(tiny, teacher: dict) -> dict:
    _, config = tiny
    return {**config, "teachers": {"api": {"backend": "openai", "model": "m", **teacher},
                                   "local": {"backend": "local", "model_key": "tiny"},
                                   "target": {"backend": "local", "model_key": "tiny"}},
            "study_a": {"teacher": "api", "rewrite": {"items_per_set": 4, "max_tokens": 16}}}


def test_a_dead_teacher_fails_the_stage_fast_and_writes_no_set(tiny):
    workdir, _ = tiny
    url = f"http://127.0.0.1:{closed_port()}/v1"
    config = study_a_config(tiny, {"base_url": url})  # default retries: 6 with backoff
    result = snakemake(workdir, PLAIN, "--show-failed-logs", config=config)
    assert result.returncode != 0
    console = result.stdout + result.stderr
    assert f"teacher 'api' (model m at {url}): cannot connect" in console  # the log, shown
    assert not (workdir / PLAIN).exists()
    assert "Nothing to be done" not in snakemake(workdir, "-n", PLAIN, config=config).stdout


def test_a_failed_stage_keeps_its_failures_and_the_rerun_asks_only_for_them(tiny):
    workdir, _ = tiny
    with ChatServer() as probe:  # learn the four prompts the stage sends
        config = study_a_config(tiny, {"base_url": probe.url, "max_retries": 0})
        assert snakemake(workdir, PLAIN, config=config).returncode == 0
        prompts = list(probe.requests)
    assert len(prompts) == 4
    (workdir / PLAIN).unlink()
    (workdir / "resources/teacher/cache.sqlite").unlink()

    with ChatServer({prompts[1]: ["500"]}) as server:  # one of four fails: 25 % > 5 %
        config = study_a_config(tiny, {"base_url": server.url, "max_retries": 0})
        result = snakemake(workdir, PLAIN, config=config)
        assert result.returncode != 0 and not (workdir / PLAIN).exists()
        log = (workdir / "logs/study_a/rewrite/teacher_plain.log").read_text()
        assert "1 of 4 items failed after every retry (25%), over the failure budget of 5%" in log
        assert "teachers.api.max_failed_share" in log
        failures = (workdir / "logs/study_a/rewrite/teacher_plain.failures.jsonl").read_text()
        [failure] = [json.loads(x) for x in failures.splitlines()]
        assert failure["error"].endswith("gave up after 1 attempts, last: Error code: 500 - "
                                         "scripted 500")

        sent = len(server.requests)
        assert snakemake(workdir, PLAIN, config=config).returncode == 0
        assert server.requests[sent:] == [prompts[1]]  # the three answers came from the cache
        assert (workdir / PLAIN).exists()


def test_missing_arms_are_named_in_the_report_and_on_the_console(tiny):
    """Study A's rule set and study B's teacher set come out empty (an echoing teacher gives no
    parsable rewrite and no right answer); the rest is trained, evaluated and reported."""
    workdir, config = tiny
    with ChatServer() as server:
        config = {**study_a_config(tiny, {"base_url": server.url, "max_retries": 0}),
                  "study_a": {"teacher": "api", "baselines": ["original"],
                              "rules": {"fixed": [{"name": "Exaggeration", "description":
                                                   "Push a quantity to an absurd extreme.",
                                                   "instructions": "Exaggerate one number."}]},
                              "rewrite": {"items_per_set": 2, "max_tokens": 16}},
                  "study_b": {"tasks": ["gsm8k"], "variants": ["human", "teacher"],
                              "teacher": "api", "items": 2},
                  "train": {"max_steps": 1, "batch_size": 2, "per_device_batch_size": 2,
                            "max_length": 128},
                  "eval": {"tasks": ["mmlu"]},
                  "report": {"bootstrap_samples": 100}}
        result = snakemake(workdir, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("studyA-exaggeration", "studyB-gsm8k-teacher"):
        assert f"restyle: missing arm: SFT set {name} is empty" in result.stdout + result.stderr
    report = workdir / "results/report"
    missing = list(csv.DictReader((report / "missing_arms.csv").open()))
    assert [(m["study"], m["arm"], m["seeds"]) for m in missing] == [
        ("A", "studyA-exaggeration", "0"), ("B", "studyB-gsm8k-teacher", "0")]
    assert missing[0]["reason"].startswith("empty set: the quality gate dropped all 2 items (")
    assert missing[1]["reason"].startswith("empty set: the filters dropped all 2 questions (")
    trained = {p.parent.name for p in (workdir / "results/train/tiny").glob("*/seed0")}
    assert trained == {"studyA-original", "studyB-gsm8k-human"}

    html = workdir / "report.html"
    built = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                            "--configfile", str(workdir / "test-config.yaml"),
                            "--report", str(html)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    page = html.read_text()
    assert "Missing arms" in page and "studyA-exaggeration" in page
    assert page.index("Missing arms") < page.index("studyB-gsm8k-teacher")
