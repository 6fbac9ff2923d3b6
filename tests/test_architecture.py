"""The project's layout, as docs/architecture.md describes it: the page names every file that
holds code and only files that exist, and each stage's functions (rules/X_common.smk) are used
only by files included after them."""

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "architecture.md"
# the folders whose files the page names (a name with a <placeholder> is a pattern)
NAMED = ("Snakefile", "rules/", "scripts/", "src/", "tests/", "config/", "docs/", "benchmarks/")
INCLUDE = re.compile(r'^include:\s*"([^"]+)"', re.MULTILINE)
DEF = re.compile(r"^def (\w+)\(", re.MULTILINE)


def include_order(path: Path) -> list[Path]:
    """`path` after every file it includes, depth first: Snakemake runs an include where it
    stands, and every include is at the top of its file."""
    order = []
    for name in INCLUDE.findall(path.read_text(encoding="utf-8")):
        order += include_order(path.parent / name)
    return [*order, path]


def test_no_include_uses_a_later_definition():
    """A function used before the file defining it is included works only when called late (in
    an input function), and breaks once someone calls it at parse time."""
    files = include_order(REPO / "Snakefile")
    defined = [set(DEF.findall(f.read_text(encoding="utf-8"))) for f in files]
    for i, path in enumerate(files):
        later = set().union(*defined[i + 1:]) - set().union(*defined[:i + 1])
        text = path.read_text(encoding="utf-8")
        used = sorted(n for n in later if re.search(rf"\b{n}\b", text))
        assert not used, f"{path.relative_to(REPO)} uses {used}, defined in a file included later"


def test_every_path_the_architecture_page_names_exists():
    named = [p for p in re.findall(r"`([^`\s]+)`", DOC.read_text(encoding="utf-8"))
             if p.startswith(NAMED) and "<" not in p]
    assert len(named) > 50
    assert [p for p in named if not (REPO / p).exists()] == []


def test_the_architecture_page_names_every_file_with_code():
    text = DOC.read_text(encoding="utf-8")
    files = [*REPO.glob("rules/*.smk"), *REPO.glob("scripts/*.py"), *REPO.glob("tests/test_*.py"),
             *(p for p in REPO.glob("src/restyle/**/*.py") if p.name != "__init__.py")]
    assert [str(p.relative_to(REPO)) for p in files if f"`{p.relative_to(REPO)}`" not in text] == []


def _compared_names(tree, names) -> list[str]:
    """Names a comparison (==, !=, in) of a syntax tree makes with a string literal."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in [node.left, *node.comparators]:
                for const in ast.walk(side):
                    if isinstance(const, ast.Constant) and isinstance(const.value, str) and (
                            const.value in names or set(const.value.split("|")) & set(names)):
                        found.append(const.value)
    return found


def _name_comparisons(names, package: str) -> list[str]:
    """Where code outside `package` (src/restyle/...) compares one of `names` with a string."""
    pattern = re.compile(rf"""(?:[=!]=|\bin)\s*[(\[{{]?\s*["'](?:{'|'.join(names)})["']"""
                         rf"""|["'](?:{'|'.join(names)})["']\s*(?:[=!]=|\bin\b)"""
                         rf"""|["'](?:{'|'.join(names)})\|""")
    offenders = []
    for path in [*REPO.glob("src/restyle/**/*.py"), *REPO.glob("scripts/*.py"),
                 *REPO.glob("benchmarks/*.py")]:
        if path.is_relative_to(REPO / package):
            continue
        found = _compared_names(ast.parse(path.read_text(encoding="utf-8")), names)
        offenders += [f"{path.relative_to(REPO)}: {v!r}" for v in found]
    for path in [REPO / "Snakefile", *REPO.glob("rules/*.smk")]:
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{lineno}: {line.strip()}")
    return offenders


def test_no_task_name_is_compared_in_a_string_outside_the_task_registry():
    """Code that asks "is this gsm8k?" is code a new task must edit; the registry's `Task`
    says what differs instead (restyle.tasks)."""
    from restyle import tasks

    assert _name_comparisons(tasks.NAMES, "src/restyle/tasks") == []


def test_no_backend_name_is_compared_in_a_string_outside_the_teacher_package():
    """Code that asks "is this teacher local?" is code a new backend must edit; the registry's
    `Backend` says what differs instead (restyle.teacher.backends)."""
    from restyle.teacher import backends

    assert _name_comparisons(backends.NAMES, "src/restyle/teacher") == []


# docs/architecture.md's shared modules, and the stages' packages and modules; the registries
# (restyle.tasks, restyle.teacher's backends) are shared: a stage registers there, the shared
# code asks them. restyle.models is the models stage and every stage's model loader (the local
# teacher's too), so it counts as neither.
SHARED = ["config", "versions", "runs", "teacher", "cache", "accounting", "answers", "batching",
          "chat", "records", "io", "logs", "packaged", "stats", "sandbox", "locks"]
STAGES = ["study_a", "study_b", "controls", "train", "launch", "evaluate", "report", "estimate",
          "sizing", "checks"]


def _restyle_imports(path: Path) -> set[str]:
    """The restyle modules a file imports, at module level or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
    return {n for n in names if n.startswith("restyle.")}


def test_no_shared_module_imports_a_stage():
    """Shared code that knows a stage is code each new stage must edit (and a cycle waiting to
    happen); a stage's knowledge goes to the shared code as an argument or a registration
    (restyle.checks hands config.check the stages' checks)."""
    src = REPO / "src/restyle"
    files = [p for name in SHARED for p in [src / f"{name}.py", *(src / name).glob("*.py")]
             if p.is_file()]
    assert len(files) > len(SHARED)
    stage = re.compile(rf"^restyle\.(?:{'|'.join(STAGES)})(?:\.|$)")
    offenders = [f"{p.relative_to(REPO)}: {m}" for p in files for m in sorted(_restyle_imports(p))
                 if stage.match(m)]
    assert offenders == []
