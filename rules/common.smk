import re
import sys
from pathlib import Path

from snakemake.utils import validate

# The Snakefile imports restyle from this checkout even where snakemake runs from an
# environment without it; jobs get it from the project venv or envs/restyle.post-deploy.sh.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from restyle import config as restyle_config
from restyle import runs as restyle_runs
from restyle import versions as restyle_versions
from restyle.config import check

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
        value = restyle_config.resource(config, wildcards.model, name)
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
