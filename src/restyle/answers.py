"""Final-answer extraction and comparison, shared by study B's correctness filters and evaluation.

A reply's *final statement* is what follows its last answer marker: "####" (GSM8K's own format),
"Final Answer:" (the study B authors' release, and what teachers are asked to end with), "final
answer is" (minerva's "Final Answer: The final answer is X"), "the answer is", "Answer:" or
`\\boxed{}` / `\\boxed 5`. It runs to the end of the marker's line; a marker that ends its line
("Final Answer:" alone, a "## Final Answer" header) states the next non-empty line.

Numbers (GSM8K, restyle.tasks.gsm8k), in order of preference:
1. the first number after the last `####`;
2. the number of the last final statement: the first after its last "=" ("14 + 21 = 35 pens"
   -> 35), else after its last conclusion word ("she sells 9 eggs at $2, so 18 dollars" -> 18),
   else its first ("23 more cars to meet his quota of 50" -> 23). A "Final Answer:" or
   `\\boxed{}` that states no number ("Final Answer: UNKNOWN") gives none; a plain "the
   answer is" without one is passed over;
3. the last number anywhere (lm-eval's flexible-extract), unless the reply stops mid-sentence:
   a reply cut off by the token limit has given no answer.
Commas between digit groups, `$`, `%`, and a trailing period are ignored; "1,000.50" -> "1000.50".

Choices (MMLU, ECQA): the option label, as an index, read in the labels the prompt used: letters
(case-insensitive, through markdown bold and parentheses, never the article "A"/"a" before a
word) or numbers (the release numbers ECQA's options (1)-(5)). Explicit "Answer: C" / "the answer
to the question is (C)" first (all study A's gate accepts), then "option C", "(C)", "C." starting
a line (letters only: "1." starts a step), "So C fits best", a reply that is just "C"; else the
text of the one option the final statement (or the whole reply) names.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from restyle.records import last_boxed

LETTERS = "ABCD"

# a number: optional sign, digits with optional comma groups, optional decimals, or ".5"
_NUM = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
_NUM_RE = re.compile(_NUM)
# an answer marker; a plain "answer" needs "is" or a colon ("To get the answer we ..." is none)
_MARKER_RE = re.compile(
    r"####|\\boxed\b|\bfinal\s+answer\b(?:\s*\**\s*(?:is\b|[:=]))?"
    r"|\banswer\s*\**\s*(?:is\b|[:=])", re.IGNORECASE)
_LEAD_RE = re.compile(r"[\s*:=#{]*")
_SENTENCE_END_RE = re.compile(r"(?<=[.!?])\s+(?=[A-Z(])")
LATEX_COMMAND_RE = re.compile(r"\\[a-zA-Z]+")
# how a finished reply can end: a sentence's end, a closing bracket or markup, or a number
_FINISHED_RE = re.compile(r"[.!?)\]}*\"'$%`\d]\s*$")
_UNIT_END_RE = re.compile(r"\d\s*(?:[A-Za-z/]+\s+)?([A-Za-z/]+)\s*$")  # "35 pens", "45 km/h"
# words a sentence does not end on: "... multiply 40 by", "... 35 pens last year and"
_FUNCTION_WORDS = {"a", "an", "the", "and", "or", "but", "then", "so", "by", "to", "of", "in",
                   "on", "at", "for", "from", "with", "as", "is", "are", "was", "were", "that",
                   "which", "if", "than", "plus", "minus", "times"}


def final_statements(text: str) -> list[tuple[str, str, str]]:
    """(marker, statement, paragraph) for every answer marker of `text` but "####", last first:
    the statement is the first sentence of the rest of the marker's line (or of the next
    non-empty line), the paragraph runs on to the next blank line (a "Final Answer =" whose
    result is on a later line); both stop where the next marker starts."""
    marks = [m for m in _MARKER_RE.finditer(text) if m.group() != "####"]
    out = []
    for i, m in enumerate(marks):
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        rest = text[m.end():end]
        if m.group().startswith("\\boxed"):
            # "\boxed{x^2 + 1}" holds its braces' content, "\boxed 5" what lm-eval reads
            box = last_boxed(text[m.start():end]) if rest.lstrip().startswith("{") else \
                rest.lstrip().split("$")[0]
            box = (box or "").split("\n", 1)[0].strip()
            out.append((m.group(), box, box))
            continue
        lead = _LEAD_RE.match(rest).end()
        if "\n" in rest[:lead]:  # the marker ends its line: the next non-empty line states it
            lead = rest.rindex("\n", 0, lead) + 1
            lead += len(rest[lead:]) - len(rest[lead:].lstrip())
        rest = rest[lead:]
        line = rest.split("\n", 1)[0].strip()
        # its first sentence: "The answer is 35. To check: ... 5 more than 30."
        out.append((m.group(), _SENTENCE_END_RE.split(line, maxsplit=1)[0],
                    re.split(r"\n\s*\n", rest, maxsplit=1)[0].strip()))
    return out[::-1]


def unfinished(text: str) -> bool:
    """True when a reply stops mid-sentence (cut off by the token limit, say): it ends neither
    as a sentence, a bracket or a number does, nor in a number and its unit ("35 pens")."""
    if _FINISHED_RE.search(text):
        return False
    unit = _UNIT_END_RE.search(text)
    return unit is None or unit.group(1).lower() in _FUNCTION_WORDS


def _clean(number: str) -> str:
    return number.replace(",", "").lstrip("+")


def _numbers(text: str) -> list[re.Match]:
    return list(_NUM_RE.finditer(text.replace("\\$", " ").replace("$", " ")))


# words that lead to a conclusion: "she sells 9 eggs at $2, so 18 dollars"
_CONCLUSION_RE = re.compile(
    r"\b(?:so|thus|therefore|hence|(?:in|a)\s+total(?:\s+of)?|altogether)\b", re.IGNORECASE)
FINAL_MARKERS = ("####", "\\boxed", "final")


def statement_number(statement: str) -> str | None:
    """The number a final statement gives: the first after its last "=", else the first after
    its last conclusion word ("so", "total", ...), else its first ("23 more cars to meet his
    quota of 50" -> 23)."""
    words = LATEX_COMMAND_RE.sub(" ", statement)
    for cut in (words.rsplit("=", 1)[1] if "=" in words else "",
                words[list(_CONCLUSION_RE.finditer(words))[-1].end():]
                if _CONCLUSION_RE.search(words) else "",
                words):
        found = _numbers(cut)
        if found:
            return _clean(found[0].group())
    return None


def extract_number(text: str | None) -> str | None:
    """The final numeric answer of a response as a string without commas, or None if it has none.

    >>> extract_number("so 3*4 = <<3*4=12>>12\\n#### 1,200.")
    '1200'
    >>> extract_number("Final Answer: $42.")
    '42'
    >>> extract_number("She has 5 apples and eats 2, leaving 3 apples.")
    '3'
    >>> extract_number("To get the answer we multiply 9 by 2, for a total of 18.")
    '18'
    >>> extract_number("The answer: she sells 9 eggs at $2, so 18 dollars.")
    '18'
    >>> extract_number("Final Answer:\\n\\nShe has 3 + 4 = 7 cards. Final Answer: 7")
    '7'
    >>> extract_number("First, 16 - 3 = 13 eggs are left, and then she") is None
    True
    """
    if not text:
        return None
    hashes = text.split("####")
    if len(hashes) > 1:
        found = _numbers(hashes[-1])
        if found:
            return _clean(found[0].group())
    for marker, statement, paragraph in final_statements(text):
        found = statement_number(statement)
        if found is None and marker.lower().startswith(FINAL_MARKERS):
            found = statement_number(paragraph)
        if found is not None:
            return found
        if marker.lower().startswith(FINAL_MARKERS):  # "Final Answer: UNKNOWN" gives none
            return None
    if unfinished(text):
        return None
    numbers = _numbers(text)
    return _clean(numbers[-1].group()) if numbers else None


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


# words after which "A" / "a" is still the option: "A is correct", "so b fits best"
_LABEL_FOLLOWERS = ("is", "was", "fits", "seems", "because", "since", "as", "and", "or", "but",
                    "which", "would", "makes", "matches", "best", "for", "so")
_AFTER_RE = re.compile(r"\s+([a-z]+)")


@lru_cache(maxsize=None)
def _choice_patterns(labels: str) -> list[re.Pattern]:
    one = f"[{labels}{labels.lower()}]"
    # a label ends where no word, number or apostrophe goes on
    end = r"(?![\w'])(?!\.\d)"
    tag = rf"(?:\*\*|__)?\(?\s*({one})\s*\)?(?:\*\*|__)?{end}"
    patterns = [
        # "Answer: C", "the answer is (C)", "The answer to the question is: C", "**Answer:** b"
        re.compile(rf"\b(?i:answer)\b(?:[^.\n:]{{0,30}}?\b(?i:is))?\s*\**\s*[:：]?\s*\**\s*{tag}"),
        # "correct option is C", "choice: C", "option (3)"
        re.compile(rf"(?i:answer|option|choice)\s*(?i:is|:|=)?\s*:?\s*{tag}"),
        re.compile(rf"\(({one})\){end}"),  # "(C)"
        # "So C fits best", "Therefore, option C", "C is correct"
        re.compile(rf"\b(?i:so|thus|therefore|hence)\b,?\s+(?:(?i:option)\s+)?{tag}"),
        re.compile(rf"(?:^|\s)\**({one})\**\s+(?i:is\s+(?:the\s+)?(?:correct|right|best)|fits)\b"),
        re.compile(rf"^\s*\**\(?({one})\)?\**\s*[.)]?\s*$"),  # the whole reply is "C"
    ]
    if not labels.isdigit():  # "1." starts a step of a list, not an option
        patterns.insert(3, re.compile(rf"(?:^|\n)\s*\**({one})\**\s*[.):](?:\s|$)"))
    return patterns


def _is_label(text: str, m: re.Match) -> bool:
    """False for the article "A"/"a" (or any lower-case letter) that goes on into a sentence:
    "A person would ...", "the answer is a cat"."""
    letter = m.group(1)
    if letter.isdigit() or text[m.start(1) - 1:m.start(1)] == "(":
        return True
    if not (letter.islower() or letter == "A"):
        return True
    after = _AFTER_RE.match(text, m.end(1))
    return after is None or after.group(1) in _LABEL_FOLLOWERS


def _named_option(text: str, choices: Sequence[str]) -> int | None:
    """The one option whose text the reply names, looked for in its final statements (last
    first) and then in the whole reply; None when none or several are named."""
    def named(part: str) -> set[int]:
        found = {i for i, c in enumerate(choices)
                 if re.search(rf"(?<!\w){re.escape(c.strip())}(?!\w)", part, re.IGNORECASE)}
        # "bank" inside "river bank" is one option, not two
        return {i for i in found if not any(j != i and choices[i].strip().lower() in
                                            choices[j].strip().lower() for j in found)}
    for part in [s for _, s, _ in final_statements(text)] + [text]:
        found = named(part)
        if found:
            return found.pop() if len(found) == 1 else None
    return None


def extract_choice(text: str | None, explicit_only: bool = False, letters: str = LETTERS,
                   choices: Sequence[str] = ()) -> int | None:
    """The chosen option of a multiple-choice reply as an index into `letters` (the labels the
    prompt showed: MMLU's A-D by default, or "12345"), or None when none is found.

    The patterns are tried in order and the first that matches decides, by its last match: an
    explicit "Answer: X" / "the answer ... is X"; then "answer/option/choice X", a parenthesised
    label, a letter starting a line, "so X" / "X fits", a reply that is only a label (not with
    `explicit_only`); then the text of the one option of `choices` that the reply names.

    >>> extract_choice("The answer is (C).")
    2
    >>> extract_choice("B. Paris")
    1
    >>> extract_choice("(A) because ...", explicit_only=True) is None
    True
    >>> extract_choice("The answer is (E).", letters="ABCDE")
    4
    >>> extract_choice("Answer: (b)")
    1
    >>> extract_choice("Answer: A person borrows it from a library.\\nSo B fits best.")
    1
    >>> extract_choice("Final Answer: 3", letters="12345")
    2
    >>> extract_choice("Books are lent by a library.", letters="ABC",
    ...                choices=["bank", "library", "park"])
    1
    """
    if not text:
        return None
    patterns = _choice_patterns(letters)
    for pattern in patterns[:1] if explicit_only else patterns:
        found = [m for m in pattern.finditer(text) if _is_label(text, m)]
        if found:
            return letters.index(found[-1].group(1).upper())
    if explicit_only or not choices:
        return None
    return _named_option(text, choices)
