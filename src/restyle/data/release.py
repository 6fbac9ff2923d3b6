"""The study B authors' data release (github.com/XuanRen4470/I-Learn-Better-If-You-Speak-My-Language,
folder `dataset/`): per task a folder of JSON files, each a list of objects, one file for the
training questions with their human answers (`groundtruth.json`), one per test split, and one per
response variant the paper trained on (`openai_gpt4_data.json`, ...), whose rows follow the
training file's row by row. HumanEval (`CODE/`) has every file once per fold (`_1`, `_2`).

The files are read in place from a clone (config `release_dir`); none of their rows is copied
into restyle (the release has no licence). A task reads its questions here when config
`data.{task}.source` is `release` (each task module's `release_record` turns a row into its
record), and a study B set is read instead of generated when `study_b.release_sets` names a
file for it (restyle.study_b.variants).

The release's prompt format (`data.{task}.prompt: release`): its training questions carry the
paper's instruction ("... after 'Final Answer:'"); its test files hold the bare question. A task
rebuilds the training question from the row's fields (`same` checks the rebuild against every
training row, so a format restyle misreads is an error, not a silent difference) and asks its
test questions in that same format.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path

from restyle.io import DataError

REPOSITORY = "XuanRen4470/I-Learn-Better-If-You-Speak-My-Language"
FORMATS = ("restyle", "release")  # config data.{task}.prompt


def path(release_dir: str | Path | None, relative: str, key: str) -> Path:
    """The release file `relative` (below `dataset/`); `key` is the config key that names it."""
    if not release_dir:
        raise DataError(f"config release_dir: required to read {relative} (config {key}); "
                        f"set it to a clone of github.com/{REPOSITORY}")
    full = Path(release_dir) / "dataset" / relative
    if not full.is_file():
        raise DataError(f"{full}: no such file (config {key}; release_dir {release_dir} should "
                        f"be a clone of github.com/{REPOSITORY})")
    return full


def read_rows(file: Path) -> list[dict]:
    """The rows of one release file: a JSON list of objects."""
    try:
        rows = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{file}:{e.lineno}:{e.colno}: not JSON ({e.msg})") from None
    if not isinstance(rows, list):
        raise DataError(f"{file}: expected a JSON list of objects, got {type(rows).__name__}")
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{where(file, i)}: expected an object, got {type(row).__name__}")
    if not rows:
        raise DataError(f"{file}: no rows")
    return rows


def where(file: Path, index: int) -> str:
    return f"{file} row {index}"


def text(row: dict, key: str, at: str) -> str:
    """Field `key` of a row, which must be non-empty text."""
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{at}: missing, empty or non-text field '{key}'")
    return value


def same(row: dict, key: str, rebuilt: str, at: str) -> None:
    """A training row's field `key` is what restyle rebuilds from the row's other fields."""
    if key in row and row[key] != rebuilt:
        raise DataError(f"{at}: field '{key}' is not in the release's format as restyle reads "
                        f"it (expected {rebuilt[:200]!r}..., found {str(row[key])[:200]!r}...)")


def verbatim(row: dict, at: str, training: bool, prompt: str, answer: str, wanted: bool
             ) -> dict:
    """The record's `verbatim` field (when `wanted`: config prompt release) from the question and
    human answer rebuilt in the release's format; a training row must hold exactly those."""
    if training:
        same(row, "question", prompt, at)
        same(row, "answer", answer, at)
    return {"verbatim": {"prompt": prompt, "answer": answer}} if wanted else {}


