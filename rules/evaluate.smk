include: "evaluate_common.smk"


rule evaluate:
    """One model (base, or base + checkpoint) on one task; per-item and per-subject CSVs."""
    input:
        unpack(eval_inputs),
    output:
        per_item="results/eval/{model}/{run}/{task}/items.csv",
        summary="results/eval/{model}/{run}/{task}/summary.csv",
    params:
        code=lambda wc: code_version("evaluate.py", wc.task),
        cfg=lambda wc: config["eval"][restyle_tasks.get(wc.task).config_key],
        checkpoint=lambda wc: restyle_runs.checkpoint_file(wc.model, wc.run, "adapter"),
    wildcard_constraints:
        run=restyle_runs.RUN_RE,
        task="|".join(restyle_tasks.NAMES),
    log:
        "logs/evaluate/{model}/{run}/{task}.log",
    benchmark:
        "logs/benchmarks/evaluate/{model}/{run}/{task}.tsv"
    # one core: on 2 cores two evaluations run side by side, sharing their start-up time;
    # a code task's programs run in parallel up to the job's cores
    threads: 1
    resources:
        gpu=model_job_resource("gpu"),
        slurm_partition=model_job_resource("slurm_partition"),
        slurm_account=model_job_resource("slurm_account"),
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/evaluate.py"
