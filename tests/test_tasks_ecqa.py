"""The ECQA task: five options with an explanation from a hub-layout copy, read back as the
option letter A-E by the checker study B's filter and the evaluation share."""

import pytest

from conftest import write_hf_dataset
from restyle import tasks
from restyle.io import DataError

ECQA = tasks.get("ecqa")
CFG = {"source": "hf", "hf_config": None, "splits": {"train": "train", "test": "test"},
       "per_split": {"train": None, "test": None}}


def row(q, options, answer, explanation="Because it is so.", number="n1"):
    return {"q_no": number, "q_text": q, **{f"q_op{i + 1}": o for i, o in enumerate(options)},
            "q_ans": answer, "taskB": explanation}


OPTIONS = ["bank", "library", "park", "bakery", "river"]


def hub(tmp_path, train, test):
    return str(write_hf_dataset(tmp_path / "ecqa", "default", {"train": train, "test": test}))


def test_loads_options_answer_and_explanation(tmp_path):
    root = hub(tmp_path, [row("Where do you borrow books?", OPTIONS, "library", "Libraries lend.")],
               [row("Where is bread sold?", OPTIONS, "bakery", number="t7")])
    splits = ECQA.prepare({**CFG, "hf_id": root, "hf_config": "default"}, tmp_path)
    [item] = splits["train"]
    assert (item.answer, item.answer_letter, item.choices) == (1, "B", OPTIONS)
    assert ECQA.human_answer(item) == "Libraries lend.\nThe answer is (B)."
    assert ECQA.question(item).endswith("D. bakery\nE. river")
    assert splits["test"][0].id == "ecqa/test/t7"


def test_an_answer_that_is_no_option_names_the_row(tmp_path):
    root = hub(tmp_path, [row("q", OPTIONS, "library"), row("q", OPTIONS, "moon")],
               [row("q", OPTIONS, "bank")])
    with pytest.raises(DataError, match=r"row 2: answer 'moon' is none of the options"):
        ECQA.prepare({**CFG, "hf_id": root, "hf_config": "default"}, tmp_path)


@pytest.mark.parametrize("reply, status", [
    ("Rivers flow. The answer is (E).", "passed"),  # the fifth letter, which MMLU has not
    ("The answer is (B).", "failed"),
    ("No idea.", "no_answer"),
])
def test_the_fifth_option_is_read(tmp_path, reply, status):
    root = hub(tmp_path, [row("Where do fish live?", OPTIONS, "river")], [row("q", OPTIONS, "bank")])
    [item] = ECQA.prepare({**CFG, "hf_id": root, "hf_config": "default"}, tmp_path)["train"]
    assert ECQA.check(item, reply).status == status