def commit(release_dir: str | Path) -> str | None:
    """The commit of the release clone (provenance of every row read from it); None when it is
    not a git checkout."""
    try:
        out = subprocess.run(["git", "-C", str(release_dir), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def item_id(relative: str, index: int) -> str:
    """A release item's id: its file and row ("release/GSM8K/groundtruth.json/17")."""
    return f"release/{relative}/{index}"


def row_of(item_id_: str) -> int:
    return int(item_id_.rpartition("/")[2])


def relative(task, cfg: dict, role: str, **fields: str) -> str:
    """The file of `role` (a split, or "sets") of `task` below `dataset/`, as config
    `data.{task.config_key}.release_files` names it (`{fold}` filled in by the task)."""
    return cfg["release_files"][role].format(**task.release_fields(cfg), **fields)


def files(task, cfg: dict, release_dir: str | None) -> list[str]:
    """Every release file the task's data rule reads (its input, so a changed file reruns it)."""
    return [str(Path(release_dir or "") / "dataset" / relative(task, cfg, split))
            for split in task.splits]


def prepare(task, cfg: dict, record: Callable[[dict, str, str, bool], dict]) -> dict[str, list]:
    """Every split of `task` read from the release (`cfg`: config `data.{task.config_key}` and
    `release_dir`), the first `per_split[split]` rows of each: `record(row, at, split,
    verbatim)` gives the record's fields but id and source (with `verbatim` when config `prompt`
    is release)."""
    key = f"data.{task.config_key}"
    verbatim = cfg["prompt"] == "release"
    sha = commit(cfg["release_dir"])
    out = {}
    for split in task.splits:
        name = relative(task, cfg, split)
        file = path(cfg["release_dir"], name, f"{key}.release_files.{split}")
        rows = read_rows(file)
        cap = cfg["per_split"][split]
        items = []
        for i, row in enumerate(rows if cap is None else rows[:cap]):
            at = where(file, i)
            fields = record(row, at, split, verbatim)
            fields["id"] = item_id(name, i)
            if "source" in task.record.__dataclass_fields__:
                fields["source"] = f"study B release ({sha or 'not a git checkout'}) {name}"
            items.append(task.record.from_dict(fields, at))
        out[split] = items
    return out


def replies(release_dir: str | Path | None, set_file: str, train_file: str, items: list,
            key: str) -> list[tuple[object, object, dict]]:
    """The released answers to `items` (read from the training file `train_file`, ids by
    `item_id`): (item, the `answer` field of its row of `set_file`, provenance). A released set
    follows its training file row by row; a row whose problem (`task_id` where both rows have
    one, else the question) differs is an error. `key` is the config key that names the set."""
    set_path = path(release_dir, set_file, key)
    train_path = path(release_dir, train_file, key)
    rows, truth = read_rows(set_path), read_rows(train_path)
    if len(rows) != len(truth):
        raise DataError(f"{set_path}: {len(rows)} rows, but {train_path} has {len(truth)}; a "
                        "released set follows its training file row by row")
    for i, (row, true) in enumerate(zip(rows, truth)):
        # a code problem by its id: the release asked GPT-4 and Claude for HumanEval answers
        # with a slightly other wording of the question than its human answers' file holds
        fields = [k for k in ("task_id", "question") if k in row and k in true]
        if not fields:
            raise DataError(f"{where(set_path, i)}: neither 'question' nor 'task_id' to match "
                            f"it to {where(train_path, i)}")
        if row[fields[0]] != true[fields[0]]:
            raise DataError(f"{where(set_path, i)}: field '{fields[0]}' differs from "
                            f"{where(train_path, i)}'s; a released set follows its training "
                            "file row by row")
    sha = commit(release_dir)
    out = []
    for item in items:
        i = row_of(item.id)
        if item.id != item_id(train_file, i):
            raise DataError(f"item {item.id} was not read from {train_file}: a released set "
                            "needs its task's questions from the same release (config "
                            "data.{task}.source: release)")
        out.append((item, rows[i].get("answer"), {
            "source": f"study B release {REPOSITORY}", "release_file": set_file,
            "release_row": i, "release_commit": sha,
            # the set is trained on the training file's question, as every set of the task is
            "release_question_differs": rows[i].get("question") != truth[i].get("question")}))
    return out
