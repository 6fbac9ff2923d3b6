# Input functions of study B (rules/study_b.smk includes this file).
from restyle import study_b as restyle_study_b
from restyle.study_b import variants as study_b_variants

STUDY_B = config["study_b"]
STUDY_B_SETS = "results/study_b/{task}"  # a folder per set: {label}/
STUDY_B_STATS = "results/study_b/stats.csv"
TARGETS = config["target_models"]


def study_b_labels(target=None):
    """Set labels (restyle.study_b.label) of every study B set, or of those `target` trains on
    (the shared ones and its own)."""
    labels = restyle_study_b.labels(STUDY_B, TARGETS)
    return [l for l in labels if target is None or restyle_study_b.trained_by(l, target)]


def study_b_set_name(task, label):
    return restyle_study_b.sft_set_name(task, *restyle_study_b.parse_label(label))


def study_b_sft_sets(target=None):
    """Names of every study B SFT set the config asks for (results/sft/{name}.jsonl), or of those
    `target` trains on; a set may be empty when no answer passed the filters (see
    study_b_trainable_sets)."""
    return [study_b_set_name(t, l) for t in STUDY_B["tasks"] for l in study_b_labels(target)]


def study_b_sft_files(target=None):
    return [f"results/sft/{name}.jsonl" for name in study_b_sft_sets(target)]


def study_b_trainable_sets(target):
    """The non-empty study B sets `target` trains on. Waits for the study_b_variant checkpoint,
    so call it only inside an input function, never at parse time (not in the input list of the
    default target)."""
    out = []
    for task in STUDY_B["tasks"]:
        for label in study_b_labels(target):
            job = checkpoints.study_b_variant.get(task=task, label=label)
            if study_b_variants.count_rows(job.output.sft):
                out.append(study_b_set_name(task, label))
    return out


def study_b_roles(label):
    """Which teacher entries the set `label` asks: role -> config name (none for a released set)."""
    if restyle_study_b.released(label, STUDY_B):
        return {}
    variant, model = restyle_study_b.parse_label(label)
    return restyle_study_b.teacher_roles(variant, STUDY_B, model)


def study_b_templates(task, label):
    """Hashes of the prompt text the set sends (none for a released set)."""
    if restyle_study_b.released(label, STUDY_B):
        return {}
    data = config["data"][restyle_tasks.get(task).config_key]
    return study_b_variants.template_hashes(
        task, restyle_study_b.parse_label(label)[0], data.get("prompt") == "release"
    )


def study_b_release(task, label):
    """Where a released set of `task` is read (restyle.study_b.variants.Context.release), or
    None for a set that is made."""
    name = restyle_study_b.release_name(label, STUDY_B, restyle_tasks.get(task).config_key)
    if name is None:
        return None
    t = restyle_tasks.get(task)
    cfg = config["data"][t.config_key]
    return {
        "dir": config["release_dir"],
        "file": restyle_release.relative(t, cfg, "sets", set=name),
        "train": restyle_release.relative(t, cfg, "train"),
        "key": f"study_b.release_sets.{label}",
    }


def study_b_release_files(task, label):
    """The release files a released set reads (its job's input)."""
    where = study_b_release(task, label)
    if where is None:
        return []
    return [f"{where['dir']}/dataset/{where[k]}" for k in ("file", "train")]


def study_b_label_constraint():
    """The {label} wildcard: every set label of the config."""
    return "|".join(map(re.escape, study_b_labels()))


def study_b_target_manifest(wildcards):
    """The manifest of the model whose perplexity picks the set's examples, or None."""
    variant, model = restyle_study_b.parse_label(wildcards.label)
    return model_manifest(model) if variant in restyle_study_b.SCORED_VARIANTS else None


def study_b_variant_inputs(wildcards):
    variant, model = restyle_study_b.parse_label(wildcards.label)
    inputs = {
        "questions": restyle_tasks.get(wildcards.task).path("train"),
        "release": study_b_release_files(wildcards.task, wildcards.label),
    }
    for role, name in study_b_roles(wildcards.label).items():
        inputs[role] = teacher_inputs(name)
    if variant in restyle_study_b.SCORED_VARIANTS:
        inputs["target_model"] = study_b_target_manifest(wildcards)
    if variant in restyle_study_b.PPL_SPLITS:
        source = STUDY_B["ppl_split_of"]
        own = model if source in restyle_study_b.PER_MODEL else None
        inputs["source"] = restyle_study_b.sft_path(wildcards.task, source, own)
    return inputs


def study_b_variant_cfg(wildcards):
    """The config a variant depends on (so changing another variant's setting reruns nothing);
    its teachers are in the rule's other params."""
    variant = restyle_study_b.parse_label(wildcards.label)[0]
    skip = {"tasks", "variants", "target_teachers", "writers", "release_sets"}
    if variant not in restyle_study_b.SCORED_VARIANTS:
        skip |= {"familiarity"}
    if variant != "best_of_n":
        skip |= {"best_of_n", "sampling"}
    if variant not in restyle_study_b.PPL_SPLITS:
        skip |= {"ppl_split_of"}
    return {k: v for k, v in STUDY_B.items() if k not in skip}


def familiarity_sets(wildcards):
    """What a familiarity job scores: the untrained model every study B set (its row of the
    familiarity matrix), a checkpoint the sets its model trains on."""
    if wildcards.run == restyle_runs.BASE:
        return study_b_sft_sets()
    return study_b_sft_sets(wildcards.model)


def familiarity_inputs(wildcards):
    """The base model's manifest, the sets it scores and, for a checkpoint, its training output."""
    sets = [f"results/sft/{name}.jsonl" for name in familiarity_sets(wildcards)]
    inputs = {"manifest": model_manifest(wildcards.model), "sets": sets}
    metrics = restyle_runs.checkpoint_file(wildcards.model, wildcards.run, "train_metrics.json")
    return inputs | ({"train_metrics": metrics} if metrics else {})


def familiarity_outputs(model, runs):
    """Familiarity summaries of `model` for `runs` (restyle.runs): the untrained model or a
    checkpoint trained by rule train."""
    return expand("results/familiarity/{model}/{run}/summary.csv", model=model, run=runs)


def study_b_outputs():
    """What the default target asks of study B: every set, the stats table, every target's base
    familiarity; nothing when study_b.tasks or study_b.variants is empty (study B switched off)."""
    if not study_b_sft_sets():
        return []
    return [
        *study_b_sft_files(),
        STUDY_B_STATS,
        *familiarity_outputs(TARGETS, [restyle_runs.BASE]),
    ]
