from restyle import logs
from restyle.data import ruozhiba
from restyle.io import write_jsonl

log = logs.to_file(snakemake.log[0], snakemake.rule)
n = write_jsonl(snakemake.output[0], ruozhiba.prepare(snakemake.params.cfg))
log.info("%s: %d questions", snakemake.output[0], n)
