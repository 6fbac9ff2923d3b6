"""Control arms: SFT sets whose effect on the evaluated task is known before anything runs.

They are trained, evaluated and reported exactly like the studies' sets, so that a report can
tell "this style has no effect" from "this pipeline cannot show an effect" (an adapter the
evaluation ignores, a training that never updates the weights, a comparison of a checkpoint with
itself):

- positive: the evaluated questions themselves with their correct answers, written as the
  evaluation asks them (a deliberate leak): a working pipeline shows a clear gain.
- negative: the same prompts with wrong answers (MMLU: another option; a generation task:
  another problem's human answer): accuracy falls or stays.

One set per kind and evaluated task a study trains for (MMLU for study A, `study_b.tasks` for
study B): `control-{task}-{kind}` in results/sft/. The report keeps them out of the studies'
tables and shows them in a section of their own; every record's provenance says `control`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from restyle import tasks
from restyle.evaluate import mc_prompt, shots_by_subject
from restyle.io import DataError
from restyle.records import LETTERS, MCItem, SFTRecord

KINDS = ("positive", "negative")
PREFIX = "control-"
EXPECTED = {"positive": "a significant gain: the evaluated answers were trained on",
            "negative": "no gain: the evaluated questions were trained with wrong answers"}


def sft_set_name(task: str, kind: str) -> str:
    return f"{PREFIX}{task}-{kind}"


def parse_name(sft_set: str) -> tuple[str, str] | None:
    """(task, kind) of a control set's name, None for any other set."""
    if not sft_set.startswith(PREFIX):
        return None
    task, _, kind = sft_set.removeprefix(PREFIX).rpartition("-")
    return (task, kind) if task in tasks.REGISTRY and kind in KINDS else None


def _record(sft_set: str, kind: str, task: str, source_id: str, prompt: str, completion: str,
            **extra) -> SFTRecord:
    return SFTRecord(id=f"{sft_set}/{source_id}", source_id=source_id, dataset=sft_set,
                     prompt=[{"role": "user", "content": prompt}], completion=completion,
                     provenance={"study": "control", "control": kind, "task": task,
                                 "sft_set": sft_set, "source_id": source_id,
                                 "expected": EXPECTED[kind], "not_a_result": True, **extra})


def wrong_letter(item: MCItem) -> str:
    """A wrong option, fixed by the item's id (so the set is the same on every run)."""
    shift = 1 + int(hashlib.sha256(item.id.encode()).hexdigest(), 16) % 3
    return LETTERS[(item.answer + shift) % len(LETTERS)]


def choice_set(task: tasks.Task, kind: str, items: Sequence[MCItem], dev: Sequence[MCItem],
               k_shot: int) -> list[SFTRecord]:
    """The evaluated prompts of a log-likelihood task (lm-evaluation-harness's MMLU prompt, with
    the same k solved dev items) answered by the letter scored in evaluation: the gold one, or a
    wrong one."""
    shots = shots_by_subject(dev, k_shot)
    name = sft_set_name(task.name, kind)
    return [_record(name, kind, task.name, it.id, mc_prompt(it, shots.get(it.subject, [])),
                    it.answer_letter if kind == "positive" else wrong_letter(it),
                    gold=it.answer_letter)
            for it in items]


def generation_set(task: tasks.Task, kind: str, items: Sequence,
                   instruction: str) -> list[SFTRecord]:
    """The evaluated problems as evaluation prompts them, with their human answers, or with the
    human answer of the next problem whose gold answer differs."""
    name = sft_set_name(task.name, kind)
    out = []
    for i, it in enumerate(items):
        answer = it
        if kind == "negative":
            others = (items[(i + k) % len(items)] for k in range(1, len(items)))
            answer = next((o for o in others if task.gold(o) != task.gold(it)), None)
            if answer is None:
                raise DataError(f"negative control of {task.name}: every test problem has the "
                                f"answer {task.gold(it)}, so none can be answered wrongly")
        out.append(_record(name, kind, task.name, it.id, task.prompt(it, instruction),
                           task.human_answer(answer), gold=task.gold(it), answer_of=answer.id))
    return out
