"""The tables and plots a researcher reads, from evaluation and familiarity CSVs.

Study A: accuracy change per rule and MMLU subject against the base model and against training
on the original items, averaged over seeds per question, with paired bootstrap intervals; roll-
ups per MMLU category and overall (micro-averaged over questions); how consistently different
rules move the same subject. Study B: per response variant, the untrained model's familiarity
with the set, in-task and cross-task accuracy change, and familiarity after training; and the
familiarity matrix, every target model's perplexity on every set (who wrote x who reads); and
the paper's main table, set labels x tasks with accuracy intervals and familiarity beside them
(`study_b_paper_table`, `paper_wide`). Each table is made per target model (`per_target`), with
a `target` column.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; clusters have no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from restyle import accounting, controls, stats, study_a, study_b, tasks  # noqa: E402
from restyle.tasks import NO_ANSWER  # noqa: E402
from restyle.tasks.mmlu import SUBJECT_CATEGORY  # noqa: E402
from restyle.runs import BASE, parse_run  # noqa: E402
from restyle.study_a.rewrite import STAGES as GATE_STAGES  # noqa: E402
from restyle.study_b import familiarity  # noqa: E402

STUDY_A_PREFIX, STUDY_B_PREFIX = study_a.PREFIX, study_b.PREFIX
STUDY_A_BASELINES = tuple(map(study_a.sft_set_name, study_a.BASELINES))
DELTA_COLUMNS = ["delta", "low", "high", "significant"]
MISSING_COLUMNS = ["study", "arm", "seeds", "reason"]
STUDY_B_DROPS = ("teacher_failed", "no_answer", "wrong_answer", "other_dropped")


def teacher_bill(estimated: pd.DataFrame, actual: pd.DataFrame) -> pd.DataFrame:
    """The teacher's bill (the jobs' accounting rows) beside the estimate, per estimate stage
    (restyle.accounting)."""
    return accounting.compare(estimated, actual, study_a.accounting_stage)


def read_csvs(paths: Iterable[str | Path]) -> pd.DataFrame:
    frames = [pd.read_csv(p) for p in paths]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def per_target(table: Callable[..., pd.DataFrame], items: pd.DataFrame, **kwargs
               ) -> pd.DataFrame:
    """`table(items, **kwargs)` for each target model's rows of `items` (column `model`), a
    table among `kwargs` cut to the same model, concatenated with a `target` column first: one
    target's questions are never compared with another's."""
    def one(target: str | None) -> pd.DataFrame:
        rows = items if target is None else items[items.model == target]
        cut = {k: v[v.model == target] if target is not None and isinstance(v, pd.DataFrame)
               and "model" in v else v for k, v in kwargs.items()}
        got = table(rows, **cut)
        return got.assign(target=target)[["target", *got.columns]]

    targets = sorted(items.model.unique()) if len(items) else []
    return pd.concat([one(t) for t in targets], ignore_index=True) if targets else one(None)


def question_scores(items: pd.DataFrame, sft_set: str, task: str) -> pd.Series:
    """Per question (indexed by id): correctness averaged over the seeds of `sft_set`."""
    rows = items[(items.sft_set == sft_set) & (items.task == task)]
    return rows.groupby("id")["correct"].mean()


def no_answer_rate(items: pd.DataFrame, sft_set: str, task: str) -> float:
    """The share of `sft_set`'s replies on `task` the checker read no answer in (items `status`
    no_answer), per question over the seeds, averaged over questions; 0 for a log-likelihood
    task (MMLU), whose items have no status: it always picks an option."""
    rows = items[(items.sft_set == sft_set) & (items.task == task)]
    if rows.empty:
        return np.nan
    if "status" not in rows:
        return 0.0
    return float((rows.status == NO_ANSWER).groupby(rows.id).mean().mean())


def _compare(a: pd.Series, b: pd.Series, ids: Sequence[str], n_boot: int, seed: int) -> dict:
    d = stats.paired_bootstrap(a.loc[ids].to_numpy(), b.loc[ids].to_numpy(), n_boot, seed)
    return {"delta": d.delta, "low": d.low, "high": d.high, "significant": d.excludes_zero}


def _scopes(items: pd.DataFrame) -> list[tuple[str, str, list[str]]]:
    """(scope, name, question ids): each subject, each MMLU category present, and overall."""
    by_id = items.drop_duplicates("id").set_index("id")["subject"]
    scopes = [("subject", s, sorted(ids.index)) for s, ids in by_id.groupby(by_id)]
    categories = by_id.map(SUBJECT_CATEGORY).fillna("unknown")
    scopes += [("category", c, sorted(ids.index)) for c, ids in by_id.groupby(categories)]
    return [*scopes, ("overall", "ALL", sorted(by_id.index))]


def study_a_table(items: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per (study A set, scope): accuracy, and its change against the base model and
    against `studyA-original`, each with a paired bootstrap 95 % interval."""
    task = study_a.TASK
    mmlu = items[items.task == task]
    sets = sorted(s for s in mmlu.sft_set.unique() if s.startswith(STUDY_A_PREFIX)
                  and s != "studyA-original")
    base = question_scores(mmlu, BASE, task)
    original = question_scores(mmlu, "studyA-original", task)
    rows = []
    for sft_set in sets:
        scores = question_scores(mmlu, sft_set, task)
        seeds = mmlu[mmlu.sft_set == sft_set].seed.nunique()
        for scope, name, ids in _scopes(mmlu[mmlu.id.isin(scores.index)]):
            row = {"sft_set": sft_set, "seeds": seeds, "scope": scope, "name": name,
                   "n": len(ids), "accuracy": scores.loc[ids].mean()}
            for label, ref in (("base", base), ("original", original)):
                if len(ref) and set(ids) <= set(ref.index):
                    cmp = _compare(scores, ref, ids, n_boot, seed)
                else:
                    cmp = dict.fromkeys(DELTA_COLUMNS, np.nan)
                row |= {f"{k}_vs_{label}": v for k, v in cmp.items()}
            rows.append(row)
    columns = ["sft_set", "seeds", "scope", "name", "n", "accuracy"] + [
        f"{k}_vs_{r}" for r in ("base", "original") for k in DELTA_COLUMNS]
    return pd.DataFrame(rows, columns=columns)


