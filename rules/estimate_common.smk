# Input functions of the estimate (rules/estimate.smk includes this file).
from restyle import sizing as restyle_sizing
from restyle.models import BUNDLED_PREFIX


def estimate_teachers():
    """Every teacher key the configured stages ask."""
    names = {STUDY_A["teacher"]} if STUDY_A["enabled"] else set()
    for label in study_b_labels() if STUDY_B["tasks"] else []:
        names |= set(study_b_roles(label).values())
    return sorted(names)


def estimate_inputs(wildcards):
    inputs = {
        "study_a": restyle_tasks.get(restyle_study_a.TASK).path("train") if STUDY_A["enabled"] else [],
        "study_b": [restyle_tasks.get(t).path("train") for t in STUDY_B["tasks"]],
        "release": [
            f for t in STUDY_B["tasks"] for l in study_b_labels() for f in study_b_release_files(t, l)
        ],
        "teachers": [f for name in estimate_teachers() for f in teacher_inputs(name)],
    }
    if STUDY_A["enabled"] and not STUDY_A["rules"]["fixed"]:
        inputs["ruozhiba"] = "resources/data/ruozhiba.jsonl"
    for target in TARGETS:  # a bundled model's architecture is in its prepared folder
        if config["models"][target]["source"].startswith(BUNDLED_PREFIX):
            inputs[f"model_{target}"] = model_manifest(target)
    for task in config["eval"]["tasks"]:  # what evaluation and the controls read
        inputs |= {f"{key}_{task}": path for key, path in task_eval_data(task).items()}
    return inputs
