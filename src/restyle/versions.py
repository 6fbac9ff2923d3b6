"""Versions of the code and prompt text a job runs, passed to its rule as params.

Snakemake reruns a script rule when its script changes, not when the library the script imports
does; a param that changes with that library lets the params trigger do it. `code_version`
hashes the syntax tree of a script and of every restyle module it imports, directly or through
other restyle modules, so comments, docstrings and formatting change nothing while any other edit
reruns exactly the rules that run it. Prompt text is left out of that hash: a module-level
assignment annotated `Prompt` (restyle.teacher), whose jobs carry the hashes of just the templates
they send instead (each stage's `template_hashes`), so editing one template reruns only its jobs.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

from restyle import tasks

PACKAGE = __name__.partition(".")[0]
SRC = Path(__file__).resolve().parents[1]  # the folder holding the package
PROMPT = "Prompt"  # restyle.teacher.Prompt, the annotation of prompt text

_DOCSTRING_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


@lru_cache(maxsize=None)
def code_version(script: str | Path, task: str | None = None, src: Path = SRC) -> str:
    """Hash of the code `script` runs: its syntax tree and that of every restyle module under
    `src` it imports (function-level imports too), with the package data files those modules
    name (restyle/data/<file>). A job of one `task` runs that task's module of restyle.tasks
    only: the other tasks' modules are left out, so editing one task reruns its jobs alone."""
    tree = ast.parse(Path(script).read_text(encoding="utf-8"))
    # a task's module: several tasks (the folds of one benchmark) may share one
    modules = {type(t).__module__ for t in tasks.REGISTRY.values()}
    others = modules - {type(tasks.REGISTRY[task]).__module__} if task else set()
    todo = sorted(_imports(tree, str(script), src) - others)
    parts, seen = [_normalised(tree)], set(todo)
    while todo:
        dump, imports = _module(todo.pop(), src)
        parts.append(dump)
        imports -= others
        todo += sorted(imports - seen)
        seen |= imports
    # sorted: the walk follows sets, whose order changes from one process to the next
    return hashlib.sha256("\n".join(sorted(parts)).encode()).hexdigest()[:16]


@lru_cache(maxsize=None)
def _module(name: str, src: Path) -> tuple[str, frozenset[str]]:
    """(normalised source with its data files' hashes, restyle modules imported) of a module."""
    tree = ast.parse(_file(name, src).read_text(encoding="utf-8"))
    imports = frozenset(_imports(tree, name, src))
    dump = _normalised(tree)
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)}
    data = [f"{f.name} {hashlib.sha256(f.read_bytes()).hexdigest()}"
            for f in sorted((src / PACKAGE / "data").glob("*"))
            if f.is_file() and f.suffix != ".py" and f.name in strings]  # data/ also holds modules
    return "\n".join([name, dump, *data]), imports


def _file(name: str, src: Path) -> Path | None:
    path = src.joinpath(*name.split("."))
    return next((f for f in (path.with_suffix(".py"), path / "__init__.py") if f.is_file()), None)


def _imports(tree: ast.AST, where: str, src: Path) -> set[str]:
    """The restyle modules (and their packages) an import in `tree` names."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # rare enough to refuse rather than resolve
                raise ValueError(f"{where}: relative import; restyle.versions follows absolute "
                                 f"imports only (write 'from {PACKAGE}... import ...')")
            # `from restyle import teacher` names a module, `from restyle.io import x` does not
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    packages = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 2)}
    return {n for n in packages if n.split(".")[0] == PACKAGE and _file(n, src)}


def _normalised(tree: ast.Module) -> str:
    """ast.dump of `tree` without docstrings and without module-level prompt text (`_is_prompt`);
    a comment or a layout change never reaches the tree."""
    tree.body = [n for n in tree.body if not _is_prompt(n)]
    for node in ast.walk(tree):
        if isinstance(node, _DOCSTRING_OWNERS) and ast.get_docstring(node, clean=False) is not None:
            node.body = node.body[1:]
    return ast.dump(tree)


def _is_prompt(node: ast.stmt) -> bool:
    """An assignment annotated with `Prompt`: `X: Prompt = ...`, `X: dict[str, Prompt] = ...`."""
    return isinstance(node, ast.AnnAssign) and any(
        isinstance(n, ast.Name) and n.id == PROMPT or isinstance(n, ast.Attribute) and n.attr == PROMPT
        for n in ast.walk(node.annotation))
