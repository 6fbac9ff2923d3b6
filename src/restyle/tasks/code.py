"""What the code tasks (HumanEval, MBPP) share: a reply's program is run with the problem's
tests in restyle.sandbox, and passes when it exits 0 in time. A task's module says how a problem
is shown and how its program is put together (`program`).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from restyle import sandbox
from restyle.records import CodeItem
from restyle.tasks import PASSED, Check, Task, no_answer, right, wrong

log = logging.getLogger(__name__)
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(text: str, entry_point: str = "") -> str | None:
    """The code of a reply: the fenced block that defines `entry_point` (else the longest
    fenced block; a block cut off by the token limit counts), or the whole reply when it has no
    fence; None when that is blank."""
    blocks = [b for b in _FENCE.findall(text) if b.strip()]
    if not blocks:
        return text if text.strip() else None
    defining = [b for b in blocks if entry_point and f"def {entry_point}(" in b]
    return max(defining or blocks, key=len)


class CodeTask(Task):
    record = CodeItem
    answer_format = "Write the complete Python code in one ```python code block."

    def program(self, item: CodeItem, code: str) -> str:
        """The program that runs `code` against the item's tests."""
        raise NotImplementedError

    def human_answer(self, item: CodeItem) -> str:
        return f"```python\n{item.solution.strip()}\n```"

    def gold(self, item: CodeItem) -> str:
        return f"passes {item.id}'s tests"

    def check(self, item: CodeItem, text: str) -> Check:
        return self.check_all([item], [text])[0]

    def check_all(self, items: Sequence[CodeItem], texts: Sequence[str],
                  jobs: int = 1) -> list[Check]:
        codes = [extract_code(t, it.entry_point) for it, t in zip(items, texts)]
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
