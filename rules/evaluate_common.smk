# Input functions of the evaluation (rules/evaluate.smk includes this file).


def eval_inputs(wildcards):
    """The base model's manifest, the task's data and, for a checkpoint, its training output."""
    inputs = {"manifest": model_manifest(wildcards.model)}
    if wildcards.task == "mmlu":
        inputs |= {"questions": "resources/data/mmlu/test.jsonl", "dev": "resources/data/mmlu/dev.jsonl"}
    else:
        inputs["questions"] = "resources/data/gsm8k/test.jsonl"
    if wildcards.run != restyle_runs.BASE:
        trained = restyle_runs.checkpoint_dir(wildcards.model, wildcards.run)
        inputs["train_metrics"] = f"{trained}/train_metrics.json"
    return inputs
