from pathlib import Path

from restyle import logs, models

log = logs.to_file(snakemake.log[0], snakemake.rule)
models.prepare(snakemake.wildcards.model, snakemake.params.spec,
               Path(snakemake.output[0]).parent, snakemake.params.cache_dir)
