"""Word problems with human-style worked solutions in GSM8K's format, for study B's
generation/exact-match path: `openai/gsm8k` through `datasets`, or a seeded generator of
arithmetic problems (`bundled`) so that path also runs offline.

Bundled solutions are written like GSM8K's: terse sentences with calculator annotations
`<<48/2=24>>` and a last line `#### <number>`.
"""

from __future__ import annotations

import operator
import random
import re
from collections.abc import Callable

from pathlib import Path

from restyle.answers import extract_number, numbers_match
from restyle.data import release
from restyle.data.hub import load_split
from restyle.io import DataError
from restyle.records import MathItem, gsm8k_final
from restyle.tasks import Check, Task, no_answer, right, wrong

SYNTHETIC_PREFIX = "synthetic-gsm8k"
SPLITS = ("train", "test")

NAMES = ["Ava", "Ben", "Chen", "Dara", "Eli", "Fatima", "Gus", "Hana", "Ivan", "Jia", "Kofi",
         "Lena", "Mateo", "Nora", "Omar", "Priya", "Quinn", "Rosa", "Sami", "Tariq"]


OPS: dict[str, Callable[[int, int], float]] = {
    "+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}


def _calc(a: int, op: str, b: int) -> tuple[str, int]:
    """(3, '*', 12) -> ('3*12 = <<3*12=36>>36', 36); templates only build integer results."""
    value = OPS[op](a, b)
    if value != int(value):
        raise ValueError(f"{a}{op}{b} is not an integer")
    expr, value = f"{a}{op}{b}", int(value)
    return f"{expr} = <<{expr}={value}>>{value}", value


def _boxes(r: random.Random) -> tuple[str, list[str], int]:
    name, boxes, per, given = r.choice(NAMES), r.randint(2, 9), r.randint(4, 24), r.randint(1, 15)
    s1, total = _calc(boxes, "*", per)
    s2, left = _calc(total, "-", given)
    q = (f"{name} buys {boxes} boxes of pencils with {per} pencils in each box. "
         f"{name} gives {given} pencils to a friend. How many pencils does {name} have left?")
    return q, [f"{name} buys {s1} pencils.", f"After giving some away, {name} has {s2} pencils."], left


def _wage(r: random.Random) -> tuple[str, list[str], int]:
    name, rate, hours, days = r.choice(NAMES), r.randint(8, 30), r.randint(2, 8), r.randint(2, 6)
    s1, daily = _calc(rate, "*", hours)
    s2, total = _calc(daily, "*", days)
    q = (f"{name} earns ${rate} an hour babysitting. {name} babysits {hours} hours a day for "
         f"{days} days. How much money does {name} earn?")
    return q, [f"Each day {name} earns {s1} dollars.", f"In {days} days that is {s2} dollars."], total


def _halves(r: random.Random) -> tuple[str, list[str], int]:
    name, april = r.choice(NAMES), 2 * r.randint(10, 60)
    s1, may = _calc(april, "/", 2)
    s2, total = _calc(april, "+", may)
    q = (f"{name} sold {april} cupcakes in April, and then half as many cupcakes in May. "
         f"How many cupcakes did {name} sell altogether in April and May?")
    return q, [f"{name} sold {s1} cupcakes in May.",
               f"{name} sold {s2} cupcakes altogether."], total


def _savings(r: random.Random) -> tuple[str, list[str], int]:
    name, price, have, weekly = r.choice(NAMES), r.randint(60, 200), r.randint(5, 40), r.randint(5, 15)
    need = price - have
    weeks = -(-need // weekly)
    s1, _ = _calc(price, "-", have)
    q = (f"{name} wants a bike that costs ${price}. {name} has ${have} saved and saves ${weekly} "
         f"every week. How many weeks must {name} save to have enough money for the bike?")
    steps = [f"{name} still needs {s1} dollars.",
             f"{need}/{weekly} is {need / weekly:.2f}, so {name} needs {weeks} full weeks."]
    return q, steps, weeks


def _garden(r: random.Random) -> tuple[str, list[str], int]:
    rows, per, eaten = r.randint(3, 12), r.randint(5, 15), r.randint(2, 9)
    s1, total = _calc(rows, "*", per)
    s2, left = _calc(total, "-", eaten)
    s3, pairs = _calc(left, "*", 2)
    q = (f"A garden has {rows} rows of tulips with {per} tulips in each row. Rabbits eat {eaten} "
         f"tulips. Each remaining tulip has 2 leaves. How many leaves are on the remaining tulips?")
    return q, [f"There are {s1} tulips.", f"After the rabbits, {s2} tulips are left.",
               f"They have {s3} leaves."], pairs


def _trip(r: random.Random) -> tuple[str, list[str], int]:
    speed, hours, extra = r.randint(30, 70), r.randint(2, 6), r.randint(10, 90)
    s1, first = _calc(speed, "*", hours)
    s2, total = _calc(first, "+", extra)
    q = (f"A bus drives at {speed} miles per hour for {hours} hours and then another {extra} "
         f"miles to reach the city. How many miles does the bus travel in total?")
    return q, [f"In {hours} hours it drives {s1} miles.", f"In total it drives {s2} miles."], total


def _share(r: random.Random) -> tuple[str, list[str], int]:
    kids, each, extra = r.randint(2, 8), r.randint(3, 12), r.randint(1, 9)
    s1, shared = _calc(kids, "*", each)
    s2, total = _calc(shared, "+", extra)
    name = r.choice(NAMES)
    q = (f"{name} shares stickers so that each of {kids} children gets {each} stickers, and "
         f"{extra} stickers are left over. How many stickers did {name} have at the start?")
    return q, [f"The children got {s1} stickers.", f"{name} had {s2} stickers."], total


TEMPLATES: list[Callable[[random.Random], tuple[str, list[str], int]]] = [
    _boxes, _wage, _halves, _savings, _garden, _trip, _share]


def generate(n: int, seed: int, split: str, exclude: set[str] = frozenset()) -> list[MathItem]:
    """`n` distinct problems for `split`; `exclude` holds questions another split already has."""
    r = random.Random(f"{seed}:{split}")
    items, seen = [], set(exclude)
    attempts = 0
    while len(items) < n:
        attempts += 1
        if attempts > 100 * n + 100:
            raise DataError(f"could not generate {n} distinct problems (config data.gsm8k)")
        question, steps, final = r.choice(TEMPLATES)(r)
        if question in seen:
            continue
        seen.add(question)
        answer = "\n".join([*steps, f"#### {final}"])
        items.append(MathItem(id=f"{SYNTHETIC_PREFIX}/{split}/{len(items)}", question=question,
                              answer=answer, final=str(final)))
    return items


def load_hf(dataset_id: str, config_name: str | None, split: str) -> list[MathItem]:
    ds = load_split(dataset_id, config_name, split)
    items = []
    for i, row in enumerate(ds.rows):
        where = ds.where(i)
        for key in ("question", "answer"):
            if not isinstance(row.get(key), str):
                raise DataError(f"{where}: missing or non-text field '{key}'")
        items.append(MathItem.from_dict({"id": f"gsm8k/{split}/{i}", "question": row["question"],
                                         "answer": row["answer"],
                                         "final": gsm8k_final(row["answer"], where)}, where))
    return items


# the paper's instruction after every question (its release's training questions end with it)
RELEASE_INSTRUCTION = ("\n\nPlease provide the final answer (a number) at the end, after "
                       "'Final Answer:'\n")
_RELEASE_FINAL_RE = re.compile(r"\n?Final Answer:[ \t]*([^\n]+?)[ \t]*$")


def release_question(row: dict, at: str) -> tuple[str, str]:
    """(the bare question, the question in the release's format) of a GSM8K or MATH row: a
    training row's `original_question` and `question` (checked to be the bare one and the
    instruction), a test row's bare `question`."""
    if "original_question" not in row:
        bare = release.text(row, "question", at)
        return bare, bare + RELEASE_INSTRUCTION
    bare = release.text(row, "original_question", at)
    release.same(row, "question", bare + RELEASE_INSTRUCTION, at)
    return bare, bare + RELEASE_INSTRUCTION


def release_record(row: dict, at: str, split: str, verbatim: bool) -> dict:
    """A release row as a GSM8K item: its answer ends "Final Answer: N", restyle's "#### N"."""
    bare, shown = release_question(row, at)
    answer = release.text(row, "answer", at)
    m = _RELEASE_FINAL_RE.search(answer)
    if not m:
        raise DataError(f"{at}: field 'answer' does not end with 'Final Answer: <number>'")
    own = answer[:m.start()] + f"\n#### {m.group(1)}"
    return {"question": bare, "answer": own, "final": gsm8k_final(own, at),
            **({"verbatim": {"prompt": shown, "answer": answer}} if verbatim else {})}


def prepare(cfg: dict) -> dict[str, list[MathItem]]:
    """The train and test problems that `data.gsm8k` in config asks for."""
    sizes = cfg["per_split"]
    if cfg["source"] == "release":
        return release.prepare(TASK, cfg, release_record)
    if cfg["source"] == "bundled":
        for split in SPLITS:
            if sizes[split] is None:
                raise DataError(f"config data.gsm8k.per_split.{split} must be a number "
                                "for the bundled source")
        train = generate(sizes["train"], cfg["seed"], "train")
        test = generate(sizes["test"], cfg["seed"], "test", exclude={it.question for it in train})
        out = {"train": train, "test": test}
    else:
        out = {}
        for split in SPLITS:
            items = load_hf(cfg["hf_id"], cfg["hf_config"], split)
            out[split] = items if sizes[split] is None else items[:sizes[split]]
    for split, items in out.items():
        if not items:
            raise DataError(f"GSM8K source '{cfg['source']}': split '{split}' is empty "
                            "(config data.gsm8k)")
    return out


class GSM8K(Task):
    """Generated with the chat template; the extracted final number must match exactly."""

    name = "gsm8k"
    record = MathItem
    splits = SPLITS
    answer_format = "End with a line '#### <number>'."
    stand_in_sources = {"bundled": "restyle's synthetic arithmetic word problems"}

    def prepare(self, cfg: dict, cache_dir: str | Path) -> dict[str, list[MathItem]]:
        return prepare(cfg)

    def format_question(self, item: MathItem) -> str:
        return item.question.strip()

    def format_human_answer(self, item: MathItem) -> str:
        return item.answer

    def gold(self, item: MathItem) -> str:
        return item.final

    def check(self, item: MathItem, text: str) -> Check:
        got = extract_number(text)
        if got is None:
            return no_answer("no number found")
        return right(got) if numbers_match(got, item.final) else \
            wrong(got, f"{got} != {item.final}")


TASK = GSM8K()
