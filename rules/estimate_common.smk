# Input functions of the estimate (rules/estimate.smk includes this file).


def estimate_teachers():
    """Every teacher key the configured stages ask."""
    names = {STUDY_A["teacher"]}
    for variant in STUDY_B["variants"] if STUDY_B["tasks"] else []:
        names |= set(study_b_roles(variant).values())
    return sorted(names)


def estimate_inputs(wildcards):
    inputs = {
        "mmlu": "resources/data/mmlu/train.jsonl",
        "teachers": [f for name in estimate_teachers() for f in teacher_inputs(name)],
    }
    if not STUDY_A["rules"]["fixed"]:
        inputs["ruozhiba"] = "resources/data/ruozhiba.jsonl"
    if "gsm8k" in STUDY_B["tasks"]:
        inputs["gsm8k"] = "resources/data/gsm8k/train.jsonl"
    return inputs
