from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from restyle import report


def items_for(sft_set, seed, task, subject, correct, prefix="q"):
    run = "base" if sft_set == "base" else f"{sft_set}/seed{seed}"
    return pd.DataFrame({"model": "m", "run": run, "sft_set": sft_set,
                         "seed": None if sft_set == "base" else seed, "task": task,
                         "id": [f"{prefix}{subject}/{i}" for i in range(len(correct))],
                         "subject": subject, "correct": correct})


@pytest.fixture()
def study_a_items():
    n = 100
    base = np.zeros(n, bool)
    base[:30] = True  # 30 % on each subject
    better = base.copy()
    better[30:50] = True  # +20 points
    frames = []
    for subject in ("global_facts", "college_physics"):
        frames += [items_for("base", None, "mmlu", subject, base),
                   items_for("studyA-original", 0, "mmlu", subject, base)]
        # r1 helps global facts by 20 points in both seeds, and does nothing for physics
        for seed in (0, 1):
            frames.append(items_for("studyA-r1", seed, "mmlu", subject,
                                    better if subject == "global_facts" else base))
        # r2: seed 0 +20, seed 1 +0 on global facts -> +10 on average; physics unchanged
        frames += [items_for("studyA-r2", 0, "mmlu", subject, better if subject == "global_facts" else base),
                   items_for("studyA-r2", 1, "mmlu", subject, base)]
    return pd.concat(frames, ignore_index=True)


def test_study_a_deltas_are_paired_averaged_over_seeds_and_flagged(study_a_items):
    table = report.study_a_table(study_a_items, n_boot=500).set_index(["sft_set", "name"])
    r1 = table.loc[("studyA-r1", "global_facts")]
    assert r1.seeds == 2 and r1.n == 100 and r1.accuracy == pytest.approx(0.5)
    assert r1.delta_vs_base == pytest.approx(0.2) and r1.delta_vs_original == pytest.approx(0.2)
    assert r1.low_vs_base < 0.2 < r1.high_vs_base and r1.significant_vs_base
    physics = table.loc[("studyA-r1", "college_physics")]
    assert physics.delta_vs_base == 0 and not physics.significant_vs_base
    assert table.loc[("studyA-r2", "global_facts")].delta_vs_base == pytest.approx(0.1)
    # categories and overall are micro-averages over questions
    assert table.loc[("studyA-r1", "other")].delta_vs_base == pytest.approx(0.2)
    assert table.loc[("studyA-r1", "stem")].delta_vs_base == 0
    overall = table.loc[("studyA-r1", "ALL")]
    assert overall.n == 200 and overall.delta_vs_base == pytest.approx(0.1)
    assert "studyA-original" not in table.index.get_level_values(0)


def test_consistency_of_rules(study_a_items, tmp_path):
    effects = report.rule_effects(report.study_a_table(study_a_items, n_boot=200))
    assert list(effects.columns) == ["studyA-r1", "studyA-r2"]
    assert effects.loc["global_facts"].tolist() == pytest.approx([0.2, 0.1])
    summary = report.consistency(effects).iloc[0]
    assert summary.mean_rank_correlation == pytest.approx(1.0)
    assert summary.share_subjects_all_rules_same_sign == 1.0
    assert summary.variance_share_subject > summary.variance_share_rule
    report.plot_heatmap(effects, tmp_path / "heatmap.png")
    assert (tmp_path / "heatmap.png").stat().st_size > 5000


