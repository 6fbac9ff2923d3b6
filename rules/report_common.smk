# Input functions and settings of the report (rules/report.smk includes this file).


def evaluated_tasks(run):
    """The tasks a run (restyle.runs) is evaluated on: a control arm the task it controls only
    (its verdict reads that one, its score elsewhere says nothing); a study arm every task but
    the other folds of its own (restyle.tasks.evaluates: their test questions are its training
    ones); the base model every task."""
    sft_set = restyle_runs.parse_run(run)[0]
    control = restyle_controls.parse_name(sft_set)
    if control:
        return [control[0]]
    if sft_set.startswith(restyle_study_b.PREFIX):
        source = restyle_study_b.parse_set_name(sft_set)[0]
        return [t for t in config["eval"]["tasks"] if restyle_tasks.evaluates(source, t)]
    return config["eval"]["tasks"]


def report_eval_items():
    """Per-question results of every target's base model and checkpoints on the tasks each is
    evaluated on (evaluated_tasks)."""
    return [
        f"results/eval/{target}/{run}/{task}/items.csv"
        for target in TARGETS
        for run in [restyle_runs.BASE, *trained_runs(target)]
        for task in evaluated_tasks(run)
    ]


def report_familiarity():
    """Familiarity of every untrained target with every study B set, and of each target's study B
    checkpoints with its sets."""
    out = []
    for target in TARGETS if study_b_sft_sets() else []:
        sets = study_b_sft_sets(target)
        runs = [run for run in trained_runs(target) if restyle_runs.parse_run(run)[0] in sets]
        out += familiarity_outputs(target, [restyle_runs.BASE, *runs])
    return out


def report_familiarity_examples():
    """Per-example familiarity of every untrained target with every study B set (the matrix)."""
    if not study_b_sft_sets():
        return []
    return [f"results/familiarity/{t}/{restyle_runs.BASE}/per_example.csv" for t in TARGETS]


def teacher_accounting():
    """The accounting CSV of every teacher stage (restyle.teacher.Session), which the report
    sums beside results/estimate.csv; waits for study A's checkpoints, so call it from an input
    function only."""
    study_a = [
        f"{STUDY_A_SETS}/{name}/accounting.csv"
        for name in study_a_names()
        if name != restyle_study_a.ORIGINAL  # asks no teacher
    ]
    study_b = expand(
        f"{STUDY_B_SETS}/{{label}}/accounting.csv",
        task=STUDY_B["tasks"],
        label=study_b_labels(),
    )
    rules = ["results/study_a/rules/accounting.csv"] if STUDY_A["enabled"] else []
    return [*rules, *study_a, *study_b]


def teacher_label(name):
    teacher = config["teachers"][name]
    return f"{name} ({teacher['model'] or teacher['model_key']}, {teacher['backend']})"


def training_label(target):
    train = restyle_config.settings_for(config["train"], target)
    steps = train["max_steps"] or f"{train['epochs']} epoch(s)"
    return (
        f"{train['method']}, {steps} steps of {train['batch_size']} examples, "
        f"lr {train['learning_rate']}, seeds {config['train']['seeds']}"
    )


def report_settings():
    """What produced the results, for the report's first page."""
    trainings = {t: training_label(t) for t in TARGETS}
    same = len(set(trainings.values())) == 1
    return {
        "model": ", ".join(f"{t} ({config['models'][t]['source']})" for t in TARGETS),
        "controls": config["controls"],
        "study A": f"teacher {teacher_label(STUDY_A['teacher'])}, "
        f"{STUDY_A['rewrite']['items_per_set'] or 'all'} MMLU train items per set",
        "study B": f"teacher {teacher_label(STUDY_B['teacher'])}, tasks {STUDY_B['tasks']}, "
        f"variants {STUDY_B['variants']}, {STUDY_B['items'] or 'all'} questions per task",
        "training": trainings[TARGETS[0]]
        if same
        else "; ".join(f"{t}: {v}" for t, v in trainings.items()),
        "evaluation": f"tasks {config['eval']['tasks']}, MMLU k_shot {config['eval']['mmlu']['k_shot']}, "
        f"chat_template {config['eval']['mmlu']['chat_template']}",
    }
