"""Study B (rules/study_b.smk): response variants of the same training questions (`variants`) and
the target model's perplexity on them (`familiarity`).

`VARIANTS` is the one table of the variants: which teachers each asks, which prompt templates it
sends and how its answers are kept; the rules, the config check and `variants` read it. Its
tasks are restyle.tasks'. This package imports nothing of restyle, so config checks and the
rules read it at parse time cheaply.

A variant made by or for one model (`PER_MODEL`: written by a model of `models`, or selected by a
target model's perplexity) gets one set per model, `{variant}@{model}` (`label`), so that
several target models never share or overwrite one; the other variants are one set each, shared
by every target.

A set can also be read from study B's data release (`study_b.release_sets`: label -> the
release's name of the set, restyle.data.release) instead of being made: `teacher` (GPT-4's
answers), `teacher@claude` (another writer's answers to the same prompt, shared by every target),
`minimum_change@{model}` (the answers corrected for that model, which only it trains on).
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "studyB-"


@dataclass(frozen=True)
class Variant:
    """roles: the teachers it asks, "teacher" (config study_b.teacher) and "target" (the teacher
    entry serving the set's model, study_b.target_teachers), in the order its params list them;
    templates: the variants.TEMPLATES it sends (restyle.versions hashes them into its job's
    params; tests/test_versions.py checks them against real requests); filter: "correct" keeps an answer when it is
    right, "best_of_n" the right sample the target finds least perplexing, "ppl_split" half of
    another set (study_b.ppl_split_of) by the target's perplexity."""

    roles: tuple[str, ...] = ()
    templates: tuple[str, ...] = ()
    filter: str = "correct"


VARIANTS = {
    "human": Variant(),
    "teacher": Variant(("teacher",), ("answer",)),
    "teacher_rewrite": Variant(("teacher",), ("rewrite",)),
    "teacher_steps": Variant(("teacher",), ("steps",)),
    "teacher_detailed_steps": Variant(("teacher",), ("detailed_steps",)),
    "self_rewrite": Variant(("target",), ("rewrite",)),
    "minimum_change": Variant(("teacher", "target"), ("answer", "minimum_change")),
    "best_of_n": Variant(("teacher",), ("answer",), "best_of_n"),
    "low_ppl": Variant(filter="ppl_split"),
    "high_ppl": Variant(filter="ppl_split"),
}
PPL_SPLITS = tuple(v for v, t in VARIANTS.items() if t.filter == "ppl_split")
SCORED_VARIANTS = tuple(v for v, t in VARIANTS.items() if t.filter != "correct")  # need perplexity
# written by a model (study_b.writers: one set per writer) / picked by a target's perplexity (one
# set per target model)
WRITTEN_VARIANTS = tuple(v for v, t in VARIANTS.items() if "target" in t.roles)
PER_MODEL = (*WRITTEN_VARIANTS, *SCORED_VARIANTS)
SEPARATOR = "@"  # never in a model name (config/schema.yaml models)
SELF_REWRITE = "self_rewrite"  # a model's own words: the familiarity matrix reads each reader's


def label(variant: str, model: str | None = None) -> str:
    """What names a set within its task: the variant, and `@{model}` for a PER_MODEL one."""
    return f"{variant}{SEPARATOR}{model}" if model else variant


def parse_label(text: str) -> tuple[str, str | None]:
    """(variant, model or None) of a label."""
    variant, _, model = text.partition(SEPARATOR)
    return variant, model or None


def teacher_roles(variant: str, cfg: dict, model: str | None = None) -> dict[str, str]:
    """Role -> name (a key of config teachers) of each teacher the set `variant` (of `model`, for
    a PER_MODEL variant) asks; `cfg` is config study_b."""
    names = {"teacher": cfg["teacher"],
             "target": (cfg["target_teachers"] or {}).get(model) if model else None}
    return {role: names[role] for role in VARIANTS[variant].roles}


def set_models(variant: str, cfg: dict, targets: list[str]) -> list[str | None]:
    """The models a variant has a set for: study_b.writers (default: the targets) for a written
    variant, the targets for one picked by perplexity, [None] (one shared set) otherwise."""
    if variant in WRITTEN_VARIANTS:
        return list(targets if cfg["writers"] is None else cfg["writers"])
    return list(targets) if variant in SCORED_VARIANTS else [None]


def labels(cfg: dict, targets: list[str]) -> list[str]:
    """Every set label of config study_b `cfg` for target models `targets`: the generated ones in
    variant order, then the released ones (`study_b.release_sets`; a label in both is read)."""
    made = [label(v, m) for v in cfg["variants"] for m in set_models(v, cfg, targets)]
    return list(dict.fromkeys([*made, *(cfg.get("release_sets") or {})]))


def released(set_label: str, cfg: dict) -> bool:
    """Whether the set is read from study B's release (config study_b.release_sets) rather than
    made: it asks no teacher."""
    return set_label in (cfg.get("release_sets") or {})


def release_name(set_label: str, cfg: dict, task_key: str) -> str | None:
    """The release's name of a released set for a task (its config section, `task_key`): one
    name for every task, or one per task; None when the set is not released."""
    name = (cfg.get("release_sets") or {}).get(set_label)
    return name.get(task_key) if isinstance(name, dict) else name


def sft_set_name(task: str, variant: str, model: str | None = None) -> str:
    return f"{PREFIX}{task}-{label(variant, model)}"


def parse_set_name(name: str) -> tuple[str, str, str | None]:
    """(task, variant, model or None) of a study B set name."""
    task, _, rest = name.removeprefix(PREFIX).partition("-")
    return (task, *parse_label(rest))


def sft_path(task: str, variant: str, model: str | None = None) -> str:
    return f"results/sft/{sft_set_name(task, variant, model)}.jsonl"


def trained_by(set_label: str, target: str) -> bool:
    """Whether `target` trains on the set: a shared one (no model, or a released set's writer
    such as `teacher@claude`), or one made by or for it."""
    variant, model = parse_label(set_label)
    return model in (None, target) or variant not in PER_MODEL
