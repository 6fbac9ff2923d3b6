"""Reading datasets through Hugging Face `datasets`, from the hub or a local copy of a repo."""

from __future__ import annotations

from pathlib import Path


def load_split(dataset_id: str, config_name: str | None, split: str):
    """One split of a dataset by hub id or local folder in hub layout.

    With HF_HUB_OFFLINE=1 (usual on cluster nodes) `datasets` answers a local folder from the
    cache of any earlier folder with the same name, returning stale rows; a local folder is
    therefore always read afresh (cheap: it is on disk anyway).
    """
    import datasets

    local = Path(dataset_id).expanduser().is_dir()
    return datasets.load_dataset(dataset_id, config_name, split=split,
                                 download_mode="force_redownload" if local else None)