def rule_effects(table: pd.DataFrame) -> pd.DataFrame:
    """Subjects x rules: accuracy change against the base model, rules only (no baselines); a
    rule's column is `{set} ({target})` where the table holds several target models."""
    rules = table[(table.scope == "subject") & ~table.sft_set.isin(STUDY_A_BASELINES)]
    if "target" in rules and rules.target.nunique() > 1:
        rules = rules.assign(sft_set=rules.sft_set + " (" + rules.target + ")")
    return rules.pivot(index="name", columns="sft_set", values="delta_vs_base")


def consistency_per_target(table: pd.DataFrame) -> pd.DataFrame:
    """`consistency` of each target model's rules (a `per_target` study A table)."""
    rows = [consistency(rule_effects(g)).assign(target=t)
            for t, g in table.groupby("target", sort=True)] or [
        consistency(rule_effects(table)).assign(target=None)]
    out = pd.concat(rows, ignore_index=True)
    return out[["target", *out.columns.drop("target")]]


def consistency(effects: pd.DataFrame) -> pd.DataFrame:
    """The paper's main claim in numbers: do different rules move a subject the same way?"""
    shares = stats.variance_shares(effects) if effects.size else dict.fromkeys(
        ("subject", "rule", "residual"), np.nan)
    agreement = stats.rule_agreement(effects) if effects.shape[1] > 1 else np.nan
    same_sign = (np.sign(effects).nunique(axis=1) == 1).mean() if effects.size else np.nan
    return pd.DataFrame([{"rules": effects.shape[1], "subjects": effects.shape[0],
                          "mean_rank_correlation": agreement,
                          "share_subjects_all_rules_same_sign": same_sign,
                          "variance_share_subject": shares["subject"],
                          "variance_share_rule": shares["rule"],
                          "variance_share_residual": shares["residual"]}])


def study_b_table(items: pd.DataFrame, familiarity: pd.DataFrame, n_boot: int = 2000,
                  seed: int = 0) -> pd.DataFrame:
    """One row per (study B set, evaluation task): familiarity of the untrained and trained model
    with the set, accuracy, the share of replies with no answer the checker could read
    (`no_answer_rate`: a style it cannot read shows here, not only as lower accuracy), and the
    accuracy's change against the base model (in-task when the set was made from that task,
    cross-task otherwise). A set is not scored on the other folds of its task (their test
    questions are its training ones, restyle.tasks.evaluates); the folds of a benchmark have,
    per set label, a row of their own as well (`fold_pools`)."""
    sets = sorted(s for s in items.sft_set.unique() if s.startswith(STUDY_B_PREFIX))
    if familiarity.empty:
        familiarity = pd.DataFrame(columns=["run", "dataset", "count", "corpus_perplexity",
                                            "mean_perplexity"])

    def row(cells: pd.DataFrame, sft_set: str, variant: str, source_task: str, task: str) -> dict:
        """The row of `sft_set` on `task` from `cells`, its items and the base model's there."""
        before = familiarity[(familiarity.run == BASE) & (familiarity.dataset == sft_set)]
        after = familiarity[(familiarity.run.map(lambda run: parse_run(run)[0]) == sft_set)
                            & (familiarity.dataset == sft_set)]
        scores = question_scores(cells, sft_set, task)
        base = question_scores(cells, BASE, task)
        ids = sorted(scores.index)
        cmp = _compare(scores, base, ids, n_boot, seed) if len(base) else \
            dict.fromkeys(DELTA_COLUMNS, np.nan)
        return {
            "sft_set": sft_set, "variant": variant, "source_task": source_task, "task": task,
            "relation": "in-task" if task == source_task else "cross-task",
            "examples": before["count"].sum() if len(before) else np.nan,
            "corpus_ppl_before": before.corpus_perplexity.mean() if len(before) else np.nan,
            "mean_ppl_before": before.mean_perplexity.mean() if len(before) else np.nan,
            "corpus_ppl_after": after.corpus_perplexity.mean() if len(after) else np.nan,
            "n": len(ids), "accuracy": scores.mean(),
            "no_answer_rate": no_answer_rate(cells, sft_set, task),
            **{f"{k}_vs_base": v for k, v in cmp.items()}}

    rows = []
    for sft_set in sets:
        source_task, variant, _ = study_b.parse_set_name(sft_set)
        rows += [row(items, sft_set, variant, source_task, task)
                 for task in sorted(items.task.unique()) if tasks.evaluates(source_task, task)]
    rows += [row(cells, name, variant, task, task)
             for name, variant, task, cells in fold_pools(items, sets)]
    return pd.DataFrame(rows, columns=[
        "sft_set", "variant", "source_task", "task", "relation", "examples", "corpus_ppl_before",
        "mean_ppl_before", "corpus_ppl_after", "n", "accuracy", "no_answer_rate",
        *[f"{k}_vs_base" for k in DELTA_COLUMNS]])


