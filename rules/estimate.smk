# The teacher bill and the compute of the configured run before anything is sent or trained:
# `snakemake -f estimate` (`make estimate`) prints them and writes results/estimate.csv
# (restyle.estimate) and results/compute.csv (restyle.sizing). It needs the prepared data, a
# local teacher's tokenizer and a bundled target's folder, never a teacher's output or a
# trained model, so it can run first.
include: "estimate_common.smk"


rule estimate:
    """Requests, cached, to send, tokens and cost (list and Batch API price) per teacher stage
    and in total; tokens and GPU-hours per training and evaluation job and in total, and the
    sbatch -t of train.resources.runtime auto; sends nothing. The cache changes between runs without Snakemake knowing:
    run it with -f (force) to count again."""
    input:
        unpack(estimate_inputs),
    output:
        teacher="results/estimate.csv",
        compute="results/compute.csv",
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
        # where each released set is read (none is asked of a teacher)
        releases={
            l: {t: study_b_release(t, l) for t in STUDY_B["tasks"]} for l in study_b_labels()
        },
        cache=config["teacher_cache"],
        prices=config["prices"],
        # the compute (restyle.sizing): what each target trains on and is evaluated on
        train={
            t: restyle_sizing.sized_settings(restyle_config.settings_for(config["train"], t))
            for t in TARGETS
        },
        seeds=config["train"]["seeds"],
        sources={t: config["models"][t]["source"] for t in TARGETS},
        controls=config["controls"],
        eval=config["eval"],
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