def test_study_b_in_task_cross_task_and_familiarity(tmp_path):
    n = 50
    base, good = np.zeros(n, bool), np.zeros(n, bool)
    base[:10], good[:20] = True, True
    items = pd.concat([
        items_for("base", None, "gsm8k", "gsm8k", base, "g"),
        items_for("base", None, "mmlu", "anatomy", base, "m"),
        items_for("studyB-gsm8k-teacher", 0, "gsm8k", "gsm8k", good, "g"),
        items_for("studyB-gsm8k-teacher", 0, "mmlu", "anatomy", base, "m"),
        items_for("studyB-gsm8k-human", 0, "gsm8k", "gsm8k", base, "g"),
        items_for("studyB-gsm8k-human", 0, "mmlu", "anatomy", base, "m")], ignore_index=True)
    familiarity = pd.DataFrame([
        {"model": "m", "run": "base", "dataset": "studyB-gsm8k-teacher", "count": 16,
         "corpus_perplexity": 3.0, "mean_perplexity": 3.4},
        {"model": "m", "run": "base", "dataset": "studyB-gsm8k-human", "count": 16,
         "corpus_perplexity": 9.0, "mean_perplexity": 11.0},
        {"model": "m", "run": "studyB-gsm8k-teacher/seed0", "dataset": "studyB-gsm8k-teacher",
         "count": 16, "corpus_perplexity": 2.0, "mean_perplexity": 2.2}])
    table = report.study_b_table(items, familiarity, n_boot=300).set_index(["variant", "task"])
    teacher = table.loc[("teacher", "gsm8k")]
    assert teacher.relation == "in-task" and teacher.delta_vs_base == pytest.approx(0.2)
    assert teacher.corpus_ppl_before == 3.0 and teacher.corpus_ppl_after == 2.0
    assert table.loc[("teacher", "mmlu")].relation == "cross-task"
    assert table.loc[("teacher", "mmlu")].delta_vs_base == 0
    assert table.loc[("human", "gsm8k")].mean_ppl_before == 11.0
    assert np.isnan(table.loc[("human", "gsm8k")].corpus_ppl_after)
    report.plot_familiarity_vs_accuracy(table.reset_index(), tmp_path / "scatter.png")
    report.plot_familiarity_shift(table.reset_index(), tmp_path / "shift.png")
    assert (tmp_path / "scatter.png").stat().st_size > 5000
    assert (tmp_path / "shift.png").stat().st_size > 5000


def evaluated(tmp_path, monkeypatch, run: str, replies: list[str], questions) -> Path:
    """The items CSV rule evaluate writes for `run` on GSM8K when the model replies `replies`:
    restyle.evaluate's rows from the task's own checker (only the model's generation is
    replaced), with scripts/evaluate.py's label columns; and its summary beside it."""
    from restyle import evaluate, tasks

    monkeypatch.setattr(evaluate, "generate_answers", lambda model, tokenizer, prompts, options:
                        (list(replies), None))
    rows, _ = evaluate.evaluate_generation(None, None, tasks.get("gsm8k"), questions,
                                           evaluate.GenerationOptions())
    rows.insert(1, "subject", "gsm8k")
    labels = evaluate.run_labels("m", run)
    folder = tmp_path / run.replace("/", "_")
    folder.mkdir()
    evaluate.summarize(rows, "gsm8k", labels).to_csv(folder / "summary.csv", index=False)
    for column, value in reversed([*labels.items(), ("task", "gsm8k")]):
        rows.insert(0, column, value)
    rows.to_csv(folder / "items.csv", index=False)
    return folder


def test_no_answer_rate_per_set_and_task_beside_accuracy(tmp_path, monkeypatch):
    """From the items CSVs the evaluation writes: the share of replies the checker read no
    answer in, in each evaluation summary and, per question over the seeds, in the study B table
    and the first page beside accuracy; MMLU (log-likelihood, no status column) shows 0."""
    from restyle.records import MathItem

    questions = [MathItem(id=f"g/{i}", question=f"What is {i} plus 2?", answer=f"#### {i + 2}",
                          final=str(i + 2)) for i in range(4)]
    right = [f"{i} plus 2 makes\n#### {i + 2}" for i in range(4)]
    lost = "I would need to count that more carefully."  # no number: no answer
    folders = [
        evaluated(tmp_path, monkeypatch, "base", right, questions),
        # seed 0: q0 unread, q1 wrong; seed 1: q0 and q2 unread
        evaluated(tmp_path, monkeypatch, "studyB-gsm8k-teacher/seed0",
                  [lost, "#### 99", right[2], right[3]], questions),
        evaluated(tmp_path, monkeypatch, "studyB-gsm8k-teacher/seed1",
                  [lost, right[1], lost, right[3]], questions)]
    summaries = report.read_csvs(f / "summary.csv" for f in folders)
    summaries = summaries[summaries.subject == "ALL"].set_index("run")
    assert summaries.loc["base", "no_answer_rate"] == 0.0
    assert summaries.loc["studyB-gsm8k-teacher/seed0", "no_answer_rate"] == 0.25
    assert summaries.loc["studyB-gsm8k-teacher/seed1", "no_answer_rate"] == 0.5
    assert summaries.loc["studyB-gsm8k-teacher/seed1", "accuracy"] == 0.5

    items = pd.concat([report.read_csvs(f / "items.csv" for f in folders),
                       items_for("base", None, "mmlu", "anatomy", np.ones(4, bool), "m"),
                       items_for("studyB-gsm8k-teacher", 0, "mmlu", "anatomy", np.ones(4, bool),
                                 "m")], ignore_index=True)
    assert set(items.status.dropna()) == {"passed", "failed", "no_answer"}
    table = report.study_b_table(items, pd.DataFrame(), n_boot=200).set_index("task")
    # per question over the two seeds: q0 1, q2 0.5, the others 0
    assert table.loc["gsm8k", "no_answer_rate"] == pytest.approx((1 + 0.5) / 4)
    assert table.loc["gsm8k", "accuracy"] == pytest.approx((0 + 0.5 + 0.5 + 1) / 4)
    assert table.loc["mmlu", "no_answer_rate"] == 0.0
    assert list(table.columns).index("no_answer_rate") == list(table.columns).index("accuracy") + 1
    sections = report.summary_lines(pd.DataFrame(columns=report.MISSING_COLUMNS), pd.DataFrame(),
                                    pd.DataFrame(), table.reset_index(), {})
    assert any("`studyB-gsm8k-teacher` on gsm8k: accuracy 0.500 (no answer read in 37.5 %)"
               in line for line in sections[2][1])


