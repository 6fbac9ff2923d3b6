import json
from pathlib import Path

import pandas as pd

from restyle import accounting, logs, report
from restyle.io import atomic_path, write_csv

log = logs.to_file(snakemake.log[0], snakemake.rule)
cfg, out = snakemake.params.cfg, snakemake.output
items = report.read_csvs(snakemake.input.eval_items)
familiarity = report.read_csvs(snakemake.input.familiarity)
log.info("%d evaluated questions, %d familiarity rows", len(items), len(familiarity))

missing = report.missing_arms(
    pd.read_csv(snakemake.input.study_a_stats, keep_default_na=False),
    report.read_csvs(snakemake.input.study_b_stats),
    json.loads(Path(snakemake.input.rules).read_text(encoding="utf-8")), snakemake.params.seeds)
write_csv(out.missing_arms, missing.to_dict("records"), report.MISSING_COLUMNS)
for arm in missing.itertuples():
    log.warning("missing arm: study %s %s (seeds %s): %s", arm.study, arm.arm, arm.seeds,
                arm.reason)
controls = report.controls_table(items, cfg["bootstrap_samples"], cfg["seed"])
write_csv(out.controls, controls.to_dict("records"), report.CONTROL_COLUMNS)

study_a = report.study_a_table(items, cfg["bootstrap_samples"], cfg["seed"])
study_a.to_csv(out.study_a, index=False)
effects = report.rule_effects(study_a)
report.consistency(effects).to_csv(out.consistency, index=False)
report.plot_heatmap(effects, out.heatmap)

study_b = report.study_b_table(items, familiarity, cfg["bootstrap_samples"], cfg["seed"])
study_b.to_csv(out.study_b, index=False)
report.plot_familiarity_vs_accuracy(study_b, out.scatter)
report.plot_familiarity_shift(study_b, out.shift)
log.info("study A: %d rows, study B: %d rows", len(study_a), len(study_b))
sets, paired = report.study_b_familiarity(report.read_csvs(snakemake.input.familiarity_examples),
                                          cfg["bootstrap_samples"], cfg["seed"])
sets.to_csv(out.familiarity_sets, index=False)
paired.to_csv(out.familiarity_paired, index=False)

sections = report.summary_lines(missing, controls, study_a, study_b, snakemake.params.settings,
                                paired)
for path, text in ((out.summary, report.summary_markdown(sections)),
                   (out.summary_rst, report.summary_rst(sections))):
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
for line in sections[0][1]:
    (log.warning if "WARNING" in line else log.info)("control: %s", line)
bill = accounting.compare(pd.read_csv(snakemake.input.estimate),
                          report.read_csvs(snakemake.input.accounting))
bill.to_csv(out.teacher_bill, index=False)
