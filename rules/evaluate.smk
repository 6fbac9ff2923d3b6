rule evaluate:
    """One model (base, or base + checkpoint) on one task; per-item and per-subject CSVs."""
    input:
        unpack(eval_inputs),
    output:
        per_item="results/eval/{model}/{run}/{task}/items.csv",
        summary="results/eval/{model}/{run}/{task}/summary.csv",
    params:
        cfg=lambda wc: config["eval"][wc.task],
        checkpoint=lambda wc: (
            None if wc.run == "base" else f"results/train/{wc.model}/{wc.run}/adapter"
        ),
    wildcard_constraints:
        run=r"base|[^/]+/seed\d+",
        task="mmlu|gsm8k",
    log:
        "logs/evaluate/{model}/{run}/{task}.log",
    benchmark:
        "logs/benchmarks/evaluate/{model}/{run}/{task}.tsv"
    threads: 2
    # one GPU (of the training partition) where training has GPUs, the CPU otherwise
    resources:
        gpu=lambda wc: min(1, restyle_train.resource(config, wc.model, "gpu")),
        slurm_partition=lambda wc: restyle_train.resource(config, wc.model, "slurm_partition"),
        slurm_account=lambda wc: restyle_train.resource(config, wc.model, "slurm_account"),
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/evaluate.py"
