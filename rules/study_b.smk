# Study B (familiarity): response variants of the same training questions, one SFT set per
# (task, variant) or, for a variant made by or for a model, per (task, variant, model): the
# {label} "variant@model" (restyle.study_b.label). Every target model's perplexity on every set
# before training, and on its own sets after training. Each set's side files are in
# results/study_b/{task}/{label}/.


include: "study_b_common.smk"


checkpoint study_b_variant:
    """One study B response variant of one task's training questions (for one model when the
    label names one), filtered for correctness."""
    input:
        unpack(study_b_variant_inputs),
    output:
        sft="results/sft/studyB-{task}-{label}.jsonl",
        dropped=f"{STUDY_B_SETS}/{{label}}/dropped.jsonl",
        stats=f"{STUDY_B_SETS}/{{label}}/stats.csv",
        accounting=f"{STUDY_B_SETS}/{{label}}/accounting.csv",
    params:
        code=lambda wc: code_version("study_b_variant.py", wc.task),
        templates=lambda wc: study_b_templates(wc.task, wc.label),
        release=lambda wc: study_b_release(wc.task, wc.label),
        cfg=study_b_variant_cfg,
        backends=lambda wc: {
            role: teacher_backend(name) for role, name in study_b_roles(wc.label).items()
        },
        names=lambda wc: study_b_roles(wc.label),
        cache=config["teacher_cache"],
        prices=config["prices"],
        target_manifest=study_b_target_manifest,
    wildcard_constraints:
        task="|".join(restyle_tasks.NAMES),
        label=study_b_label_constraint(),
    log:
        main="logs/study_b/{task}/{label}.log",
        failures="logs/study_b/{task}/{label}.failures.jsonl",
    benchmark:
        "logs/benchmarks/study_b/{task}/{label}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/study_b_variant.py"


rule study_b_stats:
    """Kept and dropped counts of every study B set in one table."""
    input:
        expand(
            f"{STUDY_B_SETS}/{{label}}/stats.csv",
            task=STUDY_B["tasks"],
            label=study_b_labels(),
        ),
    output:
        STUDY_B_STATS,
    params:
        code=code_version("study_b_stats.py"),
    log:
        "logs/study_b/stats.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/study_b_stats.py"


rule familiarity:
    """Perplexity of {model} on study B sets (one model load for all): the untrained model on every
    set (every target's row of the familiarity matrix), or a fine-tuned checkpoint (LoRA adapter
    or full model) on top of it on the sets its model trains on."""
    input:
        unpack(familiarity_inputs),
    output:
        per_example="results/familiarity/{model}/{run}/per_example.csv",
        summary="results/familiarity/{model}/{run}/summary.csv",
    params:
        code=code_version("study_b_familiarity.py"),
        cfg=STUDY_B["familiarity"],
        names=familiarity_sets,
        adapter=lambda wc: restyle_runs.checkpoint_file(wc.model, wc.run, "adapter"),
        run=lambda wc: wc.run,
    wildcard_constraints:
        run=restyle_runs.RUN_RE,
    log:
        "logs/familiarity/{model}/{run}.log",
    benchmark:
        "logs/benchmarks/familiarity/{model}/{run}.tsv"
    threads: 1  # as rule evaluate
    resources:
        gpu=model_job_resource("gpu"),
        slurm_partition=model_job_resource("slurm_partition"),
        slurm_account=model_job_resource("slurm_account"),
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/study_b_familiarity.py"
