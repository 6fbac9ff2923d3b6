"""Reading study A's teacher replies: rule lines and blocks, rewriting instructions
(`rules`), and a rewrite's question, options, reasoning and final letter (`rewrite`).

Replies are read leniently, because the offline default teacher (SmolLM2-135M) rarely keeps a
format: list markers, bold and lead-ins like "The reason is that" are stripped, and a reply that
cannot be read is rejected with the reason, never repaired with invented text.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass

from restyle.answers import extract_choice
from restyle.records import LETTERS

# words a model puts before the colon that are labels, not rule names
_LABELS = {"rule", "rules", "name", "answer", "explanation", "reason", "title", "description",
           "instructions", "instruction", "note", "example", "question", "a", "q"}
_LEAD_INS = re.compile(r"^(?:the\s+(?:reason|answer|rule)\b[^:]{0,40}?(?:\bis\b\s*:?|:)\s*"
                       r"(?:that\s+)?|because\s+)", re.IGNORECASE)
_MARKER = re.compile(r"^\s*(?:[-*•]+|\(?\d{1,2}[.)]|#+)\s*")
MIN_DESCRIPTION_WORDS = 5
MAX_NAME_WORDS = 8


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def _repetitive(text: str) -> bool:
    """True when one run of three words occurs three times or more (a looping reply)."""
    tokens = words(text)
    grams = [" ".join(tokens[i:i + 3]) for i in range(len(tokens) - 2)]
    return any(grams.count(g) >= 3 for g in set(grams))


def _cjk_share(text: str) -> float:
    letters = [c for c in text if not c.isspace()]
    return sum("\u3000" <= c <= "\u9fff" or "\uff00" <= c <= "\uffef" for c in letters) / max(
        1, len(letters))


def clean(text: str) -> str:
    text = _MARKER.sub("", text.strip())
    text = text.replace("**", "").replace("__", "").strip().strip('"“”').strip()
    while True:  # "The answer to this question is: "The reason is that ...""
        shorter = _LEAD_INS.sub("", text).strip().strip('"“”').strip()
        if shorter == text:
            return text
        text = shorter


def parse_rule_lines(text: str, prompt: str = "") -> tuple[list[dict], list[dict]]:
    """Rules from a line-format reply: ([{name|None, description}], [{text, reason}]).

    Each non-empty line is one rule `Name: explanation`; a line without a usable name becomes a
    description-only candidate. Lines that echo the prompt, repeat, are too short or are not
    English are rejected with the reason.
    """
    found, rejected, seen = [], [], set()
    prompt_norm = " ".join(words(prompt))
    for raw in text.splitlines():
        line = clean(raw)
        if not line:
            continue
        norm = " ".join(words(line))
        if norm in seen:
            rejected.append({"text": raw.strip(), "reason": "repeats an earlier line"})
            continue
        seen.add(norm)
        if _cjk_share(line) > 0.3:
            rejected.append({"text": raw.strip(), "reason": "not English (rules are asked for in "
                                                            "English)"})
            continue
        if _repetitive(line):
            rejected.append({"text": raw.strip(), "reason": "repeats itself"})
            continue
        if norm and norm in prompt_norm:
            rejected.append({"text": raw.strip(), "reason": "echoes the prompt"})
            continue
        name, description = None, line
        head, sep, tail = line.partition(":")
        if sep and tail.strip():
            head = clean(head)
            if head and 1 <= len(words(head)) <= MAX_NAME_WORDS and head.lower() not in _LABELS:
                name, description = head, clean(tail)
            elif head.lower() in _LABELS or not head:
                description = clean(tail)
        if len(words(description)) < MIN_DESCRIPTION_WORDS:
            rejected.append({"text": raw.strip(),
                             "reason": f"explanation under {MIN_DESCRIPTION_WORDS} words"})
            continue
        found.append({"name": name, "description": description})
    return found, rejected


_FIELD = re.compile(r"^\s*(?:[-*•]\s*|\d{1,2}[.)]\s*)?(?:\*\*)?(name|rule|description|"
                    r"instructions?|how to apply)(?:\*\*)?\s*(?:\d+\s*)?[:：]\s*(.*)$",
                    re.IGNORECASE)


def parse_rule_blocks(text: str) -> tuple[list[dict], list[dict]]:
    """Rules from a consolidation reply written as Name:/Description:/Instructions: blocks.

    A new `Name:` (or `Rule:`) starts a rule; a field may continue over following lines.
    Returns (complete-enough rules, rejected blocks with reasons).
    """
    blocks: list[dict] = []
    current, field = None, None
    for raw in text.splitlines():
        m = _FIELD.match(raw)
        if m:
            key = m.group(1).lower()
            key = {"rule": "name", "instruction": "instructions",
                   "how to apply": "instructions"}.get(key, key)
            if key == "name" or current is None or key in current:
                current = {}
                blocks.append(current)
            current[key], field = m.group(2).strip(), key
        elif current is not None and field and raw.strip():
            current[field] = f"{current[field]} {raw.strip()}".strip()
    rules, rejected = [], []
    for block in blocks:
        name = clean(block.get("name", ""))
        description = clean(block.get("description", ""))
        instructions = clean(block.get("instructions", ""))
        shown = json.dumps(block, ensure_ascii=False)
        if not name or len(words(name)) > MAX_NAME_WORDS or name.lower() in _LABELS:
            rejected.append({"text": shown, "reason": "no usable name"})
        elif len(words(description)) < MIN_DESCRIPTION_WORDS:
            rejected.append({"text": shown, "reason": f"description under "
                                                      f"{MIN_DESCRIPTION_WORDS} words"})
        elif _cjk_share(name + description) > 0.3:
            rejected.append({"text": shown, "reason": "not English"})
        else:
            rules.append({"name": name, "description": description,
                          "instructions": instructions or None})
    return rules, rejected


def parse_instructions(text: str) -> str | None:
    """The instruction text of an instructions reply, or None when it is unusable."""
    lines = [clean(_FIELD.sub(lambda m: m.group(2), ln)) for ln in text.splitlines()]
    body = " ".join(ln for ln in lines if ln)
    if len(words(body)) < MIN_DESCRIPTION_WORDS or _cjk_share(body) > 0.3:
        return None
    return body


_LABEL = re.compile(r"^\s*(?:\*\*)?(rewritten question|new question|question|reasoning|"
                    r"explanation|answer|correct answer)(?:\*\*)?\s*[:：]\s*(.*)$", re.IGNORECASE)
_OPTION = re.compile(r"^\s*\(?([A-D])[.):]\s+(.+)$")
_ANSWER_SENTENCE = re.compile(r"(?:^|(?<=[.!?]))\s*(?:so\s+|thus\s+|therefore\s+)?(?:the\s+)?"
                              r"(?:correct\s+)?answer\b(?:\s+is)?\s*[:：]?\s*\(?[A-D]\b[^\n]*",
                              re.IGNORECASE)


@dataclass(frozen=True)
class Parsed:
    question: str | None  # None for teacher_plain (the original question is kept)
    options: dict[str, str]  # letter -> text, as the teacher wrote them
    reasoning: str
    letter: str


class Rejected(ValueError):
    def __init__(self, stage: str, reason: str):
        super().__init__(f"{stage}: {reason}")
        self.stage, self.reason = stage, reason


def _strip_answer(text: str) -> str:
    return re.sub(r"\s+", " ", _ANSWER_SENTENCE.sub(" ", text)).strip()


def parse_reply(text: str, rewrite: bool) -> Parsed:
    """Split a reply into question, options, reasoning and final letter; Rejected("parse")."""
    sections: dict[str, list[str]] = defaultdict(list)
    options: dict[str, str] = {}
    current = "lead"
    for raw in text.splitlines():
        m = _LABEL.match(raw)
        if m:
            label = m.group(1).lower()
            current = {"rewritten question": "question", "new question": "question",
                       "explanation": "reasoning", "correct answer": "answer"}.get(label, label)
            if m.group(2).strip():
                sections[current].append(m.group(2).strip())
            continue
        o = _OPTION.match(raw)
        if o and rewrite:
            options.setdefault(o.group(1), o.group(2).strip())
            current = "after_options"
            continue
        if raw.strip():
            sections[current].append(raw.strip())
    choice = extract_choice(text, explicit_only=True)
    if choice is None:
        raise Rejected("parse", "no final answer letter")
    question, lead = None, sections.get("lead", [])
    if rewrite:
        # without a "Question:" label the first line is the question and the rest reasoning
        q = sections.get("question") or lead[:1]
        if not sections.get("question"):
            lead = lead[1:]
        question = _strip_answer(" ".join(q))
        if len(question.split()) < 3:
            raise Rejected("parse", "no rewritten question")
    reasoning_parts = sections.get("reasoning") or sections.get("after_options") or lead
    reasoning = _strip_answer(" ".join(reasoning_parts))
    if len(reasoning.split()) < 3:
        raise Rejected("parse", "no reasoning")
    return Parsed(question, options, reasoning, LETTERS[choice])
