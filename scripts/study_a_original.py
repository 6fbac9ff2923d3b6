from restyle import logs
from restyle.study_a import rewrite

log = logs.to_file(snakemake.log[0], snakemake.rule)
n = rewrite.run_original(snakemake.params.sft_set, snakemake.input.mmlu, snakemake.output,
                         snakemake.params.items_per_set)
log.info("%s: %d items", snakemake.output.sft, n)
