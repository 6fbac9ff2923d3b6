# Input functions of the evaluation (rules/evaluate.smk includes this file).


def eval_inputs(wildcards):
    """The base model's manifest, the task's evaluated questions (and the k-shot examples of a
    task that has a dev split) and, for a checkpoint, its training output."""
    inputs = {"manifest": model_manifest(wildcards.model), **task_eval_data(wildcards.task)}
    metrics = restyle_runs.checkpoint_file(wildcards.model, wildcards.run, "train_metrics.json")
    return inputs | ({"train_metrics": metrics} if metrics else {})
