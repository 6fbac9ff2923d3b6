# Input functions of training (rules/train.smk includes this file).
from snakemake.logging import logger

from restyle import sizing as restyle_sizing

_ANNOUNCED_EMPTY = set()


def trained_sets(target):
    """Every SFT set with examples in it that `target` trains on: study A's, the shared study B
    sets and its own; this waits for the stages' checkpoints, so call it from input functions
    only. An empty set is a missing arm: said once on the console here, with its reason in
    results/report/missing_arms.csv."""
    trained = [*study_a_trainable_sets(), *study_b_trainable_sets(target)]
    for name in [*study_a_sft_sets(), *study_b_sft_sets(target)]:
        if name not in trained and name not in _ANNOUNCED_EMPTY:
            _ANNOUNCED_EMPTY.add(name)
            logger.warning(
                f"restyle: missing arm: SFT set {name} is empty, so no checkpoint is trained "
                "or evaluated for it (why: results/report/missing_arms.csv)"
            )
    return [*trained, *control_sets()]  # rules/controls.smk; never empty


def trained_runs(target):
    """The run name (restyle.runs) of every checkpoint the studies train for `target`."""
    seeds = config["train"]["seeds"]
    return [restyle_runs.run_name(s, seed) for s in trained_sets(target) for seed in seeds]


def train_runtime(wildcards, input):
    """sbatch -t of a train job (minutes): config train.resources.runtime, or for `auto` sized
    from its SFT set (restyle.sizing.train_runtime). Snakemake evaluates it when the job is ready
    to submit; before the set exists a dry run shows <TBD>."""
    settings = restyle_config.settings_for(config["train"], wildcards.model)
    if settings["resources"]["runtime"] != "auto":
        return settings["resources"]["runtime"]
    return restyle_sizing.train_runtime(input.sft, input.manifest,
                                        restyle_sizing.Settings.of(settings), wildcards.model)
