# Input functions and settings of the report (rules/report.smk includes this file).


def report_eval_items():
    """Per-question results of the base model and every checkpoint on every task; a control arm
    on the task it controls only (its verdict reads that one, its score elsewhere says nothing)."""
    out = []
    for run in [restyle_runs.BASE, *trained_runs()]:
        control = restyle_controls.parse_name(restyle_runs.parse_run(run)[0])
        for task in [control[0]] if control else config["eval"]["tasks"]:
            out.append(f"results/eval/{config['target_model']}/{run}/{task}/items.csv")
    return out


def report_familiarity():
    """Familiarity of the untrained model with every study B set, and of each study B checkpoint."""
    if not study_b_sft_sets():
        return []
    sets = study_b_sft_sets()
    runs = [run for run in trained_runs() if restyle_runs.parse_run(run)[0] in sets]
    return familiarity_outputs(config["target_model"], [restyle_runs.BASE, *runs])


def report_familiarity_examples():
    """Per-example familiarity of the untrained model with every study B set."""
    if not study_b_sft_sets():
        return []
    return [f"results/familiarity/{config['target_model']}/{restyle_runs.BASE}/per_example.csv"]


def teacher_accounting():
    """The accounting CSV of every teacher stage (restyle.teacher.Session), which the report
    sums beside results/estimate.csv; waits for study A's checkpoints, so call it from an input
    function only."""
    original = restyle_study_a.sft_set_name("original")  # asks no teacher
    study_a = [f"results/sft/{s}.accounting.csv" for s in study_a_sft_sets() if s != original]
    study_b = expand(
        "results/studyB/{task}/{variant}/accounting.csv",
        task=STUDY_B["tasks"],
        variant=STUDY_B["variants"],
    )
    return ["results/rules/accounting.csv", *study_a, *study_b]


def teacher_label(name):
    teacher = config["teachers"][name]
    return f"{name} ({teacher['model'] or teacher['model_key']}, {teacher['backend']})"


def report_settings():
    """What produced the results, for the report's first page."""
    train = restyle_config.settings_for(config["train"], config["target_model"])
    steps = train["max_steps"] or f"{train['epochs']} epoch(s)"
    return {
        "model": f"{config['target_model']} ({config['models'][config['target_model']]['source']})",
        "controls": config["controls"],
        "study A": f"teacher {teacher_label(STUDY_A['teacher'])}, "
        f"{STUDY_A['rewrite']['items_per_set'] or 'all'} MMLU train items per set",
        "study B": f"teacher {teacher_label(STUDY_B['teacher'])}, tasks {STUDY_B['tasks']}, "
        f"variants {STUDY_B['variants']}, {STUDY_B['items'] or 'all'} questions per task",
        "training": f"{train['method']}, {steps} steps of {train['batch_size']} examples, "
        f"lr {train['learning_rate']}, seeds {config['train']['seeds']}",
        "evaluation": f"tasks {config['eval']['tasks']}, MMLU k_shot {config['eval']['mmlu']['k_shot']}, "
        f"chat_template {config['eval']['mmlu']['chat_template']}",
    }