def fold_pools(items: pd.DataFrame, sets: Sequence[str]
               ) -> list[tuple[str, str, str, pd.DataFrame]]:
    """The folds of a benchmark (the tasks of one restyle.tasks.Task.config_key, HumanEval's
    two halves) pooled, per study B set label whose set every fold has: (name "{set of fold 1} +
    {set of fold 2}", variant, task "{benchmark} (both folds)", items) where the items are each
    fold's set on its own fold's test questions and the base model's on the same questions, all
    relabelled as that name and task. Every question of the benchmark counts once, so with equal
    halves the accuracy is the mean of the folds'."""
    present = set(items.task.unique())
    benchmarks: dict[str, list[str]] = {}
    for name in tasks.NAMES:
        benchmarks.setdefault(tasks.REGISTRY[name].config_key, []).append(name)
    out = []
    for key, folds in benchmarks.items():
        if len(folds) < 2 or not set(folds) <= present:
            continue
        labels = sorted({study_b.parse_set_name(s)[1:] for s in sets
                         if study_b.parse_set_name(s)[0] in folds}, key=str)
        for variant, model in labels:
            fold_sets = [study_b.sft_set_name(t, variant, model) for t in folds]
            name, pooled = " + ".join(fold_sets), f"{key} (both folds)"
            cells = [items[(items.sft_set == s) & (items.task == t)]
                     for s, t in zip(fold_sets, folds)]
            if any(c.empty for c in cells):
                continue
            base = items[(items.sft_set == BASE) & items.task.isin(folds)]
            out.append((name, variant, pooled, pd.concat([*cells, base], ignore_index=True)
                        .assign(task=pooled).replace({"sft_set": dict.fromkeys(fold_sets, name)})))
    return out


# ---------------------------------------------------------------- study B in the paper's shape

PAPER_COLUMNS = ["set", "relation", "trained_on", "task", "folds", "n", "accuracy", "low", "high",
                 "corpus_ppl"]


def benchmark(task: str) -> str:
    """The benchmark a task is (a fold of): its restyle.tasks.Task.config_key."""
    return tasks.REGISTRY[task].config_key


def _set_order(set_label: str) -> tuple:
    """The variants' own order (study_b.VARIANTS: human first), then writer; a variant restyle
    does not define sorts after them by name."""
    variant, writer = study_b.parse_label(set_label)
    known = list(study_b.VARIANTS)
    return (known.index(variant) if variant in known else len(known), variant, writer or "")


def _accuracy_cell(cells: pd.DataFrame, n_boot: int, seed: int) -> dict:
    """Accuracy of `cells` (correctness averaged per question over seeds and sets) with a 95 %
    percentile bootstrap interval over questions, and the fold tasks it pools."""
    scores = cells.groupby("id")["correct"].mean().to_numpy(dtype=float)
    low, high = stats.percentile_interval(stats.bootstrap_sums(scores, n_boot, seed) / len(scores))
    return {"folds": "+".join(t for t in tasks.NAMES if t in set(cells.task)), "n": len(scores),
            "accuracy": float(scores.mean()), "low": low, "high": high}


def _pooled_ppl(familiarity: pd.DataFrame, sets: Sequence[str]) -> float:
    """The untrained model's corpus perplexity on `sets` together: exp of their total response
    NLL over their total tokens (one set: its corpus perplexity; HumanEval's two folds' sets:
    both, each token once); NaN where none was scored."""
    rows = familiarity[(familiarity.run == BASE) & familiarity.dataset.isin(sets)] \
        if len(familiarity) else familiarity
    rows = rows[rows.tokens > 0] if len(rows) else rows
    if rows.empty:
        return np.nan
    return float(np.exp((rows.corpus_nll * rows.tokens).sum() / rows.tokens.sum()))


