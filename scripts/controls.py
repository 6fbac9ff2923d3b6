from restyle import controls, logs
from restyle.io import read_jsonl, write_jsonl
from restyle.records import MathItem, MCItem

log = logs.to_file(snakemake.log[0], snakemake.rule)
wc, cfg = snakemake.wildcards, snakemake.params.cfg
if wc.task == "mmlu":
    records = controls.mmlu_set(wc.kind, read_jsonl(snakemake.input.questions, MCItem.from_dict),
                                read_jsonl(snakemake.input.dev, MCItem.from_dict), cfg["k_shot"])
else:
    records = controls.gsm8k_set(wc.kind, read_jsonl(snakemake.input.questions,
                                                     MathItem.from_dict), cfg["instruction"])
n = write_jsonl(snakemake.output[0], records)
log.info("%s: %d examples (%s control: %s)", snakemake.output[0], n, wc.kind,
         controls.EXPECTED[wc.kind])
