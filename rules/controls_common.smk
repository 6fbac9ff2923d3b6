# Input functions of the control arms (rules/controls.smk includes this file).
from restyle import controls as restyle_controls


def control_sets():
    """control-{task}-{kind} for every configured kind and every evaluated task a study trains
    for (MMLU for study A, study_b.tasks for study B)."""
    tasks = [t for t in config["eval"]["tasks"] if t == "mmlu" or t in STUDY_B["tasks"]]
    return [restyle_controls.sft_set_name(t, k) for t in tasks for k in config["controls"]]


def control_set_inputs(wildcards):
    if wildcards.task == "mmlu":
        return {"questions": "resources/data/mmlu/test.jsonl", "dev": "resources/data/mmlu/dev.jsonl"}
    return {"questions": "resources/data/gsm8k/test.jsonl"}
