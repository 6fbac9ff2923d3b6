import pandas as pd

from restyle import logs
from restyle.study_a.rewrite import STATS_FIELDS

log = logs.to_file(snakemake.log[0], snakemake.rule)
# no set when study A is off (study_a.enabled: false): the table is empty, with its header
table = pd.concat([pd.DataFrame(columns=STATS_FIELDS), *(
    pd.read_csv(path, keep_default_na=False) for path in snakemake.input.stats)],
    ignore_index=True)
table.to_csv(snakemake.output[0], index=False)
overall = table[table.subject == "all"]
for row in overall.itertuples():
    log.info("%s: kept %d of %d", row.sft_set, row.kept, row.total)
