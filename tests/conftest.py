"""Shared fixtures. Nothing here reaches a hub: tests run with the Hugging Face libraries offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """On CI (CI=true, .ci/run's machine: root, apt, no GPU), a skipped test fails: each skip
    here is one the suite can make runnable there (the SLURM cluster is installed by a
    fixture), so a skip would hide a test that no longer runs anywhere."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome, report.longrepr = "failed", f"skipped on CI: {reason}"


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


@pytest.fixture()
def tiny(tmp_path, smollm2_manifest):
    """A workdir with a config whose every source is a small file the test wrote."""
    mmlu_dir = tmp_path / "mmlu_csv"
    for split in ("dev", "val", "test"):
        (mmlu_dir / split).mkdir(parents=True)
        rows = "".join(f'"{split} q{i}",a,b,c,d,{"ABCD"[i % 4]}\n' for i in range(6))
        (mmlu_dir / split / f"anatomy_{split}.csv").write_text(rows)
    ruozhiba = tmp_path / "ruozhiba.jsonl"
    ruozhiba.write_text(json.dumps({"instruction": "为什么？", "input": "", "output": "因为。"},
                                   ensure_ascii=False) + "\n")
    config = {
        "models": {"tiny": {"source": str(smollm2_manifest.parent / "hf")}},
        "target_models": ["tiny"],
        "data": {"mmlu": {"source": "csv", "csv_dir": str(mmlu_dir), "subjects": ["anatomy"],
                          "per_subject": {"train": 4, "dev": 2, "test": 5}},
                 "ruozhiba": {"source": "file", "path": str(ruozhiba)},
                 "gsm8k": {"per_split": {"train": 3, "test": 2}, "seed": 5}}}
    return tmp_path / "work", config
