"""MBPP (Austin et al., 2021): short Python programming problems, each with three assert tests,
checked in restyle.sandbox. The prompt shows the description and the tests, as MBPP's own
prompt does, so the reply knows the function's name.

Sources: `hf` reads the hub's `google-research-datasets/mbpp` (config `sanitized`: fields
prompt, code, test_imports, test_list; or `full`: text, code, test_setup_code, test_list, the
374 train / 500 test of study B's paper) or a local folder in either layout.
"""

from __future__ import annotations

import ast
import builtins
from pathlib import Path

from restyle.data import release
from restyle.data.hub import load_split
from restyle.io import DataError
from restyle.records import CodeItem
from restyle.tasks import hub_splits
from restyle.tasks.code import CodeTask


def _text(row: dict, *keys: str) -> str | None:
    return next((row[k] for k in keys if isinstance(row.get(k), str)), None)


def load_hf(dataset_id: str, config_name: str | None, split: str) -> list[CodeItem]:
    ds = load_split(dataset_id, config_name, split)
    items = []
    for i, row in enumerate(ds.rows):
        where = ds.where(i)
        description, code = _text(row, "prompt", "text"), _text(row, "code")
        if description is None or code is None:
            raise DataError(f"{where}: missing or non-text field 'prompt' (or 'text') or 'code'")
        items.append(CodeItem.from_dict({
            "id": f"mbpp/{row.get('task_id', i)}", **_fields(row, description, code, where),
            "source": f"{ds.origin} ({dataset_id} {config_name} {split})"}, where))
    return items


def _fields(row: dict, description: str, code: str, at: str) -> dict:
    """An MBPP row's CodeItem fields but id and source: the prompt shows the description and the
    tests, as MBPP's own prompt does; the test is the setup (imports) and the asserts."""
    tests = _tests(row, at)
    setup = [*(row.get("test_imports") or []), row.get("test_setup_code") or ""]
    return {"prompt": f"{description.strip()}\nYour code should pass these tests:\n"
                      + "\n".join(tests),
            "solution": code, "test": "\n".join([*filter(None, setup), *tests]) + "\n",
            "entry_point": ""}


def _tests(row: dict, at: str) -> list[str]:
    tests = row.get("test_list")
    if not tests or not all(isinstance(t, str) for t in tests):
        raise DataError(f"{at}: field 'test_list' must be a non-empty list of text")
    return tests


RELEASE_PREAMBLE = (
    "You are an expert Python programmer, and you have a computer task. For the task, you are "
    "given a test example to show you the input format and the function structure. Please be "
    "careful about whitespace between each line of the code. The test is only used to show you "
    "the input structure. You do not need to run the test.\n\n\n")
RELEASE_INSTRUCTION = ("Provide your answer directly without any explaination. Please provide "
                       "the final answer (code) at the end, after 'Final Answer:'\n")


def release_record(row: dict, at: str, split: str, verbatim: bool) -> dict:
    """A release row (the hub's `full` layout: text, code, test_list, test_setup_code) as an
    MBPP item; in the release's format the question shows the first test as an example and the
    human answer is "Final Answer:" and the code."""
    description, code = release.text(row, "text", at), release.text(row, "code", at)
    shown = (f"{RELEASE_PREAMBLE}Task: {description}\nTest Example: {_tests(row, at)[0]}\n\n"
             f"{RELEASE_INSTRUCTION}")
    return {**_fields(row, description, code, at),
            # a training row holds the question it was asked
            **release.verbatim(row, at, "question" in row, shown, f"Final Answer:\n{code}",
                               verbatim)}


def tested_name(test: str) -> str:
    """The function MBPP's asserts test: the first name they call that is neither a builtin nor
    defined by the test's own setup ("" when none is)."""
    try:
        tree = ast.parse(test)
    except SyntaxError:
        return ""
    own = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    own |= {n.name for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    own |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree)
            if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    for node in tree.body:
        if isinstance(node, ast.Assert):
            for call in ast.walk(node):  # outermost call first: set(f(x)) names f after set
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                        and call.func.id not in own and not hasattr(builtins, call.func.id)):
                    return call.func.id
    return ""


class MBPP(CodeTask):
    name = "mbpp"

    def prepare(self, cfg: dict, cache_dir: str | Path) -> dict[str, list[CodeItem]]:
        if cfg["source"] == "release":
            return release.prepare(self, cfg, release_record)
        return hub_splits(self, cfg, load_hf)

    def format_question(self, item: CodeItem) -> str:
        return item.prompt

    def entry_point(self, item: CodeItem) -> str:
        return item.entry_point or tested_name(item.test)

    def program(self, item: CodeItem, code: str) -> str:
        return f"{code}\n{item.test}"


TASK = MBPP()
