"""Study B from its data release (restyle.data.release): every task read from a release in the
exact layout (tests/release_fixture.py: made-up rows, the real release is not a package), in
restyle's prompt format and the paper's, released sets read instead of generated, the config
checks, a real Snakemake run from the fixture and the plan of config/paper_release.yaml."""

from __future__ import annotations

import csv
import json
import re
import subprocess

import pytest
import yaml
from release_fixture import write_release
from test_workflow import REPO, SNAKEMAKE, snakemake

from restyle import checks, tasks
from restyle.data import release
from restyle.io import DataError
from restyle.study_b import variants

SCHEMA = yaml.safe_load((REPO / "config/schema.yaml").read_text())
TASKS = ("gsm8k", "math", "ecqa", "mbpp", "humaneval", "humaneval2")


@pytest.fixture(scope="module")
def fixture_release(tmp_path_factory):
    return write_release(tmp_path_factory.mktemp("release") / "clone")


def data_cfg(name: str, root, prompt: str = "release") -> dict:
    key = tasks.get(name).config_key
    props = SCHEMA["properties"]["data"]["properties"][key]["properties"]
    return {"source": "release", "release_dir": str(root), "prompt": prompt,
            "release_files": props["release_files"]["default"], "train_half": "first",
            "per_split": {"train": None, "test": None}}


@pytest.mark.parametrize("name", TASKS)
def test_every_task_reads_the_release_in_both_formats_and_its_human_answers_pass(
        name, fixture_release):
    task = tasks.get(name)
    mine = task.prepare(data_cfg(name, fixture_release, "restyle"), "unused")
    theirs = task.prepare(data_cfg(name, fixture_release), "unused")
    assert [len(mine[s]) for s in task.splits] == [len(theirs[s]) for s in task.splits] == [4, 4]
    train_file = release.relative(task, data_cfg(name, fixture_release), "train")
    rows = json.loads((fixture_release / "dataset" / train_file).read_text())
    for i, item in enumerate(theirs["train"]):
        assert item.id == release.item_id(train_file, i)
        # the user turn is the release's question (its instruction included), the human answer
        # the release's own; restyle's format of the same item differs
        assert task.prompt(item, "") == rows[i]["question"].strip()
        assert task.human_answer(item) == rows[i]["answer"]
        assert task.prompt(mine["train"][i], "") != task.prompt(item, "")
    for split in task.splits:  # test questions are asked in the training questions' format
        for fmt in (mine, theirs):
            checks_ = task.check_all(fmt[split], [task.human_answer(i) for i in fmt[split]])
            assert all(c.correct for c in checks_), [c.reason for c in checks_]
    assert "Final Answer:" in task.prompt(theirs["test"][0], "")
    if name == "ecqa":
        assert "(1): " in task.prompt(theirs["test"][0], "")
        assert theirs["test"][0].labels == "numbers" and mine["test"][0].labels == "letters"


def test_a_bad_row_and_a_question_in_another_format_are_named_by_file_and_row(tmp_path):
    root = write_release(tmp_path / "clone")
    path = root / "dataset/GSM8K/groundtruth.json"
    rows = json.loads(path.read_text())
    rows[2]["answer"] = rows[2]["answer"].replace("Final Answer:", "The answer is")
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=rf"{re.escape(str(path))} row 2: field 'answer' does "
                                        "not end with 'Final Answer"):
        tasks.get("gsm8k").prepare(data_cfg("gsm8k", root), "unused")
    path = root / "dataset/ECQA/groundtruth.json"
    rows = json.loads(path.read_text())
    rows[1]["question"] = rows[1]["question"].replace("(1): ", "(a): ")
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=rf"{re.escape(str(path))} row 1: field 'question' is "
                                        "not in the release's format"):
        tasks.get("ecqa").prepare(data_cfg("ecqa", root), "unused")
    with pytest.raises(DataError, match="config release_dir: required"):
        tasks.get("math").prepare({**data_cfg("math", root), "release_dir": None}, "unused")


