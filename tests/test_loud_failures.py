"""Exit 0 means the study is complete: real Snakemake runs where a teacher cannot work (the stage
fails, writes no SFT set and keeps what it learnt) and where sets come out empty (the report and
the console name every missing arm)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

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


def test_first_page_names_missing_arms_and_the_positive_control_tells_a_deaf_run(tiny):
    """A real run to the report: study A's rule set and study B's teacher set come out empty (an
    echoing teacher gives no parsable rewrite and no right answer) and are named; the positive
    control is trained, evaluated and reported, and its gain is significant (most of six worked
    solutions learnt by heart). Then the control's
    adapter is made a no-op (as if evaluation ignored it): its verdict turns into a warning."""
    workdir, config = tiny
    with ChatServer() as server:
        config = {**study_a_config(tiny, {"base_url": server.url, "max_retries": 0}),
                  "data": {**config["data"], "gsm8k": {"per_split": {"train": 3, "test": 6},
                                                       "seed": 5}},
                  "study_a": {"teacher": "api", "baselines": [],
                              "rules": {"fixed": [{"name": "Exaggeration", "description":
                                                   "Push a quantity to an absurd extreme.",
                                                   "instructions": "Exaggerate one number."}]},
                              "rewrite": {"items_per_set": 2, "max_tokens": 16}},
                  "study_b": {"tasks": ["gsm8k"], "variants": ["teacher"],
                              "teacher": "api", "items": 2},
                  "controls": ["positive"],
                  # enough to learn six worked solutions by heart
                  "train": {"max_steps": 16, "batch_size": 4, "per_device_batch_size": 4,
                            "learning_rate": 5.0e-3, "warmup_ratio": 0.0, "max_length": 256,
                            "lora": {"rank": 16, "alpha": 32, "dropout": 0.0, "target_modules": [
                                "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                "down_proj"]}},
                  "eval": {"tasks": ["gsm8k"], "gsm8k": {"max_new_tokens": 80}},
                  "report": {"bootstrap_samples": 1000}}
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
    assert trained == {"control-gsm8k-positive"}  # the only arm with examples
    [control] = csv.DictReader((report / "controls.csv").open())
    assert control["verdict"] == "pipeline sensitive", control
    # most of the six solutions come back word for word (5 of 6 since the control trains on the
    # evaluation's one user turn, "question\n\ninstruction": the tulip problem loses a line)
    assert float(control["low"]) > 0 and float(control["accuracy"]) >= 5 / 6
    for table in ("study_a.csv", "study_b.csv"):  # controls never enter the studies' tables
        assert "control-" not in (report / table).read_text()
    summary = (report / "summary.md").read_text()
    assert "- positive control (gsm8k, `control-gsm8k-positive`): +" in summary
    assert summary.index("## Controls") < summary.index("## Missing arms (2)") < summary.index(
        "## Main findings")
    # the teacher bill: 2 rewrites and 2 study B answers, estimated and accounted alike
    bill = {r["stage"]: r for r in csv.DictReader((report / "teacher_bill.csv").open())}
    assert (bill["TOTAL"]["requests_estimated"], bill["TOTAL"]["requests"]) == ("4", "4")

    html = workdir / "report.html"
    built = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir),
                            "--configfile", str(workdir / "test-config.yaml"),
                            "--report", str(html)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    page = html.read_text()
    assert "Missing arms" in page and "studyA-exaggeration" in page and "pipeline sensitive" in page

    deafen(workdir / "results/train/tiny/control-gsm8k-positive/seed0/adapter")
    items = "results/eval/tiny/control-gsm8k-positive/seed0/gsm8k/items.csv"
    again = snakemake(workdir, "--forcerun", items, config=config)
    assert again.returncode == 0, again.stderr[-3000:]
    [control] = csv.DictReader((report / "controls.csv").open())
    assert float(control["delta"]) == 0 and control["verdict"].startswith("WARNING: no signif")
    assert "WARNING: no significant gain" in (report / "summary.md").read_text()


def deafen(adapter: Path) -> None:
    """Zero the LoRA B matrices: the adapter then changes nothing, as if it were not applied."""
    from safetensors.torch import load_file, save_file

    path = adapter / "adapter_model.safetensors"
    weights = load_file(path)
    save_file({k: v.zero_() if "lora_B" in k else v for k, v in weights.items()}, path)
