import operator
import re

import pytest

from conftest import write_hf_dataset
from restyle.tasks import gsm8k
from restyle.io import DataError

CFG = {"source": "bundled", "hf_id": "openai/gsm8k", "hf_config": "main",
       "per_split": {"train": 60, "test": 40}, "seed": 0}
CALC = re.compile(r"<<(\d+)([-+*/])(\d+)=(\d+)>>(\d+)")
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def test_bundled_problems_are_gsm8k_format_and_arithmetic_is_right():
    splits = gsm8k.prepare(CFG)
    assert {k: len(v) for k, v in splits.items()} == {"train": 60, "test": 40}
    for items in splits.values():
        for it in items:
            lines = it.answer.splitlines()
            assert lines[-1] == f"#### {it.final}" and it.final.isdigit()
            annotations = CALC.findall(it.answer)
            assert annotations, it.answer
            for a, op, b, result, shown in annotations:
                assert OPS[op](int(a), int(b)) == int(result) == int(shown)
            # the final answer is the last computed value or derived from it in the last step
            assert it.final in lines[-2]


def test_bundled_is_seeded_distinct_and_splits_do_not_overlap():
    a, b = gsm8k.prepare(CFG), gsm8k.prepare(CFG)
    assert a == b
    other = gsm8k.prepare({**CFG, "seed": 1})
    assert [it.question for it in other["train"]] != [it.question for it in a["train"]]
    train_q = [it.question for it in a["train"]]
    assert len(set(train_q)) == len(train_q)
    assert not set(train_q) & {it.question for it in a["test"]}
    assert a["test"][3].id == "synthetic-gsm8k/test/3"


def test_bundled_needs_sizes():
    with pytest.raises(DataError, match="config data.gsm8k.per_split.test must be a number"):
        gsm8k.prepare({**CFG, "per_split": {"train": 2, "test": None}})


def row(q, a):
    return {"question": q, "answer": a}


def test_hf_source_through_datasets(tmp_path):
    root = write_hf_dataset(tmp_path / "gsm8k", "main", {
        "train": [row("Natalia sold 48 clips in April and half as many in May. How many?",
                      "In May she sold 48/2 = <<48/2=24>>24 clips.\n48+24 = <<48+24=72>>72\n#### 72"),
                  row("q2", "1,000+234 = 1,234\n#### 1,234")],
        "test": [row("q3", "#### 7")]})
    splits = gsm8k.prepare({**CFG, "source": "hf", "hf_id": str(root),
                            "per_split": {"train": None, "test": 5}})
    assert [(it.id, it.final) for it in splits["train"]] == [("gsm8k/train/0", "72"),
                                                            ("gsm8k/train/1", "1234")]
    assert len(splits["test"]) == 1


def test_hf_solution_without_final_line_names_the_file_and_row_from_1(tmp_path):
    root = write_hf_dataset(tmp_path / "gsm8k", "main",
                            {"train": [row("q", "#### 1"), row("q", "it is 2")], "test": [row("q", "#### 1")]})
    with pytest.raises(DataError) as err:
        gsm8k.prepare({**CFG, "source": "hf", "hf_id": str(root)})
    assert str(err.value) == \
        f"{root}/main/train-00000-of-00001.parquet row 2: answer does not end with '#### <number>'"


def test_hf_missing_field_names_the_file_and_row_from_1(tmp_path):
    root = write_hf_dataset(tmp_path / "gsm8k", "main",
                            {"train": [row("q", "#### 1")],
                             "test": [row("q", "#### 1"), row(None, "#### 2")]})
    with pytest.raises(DataError) as err:
        gsm8k.prepare({**CFG, "source": "hf", "hf_id": str(root)})
    assert str(err.value) == \
        f"{root}/main/test-00000-of-00001.parquet row 2: missing or non-text field 'question'"
