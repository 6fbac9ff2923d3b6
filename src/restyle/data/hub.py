"""Reading datasets through Hugging Face `datasets`, from the hub or a local copy of a repo."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Split:
    """A split's rows and what messages call their origin: the split's data file when it has just
    one (rows are then that file's rows), else the dataset and split."""

    rows: Any  # a datasets.Dataset
    origin: str

    def where(self, index: int) -> str:
        """Row `index` (from 0) as messages give it: counted from 1, like lines."""
        return f"{self.origin} row {index + 1}"


def load_split(dataset_id: str, config_name: str | None, split: str) -> Split:
    """One split of a dataset by hub id or local folder in hub layout.

    `datasets` keys its cache of a local folder by the folder's name and README, not its data
    files, so a second folder of the same name (or the same folder after an edit) would get the
    first one's rows, columns and split sizes. A local folder is therefore read through a cache
    of its own that is dropped afterwards (cheap: it is on disk anyway).
    """
    import datasets

    if not Path(dataset_id).expanduser().is_dir():
        return _load(dataset_id, config_name, split, None)
    Path(datasets.config.HF_DATASETS_CACHE).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=datasets.config.HF_DATASETS_CACHE) as cache_dir:
        return _load(dataset_id, config_name, split, cache_dir)


def _load(dataset_id: str, config_name: str | None, split: str, cache_dir: str | None) -> Split:
    """load_dataset's own three steps, taken here because only the builder knows the data files;
    a private cache is read into memory before it goes."""
    import datasets

    builder = datasets.load_dataset_builder(dataset_id, config_name, cache_dir=cache_dir)
    builder.download_and_prepare()
    files = (builder.config.data_files or {}).get(split, [])
    origin = files[0] if len(files) == 1 else f"{dataset_id} [{split}]"
    return Split(builder.as_dataset(split=split, in_memory=cache_dir is not None), origin)
