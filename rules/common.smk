import re
import sys
from pathlib import Path

from snakemake.utils import validate

# The Snakefile imports restyle from this checkout even where snakemake runs from an
# environment without it; jobs get it from the project venv or envs/restyle.post-deploy.sh.
sys.path.insert(0, str(Path(workflow.basedir) / "src"))

from restyle.config import check
from restyle.gsm8k import SPLITS as GSM8K_SPLITS
from restyle.mmlu import ROLES as MMLU_ROLES

# check() names each wrong key in one line; validate() then fills in the schema's defaults.
check(config, workflow.source_path("../config/schema.yaml"))
validate(config, "../config/schema.yaml")


wildcard_constraints:
    model="|".join(map(re.escape, config["models"])),


def model_manifest(name):
    return f"resources/models/{name}/manifest.json"


def teacher_inputs(name):
    """Files a stage asking teacher `name` depends on: the model manifest of a local teacher."""
    teacher = config["teachers"][name]
    return [model_manifest(teacher["model_key"])] if teacher["backend"] == "local" else []


def teacher_backend(name):
    """The backend dict restyle.teacher.generate takes, for teacher `name` in config."""
    teacher = {k: v for k, v in config["teachers"][name].items() if v is not None}
    if teacher["backend"] == "local":
        teacher["manifest"] = model_manifest(teacher.pop("model_key"))
    return teacher


def all_outputs():
    return [
        model_manifest(config["target_model"]),
        *expand("resources/data/mmlu/{role}.jsonl", role=MMLU_ROLES),
        "resources/data/ruozhiba.jsonl",
        *expand("resources/data/gsm8k/{split}.jsonl", split=GSM8K_SPLITS),
    ]
