"""The MBPP task: the hub's sanitized and full layouts, and its checker (the reply's code with the
problem's asserts, in the sandbox)."""

import pytest

from conftest import write_hf_dataset
from restyle import tasks
from restyle.io import DataError

MBPP = tasks.get("mbpp")
CFG = {"source": "hf", "splits": {"train": "train", "test": "test"},
       "per_split": {"train": None, "test": None}}
CODE = "def add(a, b):\n    return a + b\n"
TESTS = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(0, 0) == 0"]


def sanitized(task_id, code=CODE, tests=TESTS):
    return {"source_file": "x.py", "task_id": task_id, "prompt": "Write a function to add.",
            "code": code, "test_imports": ["import math"], "test_list": tests}


def full(task_id):
    return {"task_id": task_id, "text": "Write a function to add two numbers.", "code": CODE,
            "test_setup_code": "", "test_list": TESTS, "challenge_test_list": []}


@pytest.mark.parametrize("config, row", [("sanitized", sanitized), ("full", full)])
def test_both_hub_layouts_load(tmp_path, config, row):
    root = write_hf_dataset(tmp_path / "mbpp", config, {"train": [row(11)], "test": [row(12)]})
    splits = MBPP.prepare({**CFG, "hf_id": str(root), "hf_config": config}, tmp_path)
    [item] = splits["train"]
    assert item.id == "mbpp/11" and item.prompt.endswith("\n".join(TESTS))
    assert MBPP.human_answer(item) == f"```python\n{CODE.strip()}\n```"
    assert MBPP.check(item, MBPP.human_answer(item)).status == "passed"


def test_checks_run_the_asserts(tmp_path):
    root = write_hf_dataset(tmp_path / "mbpp", "sanitized", {
        "train": [sanitized(1)], "test": [sanitized(2)]})
    [item] = MBPP.prepare({**CFG, "hf_id": str(root), "hf_config": "sanitized"}, tmp_path)["train"]
    replies = ["```python\ndef add(a, b):\n    return a - b\n```",
               "```python\ndef add(a, b):\n    while True:\n        pass\n```",
               "```python\n" + CODE + "```"]
    assert [c.status for c in MBPP.check_all([item] * 3, replies, jobs=2)] == [
        "failed", "timeout", "passed"]


def test_the_tested_function_is_the_first_non_builtin_name_the_asserts_call():
    from restyle.tasks.mbpp import tested_name

    assert tested_name("import math\nassert set(add(1, 2)) == {3}") == "add"
    assert tested_name("assert math.isclose(area(2), 12.5)\nassert f(1)") == "area"
    assert tested_name("x = 1\nassert x == 1") == ""


def test_the_block_defining_the_tested_function_is_run_not_the_longest(tmp_path):
    root = write_hf_dataset(tmp_path / "mbpp", "sanitized", {
        "train": [sanitized(1)], "test": [sanitized(2)]})
    [item] = MBPP.prepare({**CFG, "hf_id": str(root), "hf_config": "sanitized"}, tmp_path)["train"]
    usage = "# Example usage\nprint(add(1, 2))\nprint(add(-1, 1))\nprint(add(0, 0))\n"
    replies = [f"```python\n{CODE}```\nExample usage:\n```python\n{usage}```",
               f"Final Answer:\n{CODE}", f"Final Answer:{CODE}", f"Final Answer: {CODE}"]
    assert [c.status for c in MBPP.check_all([item] * 4, replies, jobs=2)] == ["passed"] * 4


def test_a_row_without_tests_is_named(tmp_path):
    root = write_hf_dataset(tmp_path / "mbpp", "sanitized", {
        "train": [sanitized(1), sanitized(2, tests=[])], "test": [sanitized(3)]})
    with pytest.raises(DataError, match=r"row 2: field 'test_list' must be a non-empty list"):
        MBPP.prepare({**CFG, "hf_id": str(root), "hf_config": "sanitized"}, tmp_path)
