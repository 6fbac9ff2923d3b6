"""Ruozhiba questions, normalised to RuozhibaItem, from a COIG-CQIA-layout file, a Hugging Face
dataset, or restyle's own bundled sample (`restyle/data/ruozhiba_sample.jsonl`)."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from restyle.data.hub import load_split
from restyle.io import DataError, iter_jsonl, read_jsonl, utf8_lines
from restyle.records import RuozhibaItem

JSON_BLANKS = re.compile(r"[ \t\n\r]*")


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
    rows = _json_list(path) if path.suffix == ".json" else list(iter_jsonl(path))
    if not rows:
        raise DataError(f"{path}: no rows (config data.ruozhiba.path)")
    return [_from_cqia(row if isinstance(row, dict) else {}, f"{path}:{lineno}", i, str(path))
            for i, (lineno, row) in enumerate(rows)]


def _json_list(path: Path) -> list[tuple[int, object]]:
    """(line the row starts on, row) for each row of a file holding one JSON list."""
    text = "".join(utf8_lines(path))
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}:{e.colno}: malformed JSON ({e.msg})") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON list of rows")
    # json keeps no positions; decoding the (now known valid) text row by row finds them
    decoder, lineno, counted = json.JSONDecoder(), 1, 0
    pos = JSON_BLANKS.match(text).end() + 1  # past the `[`
    located = []
    for row in rows:
        pos = JSON_BLANKS.match(text, pos).end()
        lineno, counted = lineno + text.count("\n", counted, pos), pos
        located.append((lineno, row))
        pos = JSON_BLANKS.match(text, decoder.raw_decode(text, pos)[1]).end() + 1  # past `,`
    return located


def load_hf(dataset_id: str, config_name: str | None, split: str) -> list[RuozhibaItem]:
    ds = load_split(dataset_id, config_name, split)
    return [_from_cqia(row, ds.where(i), i, dataset_id) for i, row in enumerate(ds.rows)]


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
