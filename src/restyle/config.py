"""Config checks with messages that name the key to fix, and the parse-time helpers that read
config `train` for the rules (`settings_for`, `resource`, `threads`).

`snakemake.utils.validate` fills in defaults but reports an error with the whole schema dumped
after it; `check` runs first and says, one line per problem, which key is wrong and why.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import jsonschema
import yaml

from restyle.teacher import backends


class ConfigError(ValueError):
    pass


def _key(path) -> str:
    return ".".join(str(p) for p in path) or "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hint = f" (allowed: {', '.join(allowed)})" if allowed else ""
        return "; ".join(f"config {_key([*error.path, k])}: unknown key{hint}" for k in extra)
    return f"config {_key(error.path)}: {error.message}"


def _train_per_model(config: dict, schema: dict, models) -> list[str]:
    """Each `train.per_model.{model}` entry names a model and holds valid `train` keys."""
    train = config.get("train")
    per_model = train.get("per_model") if isinstance(train, dict) else None
    if not isinstance(per_model, dict):
        return []
    sub = dict(schema["properties"]["train"])
    sub["properties"] = {k: v for k, v in sub["properties"].items() if k not in ("seeds", "per_model")}
    validator = jsonschema.validators.validator_for(schema)(sub)
    problems = []
    for model, override in per_model.items():
        if isinstance(models, dict) and model not in models:
            problems.append(f"config train.per_model.{model}: not a key of models "
                            f"(known: {', '.join(models)})")
        for e in sorted(validator.iter_errors(override), key=lambda e: list(e.path)):
            e.path.extendleft(reversed(["train", "per_model", model]))
            problems.append(_describe(e))
    return problems


def _with_backend_names(schema: dict) -> dict:
    """The schema with the teacher backends' names (restyle.teacher.backends) as the enum of
    `teachers.{name}.backend`, from the registry (the schema file has none)."""
    teacher = schema["properties"]["teachers"]["additionalProperties"]["properties"]
    teacher["backend"]["enum"] = list(backends.NAMES)
    return schema


def _teacher_keys(config: dict, schema: dict) -> list[str]:
    """Each stage's teacher, given or the schema's default, is a key of `teachers`."""
    teachers = config.get("teachers") or schema["properties"]["teachers"]["default"]
    if not isinstance(teachers, dict):
        return []
    problems = []
    for study in ("study_a", "study_b"):
        section = config.get(study) or {}
        name = (section.get("teacher", schema["properties"][study]["properties"]["teacher"]["default"])
                if isinstance(section, dict) else None)
        if isinstance(name, str) and name not in teachers:  # else the schema said what is wrong
            problems.append(f"config {study}.teacher: '{name}' is not a key of teachers "
                            f"(known: {', '.join(teachers)})")
    return problems


# former keys -> the message naming what replaced them
_RENAMED = {
    ("target_model",): lambda old: f"config target_model: replaced by target_models, a list "
                                   f"(target_models: [{old}])",
    ("study_b", "target_teacher"): lambda old: (
        f"config study_b.target_teacher: replaced by study_b.target_teachers, a map from each "
        f"model to the teacher serving it (target_teachers: {{<model>: {old}}})"),
}


def _renamed(config: dict) -> tuple[dict, list[str]]:
    """The config without former keys, and a message naming the new key for each."""
    config, problems = copy.deepcopy(config), []
    for path, message in _RENAMED.items():
        section = config
        for key in path[:-1]:
            section = section.get(key) if isinstance(section, dict) else None
        if isinstance(section, dict) and path[-1] in section:
            problems.append(message(section.pop(path[-1])))
    return config, problems


def runs_a_model(teacher: dict) -> bool:
    """Whether a teacher config's backend runs a model of `models` (its `model_key`)."""
    backend = backends.find(teacher.get("backend"))
    return backend is not None and backend.needs_model


