from restyle import logs
from restyle.data import gsm8k
from restyle.io import write_jsonl

log = logs.to_file(snakemake.log[0], snakemake.rule)
for split, items in gsm8k.prepare(snakemake.params.cfg).items():
    log.info("%s: %d problems", split, write_jsonl(snakemake.output[split], items))
