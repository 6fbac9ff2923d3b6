"""Control arms: the sets, their verdicts and the report's first page."""

import numpy as np
import pandas as pd
import pytest

from restyle import controls, report, tasks
from restyle.evaluate import mc_prompt
from restyle.records import MathItem, MCItem

MC = [MCItem(id=f"mmlu/s{i % 2}/test/{i}", subject=f"s{i % 2}", question=f"Q{i}?",
             choices=["w", "x", "y", "z"], answer=i % 4) for i in range(12)]
DEV = [MCItem(id=f"mmlu/s{s}/dev/0", subject=f"s{s}", question="D?", choices=["a", "b", "c", "d"],
              answer=1) for s in (0, 1)]
MATH = [MathItem(id=f"gsm8k/test/{i}", question=f"What is {i} + 1?",
                 answer=f"{i} + 1 = {i + 1}\n#### {i + 1}", final=str(i + 1)) for i in range(3)]


def test_mmlu_controls_are_the_evaluated_prompts_with_right_or_wrong_letters():
    mmlu = tasks.get("mmlu")
    positive = controls.choice_set(mmlu, "positive", MC, DEV, k_shot=1)
    negative = controls.choice_set(mmlu, "negative", MC, DEV, k_shot=1)
    for item, pos, neg in zip(MC, positive, negative):
        assert pos.prompt == neg.prompt == [{"role": "user", "content": mc_prompt(item, DEV[
            int(item.subject[1]):int(item.subject[1]) + 1])}]
        assert pos.completion == item.answer_letter and neg.completion != item.answer_letter
        assert pos.dataset == "control-mmlu-positive" and pos.id == f"{pos.dataset}/{item.id}"
        assert neg.provenance["control"] == "negative" and neg.provenance["not_a_result"]
    assert len({n.completion for n in negative}) > 1  # the wrong letters are not all alike
    assert controls.choice_set(mmlu, "negative", MC, DEV, 1) == negative  # the same on every run


def test_gsm8k_negative_control_answers_with_another_problems_solution():
    gsm8k = tasks.get("gsm8k")
    positive = controls.generation_set(gsm8k, "positive", MATH, "Solve it.")
    negative = controls.generation_set(gsm8k, "negative", MATH, "Solve it.")
    assert positive[0].prompt[0]["content"] == "What is 0 + 1?\n\nSolve it."  # evaluate's prompt
    assert [r.completion for r in positive] == [m.answer for m in MATH]
    assert [r.completion for r in negative] == [MATH[1].answer, MATH[2].answer, MATH[0].answer]


@pytest.mark.parametrize("name, parsed", [("control-mmlu-positive", ("mmlu", "positive")),
                                          ("control-gsm8k-negative", ("gsm8k", "negative")),
                                          ("studyA-original", None), ("control-x-positive", None)])
def test_control_names(name, parsed):
    assert controls.parse_name(name) == parsed


def items(sft_set, correct, task="mmlu"):
    seed = None if sft_set == "base" else 0
    return pd.DataFrame({"sft_set": sft_set, "seed": seed, "task": task,
                         "id": [f"q{i}" for i in range(len(correct))], "subject": "s",
                         "correct": correct})


def test_verdicts_and_the_first_page():
    n = 60
    base = np.zeros(n, bool)
    base[:15] = True
    learnt = base.copy()
    learnt[15:45] = True
    table = report.controls_table(pd.concat([
        items("base", base), items("control-mmlu-positive", learnt),
        items("control-mmlu-negative", np.zeros(n, bool)), items("studyA-r", base)]), 500, 0)
    assert table.sft_set.tolist() == ["control-mmlu-negative", "control-mmlu-positive"]
    neg, pos = table.itertuples()
    assert pos.significant and pos.delta == pytest.approx(0.5) and pos.verdict == \
        "pipeline sensitive"
    assert neg.delta == pytest.approx(-0.25) and neg.verdict == "as expected (no gain)"

    deaf = report.controls_table(pd.concat([items("base", base),
                                            items("control-mmlu-positive", base)]), 500, 0)
    assert deaf.verdict[0].startswith("WARNING: no significant gain")
    sections = report.summary_lines(pd.DataFrame(columns=report.MISSING_COLUMNS), table,
                                    pd.DataFrame(), pd.DataFrame(),
                                    {"controls": ["positive", "negative"], "model": "m"})
    md = report.summary_markdown(sections)
    assert ("- positive control (mmlu, `control-mmlu-positive`): +50.0 points (95 % CI [+"
            in md) and "pipeline sensitive" in md and "## Missing arms (0)" in md
    assert "``control-mmlu-positive``" in report.summary_rst(sections)
    off = report.summary_lines(pd.DataFrame(columns=report.MISSING_COLUMNS), table.iloc[:0],
                               pd.DataFrame(), pd.DataFrame(), {"controls": []})
    assert off[0][1][0].startswith("none configured")


def test_controls_stay_out_of_the_study_tables():
    n = 20
    right = np.ones(n, bool)
    frames = [items("base", np.zeros(n, bool)), items("studyA-original", np.zeros(n, bool)),
              items("studyA-r", right), items("control-mmlu-positive", right),
              items("studyB-gsm8k-human", right, "gsm8k"), items("base", right, "gsm8k"),
              items("control-gsm8k-positive", right, "gsm8k")]
    table = pd.concat(frames)
    study_a = report.study_a_table(table, 100, 0)
    assert set(study_a.sft_set) == {"studyA-r"}
    assert list(report.rule_effects(study_a).columns) == ["studyA-r"]
    assert set(report.study_b_table(table, pd.DataFrame(), 100, 0).sft_set) == {
        "studyB-gsm8k-human"}
    assert set(report.controls_table(table, 100, 0).sft_set) == {
        "control-gsm8k-positive", "control-mmlu-positive"}
