"""The project's layout: each stage's input functions live in its own rules/X_common.smk, which
only files included after it may use (rules/common.smk's include order is the Snakefile's)."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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
