# Study A (arXiv 2411.14121): rules from Ruozhiba questions, one rule-guided SFT set per rule,
# and two baselines. SFT sets are results/sft/{sft_set}.jsonl with sft_set one of
# studyA-original, studyA-teacher_plain and studyA-{slug} for each rule; each set's side files
# are in results/study_a/mmlu/{name}/ (name: original, teacher_plain or the rule's slug), the
# rules step's in results/study_a/rules/. Other stages fan out over the sets with
# study_a_sft_sets() (call it inside an input function: with extracted rules it waits for the
# study_a_rules checkpoint).
include: "study_a_common.smk"


checkpoint study_a_rules:
    """Explanatory rules from Ruozhiba questions (teacher extraction per perspective, then
    consolidation into N rules), or the fixed list from config; downstream jobs fan out over
    the rules found."""
    input:
        unpack(study_a_rules_inputs),
    output:
        rules=STUDY_A_RULES,
        candidates="results/study_a/rules/candidates.jsonl",
        dropped="results/study_a/rules/dropped.jsonl",
        accounting="results/study_a/rules/accounting.csv",
    params:
        code=code_version("study_a_rules.py", restyle_study_a.TASK),
        cfg=STUDY_A["rules"],
        templates=restyle_study_a_rules.template_hashes(),
        **(
            dict(teacher=None, backend=None, cache=None, prices=None)
            if STUDY_A["rules"]["fixed"]
            else study_a_teacher_params()
        ),
    log:
        main="logs/study_a/rules.log",
        failures="logs/study_a/rules.failures.jsonl",
    benchmark:
        "logs/benchmarks/study_a/rules.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/study_a_rules.py"


checkpoint study_a_rewrite:
    """A teacher-written set: the teacher rewrites MMLU training items following one rule, or
    (teacher_plain) answers them with its own reasoning, no rule; the quality gate keeps rewrites
    that stay answerable, keep their options and end with the gold option."""
    input:
        unpack(study_a_set_inputs),
    output:
        sft="results/sft/studyA-{name}.jsonl",
        dropped=f"{STUDY_A_SETS}/{{name}}/dropped.jsonl",
        accounting=f"{STUDY_A_SETS}/{{name}}/accounting.csv",
        stats=f"{STUDY_A_SETS}/{{name}}/stats.csv",
    params:
        code=code_version("study_a_rewrite.py", restyle_study_a.TASK),
        rule=study_a_set_rule,
        sft_set=lambda wc: restyle_study_a.sft_set_name(wc.name),
        cfg=STUDY_A["rewrite"],
        plain=study_a_set_plain,
        gate=STUDY_A["gate"],
        template_hash=study_a_set_template_hash,
        **study_a_teacher_params(),
    wildcard_constraints:
        name=STUDY_A_WRITTEN_RE,
    log:
        main="logs/study_a/rewrite/{name}.log",
        failures="logs/study_a/rewrite/{name}.failures.jsonl",
    benchmark:
        "logs/benchmarks/study_a/rewrite/{name}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/study_a_rewrite.py"


rule study_a_original:
    """Baseline: each MMLU training item with a bare answer, "The answer is (C) ..."."""
    input:
        mmlu=restyle_tasks.get(restyle_study_a.TASK).path("train"),
    output:
        sft=f"results/sft/studyA-{restyle_study_a.ORIGINAL}.jsonl",
        stats=f"{STUDY_A_SETS}/{restyle_study_a.ORIGINAL}/stats.csv",
    params:
        code=code_version("study_a_original.py", restyle_study_a.TASK),
        sft_set=restyle_study_a.sft_set_name(restyle_study_a.ORIGINAL),
        items_per_set=STUDY_A["rewrite"]["items_per_set"],
    log:
        "logs/study_a/original.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/study_a_original.py"


rule study_a_stats:
    """Kept and dropped counts of the quality gate, per SFT set and subject, in one table."""
    input:
        stats=lambda wc: [f"{STUDY_A_SETS}/{name}/stats.csv" for name in study_a_names()],
    output:
        STUDY_A_STATS,
    params:
        code=code_version("study_a_stats.py", restyle_study_a.TASK),
    log:
        "logs/study_a/stats.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/study_a_stats.py"
