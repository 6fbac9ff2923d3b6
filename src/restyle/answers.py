"""Final-answer extraction and comparison, shared by study B's correctness filters and evaluation.

Numbers (GSM8K, MATH-style "Final Answer:" tasks), in order of preference:
1. the text after the last `####` (GSM8K's own format),
2. the text after the last "Final Answer:" / "final answer is" / "the answer is" (the format of
   the study B authors' release, and what teachers are asked to end with),
3. the last number anywhere in the text (SDFT's fallback).
Commas between digit groups, `$`, `%`, and a trailing period are ignored; "1,000.50" -> "1000.50".

Choices (MMLU): the option letter A-D, as an index 0..3, from "Answer: C" / "the answer to the
question is (C)" (explicit: all study A's gate accepts), then "correct option is C", "(C)", "C.",
"C)" or a reply that is just "C" (study B's filter).
"""

from __future__ import annotations

import re
from functools import lru_cache
from decimal import Decimal, InvalidOperation

LETTERS = "ABCD"

# a number: optional sign, digits with optional comma groups, optional decimals, or ".5"
_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
_NUM_RE = re.compile(_NUM)
_FINAL_RE = re.compile(r"(?:final\s+answer|the\s+answer)\s*(?:is|:|=)?\s*:?\s*(.*)",
                       re.IGNORECASE)


def _clean(number: str) -> str:
    return number.replace(",", "").lstrip("+")


def _first_number(text: str) -> str | None:
    m = _NUM_RE.search(text.replace("$", "").replace("\\$", ""))
    return _clean(m.group(0)) if m else None


def extract_number(text: str | None) -> str | None:
    """The final numeric answer of a response as a string without commas, or None if it has none.

    >>> extract_number("so 3*4 = <<3*4=12>>12\\n#### 1,200.")
    '1200'
    >>> extract_number("Final Answer: $42.")
    '42'
    >>> extract_number("She has 5 apples and eats 2, leaving 3 apples.")
    '3'
    """
    if not text:
        return None
    hashes = text.split("####")
    if len(hashes) > 1:
        found = _first_number(hashes[-1])
        if found is not None:
            return found
    finals = list(_FINAL_RE.finditer(text))
    for m in reversed(finals):
        found = _first_number(m.group(1)[:80])
        if found is not None:
            return found
    numbers = _NUM_RE.findall(text.replace("$", ""))
    return _clean(numbers[-1]) if numbers else None


def _decimal(value: str | None) -> Decimal | None:
    if value is None:
        return None
    value = str(value).strip().replace(",", "").replace("$", "").rstrip(".").rstrip("%")
    try:
        return Decimal(value)
    except InvalidOperation:
        return None


def numbers_match(a: str | None, b: str | None) -> bool:
    """True when two answers are the same number ("1,000" == "1000.00" == "1000."); falls back
    to stripped string equality when either is not a number; None never matches."""
    if a is None or b is None:
        return False
    da, db = _decimal(a), _decimal(b)
    if da is not None and db is not None:
        return da == db
    return str(a).strip() == str(b).strip()


@lru_cache(maxsize=None)
def _choice_patterns(letters: str) -> list[re.Pattern]:
    one = f"[{letters}]"
    return [
        # "Answer: C", "the answer is (C)", "The answer to the question is: C"
        re.compile(rf"\b(?i:answer)\b(?:[^.\n:]{{0,30}}?\b(?i:is))?\s*[:：]?\s*\(?({one})\b"
                   r"(?:\)|\.|,|\s|$)"),
        # "answer is (C)", "Answer: C", "correct option is C", "final answer: C"
        re.compile(rf"(?i:answer|option|choice)\s*(?i:is|:|=)?\s*:?\s*\(?\s*({one})\b(?![\w'])"),
        re.compile(rf"\(({one})\)"),  # "(C)"
        re.compile(rf"(?:^|\n)\s*({one})\s*[.):](?:\s|$)"),  # "C." / "C)" / "C:" starting a line
        re.compile(rf"^\s*\**({one})\**\s*[.)]?\s*$"),  # the whole reply is "C"
    ]


def extract_choice(text: str | None, explicit_only: bool = False,
                   letters: str = LETTERS) -> int | None:
    """The chosen option of a multiple-choice reply as an index into `letters` (MMLU's A-D by
    default), or None when no letter is found.

    The patterns are tried in order and the first that matches decides, by its last match: an
    explicit "Answer: X" / "the answer ... is X"; then "answer/option/choice X", a parenthesised
    letter, a letter starting a line, a reply that is only a letter (not with `explicit_only`).

    >>> extract_choice("The answer is (C).")
    2
    >>> extract_choice("B. Paris")
    1
    >>> extract_choice("(A) because ...", explicit_only=True) is None
    True
    >>> extract_choice("The answer is (E).", letters="ABCDE")
    4
    """
    if not text:
        return None
    patterns = _choice_patterns(letters)
    for pattern in patterns[:1] if explicit_only else patterns:
        found = pattern.findall(text)
        if found:
            return letters.index(found[-1].upper())
    return None
