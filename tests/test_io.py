import json
import os
import stat

import pytest

from restyle.io import (DataError, atomic_path, iter_csv, read_jsonl, write_csv, write_json,
                        write_jsonl)
from restyle.records import MCItem, MathItem, RuozhibaItem

GOOD = {"id": "a", "subject": "s", "question": "q?", "choices": ["1", "2", "3", "4"], "answer": 2}


def test_roundtrip_keeps_records(tmp_path):
    items = [MCItem.from_dict(GOOD, "here"), MCItem.from_dict({**GOOD, "id": "b", "answer": 0}, "x")]
    assert write_jsonl(tmp_path / "x.jsonl", items) == 2
    assert read_jsonl(tmp_path / "x.jsonl", MCItem.from_dict) == items
    assert items[0].answer_letter == "C"


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n\n{not json\n")
    with pytest.raises(DataError) as err:
        read_jsonl(path, MCItem.from_dict)
    assert str(err.value) == \
        f"{path}:3:2: malformed JSON (Expecting property name enclosed in double quotes)"


def test_non_object_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(DataError, match=rf"{path}:1: expected a JSON object, got list"):
        read_jsonl(path, MCItem.from_dict)


def test_jsonl_not_utf8_names_line_column_and_byte_offset(tmp_path):
    path = tmp_path / "latin1.jsonl"
    first = json.dumps(GOOD) + "\n"
    path.write_bytes(first.encode() + b'{"question": "caf\xe9"}\n')
    with pytest.raises(DataError) as err:
        read_jsonl(path, MCItem.from_dict)
    offset = len(first) + len('{"question": "caf')
    assert str(err.value) == f"{path}:2:18: not UTF-8 (byte 0xe9 at byte offset {offset})"


def test_column_counts_characters_not_bytes(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes('{"q": "é€"}'.encode() + b"\xff\n")
    with pytest.raises(DataError, match=rf"{path}:1:12: not UTF-8 \(byte 0xff at byte offset 14\)"):
        read_jsonl(path, MCItem.from_dict)


def test_csv_records_start_on_their_physical_line(tmp_path):
    path = tmp_path / "q.csv"
    path.write_text('"two\nlines",x\n\nplain,y\n"three\n\nlines",z\n')
    assert list(iter_csv(path)) == [(1, ["two\nlines", "x"]), (4, ["plain", "y"]),
                                    (5, ["three\n\nlines", "z"])]


def test_csv_not_utf8_names_line_column_and_byte_offset(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(b'"multi\nline",a\nok,\x80b\n')
    with pytest.raises(DataError) as err:
        list(iter_csv(path))
    assert str(err.value) == f"{path}:3:4: not UTF-8 (byte 0x80 at byte offset 18)"


def test_malformed_csv_names_the_line(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(b"a,b\nc\rd,e\n")  # a lone carriage return is no line end here
    with pytest.raises(DataError, match=rf"{path}:2: malformed CSV \(new-line character seen"):
        list(iter_csv(path))


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.jsonl: file not found"):
        read_jsonl(tmp_path / "nope.jsonl", MCItem.from_dict)


@pytest.mark.parametrize("change, message", [
    ({"answer": 4}, "field 'answer' is 4, must be 0..3"),
    ({"answer": -1}, "must be 0..3"),
    ({"answer": True}, "field 'answer' must be int"),
    ({"choices": ["a", "b", "c"]}, "list of 4 strings"),
    ({"question": "  "}, "field 'question' is empty"),
    ({"subject": None}, "field 'subject' must be str"),
])
def test_mc_item_validation_names_field(tmp_path, change, message):
    path = tmp_path / "items.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + json.dumps({**GOOD, **change}) + "\n")
    with pytest.raises(DataError, match=rf"{path}:2: .*{message}"):
        read_jsonl(path, MCItem.from_dict)


def test_missing_fields_are_listed():
    with pytest.raises(DataError, match="f.jsonl:7: missing field\\(s\\) answer, source"):
        RuozhibaItem.from_dict({"id": "1", "question": "q"}, "f.jsonl:7")


def test_math_item_final_must_match_solution():
    ok = {"id": "1", "question": "q", "answer": "2+2 = <<2+2=4>>4\n#### 4", "final": "4"}
    assert MathItem.from_dict(ok, "w").final == "4"
    with pytest.raises(DataError, match="'final' does not match"):
        MathItem.from_dict({**ok, "final": "5"}, "w")
    with pytest.raises(DataError, match="ends with neither '#### <number>' nor a \\\\boxed"):
        MathItem.from_dict({**ok, "answer": "it is 4"}, "w")
    boxed = {**ok, "answer": "So $x = \\boxed{\\frac{1}{2}}$.", "final": "\\frac{1}{2}"}
    assert MathItem.from_dict(boxed, "w").final == "\\frac{1}{2}"  # MATH's format


def test_failed_write_leaves_old_file_and_no_partial(tmp_path):
    path = tmp_path / "out.jsonl"
    write_jsonl(path, [GOOD])

    def rows():
        yield GOOD
        raise RuntimeError("crash mid-write")

    with pytest.raises(RuntimeError):
        write_jsonl(path, rows())
    assert path.read_text() == json.dumps(GOOD) + "\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl"]


def test_failed_first_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "new.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664)])
def test_written_files_follow_the_umask_like_open(tmp_path, umask, mode):
    """Colleagues on a shared project folder read what a run writes: no private 0600 files."""
    old = os.umask(umask)
    try:
        write_jsonl(tmp_path / "x.jsonl", [{}])
        write_json(tmp_path / "x.json", {})
        write_csv(tmp_path / "x.csv", [{"a": 1}], ["a"])
    finally:
        os.umask(old)
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()} == {
        "x.jsonl": mode, "x.json": mode, "x.csv": mode}


def test_truncated_line_names_the_column_where_it_stops(tmp_path):
    path = tmp_path / "cut.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + '{"id": "b", "question": "where it was cu\n')
    with pytest.raises(DataError) as err:
        read_jsonl(path, MCItem.from_dict)
    assert str(err.value).startswith(f"{path}:2:25: malformed JSON (Unterminated string")