@pytest.mark.parametrize("name", ["gsm8k", "mbpp", "humaneval2"])
def test_a_released_set_is_read_filtered_and_carries_its_provenance(name, fixture_release):
    task = tasks.get(name)
    cfg = data_cfg(name, fixture_release)
    items = task.prepare(cfg, "unused")["train"]
    where = {"dir": str(fixture_release), "train": release.relative(task, cfg, "train"),
             "file": release.relative(task, cfg, "sets", set="anthropic_Claud"),
             "key": "study_b.release_sets.teacher@claude"}
    study_b = {"instructions": {task.config_key: ""}, "filter_correct": True}
    built = variants.build(variants.Context(task, "teacher", study_b, items, release=where,
                                            model="claude"))
    # the fixture's Claude gets questions 1 and 2 wrong
    assert [r.source_id for r in built.records] == [items[0].id, items[3].id]
    assert built.stats["wrong_answer"] == 2 and built.stats["prompt_tokens"] == 0
    prov = built.records[1].provenance
    sha = subprocess.run(["git", "-C", str(fixture_release), "rev-parse", "HEAD"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert (prov["release_file"], prov["release_row"], prov["release_commit"]) == (
        where["file"], 3, sha)
    assert built.records[0].prompt == [{"role": "user", "content": task.prompt(items[0], "")}]


def test_a_released_set_that_does_not_follow_its_training_file_is_an_error(tmp_path):
    root = write_release(tmp_path / "clone")
    task = tasks.get("gsm8k")
    cfg = data_cfg("gsm8k", root)
    items = task.prepare(cfg, "unused")["train"]
    path = root / "dataset/GSM8K/openai_gpt4_data.json"
    rows = json.loads(path.read_text())
    path.write_text(json.dumps(rows[::-1]))
    with pytest.raises(DataError, match=rf"{re.escape(str(path))} row 0: field 'question' "
                                        "differs from .*groundtruth.json row 0"):
        release.replies(str(root), "GSM8K/openai_gpt4_data.json", "GSM8K/groundtruth.json",
                        items, "study_b.release_sets.teacher")


def merged(*over: dict) -> dict:
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    for o in over:
        for k, v in o.items():
            cfg[k] = {**cfg.get(k, {}), **v} if isinstance(v, dict) and k != "teachers" else v
    return cfg


def test_the_config_check_names_each_key_a_release_run_needs():
    cfg = merged({"data": {"gsm8k": {"source": "hf", "prompt": "release"}},
                  "study_b": {"tasks": ["gsm8k"], "variants": ["human"],
                              "release_sets": {"teacher": "openai_gpt4_data",
                                               "minimum_change": "llama_minimum_change_data",
                                               "best_of_n@x": "y"}}})
    with pytest.raises(checks.ConfigError) as e:
        checks.check(cfg, REPO / "config/schema.yaml")
    text = str(e.value)
    for expected in ["config data.gsm8k.prompt: release is the release's own format",
                     "config study_b.instructions.gsm8k: must be \"\"",
                     "config eval.gsm8k.instruction: must be \"\"",
                     "config study_b.release_sets.minimum_change: a minimum_change set is one "
                     "model's own",
                     "config study_b.release_sets.best_of_n@x: 'best_of_n' is not a variant",
                     "config data.gsm8k.source: 'hf', but study_b.release_sets reads"]:
        assert expected in text, text
    cfg["data"]["gsm8k"]["source"] = "release"
    with pytest.raises(checks.ConfigError, match="config release_dir: data.gsm8k.source is "
                                                 "release"):
        checks.check(cfg, REPO / "config/schema.yaml")


def test_the_paper_release_config_plans_every_released_set_with_no_teacher(fixture_release,
                                                                          tmp_path):
    over = tmp_path / "over.yaml"
    over.write_text(yaml.safe_dump({"release_dir": str(fixture_release)}))
    plan = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path / "w"),
                           "-n", "--configfile", str(REPO / "config/paper.yaml"),
                           str(REPO / "config/paper_release.yaml"), str(over)],
                          capture_output=True, text=True, timeout=600)
    assert plan.returncode == 0, plan.stderr[-3000:]
    # 6 tasks (HumanEval's two folds) x (human + GPT-4 + Claude + each target's minimum change)
    assert re.search(r"^study_b_variant\s+30$", plan.stdout, re.M), plan.stdout[-2000:]
    assert "study_a_rules" not in plan.stdout and "prepare_ruozhiba" not in plan.stdout
    assert "studyB-mbpp-minimum_change@mistral-7b-instruct" in plan.stdout


