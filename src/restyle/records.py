"""The typed records every restyle JSONL file holds; docs/schema.md documents them once.

Each record has `to_dict()` for writing and `from_dict(obj, where)` for reading, which checks
field names and types and raises DataError naming `where` (file:line) on anything wrong.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

from restyle.io import DataError

LETTERS = "ABCD"  # MMLU's options
CHOICE_LETTERS = "ABCDEFGH"  # any multiple-choice task's
# how a prompt labels the options of an ExplainedMCItem: letters, or numbers as the study B
# authors' release shows ECQA's ("(1): ...", answered "Final Answer: 1")
CHOICE_LABELS = {"letters": CHOICE_LETTERS, "numbers": "12345678"}


def _require(obj: dict, where: str, fields: dict[str, type | tuple[type, ...]]) -> None:
    missing = [k for k in fields if k not in obj]
    if missing:
        raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
    for key, typ in fields.items():
        if not isinstance(obj[key], typ) or isinstance(obj[key], bool) and typ is int:
            raise DataError(f"{where}: field '{key}' must be {getattr(typ, '__name__', typ)}, "
                            f"got {type(obj[key]).__name__}")


# Tab and line ends are text (multi-line questions); any other ASCII control character, such as
# the NUL of a broken export, would reach the teacher and the model unseen. C1 characters are let
# through: MMLU's own text holds a few hundred (quotes decoded as Latin-1).
_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _plain_text(where: str, fields: dict[str, str]) -> None:
    """The text fields of a source record hold no control characters other than tab and line
    ends."""
    for key, value in fields.items():
        if m := _CONTROL_RE.search(value):
            raise DataError(f"{where}: field '{key}' holds control character "
                            f"U+{ord(m.group()):04X} at character {m.start() + 1}")


def _nonempty(value: str, key: str, where: str) -> str:
    if not value.strip():
        raise DataError(f"{where}: field '{key}' is empty")
    return value


def _verbatim(obj: dict, where: str) -> dict | None:
    """The optional `verbatim` field: {prompt, answer}, the user turn and the human answer
    exactly as a source writes them (the study B release's prompt format)."""
    value = obj.get("verbatim")
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) != {"prompt", "answer"} or not all(
            isinstance(v, str) and v.strip() for v in value.values()):
        raise DataError(f"{where}: field 'verbatim' must be null or {{prompt, answer}}, both "
                        "non-empty text")
    _plain_text(where, {f"verbatim.{k}": v for k, v in value.items()})
    return dict(value)


class _Record:
    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        if out.get("verbatim", ...) is None:  # files of sources without it stay as they were
            del out["verbatim"]
        return out


@dataclass(frozen=True)
class MCItem(_Record):
    """A four-option multiple-choice question (MMLU and any task of that shape)."""

    id: str
    subject: str
    question: str
    choices: list[str]
    answer: int  # index of the correct choice, 0..3

    @classmethod
    def from_dict(cls, obj: dict, where: str) -> MCItem:
        _require(obj, where, {"id": str, "subject": str, "question": str, "choices": list,
                              "answer": int})
        choices = obj["choices"]
        if len(choices) != 4 or not all(isinstance(c, str) for c in choices):
            raise DataError(f"{where}: field 'choices' must be a list of 4 strings")
        if not 0 <= obj["answer"] <= 3:
            raise DataError(f"{where}: field 'answer' is {obj['answer']}, must be 0..3")
        _plain_text(where, {"id": obj["id"], "subject": obj["subject"],
                            "question": obj["question"],
                            **{f"choices[{i}]": c for i, c in enumerate(choices)}})
        return cls(id=_nonempty(obj["id"], "id", where), subject=obj["subject"],
                   question=_nonempty(obj["question"], "question", where),
                   choices=list(choices), answer=obj["answer"])

    @property
    def answer_letter(self) -> str:
        return LETTERS[self.answer]


