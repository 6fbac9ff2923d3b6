"""Reading JSONL and CSV so that errors say where, and writing files that never look finished
when half-written."""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class DataError(ValueError):
    """Bad input data; the message names the file and, where known, the line or column."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A crash or an exception leaves the old file (or nothing) in place, never a half-written one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp_path = path.with_name(f".{path.name}.{secrets.token_hex(4)}.partial")
        try:
            # mode 0666 less the umask, as open() gives (mkstemp's 0600 hid results from
            # colleagues on a shared project folder); O_EXCL: never another writer's file
            os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def open_permissions(folder: str | os.PathLike) -> None:
    """Give every file under `folder` the permissions `open()` gives (0666 less the umask).

    safetensors writes its files 0600, which hid adapters, checkpoints and converted models from
    colleagues on a shared project folder. The umask has no getter: it is set and set back."""
    umask = os.umask(0o077)
    os.umask(umask)
    for path in Path(folder).rglob("*"):
        if path.is_file():
            path.chmod(0o666 & ~umask)


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Write dicts (or dataclasses with `to_dict`) one per line, atomically. Returns the row count."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            if hasattr(row, "to_dict"):
                row = row.to_dict()
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def write_csv(path: str | os.PathLike, rows: Iterable[dict], columns: Sequence[str]) -> None:
    """Write dicts as CSV rows under `columns`, atomically; None and NaN become empty cells."""
    def cell(value):
        return "" if value is None or (isinstance(value, float) and math.isnan(value)) else value

    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({k: cell(v) for k, v in row.items()} for row in rows)


def utf8_lines(path: str | os.PathLike) -> Iterator[str]:
    """Yield the file's lines (ends kept), decoded one at a time so that a byte that is not UTF-8
    is reported at its own line, column and byte offset."""
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as e:
                column = len(raw[:e.start].decode("utf-8")) + 1
                raise DataError(f"{path}:{lineno}:{column}: not UTF-8 (byte 0x{raw[e.start]:02x} "
                                f"at byte offset {offset + e.start})") from None
            offset += len(raw)


def iter_jsonl(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line number, object) for each non-blank line; a malformed line raises DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    for lineno, line in enumerate(utf8_lines(path), start=1):
        if not line.strip():
            continue
        try:
            # without its line end: a line cut short fails at its own last column
            obj = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}:{e.colno}: malformed JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def iter_csv(path: str | os.PathLike) -> Iterator[tuple[int, list[str]]]:
    """Yield (line where the record starts, cells) for each non-blank CSV record.

    A quoted cell may span lines, so the start is one past where the previous record ended.
    """
    reader = csv.reader(utf8_lines(path))
    start = 1
    try:
        for row in reader:
            if row:
                yield start, row
            start = reader.line_num + 1
    except csv.Error as e:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV ({e})") from None


def read_jsonl(path: str | os.PathLike, parse: Callable[[dict, str], T]) -> list[T]:
    """Read a JSONL file, turning each line into a record with `parse(obj, where)`.

    `where` is "file:line", so a record that fails validation names its own location.
    """
    return [parse(obj, f"{path}:{lineno}") for lineno, obj in iter_jsonl(path)]