def test_study_b_from_a_release_through_training_evaluation_and_the_report(tiny, tmp_path):
    """A real Snakemake run from the fixture release: GSM8K in the paper's format, the human
    answers, GPT-4's released answers and the target's released minimum-change set, filtered,
    each trained, the base model and every checkpoint evaluated on the release's test split, the
    estimate (no teacher request) and the report."""
    root = write_release(tmp_path / "clone")
    workdir, config = tiny
    config = {**config, "release_dir": str(root),
              "study_a": {"enabled": False},
              "data": {**config["data"], "gsm8k": {"source": "release", "prompt": "release",
                                                   "per_split": {"train": 4, "test": 3}}},
              "study_b": {"tasks": ["gsm8k"], "variants": ["human"], "items": 4,
                          "release_sets": {"teacher": "openai_gpt4_data",
                                           "minimum_change@tiny": "llama_minimum_change_data"},
                          "instructions": {"gsm8k": ""}},
              "controls": [],
              "train": {"max_steps": 2, "batch_size": 2, "per_device_batch_size": 2,
                        "max_length": 256},
              "eval": {"tasks": ["gsm8k"], "gsm8k": {"instruction": "", "max_new_tokens": 32}},
              "report": {"bootstrap_samples": 200}}
    result = snakemake(workdir, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = {r["variant"]: r for r in csv.DictReader(
        (workdir / "results/study_b/stats.csv").open())}
    assert {k: (r["kept"], r["wrong_answer"]) for k, r in stats.items()} == {
        "human": ("4", "0"), "teacher": ("3", "1"), "minimum_change": ("3", "1")}
    rows = [json.loads(line) for line in
            (workdir / "results/sft/studyB-gsm8k-minimum_change@tiny.jsonl").open()]
    assert rows[0]["provenance"]["release_file"] == "GSM8K/llama_minimum_change_data.json"
    assert rows[0]["prompt"][0]["content"].endswith("after 'Final Answer:'")
    estimate = list(csv.DictReader((workdir / "results/estimate.csv").open()))
    assert all(r["requests"] in ("0", "") for r in estimate), estimate
    base = list(csv.DictReader((workdir / "results/eval/tiny/base/gsm8k/items.csv").open()))
    assert [r["id"] for r in base] == [release.item_id("GSM8K/test.json", i) for i in range(3)]
    for name in ("human", "teacher", "minimum_change@tiny"):
        assert (workdir / f"results/eval/tiny/studyB-gsm8k-{name}/seed0/gsm8k/summary.csv"
                ).exists()
    paper = (workdir / "results/report/study_b_paper_table.csv").read_text()
    assert "minimum_change@tiny" in paper and "teacher" in paper
    assert not (workdir / "results/study_a/rules").exists()


def test_a_set_made_from_release_questions_asks_for_the_answer_the_question_asks(
        fixture_release):
    """A teacher writing a variant of a question in the release's format is asked to end as the
    question says ("... after 'Final Answer:'", ECQA's option numbers), not in restyle's letters;
    the job's template hashes follow the format sent."""
    task = tasks.get("ecqa")
    items = task.prepare(data_cfg("ecqa", fixture_release), "unused")["train"]
    ctx = variants.Context(task, "teacher_steps", {"instructions": {"ecqa": ""}}, items)
    sent = ctx.fill("steps", items[0])
    assert variants.RELEASE_FORMAT in sent and task.answer_format not in sent
    assert sent.startswith(task.prompt(items[0], "")) and "(1/2/3/4/5)" in sent
    mine = task.prepare(data_cfg("ecqa", fixture_release, "restyle"), "unused")["train"]
    assert task.answer_format in variants.Context(
        task, "teacher_steps", {"instructions": {"ecqa": ""}}, mine).fill("steps", mine[0])
    assert (variants.template_hashes("ecqa", "teacher_steps", True)["format"]
            != variants.template_hashes("ecqa", "teacher_steps")["format"])
