"""What restyle reads from study B's data release, read by the pipeline's own readers.

    .venv/bin/python benchmarks/release.py RELEASE_DIR [--task gsm8k ...] [--jobs N]

RELEASE_DIR is a clone of github.com/XuanRen4470/I-Learn-Better-If-You-Speak-My-Language (the
README says how to get it). For each study B task (gsm8k, math, ecqa, mbpp, and HumanEval's two
folds humaneval and humaneval2) with the paper's prompt format (`data.{task}.source: release`,
`prompt: release`, the file names config/schema.yaml's defaults of `release_files`), it prints:

- the rows of the training and test files, read through the task's `prepare` (the data rule's
  reader: every row is checked to be in the release's format);
- how many human answers (`Task.human_answer`: the release's own answer text) pass the task's
  checker (`Task.check_all`, the one the correctness filter and the evaluation use), on both
  splits, with every exception and its reason; for ECQA also how many gold labels were read;
- every released set of the task (each `*.json` beside the training file that is neither a
  training, test nor validation file; HumanEval's of its fold), built as the pipeline builds a
  set named in `study_b.release_sets` (`restyle.study_b.variants.build` with a released
  Context, no teacher session): rows, kept, dropped by reason and the kept rate after the
  correctness filter.

Code tasks run every program in restyle's sandbox, `--jobs` at once (default 2); the whole
release takes about a minute on two cores. It is not in CI: the release is not a package and CI has no network
(the tests' fixture release, a few rows written by the test, covers the same readers).
None of the release's rows is printed, only counts, file names, item ids and checker reasons.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

from restyle import tasks
from restyle.data import release
from restyle.study_b import variants

REPO = Path(__file__).resolve().parents[1]
TASKS = ("gsm8k", "math", "ecqa", "mbpp", "humaneval", "humaneval2")
SKIPPED = ("test", "validation")  # stems of the release's evaluation files, not trained sets


def data_config(task: tasks.Task, release_dir: str | Path) -> dict:
    """Config `data.{task}` (with `release_dir`) that reads the release in the paper's format,
    its files config/schema.yaml's defaults."""
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text(encoding="utf-8"))
    section = schema["properties"]["data"]["properties"][task.config_key]["properties"]
    return {"source": "release", "release_dir": str(release_dir), "prompt": "release",
            "train_half": "first", "release_files": section["release_files"]["default"],
            "per_split": {split: None for split in task.splits}}


def set_files(task: tasks.Task, cfg: dict) -> dict[str, str]:
    """Every released set of `task`: its name (`{set}` of `release_files.sets`) -> its file below
    `dataset/`; the task's own splits and the release's test and validation files left out."""
    head, _, tail = release.relative(task, cfg, "sets", set="\0").partition("\0")
    root = Path(cfg["release_dir"]) / "dataset"
    splits = {release.relative(task, cfg, split) for split in task.splits}
    out = {}
    for file in sorted(root.glob(f"{head}*{tail}")):
        name = file.relative_to(root).as_posix()
        set_name = name[len(head):len(name) - len(tail)]
        if name not in splits and "/" not in set_name and not set_name.startswith(SKIPPED):
            out[set_name] = name
    return out


def human_lines(task: tasks.Task, data: dict[str, list], jobs: int) -> list[str]:
    """How many human answers of each split pass the task's checker, and every one that does not."""
    out = []
    for split, items in data.items():
        checks = task.check_all(items, [task.human_answer(it) for it in items], jobs)
        failed = [(it.id, c.reason) for it, c in zip(items, checks) if not c.correct]
        out.append(f"human answers passing the checker, {split}: "
                   f"{len(items) - len(failed)} of {len(items)}")
        out += [f"  exception {item_id}: {reason}" for item_id, reason in failed]
    if all(hasattr(it, "choices") for items in data.values() for it in items):
        read = sum(0 <= it.answer < len(it.choices) for items in data.values() for it in items)
        out.append(f"gold labels read: {read} of {sum(map(len, data.values()))} "
                   f"({', '.join(f'{s} {len(v)}' for s, v in data.items())})")
    return out


SET_COLUMNS = ("rows", "kept", "no_answer", "wrong_answer", "no_text")


def set_row(task: tasks.Task, cfg: dict, name: str, file: str, items: list, jobs: int) -> dict:
    """A released set built as the pipeline builds it (correctness filter on): its counts."""
    study_b = {"instructions": {task.config_key: ""}, "filter_correct": True}
    ctx = variants.Context(task, name, study_b, items, jobs=jobs, release={
        "dir": cfg["release_dir"], "file": file, "train": release.relative(task, cfg, "train"),
        "key": f"{file} (benchmarks/release.py)"})
    stats = variants.build(ctx).stats
    return {"rows": stats["questions"], "kept": stats["kept"], "no_answer": stats["no_answer"],
            "wrong_answer": stats["wrong_answer"], "no_text": stats["teacher_failed"]}


def task_lines(name: str, release_dir: Path, jobs: int) -> list[str]:
    task = tasks.get(name)
    cfg = data_config(task, release_dir)
    with tempfile.TemporaryDirectory() as cache:  # a release source unpacks nothing there
        data = task.prepare(cfg, cache)
    out = [f"## {name}", ""]
    out += [f"{release.relative(task, cfg, split):<44}{split:>6}{len(items):>7} rows"
            for split, items in data.items()]
    out += human_lines(task, data, jobs)
    sets = set_files(task, cfg)
    width = max(map(len, sets.values()), default=10) + 2
    out += ["", f"{'released set (correctness filter)':<{width}}"
            + "".join(f"{c:>{len(c) + 2}}" for c in SET_COLUMNS) + f"{'kept rate':>11}"]
    first_of: dict[bytes, str] = {}  # some released sets are byte for byte another's
    for set_name, file in sets.items():
        row = set_row(task, cfg, set_name, file, data["train"], jobs)
        same = first_of.setdefault((release_dir / "dataset" / file).read_bytes(), file)
        out.append(f"{file:<{width}}" + "".join(f"{row[c]:>{len(c) + 2}}" for c in SET_COLUMNS)
                   + f"{100 * row['kept'] / row['rows']:>9.1f} %"
                   + (f"  (the same file as {same})" if same != file else ""))
        print(out[-1], file=sys.stderr, flush=True)  # progress: the code tasks take minutes
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("release_dir", type=Path, help="a clone of study B's data release")
    parser.add_argument("--task", action="append", choices=TASKS)
    parser.add_argument("--jobs", type=int, default=2, help="programs run at once (code tasks)")
    args = parser.parse_args(argv)
    print(f"# study B's release at {args.release_dir} (commit "
          f"{release.commit(args.release_dir) or 'not a git checkout'}), prompt format release\n")
    for name in args.task or TASKS:
        print("\n".join(task_lines(name, args.release_dir, args.jobs)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