def study_b_paper_table(items: pd.DataFrame, familiarity: pd.DataFrame, n_boot: int = 2000,
                        seed: int = 0) -> pd.DataFrame:
    """Study B in the shape of the paper's main table, long: one row per (set label, benchmark
    the label's sets were made from (`trained_on`), benchmark evaluated (`task`)) with accuracy
    and its 95 % bootstrap interval over questions (`low`, `high`), `relation` in-task where
    both benchmarks are one, else cross-task; and the base model's row per evaluated benchmark
    (`relation` untrained). `corpus_ppl` is the untrained model's corpus perplexity on the sets
    the row trained on (familiarity, from the summaries of restyle.study_b.familiarity).

    A set label (`teacher`, `teacher@claude`, `minimum_change@{model}`) names one set per task; a
    benchmark with folds (HumanEval) pools them: the cell holds every allowed (set of a fold,
    evaluated fold) pair (restyle.tasks.evaluates: in-task, each fold's set on its own fold's
    test questions, "both folds" where both exist, else the one), each question counted once with
    its correctness averaged over seeds and, cross-task from two folds' sets, over both sets (the
    paper averages the folds). `folds` names the evaluated tasks a cell pools."""
    present = [t for t in tasks.NAMES if t in set(items.task)]
    sets = {s: study_b.parse_set_name(s) for s in items.sft_set.unique()
            if s.startswith(STUDY_B_PREFIX)}
    evaluated = list(dict.fromkeys(map(benchmark, present)))
    rows = []
    for bench in evaluated:
        cells = items[(items.sft_set == BASE) & items.task.map(benchmark).eq(bench)]
        if len(cells):
            rows.append({"set": BASE, "relation": "untrained", "trained_on": "", "task": bench,
                         **_accuracy_cell(cells, n_boot, seed), "corpus_ppl": np.nan})
    groups: dict[tuple[str, str], list[str]] = {}
    for name, (task, variant, writer) in sets.items():
        groups.setdefault((study_b.label(variant, writer), benchmark(task)), []).append(name)
    for (set_label, source), made in sorted(groups.items(),
                                            key=lambda kv: (_set_order(kv[0][0]), kv[0][1])):
        ppl = _pooled_ppl(familiarity, made)
        for bench in evaluated:
            cells = [items[(items.sft_set == s) & (items.task == t)] for s in sorted(made)
                     for t in present if benchmark(t) == bench
                     and tasks.evaluates(sets[s][0], t)]
            cells = [c for c in cells if len(c)]
            if cells:
                rows.append({"set": set_label, "trained_on": source, "task": bench,
                             "relation": "in-task" if bench == source else "cross-task",
                             **_accuracy_cell(pd.concat(cells), n_boot, seed),
                             "corpus_ppl": ppl})
    return pd.DataFrame(rows, columns=PAPER_COLUMNS)


def _benchmark_order(table: pd.DataFrame) -> list[str]:
    """Benchmarks some set was made from first (the paper's five, in restyle.tasks order), then
    those only evaluated (MMLU)."""
    known = list(dict.fromkeys(map(benchmark, tasks.NAMES)))
    sources = set(table.trained_on) - {""}
    return sorted(set(table.task), key=lambda b: (b not in sources, known.index(b)))


def _interval(row) -> str:
    return f"{row.accuracy:.3f} [{row.low:.3f}, {row.high:.3f}]"


def paper_wide(table: pd.DataFrame) -> pd.DataFrame:
    """The paper's table as a reader reads it, from `study_b_paper_table` rows (per target): per
    target the base model's row, then one in-task row per set label (its set made from each
    column's task, on that task: the paper's main table) and one cross-task row per (label,
    task it was made from) with its accuracy on the other tasks. A cell is "accuracy [low,
    high]"; a cell never evaluated is empty, not 0. `{task} ppl` beside each task a set was made
    from: the untrained target's corpus perplexity on the row's set made from that task. One
    perplexity per task, not one per row, because an in-task row spans several sets, one per
    task, each read by the target on its own; a column then compares the sets of one task, as
    the paper's claim (lower perplexity, better learning) is about."""
    order = _benchmark_order(table)
    sources = [b for b in order if b in set(table.trained_on)]
    rows = []
    for target, t in table.groupby("target", sort=True):
        base = t[t.relation == "untrained"]
        study = t[t.relation != "untrained"]
        if study.empty:
            continue
        keys = [(BASE, "untrained", "", base)]
        keys += [(s, "in-task", "", g) for s, g in study[study.relation == "in-task"]
                 .groupby("set", sort=False)]
        keys += [(s, "cross-task", src, g) for (s, src), g in study[study.relation == "cross-task"]
                 .groupby(["set", "trained_on"], sort=False)]
        for set_label, relation, trained_on, g in keys:
            if g.empty:
                continue
            row = {"target": target, "set": set_label, "relation": relation,
                   "trained_on": trained_on}
            cells = g.set_index("task")
            ppl = study[study.set == set_label].drop_duplicates("trained_on").set_index(
                "trained_on").corpus_ppl
            for bench in order:
                row[bench] = _interval(cells.loc[bench]) if bench in cells.index else ""
                if bench in sources:
                    show = set_label != BASE and (relation == "in-task" or bench == trained_on)
                    row[f"{bench} ppl"] = ppl.get(bench, np.nan) if show else np.nan
            rows.append(row)
    return pd.DataFrame(rows, columns=["target", "set", "relation", "trained_on", *[
        c for b in order for c in ([b, f"{b} ppl"] if b in sources else [b])]])


def _filled(frame: pd.DataFrame) -> list[str]:
    """The columns of `frame` with a value in some row."""
    return [c for c in frame.columns if frame[c].map(lambda v: not (pd.isna(v) or v == "")).any()]


def _markdown_table(frame: pd.DataFrame) -> list[str]:
    """`frame` as a markdown table; a number as 0.00, a missing value empty."""
    text = frame.map(lambda v: "" if pd.isna(v) else f"{v:.2f}" if isinstance(v, float)
                     else str(v))
    return [f"| {' | '.join(frame.columns)} |", f"|{'---|' * len(frame.columns)}",
            *(f"| {' | '.join(r)} |" for r in text.itertuples(index=False))]


