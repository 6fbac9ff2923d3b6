def eval_inputs(wildcards):
    """The base model's manifest, the task's data and, for a checkpoint, its training output."""
    inputs = {"manifest": model_manifest(wildcards.model)}
    if wildcards.task == "mmlu":
        inputs |= {"items": "resources/data/mmlu/test.jsonl", "dev": "resources/data/mmlu/dev.jsonl"}
    else:
        inputs["items"] = "resources/data/gsm8k/test.jsonl"
    if wildcards.run != "base":
        inputs["train_metrics"] = f"results/train/{wildcards.model}/{wildcards.run}/train_metrics.json"
    return inputs


def eval_outputs(model, runs, tasks=None):
    """Summary CSVs for `runs` ("base" or "{sft_set}/seed{seed}") of `model` on every task."""
    return expand(
        "results/eval/{model}/{run}/{task}/summary.csv",
        model=model,
        run=runs,
        task=tasks or config["eval"]["tasks"],
    )


rule evaluate:
    """One model (base, or base + checkpoint) on one task; per-item and per-subject CSVs."""
    input:
        unpack(eval_inputs),
    output:
        items="results/eval/{model}/{run}/{task}/items.csv",
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
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/evaluate.py"
