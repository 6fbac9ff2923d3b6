import json
from pathlib import Path

import pandas as pd

from restyle import logs, report
from restyle.io import atomic_path, write_csv

log = logs.to_file(snakemake.log[0], snakemake.rule)
cfg, out = snakemake.params.cfg, snakemake.output
items = report.read_csvs(snakemake.input.eval_items)
familiarity = report.read_csvs(snakemake.input.familiarity)
log.info("%d evaluated questions, %d familiarity rows", len(items), len(familiarity))

missing = report.missing_arms(
    pd.read_csv(snakemake.input.study_a_stats, keep_default_na=False),
    report.read_csvs(snakemake.input.study_b_stats),
    json.loads(Path(snakemake.input.rules[0]).read_text(encoding="utf-8"))
    if snakemake.input.rules else {"mode": "off"}, snakemake.params.seeds)
write_csv(out.missing_arms, missing.to_dict("records"), report.MISSING_COLUMNS)
for arm in missing.itertuples():
    log.warning("missing arm: study %s %s (seeds %s): %s", arm.study, arm.arm, arm.seeds,
                arm.reason)
boot = {"n_boot": cfg["bootstrap_samples"], "seed": cfg["seed"]}
controls = report.per_target(report.controls_table, items, **boot)
write_csv(out.controls, controls.to_dict("records"), ["target", *report.CONTROL_COLUMNS])

study_a = report.per_target(report.study_a_table, items, **boot)
study_a.to_csv(out.study_a, index=False)
report.consistency_per_target(study_a).to_csv(out.consistency, index=False)
report.plot_heatmap(report.rule_effects(study_a), out.heatmap)

study_b = report.per_target(report.study_b_table, items, familiarity=familiarity, **boot)
study_b.to_csv(out.study_b, index=False)
report.plot_familiarity_vs_accuracy(study_b, out.scatter)
report.plot_familiarity_shift(study_b, out.shift)
log.info("study A: %d rows, study B: %d rows", len(study_a), len(study_b))
paper = report.paper_wide(report.per_target(report.study_b_paper_table, items,
                                            familiarity=familiarity, **boot))
paper.to_csv(out.study_b_paper, index=False)
per_example = report.read_csvs(snakemake.input.familiarity_examples)
sets, paired = report.study_b_familiarity(per_example, **boot)
sets.to_csv(out.familiarity_sets, index=False)
paired.to_csv(out.familiarity_paired, index=False)
matrix = report.familiarity_matrix(familiarity, per_example, **boot)
matrix.to_csv(out.familiarity_matrix, index=False)
report.plot_familiarity_matrix(matrix, out.matrix_heatmap)

sections = report.summary_lines(missing, controls, study_a, study_b, snakemake.params.settings,
                                paired, matrix)
tables = [("Study B in the paper's shape", report.paper_markdown(paper)),
          ("Training curves", report.training_curves(items))]
for path, text in ((out.summary, report.summary_markdown(sections, tables)),
                   (out.summary_rst, report.summary_rst(sections))):
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
for line in sections[0][1]:
    (log.warning if "WARNING" in line else log.info)("control: %s", line)
bill = report.teacher_bill(pd.read_csv(snakemake.input.estimate),
                          report.read_csvs(snakemake.input.accounting))
bill.to_csv(out.teacher_bill, index=False)
