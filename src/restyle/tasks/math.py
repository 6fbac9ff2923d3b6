"""MATH (Hendrycks et al.), one subject: problems with worked solutions whose answer is in the
last `\\boxed{}`. Study B's paper uses the Algebra subject. Replies are checked by math-verify
(the checker lm-evaluation-harness's math tasks use): the reply's boxed (or last) expression must
be mathematically equal to the gold one, so "0.5", "\\frac{1}{2}" and "1/2" all match.

Sources: `hf` reads the hub's Hendrycks MATH (`EleutherAI/hendrycks_math`, config `algebra`,
fields problem, solution) or a local folder in that layout. No PyPI package ships MATH.
"""

from __future__ import annotations

import re
from pathlib import Path

from restyle.answers import LATEX_COMMAND_RE, final_statements, unfinished
from restyle.data import release
from restyle.data.hub import load_split
from restyle.io import DataError
from restyle.records import MathItem, solution_final
from restyle.tasks import Check, Task, gsm8k, hub_splits, no_answer, right, wrong


def load_hf(dataset_id: str, config_name: str | None, split: str) -> list[MathItem]:
    ds = load_split(dataset_id, config_name, split)
    items = []
    for i, row in enumerate(ds.rows):
        where = ds.where(i)
        for key in ("problem", "solution"):
            if not isinstance(row.get(key), str):
                raise DataError(f"{where}: missing or non-text field '{key}'")
        items.append(MathItem.from_dict({
            "id": f"math/{config_name or 'all'}/{split}/{i}", "question": row["problem"],
            "answer": row["solution"], "final": solution_final(row["solution"], where)}, where))
    return items


def release_record(row: dict, at: str, split: str, verbatim: bool) -> dict:
    """A release row as a MATH item: restyle's answer is the row's `solution`, the release's
    that solution and "Final Answer: <number>"."""
    bare, shown = gsm8k.release_question(row, at)
    solution = release.text(row, "solution", at)
    return {"question": bare, "answer": solution, "final": solution_final(solution, at),
            **({"verbatim": {"prompt": shown, "answer": release.text(row, "answer", at)}}
               if verbatim else {})}


# the tail of minerva's format
_HOPE_RE = re.compile(r"\s*I hope it is correct\.?\s*$", re.IGNORECASE)
# prose before the expression: "The distance is 17", "so we get: 17"
_PROSE_RE = re.compile(r"^.*\b(?:is|are|be|equals|get|gives)\b\s*:?\s*|^[^$]*:\s*", re.IGNORECASE)
_WORDS_RE = re.compile(r"[A-Za-z]{3,}\s+[A-Za-z]{2,}")
# words after the expression: units ("78 pebbles", "25 (units)") or the rest of a sentence
_TAIL_RE = re.compile(r"(?:\s*\(?(?<!\\)\b[A-Za-z]{2,}\b\)?[.,]?)+$")
_ROOT_RE = re.compile(r"√(?:\(([^()]*)\)|(\d+|[A-Za-z]))")
_FIRST_MATH_RE = re.compile(r"^\$+([^$]+)\$+")


def _expression(statement: str) -> str:
    """A final statement's expression as LaTeX in dollars, "" when it states none ("Final
    Answer: No real solution")."""
    s = _HOPE_RE.sub("", statement.replace("**", "").replace("\\$", "")).strip()
    s = _ROOT_RE.sub(r"\\sqrt{\1\2}", s)  # "3√2", "√(36 + 64)": plain-text roots
    s = s.rstrip(".").strip()
    if first := _FIRST_MATH_RE.match(s):  # "$147$ is the value of $2f(3)$": the first
        return f"${first.group(1)}$"
    if "$" in s:  # "The final answer is $x^2$": math-verify reads the last LaTeX block
        return s
    s = s.rsplit("=", 1)[-1]  # "20 \\cdot 2^5 = 640 bacteria"
    if _WORDS_RE.search(LATEX_COMMAND_RE.sub(" ", s)):
        s = _PROSE_RE.sub("", s)
    s = _TAIL_RE.sub("", s).strip()
    if not s or re.search(r"[A-Za-z]{3,}", LATEX_COMMAND_RE.sub(" ", s)):
        return ""
    return f"${s}$"


def final_expression(text: str) -> str | None:
    """The whole final answer a reply states, as LaTeX for math-verify: the expression of the
    statement after its last "Final Answer:" / "the answer is" marker or its last `\\boxed{}`
    (restyle.answers), so that "Final Answer: x^2 + 16" is that expression and not its last
    number (math-verify alone reads 16 from it). "" when that statement holds no expression;
    None when the reply states no final answer: then math-verify reads the whole reply, as
    lm-eval's minerva_math does, unless it stops mid-sentence."""
    found = final_statements(text)
    return _expression(found[0][1]) if found else None


def equivalent(gold: str, reply: str) -> tuple[str | None, bool]:
    """(the answer read from `reply`, whether math-verify finds it equal to `gold`)."""
    from math_verify import parse, verify

    expression = final_expression(reply)
    if expression == "" or expression is None and unfinished(reply):
        return None, False
    parsed = parse(expression if expression is not None else reply)
    if not parsed:
        return None, False
    return str(parsed[-1]), bool(verify(parse(f"${gold}$"), parsed))


class MATH(Task):
    name = "math"
    record = MathItem
    answer_format = "Put the final answer in \\boxed{}."

    def prepare(self, cfg: dict, cache_dir: str | Path) -> dict[str, list[MathItem]]:
        if cfg["source"] == "release":
            return release.prepare(self, cfg, release_record)
        return hub_splits(self, cfg, load_hf)

    def format_question(self, item: MathItem) -> str:
        return item.question.strip()

    def format_human_answer(self, item: MathItem) -> str:
        return item.answer

    def gold(self, item: MathItem) -> str:
        return item.final

    def check(self, item: MathItem, text: str) -> Check:
        got, same = equivalent(item.final, text)
        if got is None:
            return no_answer("no mathematical answer found")
        return right(got) if same else wrong(got, f"{got} is not {item.final}")


TASK = MATH()
