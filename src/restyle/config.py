"""Config checks with messages that name the key to fix, and the parse-time helpers that read
config `train` for the rules (`settings_for`, `resource`, `threads`).

`snakemake.utils.validate` fills in defaults but reports an error with the whole schema dumped
after it; `check` runs first and says, one line per problem, which key is wrong and why.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import jsonschema
import yaml

from restyle import study_a, study_b, tasks
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


def _devices(config: dict) -> list[str]:
    """`train.resources.device`, also per model, is a GPU whose peak restyle knows."""
    from restyle.train import DEVICE_PEAK_FLOPS, device_peak_flops

    train = config.get("train") if isinstance(config.get("train"), dict) else {}
    places = {"train.resources.device": train.get("resources")}
    for model, override in (train.get("per_model") or {}).items():
        if isinstance(override, dict):
            places[f"train.per_model.{model}.resources.device"] = override.get("resources")
    return [f"config {key}: '{res['device']}' is not a GPU restyle knows the peak FLOP/s of "
            f"(known: {', '.join(name for name, _ in DEVICE_PEAK_FLOPS)})"
            for key, res in places.items() if isinstance(res, dict)
            and isinstance(res.get("device"), str) and device_peak_flops(res["device"]) is None]


def _with_study_names(schema: dict) -> dict:
    """The schema with study A's baseline, the task names (restyle.tasks) and study B's variant
    names as enums, from the one list of each (the schema file has none)."""
    schema["properties"]["study_a"]["properties"]["baselines"]["items"]["enum"] = list(
        study_a.BASELINES)
    schema["properties"]["eval"]["properties"]["tasks"]["items"]["enum"] = list(tasks.NAMES)
    keys = schema["properties"]["study_b"]["properties"]
    keys["tasks"]["items"]["enum"] = list(tasks.NAMES)
    keys["variants"]["items"]["enum"] = list(study_b.VARIANTS)
    keys["ppl_split_of"]["enum"] = [v for v, t in study_b.VARIANTS.items()
                                    if t.filter != "ppl_split"]
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


def _study_b_view(config: dict, schema: dict) -> tuple[dict, list, dict, list[str], list]:
    """Config study_b over the schema's defaults, the target models, the teachers, the written
    variants made (restyle.study_b.WRITTEN_VARIANTS, the source of low_ppl/high_ppl included)
    and their writers: what the checks below and `add_own_teachers` read before validation."""
    defaults = {k: v.get("default") for k, v in schema["properties"]["study_b"]["properties"].items()}
    section = config.get("study_b")
    cfg = {**defaults, **(section if isinstance(section, dict) else {})}
    targets = config.get("target_models", schema["properties"]["target_models"]["default"])
    targets = targets if isinstance(targets, list) else []
    teachers = config.get("teachers") or schema["properties"]["teachers"]["default"]
    variants = cfg["variants"] if isinstance(cfg["variants"], list) else []
    if set(variants) & set(study_b.PPL_SPLITS):
        variants = [*variants, cfg["ppl_split_of"]]  # its source set is made too
    written = list(dict.fromkeys(v for v in variants if v in study_b.WRITTEN_VARIANTS))
    writers = cfg["writers"] if isinstance(cfg["writers"], list) else targets
    return cfg, targets, teachers, written if cfg["tasks"] else [], writers


def _study_b_models(config: dict, schema: dict, models: dict) -> list[str]:
    """Target models and writers are keys of `models`; a teacher study_b.target_teachers names
    for a writer exists and runs that model."""
    cfg, targets, teachers, written, writers = _study_b_view(config, schema)
    problems = []
    for key, names in (("target_models", targets), ("study_b.writers", cfg["writers"])):
        for name in names if isinstance(names, list) else []:
            if name not in models:
                problems.append(f"config {key}: '{name}' is not a key of models "
                                f"(known: {', '.join(models)})")
    split = cfg["ppl_split_of"]
    if split in written and set(cfg["variants"] or []) & set(study_b.PPL_SPLITS):
        problems += [f"config study_b.ppl_split_of: {split} halves each target's own set, but "
                     f"target {t} is not in study_b.writers" for t in targets if t not in writers]
    serving = cfg["target_teachers"] if isinstance(cfg["target_teachers"], dict) else {}
    # only the writers' entries: one for a model that writes nothing is unused (a default)
    for model in writers if written else []:
        key, name = f"config study_b.target_teachers.{model}", serving.get(model)
        if name is None or model not in models:
            continue  # add_own_teachers gives it a local teacher of itself
        if not isinstance(teachers.get(name), dict):
            problems.append(f"{key}: '{name}' is not a key of teachers "
                            f"(known: {', '.join(teachers)})")
        elif _runs_a_model(teachers[name]) and teachers[name].get("model_key") != model:
            problems.append(f"{key}: teacher '{name}' runs model "
                            f"'{teachers[name].get('model_key')}', not '{model}'")
    return problems


def _runs_a_model(teacher: dict) -> bool:
    """Whether a teacher config's backend runs a model of `models` (its `model_key`)."""
    backend = backends.find(teacher.get("backend"))
    return backend is not None and backend.needs_model


OWN_TEACHER = "self:{model}"  # the teachers key of a writer's own local teacher


def add_own_teachers(config: dict, schema_path: str | Path) -> None:
    """Give every writer of a written study B variant that study_b.target_teachers leaves out a
    local teacher of itself, `teachers.self:{model}` (in process, the schema's defaults), and map
    it there: a model writes its own sets unless config names a server of it. Call it after
    `check` and before validation (which fills in the new entries' defaults)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    _, _, teachers, written, writers = _study_b_view(config, schema)
    serving = config.setdefault("study_b", {}).setdefault(
        "target_teachers", dict(schema["properties"]["study_b"]["properties"]["target_teachers"]
                                ["default"]))
    missing = [m for m in writers if m not in serving] if written else []
    if missing and "teachers" not in config:
        config["teachers"] = copy.deepcopy(teachers)
    for model in missing:
        name = OWN_TEACHER.format(model=model)
        config["teachers"][name] = {"backend": backends.OWN_MODEL, "model_key": model}
        serving[model] = name


def check(config: dict, schema_path: str | Path) -> None:
    """Raise ConfigError listing every schema violation and cross-key inconsistency."""
    schema = _with_study_names(yaml.safe_load(Path(schema_path).read_text()))
    validator = jsonschema.validators.validator_for(schema)(schema)
    config, problems = _renamed(config)
    problems += [_describe(e) for e in sorted(validator.iter_errors(config), key=lambda e: list(e.path))]
    models = config.get("models") or {"smollm2-135m": None}
    for name, teacher in (config.get("teachers") or {}).items():
        if not isinstance(teacher, dict) or not isinstance(models, dict):
            continue
        if _runs_a_model(teacher) and teacher.get("model_key") not in models:
            problems.append(f"config teachers.{name}.model_key: '{teacher.get('model_key')}' is "
                            f"not a key of models (known: {', '.join(models)})")
        backend = backends.find(teacher.get("backend"))
        if backend is not None and backend.requires_model and not teacher.get("model"):
            problems.append(f"config teachers.{name}.model: required for the {backend.name} "
                            f"backend")
    problems += _train_per_model(config, schema, models)
    problems += _devices(config)
    problems += _teacher_keys(config, schema)
    if isinstance(models, dict):
        problems += _study_b_models(config, schema, models)
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
