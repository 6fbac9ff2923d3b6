from restyle import logs
from restyle.io import read_jsonl, write_jsonl
from restyle.records import MCItem
from restyle.study_a import rewrite

log = logs.to_file(snakemake.log[0], snakemake.rule)
items = rewrite.select_items(read_jsonl(snakemake.input.mmlu, MCItem.from_dict),
                             snakemake.params.items_per_set)
n = write_jsonl(snakemake.output.sft, rewrite.original_set(snakemake.params.sft_set, items))
rewrite.write_stats(snakemake.output.stats,
                    rewrite.stats_rows(snakemake.params.sft_set, None, items, []))
log.info("%s: %d items", snakemake.output.sft, n)
