import pandas as pd

from restyle import logs

log = logs.to_file(snakemake.log[0], snakemake.rule)
table = pd.concat([pd.read_csv(path, keep_default_na=False) for path in snakemake.input.stats],
                  ignore_index=True)
table.to_csv(snakemake.output[0], index=False)
overall = table[table.subject == "all"]
for row in overall.itertuples():
    log.info("%s: kept %d of %d", row.sft_set, row.kept, row.total)
