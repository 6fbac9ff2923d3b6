# Input functions of study A (rules/study_a.smk includes this file).
import json
import os

from restyle import study_a as restyle_study_a
from restyle.study_a import rules as restyle_study_a_rules
from restyle.study_a import rewrite as restyle_rewrite

STUDY_A = config["study_a"]
STUDY_A_RULES = "results/study_a/rules/rules.json"
STUDY_A_SETS = f"results/study_a/{restyle_study_a.TASK}"  # a folder per set: {name}/
STUDY_A_STATS = "results/study_a/stats.csv"


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


def study_a_names():
    """Study A's sets by name: the baselines in config, then each rule's slug (none when study A
    is off)."""
    if not STUDY_A["enabled"]:
        return []
    return [*STUDY_A["baselines"], *(r["slug"] for r in study_a_rules())]


def study_a_sft_sets():
    """Names of study A's SFT sets: studyA-{name} for each of study_a_names()."""
    return [restyle_study_a.sft_set_name(name) for name in study_a_names()]


def study_a_trainable_sets():
    """study_a_sft_sets() without the sets the quality gate left empty (a teacher-written set is a
    checkpoint: this waits for it)."""
    out = []
    for name in study_a_names():
        if name != restyle_study_a.ORIGINAL:
            path = checkpoints.study_a_rewrite.get(name=name).output.sft
            if os.path.getsize(path) == 0:
                continue
        out.append(restyle_study_a.sft_set_name(name))
    return out


def study_a_sft_files(wildcards=None):
    return [f"results/sft/{name}.jsonl" for name in study_a_sft_sets()]


def study_a_outputs(wildcards=None):
    """Everything the study A stage makes: its questions, rules.json, every SFT set, the gate
    statistics (only the empty statistics when study A is off)."""
    if not STUDY_A["enabled"]:
        return [STUDY_A_STATS]
    return ["resources/data/ruozhiba.jsonl", STUDY_A_RULES, *study_a_sft_files(), STUDY_A_STATS]


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
    if wildcards.name != restyle_study_a.TEACHER_PLAIN and not STUDY_A["rules"]["fixed"]:
        checkpoints.study_a_rules.get()
    return {
        "mmlu": restyle_tasks.get(restyle_study_a.TASK).path("train"),
        "teacher": teacher_inputs(STUDY_A["teacher"]),
    }


def study_a_set_rule(wildcards):
    """The rule a teacher-written set follows; None for teacher_plain."""
    if wildcards.name == restyle_study_a.TEACHER_PLAIN:
        return None
    return study_a_rule(wildcards.name)


def study_a_set_plain(wildcards):
    """Config study_a.teacher_plain for the teacher_plain set; None for a rule's."""
    if wildcards.name == restyle_study_a.TEACHER_PLAIN:
        return STUDY_A["teacher_plain"]
    return None


def study_a_set_template_hash(wildcards):
    """The hash of the template a teacher-written set's requests carry."""
    if wildcards.name == restyle_study_a.TEACHER_PLAIN:
        return restyle_rewrite.sent_template_hash(None)
    return restyle_rewrite.sent_template_hash(STUDY_A["rewrite"]["options"])


def study_a_teacher_params():
    return dict(
        teacher=STUDY_A["teacher"],
        backend=teacher_backend(STUDY_A["teacher"]),
        cache=config["teacher_cache"],
        prices=config["prices"],
    )


# a set the teacher writes, teacher_plain or a rule's slug (never a slug, having "_"); never
# original, which study_a_original makes
STUDY_A_WRITTEN_RE = (
    f"{restyle_study_a.TEACHER_PLAIN}|(?!{restyle_study_a.ORIGINAL}(?:[./]|$)){restyle_study_a_rules.SLUG_RE}"
)
