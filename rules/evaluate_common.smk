# Input functions of the evaluation (rules/evaluate.smk includes this file).


def eval_inputs(wildcards):
    """The base model's manifest, the task's data and, for a checkpoint, its training output."""
    inputs = {"manifest": model_manifest(wildcards.model)}
    if wildcards.task == "mmlu":
        inputs |= {"questions": "resources/data/mmlu/test.jsonl", "dev": "resources/data/mmlu/dev.jsonl"}
    else:
        inputs["questions"] = "resources/data/gsm8k/test.jsonl"
    metrics = restyle_runs.checkpoint_file(wildcards.model, wildcards.run, "train_metrics.json")
    return inputs | ({"train_metrics": metrics} if metrics else {})
