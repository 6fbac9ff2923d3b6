import pandas as pd

from restyle import logs
from restyle.io import atomic_path

log = logs.to_file(snakemake.log[0], snakemake.rule)
table = pd.concat([pd.read_csv(p) for p in snakemake.input], ignore_index=True)
with atomic_path(snakemake.output[0]) as tmp:
    table.to_csv(tmp, index=False)
log.info("\n%s", table[["sft_set", "questions", "kept", "dropped"]].to_string(index=False))
