"""What the code tasks (HumanEval, MBPP) share: a reply's program is run with the problem's
tests in restyle.sandbox, and passes when it exits 0 in time. A task's module says how a problem
is shown, which function its tests call (`entry_point`) and how its program is put together
(`program`).

Which code of a reply is run (`extract_code`), as a careful judge reads a reply:
- fenced replies: the last whole Python block (tagged python/py/python3, or untagged) that
  implements the tested function (a restated signature does not), else the first block that
  defines it even if cut off by the token limit, else the first Python block; fences of other
  languages (bash, text, json, ...) are never code;
- unfenced replies (study B's release: a "Final Answer:" line, then the code): a leading answer
  label ("Final Answer:", "FINAL_ANSWER:", "Solution:", ..., alone or before code on its line)
  and leading prose lines are not code, nor are unindented prose lines after it; the code is the
  longest span that parses as Python, a function body (HumanEval's completion) included;
- no code at all (nothing but prose, an empty label) is no answer; code that does not parse is
  still run, and fails.
"""

from __future__ import annotations

import ast
import keyword
import logging
import re
import textwrap
from collections.abc import Sequence

from restyle import sandbox
from restyle.records import CodeItem
from restyle.tasks import PASSED, Check, Task, no_answer, right, wrong

log = logging.getLogger(__name__)
# a fence: its indentation, its language tag, its code up to a closing fence on its own line
# (or the end of a reply cut off by the token limit)
_FENCE = re.compile(r"^([ \t]*)```[ \t]*([^\s`]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)",
                    re.DOTALL | re.MULTILINE)
_PYTHON_TAGS = {"", "python", "python3", "py", "py3"}
_LABEL = re.compile(r"^[ \t]*[#*]*[ \t]*(?:final[ _]answer|answer|solution|code|completion)"
                    r"[ \t]*[*]*:[*]*", re.IGNORECASE)
_WORD = re.compile(r"[A-Za-z_]\w*")


def _python_blocks(text: str) -> list[str] | None:
    """The Python blocks of a fenced reply, each without its fence's own indentation; None when
    the reply has no fence at all."""
    fences = _FENCE.findall(text)
    if not fences:
        return None
    return [re.sub(rf"(?m)^{re.escape(indent)}", "", code) for indent, tag, code in fences
            if tag.lower() in _PYTHON_TAGS and code.strip()]


def _parses(lines: list[str]) -> bool:
    """Python code (a function body included), not a line of prose that happens to parse:
    a lone name ("Sure") or a bare annotation ("Output: 5") does not start code."""
    try:
        tree = ast.parse(textwrap.dedent("\n".join(lines)))
    except (SyntaxError, ValueError):
        return False
    first = tree.body[0] if tree.body else None
    return first is not None and not (
        isinstance(first, ast.Expr) and isinstance(first.value, ast.Name)
        or isinstance(first, ast.AnnAssign) and first.value is None)


def _prose(line: str) -> bool:
    """An unindented line that is no Python statement: a sentence, a list item, a label."""
    if not line.strip() or line[0].isspace() or line[0] in "#@":
        return False
    word = _WORD.match(line)
    return not (word and keyword.iskeyword(word.group())) and not _parses([line])


def _unfenced(text: str) -> str | None:
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.strip()), None)
    if first is None:
        return None
    label = _LABEL.match(lines[first])
    if label:  # the label is not code; code may follow it on its line, after one space
        rest = lines[first][label.end():]
        lines[first] = rest[1:] if re.match(r" \S", rest) else rest
    start = first
    while start < len(lines):
        if lines[start].strip():
            end = len(lines)
            while end > start:
                if _parses(lines[start:end]):
                    return "\n".join(lines[start:end]).rstrip() + "\n"
                if lines[end - 1].strip() and not _prose(lines[end - 1]):
                    break  # only prose after the code is dropped, never code
                end -= 1
            if not _prose(lines[start]):
                break  # code that does not parse: it is run, and fails
        start += 1
    rest = "\n".join(lines[start:])
    return rest if rest.strip() else None


def _stub(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A signature restated with a docstring, `pass` or `...` as its only body."""
    return all(isinstance(s, ast.Pass) or isinstance(s, ast.Expr) and isinstance(
        s.value, ast.Constant) and (isinstance(s.value.value, str) or s.value.value is ...)
        for s in node.body)


def _implements(code: str, name: str) -> bool:
    if not name or not re.search(rf"(?m)^[ \t]*(?:async[ \t]+)?def[ \t]+{re.escape(name)}\b",
                                 code):
        return False
    try:
        tree = ast.parse(textwrap.dedent(code))
    except SyntaxError:
        return True  # cut off by the token limit: still the reply's definition
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name
               and not _stub(n) for n in ast.walk(tree))


def extract_code(text: str, entry_point: str = "") -> str | None:
    """The code of a reply that a careful judge runs (the module's docstring says how); None
    when the reply has no code."""
    blocks = _python_blocks(text)
    if blocks is None:
        return _unfenced(text)
    if not blocks:  # fences of other languages only: the code, if any, is outside them
        return _unfenced(_FENCE.sub("", text))
    defining = [b for b in blocks if _implements(b, entry_point)]
    whole = [b for b in defining if _parses(b.splitlines())]
    # a reply that corrects itself ends with its final code; a block cut off by the token
    # limit is taken only when no whole one defines the function
    return whole[-1] if whole else (defining or blocks)[0]


class CodeTask(Task):
    record = CodeItem
    answer_format = "Write the complete Python code in one ```python code block."

    def program(self, item: CodeItem, code: str) -> str:
        """The program that runs `code` against the item's tests."""
        raise NotImplementedError

    def entry_point(self, item: CodeItem) -> str:
        """The function the item's tests call ("" when unknown)."""
        return item.entry_point

    def format_human_answer(self, item: CodeItem) -> str:
        return f"```python\n{item.solution.strip()}\n```"

    def gold(self, item: CodeItem) -> str:
        return f"passes {item.id}'s tests"

    def check(self, item: CodeItem, text: str) -> Check:
        return self.check_all([item], [text])[0]

    def check_all(self, items: Sequence[CodeItem], texts: Sequence[str],
                  jobs: int = 1) -> list[Check]:
        codes = [extract_code(t, self.entry_point(it)) for it, t in zip(items, texts)]
        todo = [i for i, c in enumerate(codes) if c is not None]
        log.info("running %d programs, %d at once, in the sandbox: %s", len(todo), jobs,
                 sandbox.isolation())
        outcomes = sandbox.run_programs([self.program(items[i], codes[i]) for i in todo],
                                        sandbox.Limits(), jobs=jobs)
        checks = [no_answer("no code found")] * len(items)
        for i, outcome in zip(todo, outcomes):
            checks[i] = right(PASSED) if outcome.status == PASSED else wrong(
                outcome.status, f"{outcome.status}: {outcome.reason}", outcome.status)
        return checks
