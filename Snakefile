from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "report/workflow.rst"


include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/data.smk"
include: "rules/study_a.smk"
include: "rules/study_b.smk"
include: "rules/controls.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
include: "rules/estimate.smk"


rule all:
    input:
        "results/report/study_a.csv",
        "results/report/study_b.csv",
        [model_manifest(t) for t in config["target_models"]],
        # rules/common.smk: every split of every task a stage reads
        [restyle_tasks.get(t).path(s) for t in used_tasks() for s in restyle_tasks.get(t).splits],
        study_b_outputs(),  # rules/study_b_common.smk
        study_a_outputs,  # rules/study_a_common.smk; a function: it waits for the rules checkpoint
    default_target: True
