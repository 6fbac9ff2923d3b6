import os
import re
import sys
from pathlib import Path

from snakemake.utils import validate

# The Snakefile imports restyle from this checkout even where snakemake runs from an
# environment without it; jobs get it from the project venv or envs/restyle.post-deploy.sh.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from restyle import config as restyle_config
from restyle.data import release as restyle_release
from restyle import runs as restyle_runs
from restyle import sandbox as restyle_sandbox
from restyle import study_a as restyle_study_a
from restyle import tasks as restyle_tasks
from restyle import versions as restyle_versions
from restyle.teacher import backends as restyle_backends
from restyle.checks import add_own_teachers, check

# check() names each wrong key in one line; validate() then fills in the schema's defaults,
# those of the local teachers add_own_teachers gives the writers with no teacher named included.
check(config, workflow.source_path("../config/schema.yaml"))
add_own_teachers(config, workflow.source_path("../config/schema.yaml"))
validate(config, "../config/schema.yaml")
# The code sandbox redacts these variables' values (the teachers' API keys) from what the
# programs it runs print (restyle.sandbox); every job started from here inherits the names.
os.environ[restyle_sandbox.SECRET_NAMES_ENV] = ",".join(restyle_sandbox.secret_names(config))


wildcard_constraints:
    model="|".join(map(re.escape, config["models"])),


def model_manifest(name):
    return f"resources/models/{name}/manifest.json"


def code_version(script, task=None):
    """The version of the restyle code scripts/`script` runs (restyle.versions), a param of its
    rule: Snakemake's code trigger follows the script only, not the library it imports. A job
    of one task (restyle.tasks) counts that task's module only."""
    return restyle_versions.code_version(Path(workflow.basedir) / "scripts" / script, task)


def used_tasks():
    """Every task a configured stage reads: study A's, study B's and the evaluated ones."""
    study_a = [restyle_study_a.TASK] if config["study_a"]["enabled"] else []
    named = [*study_a, *config["study_b"]["tasks"], *config["eval"]["tasks"]]
    return [name for name in restyle_tasks.NAMES if name in named]


def task_eval_data(name):
    """What a task is evaluated on (evaluation, control arms): its test split, and the k-shot
    examples of a task that has a dev split."""
    task = restyle_tasks.get(name)
    return {"questions": task.path("test")} | ({"dev": task.path("dev")} if "dev" in task.splits else {})


def model_job_resource(name):
    """Resource `name` of a job that loads {model} to score or generate (evaluation,
    familiarity): one GPU on the training partition where training has GPUs, the CPU otherwise."""

    def get(wildcards):
        value = restyle_config.resource(config, wildcards.model, name)
        return min(1, value) if name == "gpu" else value

    return get


def teacher_inputs(name):
    """Files a stage asking teacher `name` depends on: the model manifest of a teacher whose
    backend runs a model of `models` (a local one)."""
    teacher = config["teachers"][name]
    runs_a_model = restyle_backends.get(teacher["backend"]).needs_model
    return [model_manifest(teacher["model_key"])] if runs_a_model else []


def teacher_backend(name):
    """The backend dict restyle.teacher.generate takes, for teacher `name` in config."""
    teacher = {k: v for k, v in config["teachers"][name].items() if v is not None}
    teacher["name"] = name  # for messages that must say which teacher failed
    if restyle_backends.get(teacher["backend"]).needs_model:
        teacher["manifest"] = model_manifest(teacher.pop("model_key"))
    return teacher
