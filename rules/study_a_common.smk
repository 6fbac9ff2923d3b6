# Input functions of study A (rules/study_a.smk includes this file).
import json
import os

from restyle import study_a as restyle_study_a
from restyle.study_a import rules as restyle_study_a_rules
from restyle.study_a import rewrite as restyle_rewrite

STUDY_A = config["study_a"]


def study_a_rules():
    """Wording ({slug, name, description, instructions}) of every study A rule."""
    if STUDY_A["rules"]["fixed"]:
        return [restyle_study_a_rules.wording(r) for r in restyle_study_a_rules.fixed(STUDY_A["rules"]["fixed"])]
    path = checkpoints.study_a_rules.get().output.rules
    with open(path, encoding="utf-8") as f:
        return [restyle_study_a_rules.wording(r) for r in json.load(f)["rules"]]


def study_a_rule(slug):
    found = {r["slug"]: r for r in study_a_rules()}
    if slug not in found:
        raise ValueError(f"study A has no rule slug '{slug}' (known slugs {', '.join(found)})")
    return found[slug]


def study_a_sft_sets():
    """Names of study A's SFT sets: the baselines in config, then studyA-{slug} per rule."""
    return [restyle_study_a.sft_set_name(b) for b in STUDY_A["baselines"]] + [
        restyle_study_a.sft_set_name(r["slug"]) for r in study_a_rules()
    ]


def study_a_trainable_sets():
    """study_a_sft_sets() without the sets the quality gate left empty (a rewrite set is a
    checkpoint: this waits for it)."""
    out = []
    for name in study_a_sft_sets():
        if name == restyle_study_a.sft_set_name("teacher_plain"):
            path = checkpoints.study_a_teacher_plain.get().output.sft
        elif name != restyle_study_a.sft_set_name("original"):
            slug = name.removeprefix(restyle_study_a.PREFIX)
            path = checkpoints.study_a_rewrite.get(slug=slug).output.sft
        else:
            out.append(name)
            continue
        if os.path.getsize(path) > 0:
            out.append(name)
    return out


def study_a_sft_files(wildcards=None):
    return [f"results/sft/{name}.jsonl" for name in study_a_sft_sets()]


def study_a_outputs(wildcards=None):
    """Everything the study A stage makes: rules.json, every SFT set, the gate statistics."""
    return ["results/rules/rules.json", *study_a_sft_files(), "results/study_a/gate_stats.csv"]


def study_a_rules_inputs(wildcards):
    if STUDY_A["rules"]["fixed"]:
        return {}
    return {
        "questions": "resources/data/ruozhiba.jsonl",
        "teacher": teacher_inputs(STUDY_A["teacher"]),
    }


def study_a_set_inputs(wildcards):
    """MMLU train items and the teacher's model; waits for the rules checkpoint when the rule
    list is extracted. rules.json itself is not an input: a rewrite reruns when its own rule's
    wording (a param) changes, not whenever another rule does."""
    if getattr(wildcards, "slug", None) and not STUDY_A["rules"]["fixed"]:
        checkpoints.study_a_rules.get()
    return {
        "mmlu": restyle_tasks.get(restyle_study_a.TASK).path("train"),
        "teacher": teacher_inputs(STUDY_A["teacher"]),
    }


def study_a_teacher_params():
    return dict(
        teacher=STUDY_A["teacher"],
        backend=teacher_backend(STUDY_A["teacher"]),
        cache=config["teacher_cache"],
        prices=config["prices"],
    )


# a rule's slug; never "original" (a baseline set; "teacher_plain" cannot match: no "_")
STUDY_A_SLUG_RE = f"(?!original(?:\\.|$)){restyle_study_a_rules.SLUG_RE}"
