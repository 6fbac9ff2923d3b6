"""restyle.versions: what a code or prompt version follows, and what it ignores."""

from __future__ import annotations

import ast
import re

import pytest

from conftest import REPO
from restyle import tasks, versions
from restyle.study_a import rewrite
from restyle.study_b import variants
from restyle.records import MathItem, MCItem
from restyle.teacher import Result

FILES = {
    "__init__.py": '"""The package."""\n',
    "a.py": "def run():\n    from restyle import b  # where it is used\n    return b.f()\n",
    "b.py": '"""Module b."""\n\nfrom restyle.io import read\n\n\ndef f():\n'
            '    """Docstring."""\n    return read("sample.jsonl")\n',
    "io.py": "def read(name):\n    return name\n",
    "study_b/variants.py": 'TEMPLATES: dict[str, Prompt] = {"answer": "{prompt}"}\nLIMIT = 3\n',
    # a registry of two tasks (restyle.tasks): a job of one counts that task's module only
    "tasks/__init__.py": "def registry():\n    from restyle.tasks import gsm8k, mmlu\n",
    "tasks/gsm8k.py": "FORMAT = 'End.'\n",
    "tasks/mmlu.py": "FORMAT = 'Letter.'\n",
    "unused.py": "X = 1\n",
    "data/sample.jsonl": "{}\n",
}
SCRIPT = "from restyle import a, tasks\nfrom restyle.study_b import variants\n\na.run()\n"


def version(tmp_path, name, task=None, **edits):
    """code_version of SCRIPT over a copy of FILES named `name`, with `edits` applied (file
    stem, "/" as "_" -> (old, new)); each copy has its own path, so the cache never answers."""
    src = tmp_path / name
    for rel, text in FILES.items():
        old, new = edits.get(rel.replace("/", "_").removesuffix(".py"), ("", ""))
        path = src / "restyle" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace(old, new) if old else text)
    (src / "script.py").write_text(SCRIPT)
    return versions.code_version(src / "script.py", task, src=src)


def test_code_version_follows_imports_and_ignores_comments_docstrings_and_prompts(tmp_path):
    base = version(tmp_path, "base")
    assert version(tmp_path, "same") == base
    unchanged = {
        "comment": {"b": ("    return read", "    # why\n    return  read")},
        "docstring": {"b": ("Docstring.", "Another docstring.")},
        "module docstring": {"b": ("Module b.", "Module B, reworded.")},
        "template": {"study_b_variants": ("{prompt}", "{prompt}!")},
        "unimported module": {"unused": ("X = 1", "X = 2")},
    }
    for i, (what, edits) in enumerate(unchanged.items()):
        assert version(tmp_path, f"same{i}", **edits) == base, what
    changed = {
        "a function-level import's code": {"b": ('read("sample', 'read("other')},
        "a module imported by an imported module": {"io": ("return name", "return name * 2")},
        "a constant that is not prompt text": {"study_b_variants": ("LIMIT = 3", "LIMIT = 4")},
        "package data a module names": {"data_sample.jsonl": ("{}", '{"a": 1}')},
        "the package's __init__": {"__init__": ('"""The package."""', "VERSION = 2")},
    }
    for i, (what, edits) in enumerate(changed.items()):
        assert version(tmp_path, f"changed{i}", **edits) != base, what


def test_a_task_job_counts_its_own_task_module_only(tmp_path):
    base = {task: version(tmp_path, f"base-{task}", task) for task in ("gsm8k", "mmlu", None)}
    edited = {task: version(tmp_path, f"edited-{task}", task, tasks_mmlu=("Letter.", "Option."))
              for task in ("gsm8k", "mmlu", None)}
    assert edited["gsm8k"] == base["gsm8k"]  # another task's module: no rerun
    assert edited["mmlu"] != base["mmlu"] and edited[None] != base[None]


def test_a_relative_import_is_refused(tmp_path):
    script = tmp_path / "script.py"
    script.write_text("from . import a\n")
    with pytest.raises(ValueError, match="relative import"):
        versions.code_version(script, src=tmp_path)


