include: "report_common.smk"


rule report:
    """The studies' tables and plots from every evaluation and familiarity output."""
    input:
        eval_items=lambda wc: report_eval_items(),
        familiarity=lambda wc: report_familiarity(),
        familiarity_examples=report_familiarity_examples(),
        # what each set kept, to name the arms with no checkpoint and why
        rules=[STUDY_A_RULES] if STUDY_A["enabled"] else [],
        study_a_stats=STUDY_A_STATS,
        study_b_stats=[STUDY_B_STATS] if study_b_sft_sets() else [],
        # the teacher bill: estimated before the run, accounted by every teacher stage
        estimate="results/estimate.csv",
        accounting=lambda wc: teacher_accounting(),
    output:
        missing_arms="results/report/missing_arms.csv",
        controls="results/report/controls.csv",
        familiarity_sets="results/report/study_b_familiarity.csv",
        familiarity_paired="results/report/study_b_familiarity_paired.csv",
        familiarity_matrix="results/report/study_b_familiarity_matrix.csv",
        summary="results/report/summary.md",
        summary_rst="results/report/summary.rst",  # the head of the HTML report (workflow.rst)
        study_a=report(
            "results/report/study_a.csv",
            caption="../report/study_a_table.rst",
            category="Study A",
        ),
        consistency=report(
            "results/report/study_a_consistency.csv",
            caption="../report/study_a_consistency.rst",
            category="Study A",
        ),
        heatmap=report(
            "results/report/study_a_heatmap.png",
            caption="../report/study_a_heatmap.rst",
            category="Study A",
        ),
        study_b=report(
            "results/report/study_b.csv",
            caption="../report/study_b_table.rst",
            category="Study B",
        ),
        study_b_paper=report(
            "results/report/study_b_paper_table.csv",
            caption="../report/study_b_paper_table.rst",
            category="Study B",
        ),
        scatter=report(
            "results/report/study_b_familiarity_vs_accuracy.png",
            caption="../report/study_b_scatter.rst",
            category="Study B",
        ),
        shift=report(
            "results/report/study_b_familiarity_shift.png",
            caption="../report/study_b_shift.rst",
            category="Study B",
        ),
        matrix_heatmap=report(
            "results/report/study_b_familiarity_matrix.png",
            caption="../report/study_b_matrix.rst",
            category="Study B",
        ),
        teacher_bill=report(
            "results/report/teacher_bill.csv",
            caption="../report/teacher_bill.rst",
            category="Teacher",
        ),
    params:
        seeds=config["train"]["seeds"],
        settings=report_settings(),
        code=code_version("report.py"),
        cfg=config["report"],
    log:
        "logs/report.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/report.py"
