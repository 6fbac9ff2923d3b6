"""restyle's checkers agree with the labelled reply corpus (tests/data/replies) on every reply,
and the corpus records what each reference implementation really says (benchmarks/checkers.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import checkers  # noqa: E402

from restyle.io import DataError  # noqa: E402

TASKS = sorted(checkers.REFERENCES)


@pytest.fixture(scope="module", params=TASKS)
def corpus(request):
    return checkers.load_corpus(checkers.CORPUS / f"{request.param}.jsonl")


def test_every_task_has_a_corpus_of_forty_replies_or_more(corpus):
    assert len(corpus) >= 40
    assert {r.label for r in corpus} >= {"correct", "wrong"}


def test_restyle_agrees_with_every_label(corpus):
    got = checkers.restyle_verdicts(corpus, jobs=2)
    wrong = [f"{r.where} ({r.style}): label {r.label}, restyle {g}"
             for r, g in zip(corpus, got) if g != r.label]
    assert not wrong, "\n".join(wrong)


def test_the_recorded_reference_verdicts_are_what_the_references_say(corpus):
    task = corpus[0].task
    for name, reference in checkers.REFERENCES[task].items():
        got = reference([r.item for r in corpus], [r.reply for r in corpus])
        stale = [f"{r.where}: recorded {r.references[name]}, {name} says {g}"
                 for r, g in zip(corpus, got) if g != r.references[name]]
        assert not stale, "\n".join(stale)


def _line(**changes) -> str:
    row = json.loads((checkers.CORPUS / "gsm8k.jsonl").read_text().splitlines()[0])
    row.update(changes)
    return json.dumps(row)


@pytest.mark.parametrize("changes, message", [
    ({"label": "right"}, "label is 'right', must be one of correct, wrong, no_answer"),
    ({"reply": 42}, "field 'reply' must be str, got int"),
])
def test_bad_corpus_lines_are_named_by_file_and_line(tmp_path, changes, message):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text(_line() + "\n" + _line(id="other", **changes) + "\n")
    with pytest.raises(DataError, match=rf"gsm8k.jsonl:2: {message}"):
        checkers.load_corpus(path)


def test_a_line_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "gsm8k.jsonl"
    path.write_text(_line() + "\n{not json\n")
    with pytest.raises(DataError, match=r"gsm8k.jsonl:2:2: not JSON"):
        checkers.load_corpus(path)
