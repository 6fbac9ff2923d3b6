"""The tasks study B trains on and the evaluation scores, one module each, as
lm-evaluation-harness keeps its tasks: `REGISTRY` maps a task's name to its `Task`.

A task declares everything the stages need: its record type and the files its data rule writes
(`resources/data/{name}/{split}.jsonl`), how its data is read from each source (`prepare`), the
text of a question (`question`) and the one user turn that asks it everywhere (`prompt`), its
human answer and gold answer, the one final-answer checker
that study B's correctness filter and the evaluation both use (`check_all`), and how it is
evaluated (`evaluation`: the log-likelihood of option letters, or a generated reply checked by
`check_all`). The control arms (restyle.controls) are built from the same pieces.

Adding a task: a module here defining `TASK`, its import below, its config sections
(`data.{name}`, `eval.{name}`, `study_b.instructions.{name}` in config/schema.yaml) and
tests/test_tasks_{name}.py. Nothing outside this package compares a task's name.

Folds: tasks that share one config section (`Task.config_key`) are folds of one benchmark, each
testing on questions another trains on (HumanEval's two halves); a set made from one is never
evaluated on another (`evaluates`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOGLIK, GENERATE = "loglik", "generate"
PASSED, NO_ANSWER = "passed", "no_answer"  # Check.status values the stages count


@dataclass(frozen=True)
class Check:
    """The verdict on one reply. status: passed, or why not: no_answer (nothing to check),
    failed (a wrong answer, a failing program), timeout or error (the program's sandbox ended it,
    restyle.sandbox). reason: None when passed, else "{drop reason}: detail" where the drop
    reason is what study B's stats count (no_answer or wrong_answer)."""

    extracted: str | None
    status: str = PASSED
    reason: str | None = None

    @property
    def correct(self) -> bool:
        return self.status == PASSED


def right(extracted: str) -> Check:
    return Check(extracted)


def no_answer(detail: str) -> Check:
    return Check(None, NO_ANSWER, f"no_answer: {detail}")


def wrong(extracted: str | None, detail: str, status: str = "failed") -> Check:
    return Check(extracted, status, f"wrong_answer: {detail}")


def choice_check(answer: int, text: str, letters: str, choices: Sequence[str] = ()) -> Check:
    """The verdict on a multiple-choice reply: the option it names (by its label of `letters`,
    or by its text of `choices` when it gives no label) against the index of the right one."""
    from restyle.answers import extract_choice

    choice = extract_choice(text, letters=letters, choices=choices)
    if choice is None:
        return no_answer("no option found")
    got = letters[choice]
    return right(got) if choice == answer else wrong(got, f"{got} != {letters[answer]}")


class Task:
    """One task. Subclasses set the class attributes and implement the methods that raise."""

    name: str
    record: type  # the record (restyle.records) of the task's data files
    splits: tuple[str, ...] = ("train", "test")
    evaluation: str = GENERATE
    answer_format: str  # how a final answer is written; study B's templates ask for it
    # the values of config data.{name}.source that are stand-ins, not the task's real data, and
    # what each gives instead; a paper-scale config refuses them (restyle.checks)
    stand_in_sources: dict[str, str] = {}

    @property
    def config_key(self) -> str:
        """The name of its config sections (data.*, eval.*, study_b.instructions.*): its own
        name, or the benchmark's it is one fold of."""
        return self.name

    def path(self, split: str) -> str:
        return f"resources/data/{self.name}/{split}.jsonl"

    def prepare(self, cfg: dict, cache_dir: str | Path) -> dict[str, list]:
        """The items of every split that config `data.{config_key}` asks for; `cache_dir` holds
        files unpacked from PyPI packages (restyle.packaged)."""
        raise NotImplementedError

    def release_fields(self, cfg: dict) -> dict[str, str]:
        """The fields of config `data.{config_key}.release_files` this task fills in (HumanEval's
        `{fold}`); see restyle.data.release."""
        return {}

    def select(self, items: Sequence, cap: int | None) -> list:
        """The first `cap` training items (study_b.items)."""
        return list(items) if cap is None else list(items[:cap])

    def question(self, item: Any) -> str:
        """The question as every prompt shows it: the source's own user turn where the item
        carries one (`verbatim`: the study B release's prompt format, its instruction included),
        else restyle's format of it."""
        return item.verbatim["prompt"] if _verbatim(item) else self.format_question(item)

    def human_answer(self, item: Any) -> str:
        """The ground truth as people wrote it, study B's `human` completion: the source's own
        answer text where the item carries one (`verbatim`), else restyle's format of it."""
        return item.verbatim["answer"] if _verbatim(item) else self.format_human_answer(item)

    def format_question(self, item: Any) -> str:
        raise NotImplementedError

    def format_human_answer(self, item: Any) -> str:
        raise NotImplementedError

    def gold(self, item: Any) -> str:
        """The final answer in words: the evaluation CSV's `gold` and the teacher's hint."""
        raise NotImplementedError

    def check(self, item: Any, text: str) -> Check:
        raise NotImplementedError

    def check_all(self, items: Sequence, texts: Sequence[str], jobs: int = 1) -> list[Check]:
        """The verdict on each reply; `jobs`: checks that run at once (code tasks run programs)."""
        return [self.check(item, text) for item, text in zip(items, texts)]

    def prompt(self, item: Any, instruction: str) -> str:
        """The user turn of a question: the one text every study B set trains on, every control
        arm trains on and the evaluation asks (a blank line between question and instruction,
        as study B's release writes its questions). An item in the release's format carries its
        instruction in its question; the config check keeps `instruction` empty for it."""
        question, instruction = self.question(item).strip(), instruction.strip()
        return f"{question}\n\n{instruction}" if instruction else question


def _verbatim(item: Any) -> bool:
    return getattr(item, "verbatim", None) is not None


def hub_splits(task: Task, cfg: dict, load: Callable[[str, str | None, str], list]
               ) -> dict[str, list]:
    """Every split of `task` read by `load(hf_id, hf_config, source split)` as config
    `data.{config_key}` names them (`splits`), the first `per_split[split]` of each (null = all)."""
    from restyle.io import DataError

    out = {}
    for split in task.splits:
        items = load(cfg["hf_id"], cfg["hf_config"], cfg["splits"][split])
        cap = cfg["per_split"][split]
        out[split] = items if cap is None else items[:cap]
        if not out[split]:
            raise DataError(f"{task.name} {cfg['hf_id']}: split '{cfg['splits'][split]}' is "
                            f"empty (config data.{task.config_key})")
    return out


def _registry() -> dict[str, Task]:
    # every task module, imported by name so restyle.versions sees each (versions.code_version
    # counts only the module of the job's own task)
    from restyle.tasks import ecqa, gsm8k, humaneval, math, mbpp, mmlu

    every = [m.TASK for m in (gsm8k, mmlu, math, ecqa, mbpp)] + list(humaneval.FOLDS)
    return {t.name: t for t in every}


REGISTRY: dict[str, Task] = _registry()
NAMES = tuple(REGISTRY)


def evaluates(trained: str, evaluated: str) -> bool:
    """Whether a set made from task `trained` is evaluated on task `evaluated`: not on another
    fold of its benchmark, whose test split is the set's own training questions."""
    return trained == evaluated or REGISTRY[trained].config_key != REGISTRY[evaluated].config_key


def get(name: str, key: str = "task") -> Task:
    """The task `name`; an unknown one is an error naming config `key`."""
    if name not in REGISTRY:
        raise KeyError(f"config {key}: unknown task '{name}' (known: {', '.join(NAMES)})")
    return REGISTRY[name]
