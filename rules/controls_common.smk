# Input functions of the control arms (rules/controls.smk includes this file).
from restyle import controls as restyle_controls


def control_sets():
    """control-{task}-{kind} for every configured kind and every evaluated task a study trains
    for (study A's task, study_b.tasks for study B)."""
    trained = {*([restyle_study_a.TASK] if STUDY_A["enabled"] else []), *STUDY_B["tasks"]}
    tasks = [t for t in config["eval"]["tasks"] if t in trained]
    return [restyle_controls.sft_set_name(t, k) for t in tasks for k in config["controls"]]


def control_set_inputs(wildcards):
    return task_eval_data(wildcards.task)
