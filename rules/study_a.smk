# Study A (arXiv 2411.14121): rules from Ruozhiba questions, one rule-guided SFT set per rule,
# and two baselines. SFT sets are results/sft/{sft_set}.jsonl with sft_set one of
# studyA-original, studyA-teacher_plain and studyA-{slug} for each rule; other stages fan out
# over them with study_a_sft_sets() (call it inside an input function: with extracted rules it
# waits for the study_a_rules checkpoint).
include: "study_a_common.smk"


checkpoint study_a_rules:
    """Explanatory rules from Ruozhiba questions (teacher extraction per perspective, then
    consolidation into N rules), or the fixed list from config; downstream jobs fan out over
    the rules found."""
    input:
        unpack(study_a_rules_inputs),
    output:
        rules="results/rules/rules.json",
        candidates="results/rules/candidates.jsonl",
        dropped="results/rules/dropped.jsonl",
        accounting="results/rules/accounting.csv",
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
    """The teacher rewrites MMLU training items following one rule; the quality gate keeps
    rewrites that stay answerable, keep their options and end with the gold option."""
    input:
        unpack(study_a_set_inputs),
    output:
        sft="results/sft/studyA-{slug}.jsonl",
        dropped="results/sft/studyA-{slug}.dropped.jsonl",
        accounting="results/sft/studyA-{slug}.accounting.csv",
        stats="results/sft/studyA-{slug}.stats.csv",
    params:
        code=code_version("study_a_rewrite.py", restyle_study_a.TASK),
        rule=lambda wc: study_a_rule(wc.slug),
        sft_set=lambda wc: f"studyA-{wc.slug}",
        cfg=STUDY_A["rewrite"],
        plain=None,
        gate=STUDY_A["gate"],
        template_hash=restyle_rewrite.sent_template_hash(STUDY_A["rewrite"]["options"]),
        **study_a_teacher_params(),
    wildcard_constraints:
        slug=STUDY_A_SLUG_RE,
    log:
        main="logs/study_a/rewrite/{slug}.log",
        failures="logs/study_a/rewrite/{slug}.failures.jsonl",
    benchmark:
        "logs/benchmarks/study_a/rewrite/{slug}.tsv"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=240,
    conda:
        "../envs/restyle.yaml"
    script:
        "../scripts/study_a_rewrite.py"


checkpoint study_a_teacher_plain:
    """Baseline: the teacher answers each original question with its own reasoning, no rule."""
    input:
        unpack(study_a_set_inputs),
    output:
        sft="results/sft/studyA-teacher_plain.jsonl",
        dropped="results/sft/studyA-teacher_plain.dropped.jsonl",
        accounting="results/sft/studyA-teacher_plain.accounting.csv",
        stats="results/sft/studyA-teacher_plain.stats.csv",
    params:
        code=code_version("study_a_rewrite.py", restyle_study_a.TASK),
        rule=None,
        sft_set="studyA-teacher_plain",
        cfg=STUDY_A["rewrite"],
        plain=STUDY_A["teacher_plain"],
        gate=STUDY_A["gate"],
        template_hash=restyle_rewrite.sent_template_hash(None),
        **study_a_teacher_params(),
    log:
        main="logs/study_a/rewrite/teacher_plain.log",
        failures="logs/study_a/rewrite/teacher_plain.failures.jsonl",
    benchmark:
        "logs/benchmarks/study_a/rewrite/teacher_plain.tsv"
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
        sft="results/sft/studyA-original.jsonl",
        stats="results/sft/studyA-original.stats.csv",
    params:
        code=code_version("study_a_original.py", restyle_study_a.TASK),
        sft_set="studyA-original",
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
        stats=lambda wc: [f"results/sft/{name}.stats.csv" for name in study_a_sft_sets()],
    output:
        "results/study_a/gate_stats.csv",
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
