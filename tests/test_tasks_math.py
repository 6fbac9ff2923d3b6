"""The MATH task: the hub layout of Hendrycks MATH read per subject, and the math-verify checker
that study B's filter and the evaluation share."""

import pytest

from conftest import write_hf_dataset
from restyle import tasks
from restyle.io import DataError
from restyle.records import MathItem

MATH = tasks.get("math")
CFG = {"source": "hf", "hf_config": "algebra", "splits": {"train": "train", "test": "test"},
       "per_split": {"train": None, "test": 1}}


def row(problem, solution, level="Level 2"):
    return {"problem": problem, "solution": solution, "level": level, "type": "Algebra"}


def hub(tmp_path, train, test):
    return str(write_hf_dataset(tmp_path / "hendrycks_math", "algebra",
                                {"train": train, "test": test}))


def test_loads_the_boxed_answer_of_each_solution(tmp_path):
    root = hub(tmp_path, [row("Solve $2x=1$.", "So $x = \\boxed{\\frac{1}{2}}$."),
                          row("What is $3^2$?", "$3^2 = \\boxed{9}$, not \\fbox{8}... \\boxed{9}")],
               [row("What is $1+1$?", "$\\boxed{2}$"), row("Skip", "$\\boxed{0}$")])
    splits = MATH.prepare({**CFG, "hf_id": root}, tmp_path)
    assert [(it.id, it.final) for it in splits["train"]] == [
        ("math/algebra/train/0", "\\frac{1}{2}"), ("math/algebra/train/1", "9")]
    assert len(splits["test"]) == 1  # per_split caps
    assert MathItem.from_dict(splits["train"][0].to_dict(), "x") == splits["train"][0]


def test_a_solution_without_a_boxed_answer_names_the_file_and_row(tmp_path):
    root = hub(tmp_path, [row("q", "$\\boxed{1}$"), row("q", "no final answer here")],
               [row("q", "$\\boxed{1}$")])
    with pytest.raises(DataError, match=r"train-00000-of-00001\.parquet row 2: answer ends with "
                                        r"neither"):
        MATH.prepare({**CFG, "hf_id": root}, tmp_path)


def test_a_missing_column_names_the_row(tmp_path):
    root = hub(tmp_path, [{"problem": "q", "answer": "1"}], [{"problem": "q", "answer": "1"}])
    with pytest.raises(DataError, match=r"row 1: missing or non-text field 'solution'"):
        MATH.prepare({**CFG, "hf_id": root}, tmp_path)


ITEM = MathItem(id="m/0", question="Solve $2x = 1$.", answer="$x=\\boxed{\\frac12}$",
                final="\\frac{1}{2}")


@pytest.mark.parametrize("reply, status", [
    ("So $x = \\boxed{\\frac{1}{2}}$.", "passed"),
    ("Dividing by two, $x = \\boxed{0.5}$", "passed"),  # equal, not the same string
    ("The answer is $\\boxed{1/2}$.", "passed"),
    ("Hence $x=\\boxed{2}$.", "failed"),
    ("I do not know.", "no_answer"),
])
def test_equivalence_not_string_equality(reply, status):
    check = MATH.check(ITEM, reply)
    assert check.status == status
    assert (check.reason is None) == (status == "passed")
    if status == "failed":
        assert check.reason.startswith("wrong_answer: ")