def test_every_module_level_template_is_marked_as_prompt_text():
    """A template left unmarked stays in the code version: editing it would rerun every job
    importing its module, not just the jobs sending it. The convention: its name ends in TEMPLATE
    or TEMPLATES, or starts with OPTIONS_ (study A's option wording)."""
    unmarked, marked = [], 0
    for path in sorted(versions.SRC.glob("restyle/**/*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            names = [t.id for t in (node.targets if isinstance(node, ast.Assign)
                                    else [node.target] if isinstance(node, ast.AnnAssign) else [])
                     if isinstance(t, ast.Name)]
            if any(re.search(r"TEMPLATES?$|^OPTIONS_", n) for n in names):
                if versions._is_prompt(node):
                    marked += 1
                elif not _only_names(node.value):
                    unmarked.append(f"{path.relative_to(versions.SRC)}: {names}")
    assert unmarked == [] and marked >= 8


def _only_names(value) -> bool:
    """A dict or list of other names (study_a.rules.TEMPLATES, the generators of tasks.gsm8k's
    synthetic problems): it holds no text of its own."""
    values = value.values if isinstance(value, ast.Dict) else getattr(value, "elts", [None])
    return all(isinstance(v, ast.Name) for v in values)


class RecordingSession:
    """Answers every request and keeps it, in place of a teacher session."""

    def __init__(self):
        self.sent = []

    def ask(self, requests, backend, step):
        self.sent += requests
        return [Result(r.id, "It is 3. The answer is (A).\n#### 3", None, True, None, {}, False)
                for r in requests]

    def totals(self):
        return {"prompt_tokens": 0, "completion_tokens": 0, "cost": 0.0}


CFG = {"items": None, "filter_correct": True, "instructions": {"gsm8k": "Solve.", "mmlu": "Pick."},
       "generation": {"max_tokens": 8, "temperature": 0.0, "seed": 0},
       "sampling": {"temperature": 0.8, "top_p": 0.95}, "best_of_n": 2, "ppl_split_of": "human",
       "familiarity": {"batch_size": 1, "max_batch_tokens": None, "max_length": None}}
ITEMS = {"gsm8k": [MathItem(id="g/1", question="1 + 2?", answer="1 + 2 = 3\n#### 3", final="3")],
         "mmlu": [MCItem(id="m/1", subject="s", question="Q?", choices=["a", "b", "c", "d"],
                         answer=0)]}


@pytest.mark.parametrize("task", ["gsm8k", "mmlu"])
@pytest.mark.parametrize("variant", variants.VARIANTS)
def test_study_b_templates_are_exactly_the_prompt_text_a_variant_sends(task, variant):
    session = RecordingSession()
    ctx = variants.Context(tasks.get(task), variant, CFG, ITEMS[task], session,
                           scorer=lambda records: [1.0] * len(records), source_records=[],
                           backends={"teacher": {}, "target": {}},
                           names={"teacher": "t", "target": "s"})
    variants.build(ctx)
    hashes = variants.template_hashes(task, variant)
    format_sent = any(tasks.get(task).answer_format in m["content"] for r in session.sent
                      for m in r.messages)
    assert ("format" in hashes) == format_sent
    assert {h for k, h in hashes.items() if k != "format"} == {r.template_hash for r in session.sent}


def test_a_template_edit_changes_the_hashes_of_the_variants_sending_it(monkeypatch):
    before = {v: variants.template_hashes("gsm8k", v) for v in variants.VARIANTS}
    monkeypatch.setitem(variants.TEMPLATES, "rewrite", "Rewrite it. {format}")
    changed = {v for v in variants.VARIANTS if variants.template_hashes("gsm8k", v) != before[v]}
    assert changed == {"teacher_rewrite", "self_rewrite"}


@pytest.mark.parametrize("mode", list(rewrite.OPTIONS_ASK))
def test_study_a_rewrite_template_is_the_hash_its_requests_carry(mode):
    rule = {"name": "N", "description": "D.", "instructions": "I."}
    [request] = rewrite.rewrite_requests(rule, ITEMS["mmlu"],
                                         {"options": mode, "max_tokens": 8, "temperature": 0.0})
    assert rewrite.sent_template_hash(mode) == request.template_hash


def test_every_script_rule_carries_the_code_version_of_its_script():
    checked = 0
    for path in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=(?:rule|checkpoint) \w+:)", path.read_text()):
            script = re.search(r'^\s+script:\n\s+"\.\./scripts/([\w.]+)"', block, re.M)
            if script:
                checked += 1
                assert re.search(rf'code=(lambda wc: )?code_version\("{re.escape(script.group(1))}"',
                                 block), block.split("\n")[0]
    assert checked >= 15
