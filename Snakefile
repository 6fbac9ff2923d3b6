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
        all_outputs(),
    default_target: True