def test_empty_inputs_give_empty_tables_and_explicit_figures(tmp_path):
    empty = pd.DataFrame(columns=["model", "run", "sft_set", "seed", "task", "id", "subject", "correct"])
    table = report.study_a_table(empty)
    assert table.empty and "delta_vs_base" in table.columns
    report.plot_heatmap(report.rule_effects(table), tmp_path / "h.png")
    assert (tmp_path / "h.png").exists()


def test_missing_arms_name_empty_sets_and_rules_never_extracted():
    gate = pd.DataFrame([
        {"sft_set": "studyA-r1", "subject": "all", "total": 8, "kept": 0, "dropped_teacher": 0,
         "dropped_parse": 5, "dropped_options": 0, "dropped_answer": 3, "dropped_duplicate": 0},
        {"sft_set": "studyA-r2", "subject": "all", "total": 8, "kept": 2, "dropped_teacher": 0,
         "dropped_parse": 6, "dropped_options": 0, "dropped_answer": 0, "dropped_duplicate": 0}])
    variants = pd.DataFrame([{"sft_set": "studyB-gsm8k-teacher", "questions": 4, "kept": 0,
                              "teacher_failed": 0, "no_answer": 1, "wrong_answer": 3,
                              "other_dropped": 0}])
    doc = {"mode": "extracted", "count_requested": 8, "count": 2}
    missing = report.missing_arms(gate, variants, doc, [0, 1])
    assert missing.values.tolist() == [
        ["A", "6 of 8 rules", "0 1", "rule extraction found only 2 usable rules "
         "(results/study_a/rules/dropped.jsonl says why each candidate was dropped)"],
        ["A", "studyA-r1", "0 1", "empty set: the quality gate dropped all 8 items (parse 5, "
         "answer 3)"],
        ["B", "studyB-gsm8k-teacher", "0 1", "empty set: the filters dropped all 4 questions "
         "(no_answer 1, wrong_answer 3)"]]
    empty = pd.DataFrame()
    sections = report.summary_lines(missing, empty, empty, empty, {})
    assert "**Missing arms (3)**\n\n- study A, ``6 of 8 rules``" in report.summary_rst(sections)
    fixed = report.missing_arms(gate.iloc[1:], variants.iloc[:0], {**doc, "mode": "fixed"}, [0])
    assert fixed.empty and report.summary_lines(fixed, empty, empty, empty, {})[1] == (
        "Missing arms (0)", ["none: every arm the config asked for was trained and evaluated"])


