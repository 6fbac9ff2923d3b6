# The teacher bill of the configured run before anything is sent: `snakemake -f estimate`
# (`make estimate`) prints it and writes results/estimate.csv (restyle.estimate). It needs the
# prepared data and a local teacher's tokenizer, never a teacher's output, so it can run first.
include: "estimate_common.smk"


rule estimate:
    """Requests, cached, to send, tokens and cost (list and Batch API price) per teacher stage
    and in total; sends nothing. The cache changes between runs without Snakemake knowing:
    run it with -f (force) to count again."""
    input:
        unpack(estimate_inputs),
    output:
        "results/estimate.csv",
    params:
        code=code_version("estimate.py"),
        study_a=STUDY_A,
        study_b=STUDY_B,
        study_a_backend=teacher_backend(STUDY_A["teacher"]),
        # per set label (restyle.study_b.label): one per target model for a per-model variant
        variant_backends={
            l: {role: teacher_backend(n) for role, n in study_b_roles(l).items()}
            for l in study_b_labels()
        },
        variant_names={l: study_b_roles(l) for l in study_b_labels()},
        cache=config["teacher_cache"],
        prices=config["prices"],
    log:
        "logs/estimate.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/estimate.py"
