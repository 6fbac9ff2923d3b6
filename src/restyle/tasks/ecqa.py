"""ECQA (Aggarwal et al., 2021): CommonsenseQA's five-option questions with human explanations.
Study B trains on the explanation followed by the answer and evaluates by generation: the
option read from the reply (restyle.answers.extract_choice: its label, A-E, or 1-5 where the
record's `labels` are the release's numbers; else the option's text) must be the gold one.

Sources: `hf` reads a hub copy or local folder in the layout of `yangdong/ecqa` (fields q_text,
q_op1..q_op5, q_ans: the answer's text, taskB: the free-flow explanation).
"""

from __future__ import annotations

import re
from pathlib import Path

from restyle.data import release
from restyle.data.hub import load_split
from restyle.io import DataError
from restyle.records import ExplainedMCItem
from restyle.tasks import Check, Task, choice_check, hub_splits
from restyle.tasks.mmlu import format_options

OPTIONS = tuple(f"q_op{i}" for i in range(1, 6))


def load_hf(dataset_id: str, config_name: str | None, split: str) -> list[ExplainedMCItem]:
    ds = load_split(dataset_id, config_name, split)
    items = []
    for i, row in enumerate(ds.rows):
        where = ds.where(i)
        for key in ("q_text", *OPTIONS, "q_ans", "taskB"):
            if not isinstance(row.get(key), str):
                raise DataError(f"{where}: missing or non-text field '{key}'")
        choices = [row[k] for k in OPTIONS]
        if row["q_ans"] not in choices:
            raise DataError(f"{where}: answer '{row['q_ans']}' is none of the options "
                            f"{choices}")
        items.append(ExplainedMCItem.from_dict({
            "id": f"ecqa/{split}/{row.get('q_no', i)}", "question": row["q_text"],
            "choices": choices, "answer": choices.index(row["q_ans"]),
            "explanation": row["taskB"]}, where))
    return items


_RELEASE_QUESTION_RE = re.compile(r"We have the question: (.*)\nand the options:\n", re.DOTALL)
RELEASE_INSTRUCTION = ("\nPlease inference first, then provide the final answer (1/2/3/4/5) at "
                       "the end, after 'Final Answer:'\n")


def release_shown(question: str, choices: list[str]) -> str:
    """A question in the release's format: options numbered "(1): ...", then its instruction."""
    options = "".join(f"({n}): {c}\n" for n, c in enumerate(choices, 1))
    return (f"We have the question: {question}\nand the options:\n{options}\n"
            f"what is the correct option?\n{RELEASE_INSTRUCTION}")


def release_record(row: dict, at: str, split: str, verbatim: bool) -> dict:
    """A release row as an ECQA item: options in fields "1".."5", `gold_label` the right one's
    number, `combined_explaination` the human explanation; a training row's question is in the
    release's format (`original_question`), a test row's bare. The release's human answer is
    "Inference: <explanation>" and "Final Answer: <number>"."""
    choices = [release.text(row, str(n), at) for n in range(1, 6)]
    gold = release.text(row, "gold_label", at)
    if gold not in {str(n) for n in range(1, 6)}:
        raise DataError(f"{at}: field 'gold_label' is {gold!r}, must be 1..5")
    explanation = release.text(row, "combined_explaination", at)
    if "original_question" in row:
        m = _RELEASE_QUESTION_RE.match(release.text(row, "original_question", at))
        if not m:
            raise DataError(f"{at}: field 'original_question' does not start with 'We have the "
                            "question: ...' and its options")
        question = m.group(1)
    else:
        question = release.text(row, "question", at)
    shown = release_shown(question, choices)
    answer = f"Inference: {explanation}\n\nFinal Answer: {gold}"
    return {"question": question, "choices": choices, "answer": int(gold) - 1,
            "explanation": explanation, "labels": "numbers" if verbatim else "letters",
            **release.verbatim(row, at, "original_question" in row, shown, answer, verbatim)}


class ECQA(Task):
    name = "ecqa"
    record = ExplainedMCItem
    answer_format = "End with 'The answer is (X)', where X is the letter of the correct option."

    def prepare(self, cfg: dict, cache_dir: str | Path) -> dict[str, list[ExplainedMCItem]]:
        if cfg["source"] == "release":
            return release.prepare(self, cfg, release_record)
        return hub_splits(self, cfg, load_hf)

    def format_question(self, item: ExplainedMCItem) -> str:
        if item.labels == "numbers":  # "(1) bank": "1. bank" would read as a list's first step
            options = "\n".join(f"({n}) {c}" for n, c in zip(item.label_chars, item.choices))
        else:
            options = format_options(item.choices, item.label_chars)
        return f"{item.question.strip()}\n{options}"

    def format_human_answer(self, item: ExplainedMCItem) -> str:
        return f"{item.explanation.strip()}\nThe answer is ({item.answer_letter})."

    def gold(self, item: ExplainedMCItem) -> str:
        return f"({item.answer_letter}) {item.choices[item.answer]}"

    def check(self, item: ExplainedMCItem, text: str) -> Check:
        return choice_check(item.answer, text, item.label_chars, item.choices)


TASK = ECQA()