def test_study_b_familiarity_per_set_and_paired_with_human():
    rows = []
    for variant, nll in (("human", 2.0), ("teacher_rewrite", 1.0)):
        for i in range(6 if variant == "human" else 4):  # the rewrite answers 4 questions
            rows.append({"model": "m", "run": "base", "dataset": f"studyB-gsm8k-{variant}",
                         "id": f"{variant}/{i}", "source_id": f"q{i}", "tokens": 10,
                         "nll_sum": 10 * nll + 0.1 * i, "mean_nll": nll, "perplexity": 0.0})
    rows.append({**rows[0], "run": "studyB-gsm8k-human/seed0"})  # a checkpoint: not the base
    sets, paired = report.study_b_familiarity(pd.DataFrame(rows), 200, 0)
    assert sets[["variant", "examples", "mean_response_tokens"]].values.tolist() == [
        ["human", 6, 10.0], ["teacher_rewrite", 4, 10.0]]
    assert (sets.corpus_ppl_low <= sets.corpus_perplexity).all()
    [row] = paired.itertuples()
    assert (row.variant, row.n) == ("teacher_rewrite", 4)  # the shared questions only
    assert row.ratio == pytest.approx(np.exp(-1.0), rel=1e-6) and row.excludes_one
    sections = report.summary_lines(pd.DataFrame(columns=report.MISSING_COLUMNS), pd.DataFrame(),
                                    pd.DataFrame(), pd.DataFrame(), {}, paired)
    assert any("`teacher_rewrite` vs `human` on the 4 questions both answer" in line
               for line in sections[2][1])


def test_familiarity_matrix_reads_every_set_with_every_target_and_the_own_rewrite(tmp_path):
    """Two readers, three sets (one empty): K x S cells with their counts; each reader's own
    rewrite is the reference of its row's paired ratios; the summary line says which is most
    familiar."""
    sets = {"studyB-gsm8k-human": 2.0, "studyB-gsm8k-self_rewrite@a": 1.0,
            "studyB-gsm8k-self_rewrite@b": 1.5, "studyB-gsm8k-best_of_n@a": 0.5}
    rows, summary = [], []
    for reader in ("a", "b"):
        for dataset, nll in sets.items():
            n = 0 if dataset.endswith("@b") and reader == "a" else 5  # pretend a scored it empty
            n = 4 if dataset.endswith("best_of_n@a") else n
            summary.append({"model": reader, "run": "base", "dataset": dataset, "count": n})
            for i in range(n):
                # b reads its own rewrite best; a reads its own best
                mine = dataset.endswith(f"@{reader}")
                rows.append({"model": reader, "run": "base", "dataset": dataset,
                             "id": f"{dataset}/{i}", "source_id": f"q{i}", "tokens": 10,
                             "nll_sum": 10 * (nll - (0.8 if mine else 0)) + 0.1 * i,
                             "mean_nll": nll, "perplexity": 0.0})
    matrix = report.familiarity_matrix(pd.DataFrame(summary), pd.DataFrame(rows), 200, 0)
    assert len(matrix) == 2 * 4
    cells = matrix.set_index(["reader", "set"])
    assert cells.loc[("a", "studyB-gsm8k-self_rewrite@b")].examples == 0
    assert np.isnan(cells.loc[("a", "studyB-gsm8k-self_rewrite@b")].corpus_perplexity)
    own = cells.loc[("b", "studyB-gsm8k-self_rewrite@b")]
    assert own.writer == "b" and own.ratio_vs_own == pytest.approx(1.0)
    human = cells.loc[("b", "studyB-gsm8k-human")]
    assert human.n_shared == 5 and human.ratio_vs_own > 1 and human.excludes_one
    assert human.writer in ("", None) or pd.isna(human.writer)
    lines = report.own_rewrite_lines(matrix)
    assert len(lines) == 2
    # best_of_n@a is more familiar to a, but it was picked by a's perplexity: not compared
    assert lines[0].startswith("familiarity of target a (gsm8k): its own rewrite "
                               "`studyB-gsm8k-self_rewrite@a` is its most familiar set")
    assert "`studyB-gsm8k-self_rewrite@b`" in lines[1] and " is its most familiar" in lines[1]
    report.plot_familiarity_matrix(matrix, tmp_path / "matrix.png")
    assert (tmp_path / "matrix.png").stat().st_size > 5000


def test_tables_per_target_never_mix_two_targets_questions():
    n = 20
    right, wrong = np.ones(n, bool), np.zeros(n, bool)
    frames = []
    for model, trained in (("a", right), ("b", wrong)):
        for sft_set, correct in (("base", wrong), ("studyB-gsm8k-human", trained)):
            frames.append(items_for(sft_set, 0, "gsm8k", "gsm8k", correct).assign(model=model))
    table = report.per_target(report.study_b_table, pd.concat(frames, ignore_index=True),
                              familiarity=pd.DataFrame(), n_boot=100, seed=0)
    assert table.target.tolist() == ["a", "b"] and table.columns[0] == "target"
    assert table.delta_vs_base.tolist() == [1.0, 0.0]


