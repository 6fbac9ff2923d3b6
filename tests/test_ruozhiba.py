import json
import re

import pytest

from conftest import write_hf_dataset
from restyle import ruozhiba
from restyle.io import DataError

CFG = {"source": "bundled", "path": None, "hf_id": "m-a-p/COIG-CQIA", "hf_config": "ruozhiba",
       "hf_split": "train", "limit": None}


def cqia_row(q, a, extra=""):
    return {"instruction": q, "input": extra, "output": a, "task_type": {"major": ["问答"]},
            "domain": ["逻辑推理"], "metadata": "", "answer_from": "human", "human_verified": True,
            "copyright": ""}


def test_bundled_sample_is_restyles_own_chinese_sample():
    items = ruozhiba.prepare(CFG)
    assert len(items) >= 30
    assert len({it.id for it in items}) == len(items)
    assert {it.source for it in items} == {"restyle-sample"}
    for it in items:
        assert re.search(r"[\u4e00-\u9fff]", it.question) and re.search(r"[\u4e00-\u9fff]", it.answer)
        assert it.question.endswith(("？", "?"))


def test_jsonl_file_in_cqia_layout(tmp_path):
    path = tmp_path / "ruozhiba.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in [
        cqia_row("只剩一个心脏了还能活吗？", "能，人本来就只有一个心脏。"),
        cqia_row("问题", "回答", extra="补充说明")]) + "\n", encoding="utf-8")
    items = ruozhiba.prepare({**CFG, "source": "file", "path": str(path)})
    assert [it.to_dict() for it in items] == [
        {"id": "ruozhiba/0", "question": "只剩一个心脏了还能活吗？", "answer": "能，人本来就只有一个心脏。",
         "source": str(path)},
        {"id": "ruozhiba/1", "question": "问题\n补充说明", "answer": "回答", "source": str(path)}]


def test_json_list_file_and_limit(tmp_path):
    path = tmp_path / "ruozhiba.json"
    path.write_text(json.dumps([cqia_row(f"问{i}？", f"答{i}") for i in range(5)], ensure_ascii=False))
    items = ruozhiba.prepare({**CFG, "source": "file", "path": str(path), "limit": 2})
    assert [it.question for it in items] == ["问0？", "问1？"]


def test_missing_output_names_the_line(tmp_path):
    path = tmp_path / "r.jsonl"
    row = cqia_row("q", "a")
    del row["output"]
    path.write_text(json.dumps(cqia_row("q", "a")) + "\n" + json.dumps(row) + "\n")
    with pytest.raises(DataError, match=rf"{path}:2: missing or non-text field 'output'"):
        ruozhiba.load_file(path)


def test_json_list_bad_row_names_the_row(tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps([cqia_row("q", "a"), cqia_row("q2", "  ")]))
    with pytest.raises(DataError, match=rf"{path} \[row 1\]: field 'answer' is empty"):
        ruozhiba.load_file(path)


def test_malformed_json_file_names_the_line(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('[\n{"instruction": "q",\n oops}\n]')
    with pytest.raises(DataError, match=rf"{path}:3: malformed JSON"):
        ruozhiba.load_file(path)


def test_missing_file_and_missing_path_name_the_config_key(tmp_path):
    with pytest.raises(DataError, match="file not found \\(config data.ruozhiba.path\\)"):
        ruozhiba.prepare({**CFG, "source": "file", "path": str(tmp_path / "nope.jsonl")})
    with pytest.raises(DataError, match="config data.ruozhiba.path must be set"):
        ruozhiba.prepare({**CFG, "source": "file"})


def test_empty_file_is_an_error(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text("\n")
    with pytest.raises(DataError, match="gave no questions"):
        ruozhiba.prepare({**CFG, "source": "file", "path": str(path)})


def test_hf_source_through_datasets(tmp_path):
    root = write_hf_dataset(tmp_path / "cqia", "ruozhiba",
                            {"train": [cqia_row("为什么？", "因为。"), cqia_row("真的吗？", "真的。")]})
    items = ruozhiba.prepare({**CFG, "source": "hf", "hf_id": str(root)})
    assert [(it.id, it.question, it.answer, it.source) for it in items] == [
        ("ruozhiba/0", "为什么？", "因为。", str(root)), ("ruozhiba/1", "真的吗？", "真的。", str(root))]
