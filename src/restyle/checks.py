"""The whole config check: restyle.config's (the schema, with each key named; per-model training
keys; teacher keys) and every stage's own, with the names each stage knows filled into the
schema's enums. rules/common.smk, the estimate and the tests call `check`; this is the one
module that knows every stage, so that the shared ones (restyle.config) import none.
"""

from __future__ import annotations

from pathlib import Path

from restyle import config, study_a, tasks
from restyle.study_b import checks as study_b_checks

ConfigError = config.ConfigError
add_own_teachers = study_b_checks.add_own_teachers


def check(cfg: dict, schema_path: str | Path) -> None:
    """Raise ConfigError listing every schema violation and cross-key inconsistency."""
    config.check(cfg, schema_path, names=[_task_names, study_a.schema_names,
                                          study_b_checks.schema_names],
                 checks=[_devices, _paper_data, _release, study_b_checks.problems])


def _task_names(schema: dict) -> None:
    """The task names (restyle.tasks) as the schema's enums (the file has none)."""
    schema["properties"]["eval"]["properties"]["tasks"]["items"]["enum"] = list(tasks.NAMES)
    schema["properties"]["study_b"]["properties"]["tasks"]["items"]["enum"] = list(tasks.NAMES)


def _section(cfg: dict, schema: dict, *path: str):
    """Config key `path` (a.b.c), or the schema's default where config leaves it out."""
    value, props = cfg, schema
    for key in path:
        props = props["properties"][key]
        value = value.get(key, props.get("default")) if isinstance(value, dict) else None
    return value


def _paper_data(cfg: dict, schema: dict, models: dict) -> list[str]:
    """`paper_scale: true` (config/paper.yaml) claims the papers' data: no task that a stage
    reads may come from a stand-in source (restyle.tasks.Task.stand_in_sources). A task's
    section is its `config_key`: one for the folds of a benchmark."""
    if _section(cfg, schema, "paper_scale") is not True:
        return []
    used = {study_a.TASK}
    for path in (("study_b", "tasks"), ("eval", "tasks")):
        names = _section(cfg, schema, *path)
        used |= set(names) if isinstance(names, list) else set()
    problems = []
    for name in dict.fromkeys(tasks.REGISTRY[n].config_key for n in tasks.NAMES if n in used):
        source = _section(cfg, schema, "data", name, "source")
        stand_ins = tasks.REGISTRY[name].stand_in_sources
        if source in stand_ins:
            enum = schema["properties"]["data"]["properties"][name]["properties"]["source"]["enum"]
            real = ", ".join(s for s in enum if s not in stand_ins)
            problems.append(f"config data.{name}.source: '{source}' reads {stand_ins[source]}, "
                            f"not {name}'s real data, and paper_scale is true (the run claims "
                            f"the papers' setup): set it to {real}, or paper_scale: false")
    return problems


def _release(cfg: dict, schema: dict, models: dict) -> list[str]:
    """A task read from study B's release needs `release_dir`; the release's prompt format
    (`data.{task}.prompt: release`) needs that source, and its questions carry the paper's
    instruction, so no other is appended (study_b.instructions / eval.{task}.instruction "")."""
    problems = []
    for name in dict.fromkeys(tasks.REGISTRY[n].config_key for n in tasks.NAMES):
        props = schema["properties"]["data"]["properties"][name]["properties"]
        if "prompt" not in props:
            continue
        source = _section(cfg, schema, "data", name, "source")
        prompt = _section(cfg, schema, "data", name, "prompt")
        if source == "release" and not _section(cfg, schema, "release_dir"):
            problems.append(f"config release_dir: data.{name}.source is release, so it must name "
                            "a clone of study B's release")
        if prompt != "release":
            continue
        if source != "release":
            problems.append(f"config data.{name}.prompt: release is the release's own format of "
                            f"its own questions; set data.{name}.source: release too")
        for key in (("study_b", "instructions", name), ("eval", name, "instruction")):
            if _section(cfg, schema, *key):
                problems.append(f"config {'.'.join(key)}: must be \"\" with data.{name}.prompt: "
                                "release (the release's questions carry the paper's instruction)")
    return problems


def _devices(cfg: dict, schema: dict, models: dict) -> list[str]:
    """`train.resources.device`, also per model, is a GPU whose peak restyle knows."""
    from restyle.train import DEVICE_PEAK_FLOPS, device_peak_flops

    train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    places = {"train.resources.device": train.get("resources")}
    for model, override in (train.get("per_model") or {}).items():
        if isinstance(override, dict):
            places[f"train.per_model.{model}.resources.device"] = override.get("resources")
    return [f"config {key}: '{res['device']}' is not a GPU restyle knows the peak FLOP/s of "
            f"(known: {', '.join(name for name, _ in DEVICE_PEAK_FLOPS)})"
            for key, res in places.items() if isinstance(res, dict)
            and isinstance(res.get("device"), str) and device_peak_flops(res["device"]) is None]
