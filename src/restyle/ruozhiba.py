"""Ruozhiba questions, normalised to RuozhibaItem, from a COIG-CQIA-layout file, a Hugging Face
dataset, or restyle's own bundled sample (`restyle/data/ruozhiba_sample.jsonl`)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from restyle.hub import load_split
from restyle.io import DataError, iter_jsonl, read_jsonl
from restyle.records import RuozhibaItem

SAMPLE_SOURCE = "restyle-sample"


def bundled_sample() -> list[RuozhibaItem]:
    """A few dozen questions in the Ruozhiba spirit that restyle's authors wrote themselves
    (not forum data), so study A runs offline."""
    path = resources.files("restyle") / "data" / "ruozhiba_sample.jsonl"
    return read_jsonl(path, RuozhibaItem.from_dict)


def _from_cqia(obj: dict, where: str, index: int, source: str) -> RuozhibaItem:
    """COIG-CQIA rows: `instruction` is the question, `input` (mostly empty) extends it."""
    for key in ("instruction", "output"):
        if not isinstance(obj.get(key), str):
            raise DataError(f"{where}: missing or non-text field '{key}' (COIG-CQIA layout)")
    extra = obj.get("input") or ""
    question = obj["instruction"].strip() + (f"\n{extra.strip()}" if extra.strip() else "")
    return RuozhibaItem.from_dict({"id": f"ruozhiba/{index}", "question": question,
                                   "answer": obj["output"].strip(), "source": source}, where)


def load_file(path: str | Path) -> list[RuozhibaItem]:
    """A `.jsonl` file (one row per line) or a `.json` file holding a list of rows."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found (config data.ruozhiba.path)")
    if path.suffix == ".json":
        try:
            rows = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None
        if not isinstance(rows, list):
            raise DataError(f"{path}: expected a JSON list of rows")
        located = [(f"{path} [row {i}]", row) for i, row in enumerate(rows)]
    else:
        located = [(f"{path}:{lineno}", row) for lineno, row in iter_jsonl(path)]
    return [_from_cqia(row if isinstance(row, dict) else {}, where, i, str(path))
            for i, (where, row) in enumerate(located)]


def load_hf(dataset_id: str, config_name: str | None, split: str) -> list[RuozhibaItem]:
    ds = load_split(dataset_id, config_name, split)
    return [_from_cqia(row, f"{dataset_id} [{split}] row {i}", i, dataset_id)
            for i, row in enumerate(ds)]


def prepare(cfg: dict) -> list[RuozhibaItem]:
    """The questions that `data.ruozhiba` in config asks for."""
    source = cfg["source"]
    if source == "bundled":
        items = bundled_sample()
    elif source == "file":
        if not cfg.get("path"):
            raise DataError("config data.ruozhiba.path must be set when source is 'file'")
        items = load_file(cfg["path"])
    else:
        items = load_hf(cfg["hf_id"], cfg["hf_config"], cfg["hf_split"])
    items = items if cfg["limit"] is None else items[:cfg["limit"]]
    if not items:
        raise DataError(f"Ruozhiba source '{source}' gave no questions (config data.ruozhiba)")
    return items
