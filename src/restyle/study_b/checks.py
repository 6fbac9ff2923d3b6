"""Study B's config checks (restyle.checks runs them with restyle.config's) and the local teacher
each writer of a written variant gets when config names none (`add_own_teachers`)."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from restyle import tasks
from restyle.config import runs_a_model
from restyle.study_b import PER_MODEL, PPL_SPLITS, VARIANTS, WRITTEN_VARIANTS, parse_label
from restyle.teacher import backends


def schema_names(schema: dict) -> None:
    """Study B's variant names as the schema's enums, from the one table (the file has none)."""
    keys = schema["properties"]["study_b"]["properties"]
    keys["variants"]["items"]["enum"] = list(VARIANTS)
    keys["ppl_split_of"]["enum"] = [v for v, t in VARIANTS.items() if t.filter != "ppl_split"]


def _view(config: dict, schema: dict) -> tuple[dict, list, dict, list[str], list]:
    """Config study_b over the schema's defaults, the target models, the teachers, the written
    variants made (restyle.WRITTEN_VARIANTS, the source of low_ppl/high_ppl included)
    and their writers: what `problems` and `add_own_teachers` read before validation."""
    defaults = {k: v.get("default") for k, v in schema["properties"]["study_b"]["properties"].items()}
    section = config.get("study_b")
    cfg = {**defaults, **(section if isinstance(section, dict) else {})}
    targets = config.get("target_models", schema["properties"]["target_models"]["default"])
    targets = targets if isinstance(targets, list) else []
    teachers = config.get("teachers") or schema["properties"]["teachers"]["default"]
    variants = cfg["variants"] if isinstance(cfg["variants"], list) else []
    if set(variants) & set(PPL_SPLITS):
        variants = [*variants, cfg["ppl_split_of"]]  # its source set is made too
    written = list(dict.fromkeys(v for v in variants if v in WRITTEN_VARIANTS))
    writers = cfg["writers"] if isinstance(cfg["writers"], list) else targets
    return cfg, targets, teachers, written if cfg["tasks"] else [], writers


def problems(config: dict, schema: dict, models: dict) -> list[str]:
    """Target models and writers are keys of `models`; a teacher study_b.target_teachers names
    for a writer exists and runs that model."""
    cfg, targets, teachers, written, writers = _view(config, schema)
    problems = []
    for key, names in (("target_models", targets), ("study_b.writers", cfg["writers"])):
        for name in names if isinstance(names, list) else []:
            if name not in models:
                problems.append(f"config {key}: '{name}' is not a key of models "
                                f"(known: {', '.join(models)})")
    split = cfg["ppl_split_of"]
    if split in written and set(cfg["variants"] or []) & set(PPL_SPLITS):
        problems += [f"config study_b.ppl_split_of: {split} halves each target's own set, but "
                     f"target {t} is not in study_b.writers" for t in targets if t not in writers]
    problems += _instructions(config, schema, cfg)
    problems += _release_sets(config, schema, cfg, models)
    serving = cfg["target_teachers"] if isinstance(cfg["target_teachers"], dict) else {}
    # only the writers' entries: one for a model that writes nothing is unused (a default)
    for model in writers if written else []:
        key, name = f"config study_b.target_teachers.{model}", serving.get(model)
        if name is None or model not in models:
            continue  # add_own_teachers gives it a local teacher of itself
        if not isinstance(teachers.get(name), dict):
            problems.append(f"{key}: '{name}' is not a key of teachers "
                            f"(known: {', '.join(teachers)})")
        elif runs_a_model(teachers[name]) and teachers[name].get("model_key") != model:
            problems.append(f"{key}: teacher '{name}' runs model "
                            f"'{teachers[name].get('model_key')}', not '{model}'")
    return problems


def _instructions(config: dict, schema: dict, cfg: dict) -> list[str]:
    """A generation task's study B sets are trained on the user turn its evaluation and control
    arms ask (restyle.tasks.Task.prompt): study_b.instructions.{task} and eval.{task}.instruction
    must be the same text."""
    props = schema["properties"]
    trained = cfg["instructions"] if isinstance(cfg["instructions"], dict) else {}
    evals = config.get("eval") if isinstance(config.get("eval"), dict) else {}
    problems = []
    for name in cfg["tasks"] if isinstance(cfg["tasks"], list) else []:
        task = tasks.REGISTRY.get(name)
        if task is None or task.evaluation != tasks.GENERATE:
            continue  # an unknown task is the schema's error; MMLU is scored by letters
        key = task.config_key  # a task's folds share one section
        section = evals.get(key) if isinstance(evals.get(key), dict) else {}
        asked = section.get("instruction", props["eval"]["properties"][key]["properties"]
                            ["instruction"]["default"])
        taught = trained.get(key, props["study_b"]["properties"]["instructions"]["properties"]
                             [key]["default"])
        if taught != asked:
            problems.append(f"config study_b.instructions.{key}: {taught!r} differs from "
                            f"eval.{key}.instruction {asked!r}; study B's sets must be trained "
                            f"on the prompt the evaluation asks: set both to the same text")
    return problems


def _release_sets(config: dict, schema: dict, cfg: dict, models: dict) -> list[str]:
    """A released set (study_b.release_sets) has a label of a variant a teacher or model writes,
    a model of `models` after the @ of a per-model one, a file name for every study B task, and
    those tasks read the same release (their questions are the rows the set answers)."""
    sets = cfg.get("release_sets")
    if not isinstance(sets, dict) or not sets:
        return []
    problems = []
    names = cfg["tasks"] if isinstance(cfg["tasks"], list) else []
    keys = list(dict.fromkeys(tasks.REGISTRY[n].config_key for n in names if n in tasks.REGISTRY))
    readable = [v for v, t in VARIANTS.items() if t.roles and t.filter == "correct"]
    for set_label, name in sets.items():
        key = f"config study_b.release_sets.{set_label}"
        variant, writer = parse_label(set_label)
        if variant not in readable:
            problems.append(f"{key}: '{variant}' is not a variant a released set can be "
                            f"(one of {', '.join(readable)})")
        elif variant in PER_MODEL and writer not in models:
            problems.append(f"{key}: a {variant} set is one model's own: write "
                            f"{variant}@<a key of models> (known: {', '.join(models)})")
        if isinstance(name, dict):
            problems += [f"{key}: no file name for task {k}" for k in keys if k not in name]
    data = config.get("data") if isinstance(config.get("data"), dict) else {}
    for k in keys:
        section = data.get(k) if isinstance(data.get(k), dict) else {}
        source = section.get("source", schema["properties"]["data"]["properties"][k]
                             ["properties"]["source"]["default"])
        if source != "release":
            problems.append(f"config data.{k}.source: '{source}', but study_b.release_sets reads "
                            f"released answers to the release's own questions: set it to "
                            f"release")
    return problems


OWN_TEACHER = "self:{model}"  # the teachers key of a writer's own local teacher


def add_own_teachers(config: dict, schema_path: str | Path) -> None:
    """Give every writer of a written study B variant that study_b.target_teachers leaves out a
    local teacher of itself, `teachers.self:{model}` (in process, the schema's defaults), and map
    it there: a model writes its own sets unless config names a server of it. Call it after
    `check` and before validation (which fills in the new entries' defaults)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    _, _, teachers, written, writers = _view(config, schema)
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
