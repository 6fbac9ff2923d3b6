# Input functions of the data rules (rules/data.smk includes this file).


def task_data_cfg(task):
    """Config data.{task} and, for a task read from study B's release, `release_dir`."""
    cfg = config["data"][task.config_key]
    if cfg["source"] != "release":
        return cfg
    return {**cfg, "release_dir": config["release_dir"]}


def task_data_inputs(task):
    """The release files a task read from study B's release reads (none for other sources)."""
    cfg = config["data"][task.config_key]
    if cfg["source"] != "release":
        return []
    return restyle_release.files(task, cfg, config["release_dir"])
