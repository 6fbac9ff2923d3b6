"""Shared fixtures. Nothing here reaches a hub: tests run with the Hugging Face libraries offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smollm2_manifest(tmp_path_factory) -> Path:
    """The bundled SmolLM2, converted once per test session by the real conversion code."""
    from restyle import models

    out = tmp_path_factory.mktemp("models") / "smollm2"
    models.prepare("smollm2", {"source": "bundled:smollm2-135m-instruct"}, out,
                   tmp_path_factory.mktemp("packages"))
    return out / "manifest.json"


def write_hf_dataset(root: Path, config_name: str, splits: dict[str, list[dict]]) -> Path:
    """A dataset folder in the Hugging Face hub layout (README config block + parquet files) that
    `datasets.load_dataset(root, config_name, split=...)` reads exactly like a hub repository."""
    import pandas as pd

    lines = ["---", "configs:", f"- config_name: {config_name}", "  data_files:"]
    for split, rows in splits.items():
        path = root / config_name / f"{split}-00000-of-00001.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows).to_parquet(path)
        lines += [f"  - split: {split}", f"    path: {config_name}/{split}-*.parquet"]
    (root / "README.md").write_text("\n".join([*lines, "---", ""]))
    return root
