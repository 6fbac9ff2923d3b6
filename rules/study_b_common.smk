# Input functions of study B (rules/study_b.smk includes this file).
from restyle import study_b as restyle_study_b
from restyle.study_b import variants as study_b_variants

STUDY_B = config["study_b"]


def study_b_sft_sets():
    """Names of every study B SFT set the config asks for (results/sft/{name}.jsonl); a set
    may be empty when no answer passed the filters (see study_b_trainable_sets)."""
    return [
        restyle_study_b.sft_set_name(task, variant)
        for task in STUDY_B["tasks"]
        for variant in STUDY_B["variants"]
    ]


def study_b_sft_files():
    return [f"results/sft/{name}.jsonl" for name in study_b_sft_sets()]


def study_b_trainable_sets(wildcards=None):
    """The non-empty study B sets. Waits for the study_b_variant checkpoint, so call it only
    inside an input function, never at parse time (not in the input list of the default target)."""
    out = []
    for task in STUDY_B["tasks"]:
        for variant in STUDY_B["variants"]:
            job = checkpoints.study_b_variant.get(task=task, variant=variant)
            if study_b_variants.count_rows(job.output.sft):
                out.append(restyle_study_b.sft_set_name(task, variant))
    return out


def study_b_roles(variant):
    """Which teacher entries a variant asks: role -> config name."""
    return restyle_study_b.teacher_roles(variant, STUDY_B)


def study_b_variant_inputs(wildcards):
    inputs = {"questions": restyle_tasks.get(wildcards.task).path("train")}
    for role, name in study_b_roles(wildcards.variant).items():
        inputs[role] = teacher_inputs(name)
    if wildcards.variant in restyle_study_b.SCORED_VARIANTS:
        inputs["target_model"] = model_manifest(config["target_model"])
    if wildcards.variant in restyle_study_b.PPL_SPLITS:
        inputs["source"] = restyle_study_b.sft_path(wildcards.task, STUDY_B["ppl_split_of"])
    return inputs


def study_b_variant_cfg(wildcards):
    """The config a variant depends on (so changing another variant's setting reruns nothing)."""
    skip = {"tasks", "variants"}
    if wildcards.variant not in restyle_study_b.SCORED_VARIANTS:
        skip |= {"familiarity"}
    if wildcards.variant != "best_of_n":
        skip |= {"best_of_n", "sampling"}
    if wildcards.variant not in restyle_study_b.PPL_SPLITS:
        skip |= {"ppl_split_of"}
    return {k: v for k, v in STUDY_B.items() if k not in skip}


def familiarity_inputs(wildcards):
    """The base model's manifest, every study B set and, for a checkpoint, its training output."""
    inputs = {"manifest": model_manifest(wildcards.model), "sets": study_b_sft_files()}
    metrics = restyle_runs.checkpoint_file(wildcards.model, wildcards.run, "train_metrics.json")
    return inputs | ({"train_metrics": metrics} if metrics else {})


def familiarity_outputs(model, runs):
    """Familiarity summaries of `model` for `runs` (restyle.runs): the untrained model or a
    checkpoint trained by rule train."""
    return expand("results/familiarity/{model}/{run}/summary.csv", model=model, run=runs)


def study_b_outputs():
    """What the default target asks of study B: every set, the stats table, base familiarity;
    nothing when study_b.tasks or study_b.variants is empty (study B switched off)."""
    if not study_b_sft_sets():
        return []
    return [
        *study_b_sft_files(),
        "results/studyB/stats.csv",
        *familiarity_outputs(config["target_model"], [restyle_runs.BASE]),
    ]