@dataclass(frozen=True)
class RuozhibaItem(_Record):
    """A "silly" question with its answer, as study A's teacher reads them."""

    id: str
    question: str
    answer: str
    source: str  # where the row came from: a file path, a dataset id or "restyle-sample"

    @classmethod
    def from_dict(cls, obj: dict, where: str) -> RuozhibaItem:
        _require(obj, where, {"id": str, "question": str, "answer": str, "source": str})
        _plain_text(where, {k: obj[k] for k in ("id", "question", "answer")})
        return cls(id=_nonempty(obj["id"], "id", where),
                   question=_nonempty(obj["question"], "question", where),
                   answer=_nonempty(obj["answer"], "answer", where), source=obj["source"])


_FINAL_RE = re.compile(r"####\s*(.+?)\s*$")


def gsm8k_final(answer: str, where: str) -> str:
    """The number after the last '####' of a GSM8K-format solution, commas removed."""
    lines = [ln for ln in answer.strip().splitlines() if ln.strip()]
    m = _FINAL_RE.search(lines[-1]) if lines else None
    if not m:
        raise DataError(f"{where}: answer does not end with '#### <number>'")
    return m.group(1).replace(",", "")


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`) in `text`, braces balanced;
    None when there is none or it is not closed."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, begin = 1, i
    while i < len(text):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[begin:i]
        i += 1
    return None


def solution_final(answer: str, where: str) -> str:
    """The final answer a worked solution ends with: GSM8K's '#### <number>' line, or MATH's
    last `\\boxed{}`."""
    if "####" in answer:
        return gsm8k_final(answer, where)
    boxed = last_boxed(answer)
    if boxed is None or not boxed.strip():
        raise DataError(f"{where}: answer ends with neither '#### <number>' nor a \\boxed{{}} "
                        "answer")
    return boxed.strip()


@dataclass(frozen=True)
class MathItem(_Record):
    """A problem with a human-written worked solution: GSM8K's format (last line "#### N") or
    MATH's (the answer in the last `\\boxed{}`)."""

    id: str
    question: str
    answer: str  # worked solution
    final: str  # its final answer ("####" number or boxed text), the target of the checker
    verbatim: dict | None = None  # the source's own user turn and answer (_verbatim)

    @classmethod
    def from_dict(cls, obj: dict, where: str) -> MathItem:
        _require(obj, where, {"id": str, "question": str, "answer": str, "final": str})
        _plain_text(where, {k: obj[k] for k in ("id", "question", "answer")})
        if solution_final(obj["answer"], where) != obj["final"]:
            raise DataError(f"{where}: field 'final' does not match the final answer of 'answer'")
        return cls(id=_nonempty(obj["id"], "id", where),
                   question=_nonempty(obj["question"], "question", where),
                   answer=obj["answer"], final=obj["final"], verbatim=_verbatim(obj, where))


@dataclass(frozen=True)
class ExplainedMCItem(_Record):
    """A multiple-choice question with a human explanation of its answer (ECQA: five options)."""

    id: str
    question: str
    choices: list[str]
    answer: int  # index of the correct choice
    explanation: str  # why it is right, as people wrote it
    labels: str = "letters"  # how the prompt labels the options (CHOICE_LABELS)
    verbatim: dict | None = None  # the source's own user turn and answer (_verbatim)

    @classmethod
    def from_dict(cls, obj: dict, where: str) -> ExplainedMCItem:
        _require(obj, where, {"id": str, "question": str, "choices": list, "answer": int,
                              "explanation": str})
        labels = obj.get("labels", "letters")
        if labels not in CHOICE_LABELS:
            raise DataError(f"{where}: field 'labels' is {labels!r}, must be one of "
                            f"{', '.join(CHOICE_LABELS)}")
        choices = obj["choices"]
        _plain_text(where, {"question": obj["question"], "explanation": obj["explanation"],
                            **{f"choices[{i}]": c for i, c in enumerate(choices)
                               if isinstance(c, str)}})
        if not 2 <= len(choices) <= len(CHOICE_LETTERS) or not all(
                isinstance(c, str) and c.strip() for c in choices):
            raise DataError(f"{where}: field 'choices' must be a list of 2 to "
                            f"{len(CHOICE_LETTERS)} non-empty strings")
        if not 0 <= obj["answer"] < len(choices):
            raise DataError(f"{where}: field 'answer' is {obj['answer']}, must be 0.."
                            f"{len(choices) - 1}")
        return cls(id=_nonempty(obj["id"], "id", where),
                   question=_nonempty(obj["question"], "question", where),
                   choices=list(choices), answer=obj["answer"],
                   explanation=_nonempty(obj["explanation"], "explanation", where),
                   labels=labels, verbatim=_verbatim(obj, where))

    @property
    def label_chars(self) -> str:
        """The label of each option, in order: "ABCDE" or "12345"."""
        return CHOICE_LABELS[self.labels][:len(self.choices)]

    @property
    def answer_letter(self) -> str:
        """The right option's label (a letter, or a number where the prompt numbers them)."""
        return self.label_chars[self.answer]


@dataclass(frozen=True)
class CodeItem(_Record):
    """A programming problem checked by running tests (HumanEval, MBPP)."""

    id: str
    prompt: str  # what the model is shown: a signature with docstring, or a description
    solution: str  # the human solution: a whole program that `test` checks
    test: str  # code run after the solution; it fails (an exception, exit != 0) when wrong
    entry_point: str  # the function under test ("" when the tests name it themselves)
    source: str  # where it came from and which part (the HumanEval half it is in)
    verbatim: dict | None = None  # the source's own user turn and answer (_verbatim)

    @classmethod
    def from_dict(cls, obj: dict, where: str) -> CodeItem:
        _require(obj, where, {"id": str, "prompt": str, "solution": str, "test": str,
                              "entry_point": str, "source": str})
        _plain_text(where, {k: obj[k] for k in ("id", "prompt", "solution", "test")})
        return cls(id=_nonempty(obj["id"], "id", where),
                   prompt=_nonempty(obj["prompt"], "prompt", where),
                   solution=_nonempty(obj["solution"], "solution", where),
                   test=_nonempty(obj["test"], "test", where), entry_point=obj["entry_point"],
                   source=obj["source"], verbatim=_verbatim(obj, where))


CHAT_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class SFTRecord(_Record):
    """One supervised fine-tuning example: every SFT set restyle makes holds these.

    Training computes the loss on `completion` only, with `prompt` rendered by the target
    model's own chat template (`restyle.chat.encode`, shared with the familiarity scorer).
    """

    id: str  # unique within its file; "{dataset}/{source_id}" by convention
    source_id: str  # id of the MCItem/MathItem/RuozhibaItem it was made from
    dataset: str  # the SFT set: a rule slug (study A) or a variant name (study B)
    prompt: list[dict]  # chat messages before the response, ending with a user turn
    completion: str  # the assistant response that is trained on
    # how the row was made: teacher backend and model, template name and hash, generation
    # parameters, token counts, cache key; empty for rows copied from human data
    provenance: dict

    @classmethod
    def from_dict(cls, obj: dict, where: str) -> SFTRecord:
        _require(obj, where, {"id": str, "source_id": str, "dataset": str, "prompt": list,
                              "completion": str, "provenance": dict})
        prompt = obj["prompt"]
        for i, msg in enumerate(prompt):
            if not (isinstance(msg, dict) and msg.get("role") in CHAT_ROLES
                    and isinstance(msg.get("content"), str)):
                raise DataError(f"{where}: prompt[{i}] must be {{role: system|user|assistant, "
                                "content: text}}")
        if not prompt or prompt[-1]["role"] != "user":
            raise DataError(f"{where}: prompt must end with a user message")
        return cls(id=_nonempty(obj["id"], "id", where), source_id=obj["source_id"],
                   dataset=obj["dataset"], prompt=[dict(m) for m in prompt],
                   completion=_nonempty(obj["completion"], "completion", where),
                   provenance=dict(obj["provenance"]))
