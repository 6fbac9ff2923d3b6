"""Study A (rules/study_a.smk): rules extracted from Ruozhiba questions (`rules`), MMLU
items rewritten by each rule into SFT sets, with the baselines and the quality gate (`rewrite`).
This package never imports its submodules, so they can import it."""

PREFIX = "studyA-"
TASK = "mmlu"  # the restyle.tasks task whose training items the rules rewrite
BASELINES = ("original", "teacher_plain")  # the baseline sets; no rule may take their slugs
ORIGINAL, TEACHER_PLAIN = BASELINES


RULES_STAGE = "study_a_rules"  # the teacher session of the rules job, named after its rule
RULE_REWRITES = f"{PREFIX}{{rule}}"  # the estimate's stage of every rule's rewrites: the
# rules are known only after a run


def sft_set_name(name: str) -> str:
    """The SFT set of a baseline or of a rule's slug."""
    return f"{PREFIX}{name}"


def schema_names(schema: dict) -> None:
    """The baselines as the schema's enum, from the one list (the schema file has none)."""
    schema["properties"]["study_a"]["properties"]["baselines"]["items"]["enum"] = list(BASELINES)


def accounting_stage(stage: str) -> str:
    """The estimate's stage (restyle.estimate) for a teacher session's stage: one for every
    rule's rewrites."""
    if stage.startswith(PREFIX) and stage.removeprefix(PREFIX) not in BASELINES:
        return RULE_REWRITES
    return stage
