"""Study B (rules/study_b.smk): response variants of the same training questions (`variants`) and
the target model's perplexity on them (`familiarity`).

`VARIANTS` is the one table of the variants: which teachers each asks, which prompt templates it
sends and how its answers are kept; the rules, the config check and `variants` read it. Its
tasks are restyle.tasks'. This package imports nothing of restyle, so config checks and the
rules read it at parse time cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "studyB-"


@dataclass(frozen=True)
class Variant:
    """roles: the teachers it asks, "teacher" (config study_b.teacher) and "target"
    (study_b.target_teacher, serving the target model), in the order its params list them;
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
TARGET_VARIANTS = tuple(v for v, t in VARIANTS.items() if "target" in t.roles)
_ROLE_KEYS = {"teacher": "teacher", "target": "target_teacher"}  # role -> key of config study_b


def teacher_roles(variant: str, cfg: dict) -> dict[str, str]:
    """Role -> name (a key of config teachers) of each teacher `variant` asks; `cfg` is config
    study_b."""
    return {role: cfg[_ROLE_KEYS[role]] for role in VARIANTS[variant].roles}


def sft_set_name(task: str, variant: str) -> str:
    return f"{PREFIX}{task}-{variant}"


def sft_path(task: str, variant: str) -> str:
    return f"results/sft/{sft_set_name(task, variant)}.jsonl"
