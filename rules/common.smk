import re
import sys
from pathlib import Path

from snakemake.logging import logger
from snakemake.utils import validate

# The Snakefile imports restyle from this checkout even where snakemake runs from an
# environment without it; jobs get it from the project venv or envs/restyle.post-deploy.sh.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from restyle import controls as restyle_controls
from restyle import train as restyle_train
from restyle import versions as restyle_versions
from restyle.config import check
from restyle.data.gsm8k import SPLITS as GSM8K_SPLITS
from restyle.data.mmlu import ROLES as MMLU_ROLES

# check() names each wrong key in one line; validate() then fills in the schema's defaults.
check(config, workflow.source_path("../config/schema.yaml"))
validate(config, "../config/schema.yaml")


wildcard_constraints:
    model="|".join(map(re.escape, config["models"])),


def model_manifest(name):
    return f"resources/models/{name}/manifest.json"


def code_version(script):
    """The version of the restyle code scripts/`script` runs (restyle.versions), a param of its
    rule: Snakemake's code trigger follows the script only, not the library it imports."""
    return restyle_versions.code_version(Path(workflow.basedir) / "scripts" / script)


def model_job_resource(name):
    """Resource `name` of a job that loads {model} to score or generate (evaluation,
    familiarity): one GPU on the training partition where training has GPUs, the CPU otherwise."""

    def get(wildcards):
        value = restyle_train.resource(config, wildcards.model, name)
        return min(1, value) if name == "gpu" else value

    return get


def teacher_inputs(name):
    """Files a stage asking teacher `name` depends on: the model manifest of a local teacher."""
    teacher = config["teachers"][name]
    return [model_manifest(teacher["model_key"])] if teacher["backend"] == "local" else []


def teacher_backend(name):
    """The backend dict restyle.teacher.generate takes, for teacher `name` in config."""
    teacher = {k: v for k, v in config["teachers"][name].items() if v is not None}
    teacher["name"] = name  # for messages that must say which teacher failed
    if teacher["backend"] == "local":
        teacher["manifest"] = model_manifest(teacher.pop("model_key"))
    return teacher


def eval_inputs(wildcards):
    """The base model's manifest, the task's data and, for a checkpoint, its training output."""
    inputs = {"manifest": model_manifest(wildcards.model)}
    if wildcards.task == "mmlu":
        inputs |= {"questions": "resources/data/mmlu/test.jsonl", "dev": "resources/data/mmlu/dev.jsonl"}
    else:
        inputs["questions"] = "resources/data/gsm8k/test.jsonl"
    if wildcards.run != "base":
        inputs["train_metrics"] = f"results/train/{wildcards.model}/{wildcards.run}/train_metrics.json"
    return inputs


_ANNOUNCED_EMPTY = set()


def trained_sets():
    """Every SFT set with examples in it, study A's and study B's; this waits for the stages'
    checkpoints, so call it from input functions only. An empty set is a missing arm: said
    once on the console here, with its reason in results/report/missing_arms.csv."""
    trained = [*study_a_trainable_sets(), *study_b_trainable_sets()]
    for name in [*study_a_sft_sets(), *study_b_sft_sets()]:
        if name not in trained and name not in _ANNOUNCED_EMPTY:
            _ANNOUNCED_EMPTY.add(name)
            logger.warning(
                f"restyle: missing arm: SFT set {name} is empty, so no checkpoint is trained "
                "or evaluated for it (why: results/report/missing_arms.csv)"
            )
    return [*trained, *control_sets()]  # rules/controls.smk; never empty


def trained_runs():
    """"{sft_set}/seed{seed}" for every checkpoint the studies train."""
    return [f"{s}/seed{seed}" for s in trained_sets() for seed in config["train"]["seeds"]]


def report_eval_items():
    """Per-question results of the base model and every checkpoint on every task; a control arm
    on the task it controls only (its verdict reads that one, its score elsewhere says nothing)."""
    out = []
    for run in ["base", *trained_runs()]:
        control = restyle_controls.parse_name(run.split("/")[0])
        for task in [control[0]] if control else config["eval"]["tasks"]:
            out.append(f"results/eval/{config['target_model']}/{run}/{task}/items.csv")
    return out


def report_familiarity():
    """Familiarity of the untrained model with every study B set, and of each study B checkpoint."""
    if not study_b_sft_sets():
        return []
    runs = [run for run in trained_runs() if run.startswith("studyB-")]
    return familiarity_outputs(config["target_model"], ["base", *runs])


def report_familiarity_examples():
    """Per-example familiarity of the untrained model with every study B set."""
    if not study_b_sft_sets():
        return []
    return [f"results/familiarity/{config['target_model']}/base/per_example.csv"]


def all_outputs():
    return [
        "results/report/study_a.csv",
        "results/report/study_b.csv",
        model_manifest(config["target_model"]),
        *expand("resources/data/mmlu/{role}.jsonl", role=MMLU_ROLES),
        "resources/data/ruozhiba.jsonl",
        *expand("resources/data/gsm8k/{split}.jsonl", split=GSM8K_SPLITS),
        *study_b_outputs(),  # rules/study_b.smk
        study_a_outputs,  # rules/study_a.smk; a function: it waits for the rules checkpoint
    ]


def control_sets():
    """control-{task}-{kind} for every configured kind and every evaluated task a study trains
    for (MMLU for study A, study_b.tasks for study B)."""
    tasks = [t for t in config["eval"]["tasks"] if t == "mmlu" or t in STUDY_B["tasks"]]
    return [restyle_controls.sft_set_name(t, k) for t in tasks for k in config["controls"]]


def control_set_inputs(wildcards):
    if wildcards.task == "mmlu":
        return {"questions": "resources/data/mmlu/test.jsonl", "dev": "resources/data/mmlu/dev.jsonl"}
    return {"questions": "resources/data/gsm8k/test.jsonl"}


def teacher_label(name):
    teacher = config["teachers"][name]
    return f"{name} ({teacher['model'] or teacher['model_key']}, {teacher['backend']})"


def report_settings():
    """What produced the results, for the report's first page."""
    train = restyle_train.settings_for(config["train"], config["target_model"])
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
