"""MATH (Hendrycks et al.), one subject: problems with worked solutions whose answer is in the
last `\\boxed{}`. Study B's paper uses the Algebra subject. Replies are checked by math-verify
(the checker lm-evaluation-harness's math tasks use): the reply's boxed (or last) expression must
be mathematically equal to the gold one, so "0.5", "\\frac{1}{2}" and "1/2" all match.

Sources: `hf` reads the hub's Hendrycks MATH (`EleutherAI/hendrycks_math`, config `algebra`,
fields problem, solution) or a local folder in that layout. No PyPI package ships MATH.
"""

from __future__ import annotations

from pathlib import Path

from restyle.data.hub import load_split
from restyle.io import DataError
from restyle.records import MathItem, solution_final
from restyle.tasks import Check, Task, hub_splits, no_answer, right, wrong


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


def equivalent(gold: str, reply: str) -> tuple[str | None, bool]:
    """(the answer math-verify read from `reply`, whether it equals `gold`)."""
    from math_verify import parse, verify

    parsed = parse(reply)
    if not parsed:
        return None, False
    return str(parsed[-1]), bool(verify(parse(f"${gold}$"), parsed))


class MATH(Task):
    name = "math"
    record = MathItem
    answer_format = "Put the final answer in \\boxed{}."

    def prepare(self, cfg: dict, cache_dir: str | Path) -> dict[str, list[MathItem]]:
        return hub_splits(self, cfg, load_hf)

    def question(self, item: MathItem) -> str:
        return item.question.strip()

    def human_answer(self, item: MathItem) -> str:
        return item.answer

    def gold(self, item: MathItem) -> str:
        return item.final

    def check(self, item: MathItem, text: str) -> Check:
        got, same = equivalent(item.final, text)
        if got is None:
            return no_answer("no mathematical answer found")
        return right(got) if same else wrong(got, f"{got} is not {item.final}")


TASK = MATH()