def test_humaneval_folds_have_a_row_each_and_a_pooled_row_over_both_test_halves():
    """Each fold's set on its own fold's test questions, per fold, and per set label pooled over
    both folds' questions (each once, seeds averaged), paired against the base model on the
    same questions; a fold's set is not scored on the other fold even where rows exist."""
    def rows(sft_set, seed, task, numbers, correct):
        run = "base" if sft_set == "base" else f"{sft_set}/seed{seed}"
        return pd.DataFrame({"model": "m", "run": run, "sft_set": sft_set, "seed": seed,
                             "task": task, "id": [f"HumanEval/{i}" for i in numbers],
                             "subject": task, "correct": correct, "status": "passed"})

    first, second = range(0, 6), range(6, 10)  # unequal halves: pooled != mean of the folds
    items = pd.concat([
        rows("base", None, "humaneval", second, [True, False, False, False]),
        rows("base", None, "humaneval2", first, [False] * 6),
        rows("studyB-humaneval-teacher", 0, "humaneval", second, [True, True, False, False]),
        rows("studyB-humaneval-teacher", 1, "humaneval", second, [True, True, True, False]),
        rows("studyB-humaneval2-teacher", 0, "humaneval2", first, [True] * 3 + [False] * 3),
        # a fold's set on the other fold: its own training questions, never a row
        rows("studyB-humaneval2-teacher", 0, "humaneval", second, [True] * 4),
        rows("studyB-humaneval-human", 0, "humaneval", second, [False] * 4)], ignore_index=True)
    table = report.study_b_table(items, pd.DataFrame(), n_boot=200)
    pooled_name = "studyB-humaneval-teacher + studyB-humaneval2-teacher"
    assert sorted(zip(table.sft_set, table.task)) == sorted([
        ("studyB-humaneval-teacher", "humaneval"), ("studyB-humaneval2-teacher", "humaneval2"),
        ("studyB-humaneval-human", "humaneval"),
        (pooled_name, "humaneval (both folds)")])  # human has no fold-2 set: no pooled row
    by_set = table.set_index("sft_set")
    assert by_set.loc["studyB-humaneval-teacher", "accuracy"] == pytest.approx((1 + 1 + .5) / 4)
    assert by_set.loc["studyB-humaneval2-teacher", "accuracy"] == pytest.approx(3 / 6)
    pooled = by_set.loc[pooled_name]
    assert pooled.n == 10 and pooled.relation == "in-task"
    assert pooled.accuracy == pytest.approx((2.5 + 3) / 10)
    assert pooled.delta_vs_base == pytest.approx((2.5 + 3) / 10 - 1 / 10)
    sections = report.summary_lines(pd.DataFrame(columns=report.MISSING_COLUMNS), pd.DataFrame(),
                                    pd.DataFrame(), table, {})
    assert any(f"`{pooled_name}` on humaneval (both folds): accuracy 0.550" in line
               for line in sections[2][1])


