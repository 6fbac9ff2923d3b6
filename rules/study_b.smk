# Study B (familiarity): response variants of the same training questions, one SFT set per
# (task, variant), and the target model's perplexity on every set before and after training.


include: "study_b_common.smk"


checkpoint study_b_variant:
    """One study B response variant of one task's training questions, filtered for correctness."""
    input:
        unpack(study_b_variant_inputs),
    output:
        sft="results/sft/studyB-{task}-{variant}.jsonl",
        dropped="results/studyB/{task}/{variant}/dropped.jsonl",
        stats="results/studyB/{task}/{variant}/stats.csv",
        accounting="results/studyB/{task}/{variant}/accounting.csv",
    params:
        code=lambda wc: code_version("study_b_variant.py", wc.task),
        templates=lambda wc: restyle_versions.study_b_templates(wc.task, wc.variant),
        cfg=study_b_variant_cfg,
        backends=lambda wc: {
            role: teacher_backend(name) for role, name in study_b_roles(wc.variant).items()
        },
        names=lambda wc: study_b_roles(wc.variant),
        cache=config["teacher_cache"],
        prices=config["prices"],
        target_manifest=model_manifest(config["target_model"]),
    wildcard_constraints:
        task="|".join(restyle_tasks.NAMES),
        variant="|".join(restyle_study_b.VARIANTS),
    log:
        main="logs/study_b/{task}/{variant}.log",
        failures="logs/study_b/{task}/{variant}.failures.jsonl",
    benchmark:
        "logs/benchmarks/study_b/{task}/{variant}.tsv"
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
            "results/studyB/{task}/{variant}/stats.csv",
            task=STUDY_B["tasks"],
            variant=STUDY_B["variants"],
        ),
    output:
        "results/studyB/stats.csv",
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
    """Perplexity of {model} on every study B set (one model load for all): the untrained model,
    or a fine-tuned checkpoint (LoRA adapter or full model) on top of it."""
    input:
        unpack(familiarity_inputs),
    output:
        per_example="results/familiarity/{model}/{run}/per_example.csv",
        summary="results/familiarity/{model}/{run}/summary.csv",
    params:
        code=code_version("study_b_familiarity.py"),
        cfg=STUDY_B["familiarity"],
        names=study_b_sft_sets(),
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
