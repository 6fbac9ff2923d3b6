include: "train_common.smk"


rule train:
    """Fine-tune {model} on SFT set {sft_set} with seed {seed} (restyle.train): LoRA adapter or
    full model in adapter/, metrics in train_metrics.json. One launcher (restyle.launch, torchrun)
    starts a process per GPU in resources.gpu, or train.cpu_processes on CPU (gloo), on each of
    resources.nodes nodes (more than one: SLURM only, a torchrun per node started through srun,
    the GPUs asked per node as gres). Config train.per_model.{model} overrides train.*
    (resources included) for one model.

    Checkpoints go to results/train/{model}/{sft_set}/seed{seed}/checkpoints/ every
    train.save_steps steps. That folder is deliberately not an output, so Snakemake keeps it when
    the job fails or is killed, and a rerun (or a SLURM requeue) resumes from the last complete
    checkpoint of the same settings, data and model; it is removed after success unless
    train.keep_checkpoints."""
    input:
        sft="results/sft/{sft_set}.jsonl",
        manifest=model_manifest("{model}"),
        deepspeed=lambda wc: (
            [f"{workflow.basedir}/config/deepspeed/{name}.json"]
            if (name := restyle_config.settings_for(config["train"], wc.model)["deepspeed"])
            else []
        ),
    output:
        adapter=directory("results/train/{model}/{sft_set}/seed{seed}/adapter"),
        metrics="results/train/{model}/{sft_set}/seed{seed}/train_metrics.json",
    params:
        code=code_version("train.py"),
        # without the keys that only schedule the job: changing those reruns no training
        settings=lambda wc: restyle_config.training_settings(config["train"], wc.model),
        checkpoints=lambda wc: f"results/train/{wc.model}/{wc.sft_set}/seed{wc.seed}/checkpoints",
    log:
        "logs/train/{model}/{sft_set}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/train/{model}/{sft_set}/seed{seed}.tsv"
    wildcard_constraints:
        sft_set=r"[^/]+",
        seed=r"\d+",
    threads: lambda wc: restyle_config.threads(config, wc.model)
    resources:
        gpu=lambda wc: restyle_config.resource(config, wc.model, "gpu"),
        gres=lambda wc: restyle_config.resource(config, wc.model, "gres"),
        nodes=lambda wc: restyle_config.resource(config, wc.model, "nodes"),
        tasks=lambda wc: restyle_config.resource(config, wc.model, "tasks"),
        cpus_per_gpu=lambda wc: restyle_config.resource(config, wc.model, "cpus_per_gpu"),
        mem_mb=lambda wc: restyle_config.resource(config, wc.model, "mem_mb"),
        runtime=train_runtime,
        slurm_partition=lambda wc: restyle_config.resource(config, wc.model, "slurm_partition"),
        slurm_account=lambda wc: restyle_config.resource(config, wc.model, "slurm_account"),
        slurm_extra=lambda wc: restyle_config.resource(config, wc.model, "slurm_extra"),
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/train.py"
