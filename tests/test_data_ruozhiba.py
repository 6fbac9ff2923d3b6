import json
import re

import pytest

from conftest import write_hf_dataset
from restyle.data import ruozhiba
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


def test_json_list_bad_row_names_the_line_it_starts_on(tmp_path):
    path = tmp_path / "r.json"
    first = json.dumps(cqia_row("q", "a"), indent=1)
    path.write_text(f"[{first},\n\n  {json.dumps(cqia_row('q2', 'a2'))}\n,"
                    f"{json.dumps(cqia_row('q3', '  '))}]")
    with pytest.raises(DataError) as err:
        ruozhiba.load_file(path)
    # the first row fills lines 1 to 17, then a blank line, then one line per row
    assert first.count("\n") == 16
    assert str(err.value) == f"{path}:20: field 'answer' is empty"


def test_malformed_json_file_names_the_line(tmp_path):
    path = tmp_path / "r.json"
    path.write_text('[\n{"instruction": "q",\n oops}\n]')
    with pytest.raises(DataError, match=rf"{path}:3:2: malformed JSON"):
        ruozhiba.load_file(path)


@pytest.mark.parametrize("name, line", [("r.jsonl", 2), ("r.json", 3)])
def test_file_not_utf8_names_line_column_and_byte_offset(tmp_path, name, line):
    path = tmp_path / name
    rows = [json.dumps(cqia_row(q, "答"), ensure_ascii=False) for q in ("为什么？", "@@")]
    text = f"[\n{rows[0]},\n{rows[1]}\n]" if name == "r.json" else f"{rows[0]}\n{rows[1]}\n"
    path.write_bytes(text.encode().replace(b"@@", "真的".encode("gbk")))  # as some copies are
    with pytest.raises(DataError) as err:
        ruozhiba.load_file(path)
    column, offset = len('{"instruction": "') + 1, text.encode().index(b"@@")
    assert str(err.value) == \
        f"{path}:{line}:{column}: not UTF-8 (byte 0xd5 at byte offset {offset})"


def test_missing_file_and_missing_path_name_the_config_key(tmp_path):
    with pytest.raises(DataError, match="file not found \\(config data.ruozhiba.path\\)"):
        ruozhiba.prepare({**CFG, "source": "file", "path": str(tmp_path / "nope.jsonl")})
    with pytest.raises(DataError, match="config data.ruozhiba.path must be set"):
        ruozhiba.prepare({**CFG, "source": "file"})


@pytest.mark.parametrize("name, text", [("r.jsonl", "\n"), ("r.jsonl", ""), ("r.json", " [ ]\n")])
def test_empty_file_is_named(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(DataError) as err:
        ruozhiba.prepare({**CFG, "source": "file", "path": str(path)})
    assert str(err.value) == f"{path}: no rows (config data.ruozhiba.path)"


def test_hf_source_through_datasets(tmp_path):
    root = write_hf_dataset(tmp_path / "cqia", "ruozhiba",
                            {"train": [cqia_row("为什么？", "因为。"), cqia_row("真的吗？", "真的。")]})
    items = ruozhiba.prepare({**CFG, "source": "hf", "hf_id": str(root)})
    assert [(it.id, it.question, it.answer, it.source) for it in items] == [
        ("ruozhiba/0", "为什么？", "因为。", str(root)), ("ruozhiba/1", "真的吗？", "真的。", str(root))]


def test_hf_bad_row_names_the_file_and_row_from_1(tmp_path):
    rows = [cqia_row("为什么？", "因为。"), cqia_row("真的吗？", " ")]
    root = write_hf_dataset(tmp_path / "cqia", "ruozhiba", {"train": rows})
    with pytest.raises(DataError) as err:
        ruozhiba.prepare({**CFG, "source": "hf", "hf_id": str(root)})
    assert str(err.value) == \
        f"{root}/ruozhiba/train-00000-of-00001.parquet row 2: field 'answer' is empty"


def test_control_character_in_a_file_names_the_line_and_field(tmp_path):
    path = tmp_path / "ruozhiba.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        cqia_row("问题？", "回答。"), cqia_row("问题？", "回答\u0007。")]) + "\n", encoding="utf-8")
    with pytest.raises(DataError) as err:
        ruozhiba.prepare({**CFG, "source": "file", "path": str(path)})
    assert str(err.value) == f"{path}:2: field 'answer' holds control character U+0007 at character 3"