def paper_markdown(wide: pd.DataFrame) -> list[str]:
    """`paper_wide` as markdown: per target an in-task table (the paper's main table) and a
    cross-task one, each with the base model's row on top; columns a set has a value in."""
    if wide.empty:
        return ["No study B set was trained and evaluated in this run."]
    out = ["Accuracy [95 % bootstrap interval over questions], per question over seeds; "
           "`{task} ppl`: the untrained target's corpus perplexity on the row's set made from "
           "that task (lower = more familiar). HumanEval pools both folds where both exist. An "
           "empty cell was not evaluated.", ""]
    for target, t in wide.groupby("target", sort=True):
        base = t[t.relation == "untrained"]
        for relation, title in (("in-task", "in-task: each column's set made from that task"),
                                ("cross-task", "cross-task: the set made from `trained_on`")):
            rows = t[t.relation == relation].drop(columns=["target", "relation"])
            if rows.empty:
                continue
            if relation == "cross-task":  # one set per row: its one perplexity
                ppl = [c for c in rows.columns if c.endswith(" ppl")]
                own = [r[f"{r.trained_on} ppl"] for _, r in rows.iterrows()]
                rows = rows.drop(columns=ppl)
                rows.insert(2, "ppl", own)
            columns = _filled(rows)
            out += [f"### Target {target}, {title}", "",
                    *_markdown_table(pd.concat([base, rows])[columns]), ""]
    return out