def check(config: dict, schema_path: str | Path,
          names: Sequence[Callable[[dict], None]] = (),
          checks: Sequence[Callable[[dict, dict, dict], list[str]]] = ()) -> None:
    """Raise ConfigError listing every schema violation and cross-key inconsistency. The stages
    add theirs (restyle.checks, which calls this): `names` fill the schema's enums in place,
    each of `checks` (config, schema, models) returns its problems."""
    schema = _with_backend_names(yaml.safe_load(Path(schema_path).read_text()))
    for fill in names:
        fill(schema)
    validator = jsonschema.validators.validator_for(schema)(schema)
    config, problems = _renamed(config)
    problems += [_describe(e) for e in sorted(validator.iter_errors(config), key=lambda e: list(e.path))]
    models = config.get("models") or {"smollm2-135m": None}
    for name, teacher in (config.get("teachers") or {}).items():
        if not isinstance(teacher, dict) or not isinstance(models, dict):
            continue
        if runs_a_model(teacher) and teacher.get("model_key") not in models:
            problems.append(f"config teachers.{name}.model_key: '{teacher.get('model_key')}' is "
                            f"not a key of models (known: {', '.join(models)})")
        backend = backends.find(teacher.get("backend"))
        if backend is not None and backend.requires_model and not teacher.get("model"):
            problems.append(f"config teachers.{name}.model: required for the {backend.name} "
                            f"backend")
    problems += _train_per_model(config, schema, models)
    problems += _teacher_keys(config, schema)
    if isinstance(models, dict):
        for stage_check in checks:
            problems += stage_check(config, schema, models)
    if problems:
        raise ConfigError("invalid config:\n  " + "\n  ".join(problems))


# Keys of config `train` and `train.resources` that say only how a job is scheduled and sized:
# left out of rule train's params (`training_settings`), so changing them reruns no training
SIZING = ("expected_mfu",)
SCHEDULING = ("cpus_per_gpu", "mem_mb", "runtime", "runtime_margin", "startup_s", "max_runtime",
              "device", "stop_before_end", "slurm_partition", "slurm_account", "slurm_extra")


def training_settings(train_cfg: dict, model: str) -> dict:
    """`settings_for` without the SIZING and SCHEDULING keys: what rule train computes from
    (its params, and train_metrics.json's `settings`)."""
    settings = {k: v for k, v in settings_for(train_cfg, model).items() if k not in SIZING}
    settings["resources"] = {k: v for k, v in settings["resources"].items()
                             if k not in SCHEDULING}
    return settings


def settings_for(train_cfg: dict, model: str) -> dict:
    """Config `train` with `train.per_model.{model}` merged over it (nested dicts key by key);
    `per_model` and `seeds` removed."""
    base = {k: copy.deepcopy(v) for k, v in train_cfg.items() if k not in ("per_model", "seeds")}
    override = (train_cfg.get("per_model") or {}).get(model) or {}
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **copy.deepcopy(value)}
        else:
            base[key] = copy.deepcopy(value)
    return base


def default_settings(config_file: str | os.PathLike, schema_file: str | os.PathLike) -> dict:
    """Config `train` of a config file with the schema's defaults filled in, as rule train sees
    it, resolved for the file's first target model (tests and benchmarks start from it). Only the
    `train` section is checked: the others are not this function's business."""
    import tempfile

    from snakemake.utils import validate

    config = yaml.safe_load(Path(config_file).read_text())
    schema = yaml.safe_load(Path(schema_file).read_text())
    train = {"train": config["train"]}
    with tempfile.TemporaryDirectory() as tmp:
        sub = Path(tmp) / "schema.yaml"
        sub.write_text(yaml.safe_dump({**schema,
                                       "properties": {"train": schema["properties"]["train"]}}))
        validate(train, str(sub))  # fills in the defaults
    return settings_for(train["train"], config["target_models"][0])


def resource(config: dict, model: str, name: str):
    """Rule train's resource `name` for `model` (config train.resources, per model); None (unset)
    leaves the resource out of the job, so the SLURM executor plugin adds no flag for it.

    On more than one node the GPUs are asked for per node, as `gres` gpu:N (sbatch --gres counts
    per node; the plugin's `gpu` becomes --gpus, the job's total, which SLURM may spread unevenly
    over the nodes), and a CPU job gets a task per node (the plugin asks for --ntasks=1
    otherwise, which cannot span two nodes).

    The one route of the resources to a train job: config, resolved here at parse time. Its
    launcher (scripts/train.py) takes GPUs per node and nodes from its params `settings`
    (`training_settings`, of the same `settings_for`), its cores from `threads`, and the
    scheduling-only stop_before_end from this function."""
    res = settings_for(config["train"], model)["resources"]
    several = res["nodes"] > 1
    if name == "gpu":
        return None if several else res["gpu"]
    if name == "gres":
        return f"gpu:{res['gpu']}" if several and res["gpu"] > 0 else None
    if name == "tasks":
        return res["nodes"] if several and res["gpu"] == 0 else None
    return res[name]


def threads(config: dict, model: str) -> int:
    """CPU cores of a training job, per node: cpus_per_gpu per GPU, or cpus_per_gpu on CPU."""
    res = settings_for(config["train"], model)["resources"]
    return max(1, res["gpu"]) * res["cpus_per_gpu"]
