import pandas as pd

from conftest import write_hf_dataset
from restyle.data.hub import load_split


def test_local_folders_with_the_same_name_are_not_confused_offline(tmp_path):
    # plain datasets.load_dataset returns the first folder's cached rows for the second one, and
    # with download_mode="force_redownload" fails its size check when the counts differ
    rows = []
    for value, n in (("first", 3), ("second", 1)):
        root = write_hf_dataset(tmp_path / value / "same_name", "main",
                                {"train": [{"question": value, "answer": "#### 1"}] * n})
        ds = load_split(str(root), "main", "train").rows
        rows.append((len(ds), ds[0]["question"]))
    assert rows == [(3, "first"), (1, "second")]


def test_a_folder_edited_in_place_is_read_afresh(tmp_path):
    write_hf_dataset(tmp_path / "d", "main", {"train": [{"question": "q"}] * 2})
    assert load_split(str(tmp_path / "d"), "main", "train").rows.column_names == ["question"]
    write_hf_dataset(tmp_path / "d", "main", {"train": [{"question": "q", "answer": "a"}]})
    ds = load_split(str(tmp_path / "d"), "main", "train").rows
    assert (len(ds), ds.column_names) == (1, ["question", "answer"])


def test_rows_are_named_by_their_file_and_counted_from_1(tmp_path):
    root = write_hf_dataset(tmp_path / "gsm8k", "main", {"train": [{"question": "q"}] * 2})
    split = load_split(str(root), "main", "train")
    assert split.where(1) == f"{root}/main/train-00000-of-00001.parquet row 2"


def test_a_split_of_several_files_is_named_by_dataset_and_split(tmp_path):
    root = write_hf_dataset(tmp_path / "gsm8k", "main", {"train": [{"question": "q"}]})
    pd.DataFrame([{"question": "q2"}]).to_parquet(root / "main" / "train-00001-of-00002.parquet")
    split = load_split(str(root), "main", "train")
    assert len(split.rows) == 2
    assert split.where(0) == f"{root} [train] row 1"
