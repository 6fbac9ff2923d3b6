"""Study A (rules/study_a.smk): rules extracted from Ruozhiba questions (`rules`), MMLU
items rewritten by each rule into SFT sets, with the baselines and the quality gate (`rewrite`).
This package never imports its submodules, so they can import it."""

PREFIX = "studyA-"
TASK = "mmlu"  # the restyle.tasks task whose training items the rules rewrite
BASELINES = ("original", "teacher_plain")  # the baseline sets; no rule may take their slugs
ORIGINAL, TEACHER_PLAIN = BASELINES


def sft_set_name(name: str) -> str:
    """The SFT set of a baseline or of a rule's slug."""
    return f"{PREFIX}{name}"
