# Input functions of the estimate (rules/estimate.smk includes this file).


def estimate_teachers():
    """Every teacher key the configured stages ask."""
    names = {STUDY_A["teacher"]}
    for label in study_b_labels() if STUDY_B["tasks"] else []:
        names |= set(study_b_roles(label).values())
    return sorted(names)


def estimate_inputs(wildcards):
    inputs = {
        "study_a": restyle_tasks.get(restyle_study_a.TASK).path("train"),
        "study_b": [restyle_tasks.get(t).path("train") for t in STUDY_B["tasks"]],
        "teachers": [f for name in estimate_teachers() for f in teacher_inputs(name)],
    }
    if not STUDY_A["rules"]["fixed"]:
        inputs["ruozhiba"] = "resources/data/ruozhiba.jsonl"
    return inputs