def test_study_b_paper_table_per_target_set_label_and_task_with_intervals(tmp_path):
    """The paper's shape: per target, an in-task row per set label across the tasks its sets were
    made from (HumanEval's two folds pooled), a cross-task row per (label, source task), under
    the base model's row; each cell accuracy with its bootstrap interval over questions; a set
    never evaluated on a task leaves the cell empty; familiarity beside each source task."""
    def rows(model, sft_set, task, numbers, correct, seed=0, prefix=None):
        run = "base" if sft_set == "base" else f"{sft_set}/seed{seed}"
        prefix = prefix or ("HumanEval/" if task.startswith("humaneval") else f"{task}/")
        return pd.DataFrame({"model": model, "run": run, "sft_set": sft_set, "seed": seed,
                             "task": task, "id": [f"{prefix}{i}" for i in numbers],
                             "subject": task, "correct": correct})

    half = np.arange(100) < 50  # 50 of 100 right
    first, second = range(0, 6), range(6, 10)  # HumanEval: fold 2 tests on 0-5, fold 1 on 6-9
    frames = []
    for model in ("a", "b"):
        frames += [rows(model, "base", "gsm8k", range(100), np.arange(100) < 20),
                   rows(model, "base", "mmlu", range(4), [True, False, False, False]),
                   rows(model, "base", "humaneval", second, [False] * 4),
                   rows(model, "base", "humaneval2", first, [False] * 6),
                   # two seeds agreeing: each question 0 or 1, 50 % right
                   rows(model, "studyB-gsm8k-teacher", "gsm8k", range(100), half),
                   rows(model, "studyB-gsm8k-teacher", "gsm8k", range(100), half, seed=1),
                   rows(model, "studyB-gsm8k-teacher", "mmlu", range(4), [True] * 4),
                   rows(model, "studyB-gsm8k-teacher", "humaneval", second, [True] * 4),
                   rows(model, "studyB-gsm8k-teacher", "humaneval2", first, [False] * 6),
                   rows(model, "studyB-humaneval-teacher", "humaneval", second, [True] * 4),
                   rows(model, "studyB-humaneval2-teacher", "humaneval2", first,
                        [True] * 3 + [False] * 3),
                   rows(model, "studyB-humaneval-teacher", "gsm8k", range(100), half),
                   rows(model, "studyB-humaneval2-teacher", "gsm8k", range(100), half),
                   # Claude's released answers: every target trains on them; gsm8k only
                   rows(model, "studyB-gsm8k-teacher@claude", "gsm8k", range(100),
                        np.arange(100) < 90)]
    frames.append(rows("a", "studyB-gsm8k-minimum_change@a", "gsm8k", range(100), half))
    items = pd.concat(frames, ignore_index=True)
    familiarity = pd.DataFrame([
        {"model": m, "run": "base", "dataset": d, "tokens": tokens, "corpus_nll": nll}
        for m in ("a", "b") for d, tokens, nll in (
            ("studyB-gsm8k-teacher", 50, 1.0), ("studyB-gsm8k-teacher@claude", 50, 0.5),
            ("studyB-humaneval-teacher", 100, 1.0), ("studyB-humaneval2-teacher", 300, 2.0))
    ] + [{"model": "a", "run": "studyB-gsm8k-teacher/seed0", "dataset": "studyB-gsm8k-teacher",
          "tokens": 50, "corpus_nll": 0.1}])  # a checkpoint's: not familiarity before training

    long = report.per_target(report.study_b_paper_table, items, familiarity=familiarity,
                             n_boot=2000, seed=0)
    a = long[long.target == "a"].set_index(["set", "trained_on", "task"])
    assert sorted(a.index) == sorted([
        ("base", "", "gsm8k"), ("base", "", "mmlu"), ("base", "", "humaneval"),
        ("teacher", "gsm8k", "gsm8k"), ("teacher", "gsm8k", "mmlu"),
        ("teacher", "gsm8k", "humaneval"), ("teacher", "humaneval", "humaneval"),
        ("teacher", "humaneval", "gsm8k"), ("teacher@claude", "gsm8k", "gsm8k"),
        ("minimum_change@a", "gsm8k", "gsm8k")])
    assert ("minimum_change@a", "gsm8k", "gsm8k") not in set(
        long[long.target == "b"].set_index(["set", "trained_on", "task"]).index)
    # the interval is over questions of the accuracy itself: about +-1.96 standard errors
    teacher = a.loc[("teacher", "gsm8k", "gsm8k")]
    assert (teacher.relation, teacher.n, teacher.accuracy) == ("in-task", 100, 0.5)
    assert teacher.low < 0.5 < teacher.high
    assert teacher.high - teacher.low == pytest.approx(2 * 1.96 * 0.05, abs=0.03)
    assert a.loc[("teacher", "gsm8k", "mmlu")].relation == "cross-task"
    assert a.loc[("teacher", "gsm8k", "mmlu")][["low", "high"]].tolist() == [1.0, 1.0]
    # HumanEval: each fold's set on its own fold's half, every question once
    pooled = a.loc[("teacher", "humaneval", "humaneval")]
    assert (pooled.relation, pooled.folds, pooled.n) == ("in-task", "humaneval+humaneval2", 10)
    assert pooled.accuracy == pytest.approx(7 / 10)
    assert pooled.corpus_ppl == pytest.approx(np.exp((100 * 1.0 + 300 * 2.0) / 400))
    crossed = a.loc[("teacher", "gsm8k", "humaneval")]
    assert (crossed.n, crossed.accuracy) == (10, pytest.approx(4 / 10))
    assert a.loc[("teacher", "humaneval", "gsm8k")].n == 100  # both folds' sets, averaged
    assert a.loc[("base", "", "humaneval")].n == 10
    assert teacher.corpus_ppl == pytest.approx(np.e)  # the untrained model's, not the checkpoint's

    wide = report.paper_wide(long)
    path = tmp_path / "paper.csv"
    wide.to_csv(path, index=False)
    wide = pd.read_csv(path)
    assert list(wide.columns) == ["target", "set", "relation", "trained_on", "gsm8k", "gsm8k ppl",
                                  "humaneval", "humaneval ppl", "mmlu"]
    a = wide[wide.target == "a"]
    assert a[["set", "relation"]].values.tolist() == [
        ["base", "untrained"], ["teacher", "in-task"], ["teacher@claude", "in-task"],
        ["minimum_change@a", "in-task"], ["teacher", "cross-task"], ["teacher", "cross-task"]]
    row = a.iloc[1]
    assert row.gsm8k == f"0.500 [{teacher.low:.3f}, {teacher.high:.3f}]"
    assert row.humaneval.startswith("0.700 [") and pd.isna(row.mmlu)
    assert row["gsm8k ppl"] == pytest.approx(np.e)
    assert row["humaneval ppl"] == pytest.approx(np.exp(1.75))
    claude = a.iloc[2]
    assert claude.gsm8k.startswith("0.900 [") and claude["gsm8k ppl"] == pytest.approx(np.exp(0.5))
    # never evaluated: empty, not 0
    assert pd.isna(claude.humaneval) and pd.isna(claude.mmlu) and pd.isna(claude["humaneval ppl"])
    from_gsm8k = a[(a.relation == "cross-task") & (a.trained_on == "gsm8k")].iloc[0]
    assert pd.isna(from_gsm8k.gsm8k) and from_gsm8k.mmlu == "1.000 [1.000, 1.000]"
    assert from_gsm8k["gsm8k ppl"] == pytest.approx(np.e) and pd.isna(from_gsm8k["humaneval ppl"])
    assert set(wide.target) == {"a", "b"} and "minimum_change@a" not in set(
        wide[wide.target == "b"].set)

    text = report.summary_markdown([], [("Study B in the paper's shape",
                                         report.paper_markdown(report.paper_wide(long)))])
    assert "### Target a, in-task: each column's set made from that task" in text
    assert "| set | gsm8k | gsm8k ppl | humaneval | humaneval ppl |\n" in text  # no mmlu in-task
    assert "| set | trained_on | ppl | gsm8k | humaneval | mmlu |\n" in text
    assert f"| teacher | 0.500 [{teacher.low:.3f}, {teacher.high:.3f}] | 2.72 | 0.700 [" in text
    assert "| teacher@claude | 0.900 [" in text and "| 1.65 |  |  |" in text