def study_b_familiarity(per_example: pd.DataFrame, n_boot: int = 2000, seed: int = 0
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The untrained model's familiarity with each study B set, read against its noise: per set
    the examples scored, mean response length in tokens and perplexity with bootstrap intervals
    over examples; and, the paper's comparison, every variant's per-token perplexity against the
    human answers of the same questions only (paired, bootstrap over questions)."""
    base = per_example[(per_example.run == BASE)
                       & per_example.dataset.str.startswith(STUDY_B_PREFIX)] \
        if len(per_example) else per_example
    if base.empty:
        return (pd.DataFrame(columns=["variant", *familiarity.SET_STATISTICS_COLUMNS]),
                pd.DataFrame(columns=["task", "variant", *familiarity.PAIRED_PERPLEXITY_KEYS]))
    sets = familiarity.set_statistics(base, n_boot, seed)
    sets.insert(0, "variant", sets.dataset.map(lambda d: study_b.parse_set_name(d)[1]))
    paired = []
    for (model, dataset), _ in base.groupby(["model", "dataset"], sort=True):
        task, variant, _ = study_b.parse_set_name(dataset)
        human = study_b.sft_set_name(task, "human")
        if dataset != human and (row := familiarity.paired_perplexity(
                base, human, dataset, BASE, n_boot, seed, model=model)) is not None:
            paired.append({"task": task, "variant": variant, **row})
    return sets, pd.DataFrame(paired, columns=["task", "variant",
                                               *familiarity.PAIRED_PERPLEXITY_KEYS])


MATRIX_COLUMNS = ["task", "set", "variant", "writer", "reader", "examples", "corpus_perplexity",
                  "corpus_ppl_low", "corpus_ppl_high", "own", "n_shared", "ratio_vs_own",
                  "ratio_low", "ratio_high", "excludes_one"]


def familiarity_matrix(summary: pd.DataFrame, per_example: pd.DataFrame, n_boot: int = 2000,
                       seed: int = 0) -> pd.DataFrame:
    """Who wrote x who reads: one row per (study B set, target model) among the untrained models'
    familiarity summaries (`summary`, one row per set even when it is empty), with the reader's
    corpus perplexity on the set and its bootstrap interval over examples, and against the
    reader's own rewrite (`self_rewrite@{reader}`) on the questions both answer: the ratio of
    per-token perplexities (set / own) with a paired bootstrap interval over questions."""
    cells = summary[(summary.run == BASE) & summary.dataset.str.startswith(STUDY_B_PREFIX)] \
        if len(summary) else pd.DataFrame(columns=["model", "dataset", "count"])
    base = per_example[per_example.run == BASE] if len(per_example) else per_example
    ci = (familiarity.set_statistics(base, n_boot, seed).set_index(["model", "dataset"])
          if len(base) else pd.DataFrame())
    rows = []
    for cell in cells.sort_values(["dataset", "model"]).itertuples():
        task, variant, writer = study_b.parse_set_name(cell.dataset)
        own = study_b.sft_set_name(task, study_b.SELF_REWRITE, cell.model)
        stat = ci.loc[(cell.model, cell.dataset)] if (cell.model, cell.dataset) in ci.index \
            else None
        paired = familiarity.paired_perplexity(base, own, cell.dataset, BASE, n_boot, seed,
                                               model=cell.model) if len(base) else None
        rows.append({
            "task": task, "set": cell.dataset, "variant": variant, "writer": writer,
            "reader": cell.model, "examples": int(cell.count),
            **{k: np.nan if stat is None else stat[k]
               for k in ("corpus_perplexity", "corpus_ppl_low", "corpus_ppl_high")},
            "own": own, "n_shared": 0 if paired is None else paired["n"],
            **{k: np.nan if paired is None else paired[p] for k, p in (
                ("ratio_vs_own", "ratio"), ("ratio_low", "ratio_low"),
                ("ratio_high", "ratio_high"), ("excludes_one", "excludes_one"))}})
    return pd.DataFrame(rows, columns=MATRIX_COLUMNS)


def own_rewrite_lines(matrix: pd.DataFrame) -> list[str]:
    """Per target model and task: is its own rewrite the set it finds most familiar? Among the
    sets it scored that its own perplexity did not pick (best_of_n, low_ppl, high_ppl are chosen
    for it by perplexity). Nothing when no model rewrote in its own words."""
    lines = []
    if not (matrix.variant == study_b.SELF_REWRITE).any():
        return lines
    for (reader, task), g in matrix.groupby(["reader", "task"], sort=True):
        fair = g[~g.variant.isin(study_b.SCORED_VARIANTS) & g.corpus_perplexity.notna()]
        own_name = study_b.sft_set_name(task, study_b.SELF_REWRITE, reader)
        own = fair[fair.set == own_name]
        head = f"familiarity of target {reader} ({task}): its own rewrite `{own_name}`"
        if own.empty:
            lines.append(f"{head} was not scored (not configured, not written or empty)")
            continue
        others = fair[fair.set != own_name].sort_values("corpus_perplexity")
        own_ppl = own.corpus_perplexity.iloc[0]
        if others.empty:
            lines.append(f"{head} is the only set it scored (corpus perplexity {own_ppl:.2f})")
            continue
        best = others.iloc[0]
        verdict = "is" if own_ppl < best.corpus_perplexity else "is NOT"
        ratio = ("" if pd.isna(best.ratio_vs_own) else
                 f"; `{best.set}` / own {best.ratio_vs_own:.2f} (95 % CI [{best.ratio_low:.2f}, "
                 f"{best.ratio_high:.2f}]) on the {int(best.n_shared)} questions both answer")
        lines.append(f"{head} {verdict} its most familiar set: corpus perplexity {own_ppl:.2f}, "
                     f"next `{best.set}` {best.corpus_perplexity:.2f}{ratio}")
    return lines


def plot_familiarity_matrix(matrix: pd.DataFrame, path: str | Path) -> None:
    """One panel per task: sets (rows) x target models (columns), the untrained reader's corpus
    perplexity on the set; each reader's own rewrite is framed."""
    matrix = matrix.dropna(subset=["corpus_perplexity"])
    if matrix.empty:
        return _empty_figure(path, "no study B familiarity in this run")
    tasks_ = sorted(matrix.task.unique())
    readers = sorted(matrix.reader.unique())
    height = max(len(matrix[matrix.task == t].set.unique()) for t in tasks_)
    fig, axes = plt.subplots(1, len(tasks_), squeeze=False,
                             figsize=(max(5.0, (3 + 1.1 * len(readers)) * len(tasks_)),
                                      1.8 + 0.4 * height))
    for ax, task in zip(axes[0], tasks_):
        grid = matrix[matrix.task == task].pivot(index="set", columns="reader",
                                                 values="corpus_perplexity").reindex(
            columns=readers)
        values = grid.to_numpy(dtype=float)
        image = ax.imshow(np.log(values), cmap="viridis_r", aspect="auto")
        ax.set_xticks(range(len(readers)), readers, rotation=30, ha="right")
        ax.set_yticks(range(len(grid)), [s.removeprefix(f"{STUDY_B_PREFIX}{task}-")
                                         for s in grid.index])
        for (r, c), v in np.ndenumerate(values):
            if not np.isnan(v):
                ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=7, color="white")
            if grid.index[r] == study_b.sft_set_name(task, study_b.SELF_REWRITE, readers[c]):
                ax.add_patch(plt.Rectangle((c - 0.5, r - 0.5), 1, 1, fill=False, lw=2,
                                           edgecolor="red"))
        ax.set_xlabel("reader (untrained target model)")
        ax.set_title(f"{task}: corpus perplexity", fontsize=9)
        fig.colorbar(image, ax=ax, label="log perplexity (lower = more familiar)")
    fig.suptitle("Study B: who wrote x who reads (framed: the reader's own rewrite)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _empty_figure(path: str | Path, message: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.text(0.5, 0.5, message, ha="center", va="center")
    ax.axis("off")
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_heatmap(effects: pd.DataFrame, path: str | Path) -> None:
    if effects.empty:
        return _empty_figure(path, "no study A rule was evaluated in this run")
    values = effects.to_numpy(dtype=float) * 100
    limit = np.nanmax(np.abs(values)) or 1.0
    fig, ax = plt.subplots(figsize=(max(6.0, 3 + 0.9 * effects.shape[1]), 1.8 + 0.35 * effects.shape[0]))
    image = ax.imshow(values, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    ax.set_xticks(range(effects.shape[1]), [c.removeprefix(STUDY_A_PREFIX) for c in effects.columns],
                  rotation=40, ha="right")
    ax.set_yticks(range(effects.shape[0]), effects.index)
    for (r, c), v in np.ndenumerate(values):
        ax.text(c, r, f"{v:+.1f}", ha="center", va="center", fontsize=7)
    fig.colorbar(image, ax=ax, label="change vs base (points)")
    ax.set_title("Study A: accuracy change per rule and subject", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _bar_label(row, rows: pd.DataFrame) -> str:
    """A study B row's variant, with its target model where `rows` holds several."""
    several = "target" in rows and rows.target.nunique() > 1
    return f"{row.variant} ({row.target})" if several else row.variant


def plot_familiarity_vs_accuracy(table: pd.DataFrame, path: str | Path) -> None:
    rows = table[table.relation == "in-task"].dropna(subset=["corpus_ppl_before"])
    if rows.empty:
        return _empty_figure(path, "no study B set with familiarity and evaluation in this run")
    fig, ax = plt.subplots(figsize=(6, 4))
    err = np.vstack([rows.delta_vs_base - rows.low_vs_base, rows.high_vs_base - rows.delta_vs_base])
    ax.errorbar(rows.corpus_ppl_before, rows.delta_vs_base * 100, yerr=err * 100, fmt="o", capsize=3)
    for _, r in rows.iterrows():
        ax.annotate(_bar_label(r, rows), (r.corpus_ppl_before, r.delta_vs_base * 100), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("corpus perplexity of the untrained model on the set")
    ax.set_ylabel("in-task accuracy change vs base (points, 95 % CI)")
    ax.set_title("Study B: familiarity vs what fine-tuning on the set gives", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_familiarity_shift(table: pd.DataFrame, path: str | Path) -> None:
    rows = table.drop_duplicates([c for c in ("target", "sft_set") if c in table]).dropna(
        subset=["corpus_ppl_before"])
    if rows.empty:
        return _empty_figure(path, "no study B familiarity in this run")
    fig, ax = plt.subplots(figsize=(max(6.0, 2 + 0.9 * len(rows)), 4))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, rows.corpus_ppl_before, 0.4, label="before fine-tuning")
    ax.bar(x + 0.2, rows.corpus_ppl_after, 0.4, label="after fine-tuning on the set")
    ax.set_xticks(x, [_bar_label(r, rows) for _, r in rows.iterrows()], rotation=30, ha="right")
    ax.set_ylabel("corpus perplexity on the set")
    ax.set_title("Study B: familiarity before and after training", fontsize=10)
    ax.set_ylim(0, 1.3 * np.nanmax([rows.corpus_ppl_before.max(), rows.corpus_ppl_after.max()]))
    ax.legend(loc="upper left", ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- arms asked for, not trained

def _counts(row, columns: dict[str, str]) -> str:
    return ", ".join(f"{label} {int(row[c])}" for c, label in columns.items() if int(row[c])) \
        or "none dropped"


def missing_arms(study_a_stats: pd.DataFrame, study_b_stats: pd.DataFrame, rules_doc: dict,
                 seeds: Sequence[int]) -> pd.DataFrame:
    """Every arm the config asked for that has no checkpoint, with the reason: a set the
    quality gate or the correctness filter left empty, or rules extraction kept fewer rules than
    asked (the SFT sets' stats tables and rules.json say which)."""
    seeds_text = " ".join(map(str, seeds))
    rows = []
    if rules_doc["mode"] == "extracted" and rules_doc["count"] < rules_doc["count_requested"]:
        rows.append({"study": "A", "arm": f"{rules_doc['count_requested'] - rules_doc['count']} "
                                          f"of {rules_doc['count_requested']} rules",
                     "seeds": seeds_text,
                     "reason": f"rule extraction found only {rules_doc['count']} usable "
                               f"rule{'' if rules_doc['count'] == 1 else 's'} "
                               "(results/study_a/rules/dropped.jsonl says why each candidate was "
                               "dropped)"})
    if len(study_a_stats):
        for _, row in study_a_stats[study_a_stats.subject == "all"].iterrows():
            if int(row.kept) == 0:
                why = _counts(row, {f"dropped_{s}": s for s in GATE_STAGES})
                rows.append({"study": "A", "arm": row.sft_set, "seeds": seeds_text,
                             "reason": f"empty set: the quality gate dropped all {row.total} "
                                       f"items ({why})"})
    for _, row in study_b_stats.iterrows():
        if int(row.kept) == 0:
            why = _counts(row, {c: c for c in STUDY_B_DROPS})
            rows.append({"study": "B", "arm": row.sft_set, "seeds": seeds_text,
                         "reason": f"empty set: the filters dropped all {row.questions} "
                                   f"questions ({why})"})
    return pd.DataFrame(rows, columns=MISSING_COLUMNS)


# ---------------------------------------------------------------- controls and the first page

CONTROL_COLUMNS = ["sft_set", "task", "kind", "seeds", "n", "accuracy", "base_accuracy",
                   *DELTA_COLUMNS, "verdict"]


def control_verdict(kind: str, delta: float, significant: bool) -> str:
    gain = bool(significant) and delta > 0
    if kind == "positive":
        return "pipeline sensitive" if gain else (
            "WARNING: no significant gain although the evaluated answers were trained on: this "
            "run cannot show an effect (adapter not applied, too few steps or too low a learning "
            "rate, or an evaluation format training does not reach); read no result as 'no "
            "effect'")
    return "as expected (no gain)" if not gain else (
        "WARNING: training on wrong answers raised accuracy: something other than the training "
        "data moves the scores")


def controls_table(items: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    """One row per control set: accuracy on its own task against the base model on the same
    questions, with a paired bootstrap interval, and the verdict."""
    rows = []
    for sft_set in sorted(s for s in items.sft_set.unique() if controls.parse_name(s)):
        task, kind = controls.parse_name(sft_set)
        scores, base = question_scores(items, sft_set, task), question_scores(items, BASE, task)
        ids = sorted(set(scores.index) & set(base.index))
        cmp = _compare(scores, base, ids, n_boot, seed) if ids else \
            dict.fromkeys(DELTA_COLUMNS, np.nan)
        rows.append({"sft_set": sft_set, "task": task, "kind": kind,
                     "seeds": items[items.sft_set == sft_set].seed.nunique(), "n": len(ids),
                     "accuracy": scores.loc[ids].mean(), "base_accuracy": base.loc[ids].mean(),
                     **cmp, "verdict": control_verdict(kind, cmp["delta"], cmp["significant"])})
    return pd.DataFrame(rows, columns=CONTROL_COLUMNS)


def _points(delta: float, low: float, high: float) -> str:
    return f"{100 * delta:+.1f} points (95 % CI [{100 * low:+.1f}, {100 * high:+.1f}])"


def _of(row, table: pd.DataFrame, column: str = "target") -> str:
    """", target X" where `table` holds several target models, else nothing (the settings name
    the one)."""
    several = column in table and table[column].nunique() > 1
    return f", target {getattr(row, column)}" if several else ""


def summary_lines(missing: pd.DataFrame, control_rows: pd.DataFrame, study_a: pd.DataFrame,
                  study_b_rows: pd.DataFrame, settings: dict, paired: pd.DataFrame | None = None,
                  matrix: pd.DataFrame | None = None) -> list[tuple[str, list[str]]]:
    """The first page of the report, as (heading, bullet lines); `code` in single backticks."""
    if not settings.get("controls"):
        checks = ["none configured (config `controls`): nothing here shows that this run could "
                  "detect an effect"]
    else:
        checks = [f"{r.kind} control ({r.task}, `{r.sft_set}`{_of(r, control_rows)}): "
                  f"{_points(r.delta, r.low, r.high)} - {r.verdict}"
                  for r in control_rows.itertuples()]
    lost = ([f"study {r.study}, `{r.arm}` (seeds {r.seeds}): {r.reason}"
             for r in missing.itertuples()]
            or ["none: every arm the config asked for was trained and evaluated"])
    overall = study_a[study_a.scope == "overall"] if len(study_a) else study_a
    findings = [f"study A `{r.sft_set}`{_of(r, overall)}: accuracy {r.accuracy:.3f}, vs base "
                f"{_points(r.delta_vs_base, r.low_vs_base, r.high_vs_base)}"
                + ("" if pd.isna(r.delta_vs_original) else ", vs original "
                   + _points(r.delta_vs_original, r.low_vs_original, r.high_vs_original))
                for r in overall.itertuples()]
    in_task = study_b_rows[study_b_rows.relation == "in-task"] if len(study_b_rows) \
        else study_b_rows
    findings += [f"study B `{r.sft_set}` on {r.task}{_of(r, in_task)}: accuracy {r.accuracy:.3f} "
                 f"(no answer read in {100 * r.no_answer_rate:.1f} %), vs base "
                 f"{_points(r.delta_vs_base, r.low_vs_base, r.high_vs_base)}"
                 for r in in_task.itertuples()]
    paired = paired if paired is not None else pd.DataFrame()
    findings += [f"study B familiarity ({r.task}{_of(r, paired, 'model')}): `{study_b.label(*study_b.parse_set_name(r.b)[1:])}` vs `human` "
                 f"on the {r.n} questions both answer: per-token perplexity {r.corpus_ppl_b:.2f} "
                 f"vs {r.corpus_ppl_a:.2f} (ratio {r.ratio:.2f}, 95 % CI [{r.ratio_low:.2f}, "
                 f"{r.ratio_high:.2f}])"
                 for r in paired.itertuples()]
    findings += own_rewrite_lines(matrix) if matrix is not None and len(matrix) else []
    return [("Controls", checks), (f"Missing arms ({len(missing)})", lost),
            ("Main findings (95 % paired bootstrap intervals over questions)",
             findings or ["no study arm was trained"]),
            ("Settings", [f"{k}: {v}" for k, v in settings.items()])]


def training_curves(items: pd.DataFrame, root: str | Path = ".") -> list[str]:
    """Where each evaluated checkpoint's training curves are (train.report_to tensorboard:
    restyle.train.tensorboard_dir, below the work folder `root`), one line per model and SFT set
    with its seeds' folders; none where no run wrote any (report_to none)."""
    runs = items[items.run != BASE][["model", "sft_set", "seed"]].drop_duplicates() \
        if len(items) else pd.DataFrame(columns=["model", "sft_set", "seed"])
    lines = []
    for (model, sft_set), seeds in runs.groupby(["model", "sft_set"], sort=True):
        folders = [f"results/train/{model}/{sft_set}/seed{int(s)}/tensorboard"
                   for s in sorted(seeds.seed)]
        found = [f"`{f}`" for f in folders if (Path(root) / f).is_dir()]
        if found:
            lines.append(f"- {model}, `{sft_set}`: {', '.join(found)}")
    if not lines:
        return []
    return ["All of them: `tensorboard --logdir results/train` (loss, learning rate, grad norm, "
            "tokens/s and MFU per process; each run's folder below).", "", *lines]


def summary_markdown(sections: list[tuple[str, list[str]]],
                     tables: Sequence[tuple[str, list[str]]] = ()) -> str:
    """The first page: `sections` as bullet lists, then `tables` (heading, markdown lines)."""
    out = ["# restyle: summary", ""]
    for heading, lines in sections:
        out += [f"## {heading}", "", *(f"- {line}" for line in lines), ""]
    for heading, lines in tables:
        out += [f"## {heading}", "", *lines, ""]
    return "\n".join(out)


def summary_rst(sections: list[tuple[str, list[str]]]) -> str:
    """The head of the HTML report (report/workflow.rst includes it)."""
    out = []
    for heading, lines in sections:
        out += [f"**{heading}**", "", *(f"- {line.replace('`', '``')}" for line in lines), ""]
    return "\n".join(out)
