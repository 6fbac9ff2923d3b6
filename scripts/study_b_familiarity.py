import torch

from restyle import logs, models
from restyle.io import read_jsonl, write_csv
from restyle.records import SFTRecord
from restyle.study_b import familiarity

log = logs.to_file(snakemake.log[0], snakemake.rule)
torch.set_num_threads(snakemake.threads)  # the cores Snakemake gave this job
cfg, params = snakemake.params.cfg, snakemake.params
sets = {name: read_jsonl(path, SFTRecord.from_dict)
        for name, path in zip(params.names, snakemake.input.sets)}
model, tokenizer = models.load_checkpoint(snakemake.input.manifest, params.adapter)
log.info("scoring %d sets with %s (run %s, adapter %s)", len(sets), snakemake.wildcards.model,
         params.run, params.adapter)
per_example, summary = familiarity.score_sets(
    model, tokenizer, sets, snakemake.wildcards.model, params.run, batch_size=cfg["batch_size"],
    max_length=cfg["max_length"], max_batch_tokens=cfg["max_batch_tokens"])
write_csv(snakemake.output.per_example, per_example, familiarity.PER_EXAMPLE_COLUMNS)
write_csv(snakemake.output.summary, summary, familiarity.SUMMARY_COLUMNS)