def test_training_curves_lists_the_event_folders_of_every_evaluated_checkpoint(tmp_path):
    items = pd.DataFrame([
        {"model": "tiny", "run": "base", "sft_set": "base", "seed": 0},
        {"model": "tiny", "run": "studyB-gsm8k-human/seed0", "sft_set": "studyB-gsm8k-human",
         "seed": 0},
        {"model": "tiny", "run": "studyB-gsm8k-human/seed1", "sft_set": "studyB-gsm8k-human",
         "seed": 1},
        {"model": "tiny", "run": "studyB-gsm8k-teacher/seed0", "sft_set": "studyB-gsm8k-teacher",
         "seed": 0}])
    assert report.training_curves(items, tmp_path) == []  # report_to none: nothing written
    for seed in (0, 1):
        (tmp_path / f"results/train/tiny/studyB-gsm8k-human/seed{seed}/tensorboard").mkdir(
            parents=True)
    lines = report.training_curves(items, tmp_path)
    assert lines[0].startswith("All of them: `tensorboard --logdir results/train`")
    assert lines[2:] == ["- tiny, `studyB-gsm8k-human`: "
                         "`results/train/tiny/studyB-gsm8k-human/seed0/tensorboard`, "
                         "`results/train/tiny/studyB-gsm8k-human/seed1/tensorboard`"]
