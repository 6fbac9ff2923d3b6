from restyle import controls, logs, tasks
from restyle.io import read_jsonl, write_jsonl

log = logs.to_file(snakemake.log[0], snakemake.rule)
wc, cfg = snakemake.wildcards, snakemake.params.cfg
task = tasks.get(wc.task)
items = read_jsonl(snakemake.input.questions, task.record.from_dict)
if task.evaluation == tasks.LOGLIK:
    records = controls.choice_set(task, wc.kind, items,
                                  read_jsonl(snakemake.input.dev, task.record.from_dict),
                                  cfg["k_shot"])
else:
    records = controls.generation_set(task, wc.kind, items, cfg["instruction"])
n = write_jsonl(snakemake.output[0], records)
log.info("%s: %d examples (%s control: %s)", snakemake.output[0], n, wc.kind,
         controls.EXPECTED[wc.kind])
