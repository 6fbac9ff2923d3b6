from conftest import write_hf_dataset
from restyle.hub import load_split


def test_local_folders_with_the_same_name_are_not_confused_offline(tmp_path, monkeypatch):
    # conftest sets HF_HUB_OFFLINE=1, where plain datasets.load_dataset returns the first
    # folder's cached rows for the second one
    rows = []
    for value in ("first", "second"):
        root = write_hf_dataset(tmp_path / value / "same_name", "main",
                                {"train": [{"question": value, "answer": "#### 1"}]})
        rows.append(load_split(str(root), "main", "train")[0]["question"])
    assert rows == ["first", "second"]
