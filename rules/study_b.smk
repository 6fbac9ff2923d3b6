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
        code=code_version("study_b_variant.py"),
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
        task="|".join(study_b_variants.TASKS),
        variant="|".join(study_b_variants.VARIANTS),
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
    """Perplexity of the untrained model on every study B set (one model load for all)."""
    input:
        manifest=lambda wc: model_manifest(wc.model),
        sets=study_b_sft_files(),
    output:
        per_example="results/familiarity/{model}/base/per_example.csv",
        summary="results/familiarity/{model}/base/summary.csv",
    params:
        code=code_version("study_b_familiarity.py"),
        cfg=STUDY_B["familiarity"],
        names=study_b_sft_sets(),
        adapter=None,
        run="base",
    log:
        "logs/familiarity/{model}/base.log",
    benchmark:
        "logs/benchmarks/familiarity/{model}/base.tsv"
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


rule familiarity_checkpoint:
    """The same, for a fine-tuned checkpoint (LoRA adapter or full model) on top of the base."""
    input:
        manifest=lambda wc: model_manifest(wc.model),
        train_metrics="results/train/{model}/{sft_set}/seed{seed}/train_metrics.json",
        sets=study_b_sft_files(),
    output:
        per_example="results/familiarity/{model}/{sft_set}/seed{seed}/per_example.csv",
        summary="results/familiarity/{model}/{sft_set}/seed{seed}/summary.csv",
    params:
        code=code_version("study_b_familiarity.py"),
        cfg=STUDY_B["familiarity"],
        names=study_b_sft_sets(),
        adapter=lambda wc: f"results/train/{wc.model}/{wc.sft_set}/seed{wc.seed}/adapter",
        run=lambda wc: f"{wc.sft_set}/seed{wc.seed}",
    wildcard_constraints:
        sft_set=r"[^/]+",
        seed=r"\d+",
    log:
        "logs/familiarity/{model}/{sft_set}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/familiarity/{model}/{sft_set}/seed{seed}.tsv"
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
