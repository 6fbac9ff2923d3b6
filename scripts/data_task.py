from restyle import logs, tasks
from restyle.io import write_jsonl

log = logs.to_file(snakemake.log[0], snakemake.rule)
task = tasks.get(snakemake.params.task)
for split, items in task.prepare(snakemake.params.cfg, snakemake.params.cache_dir).items():
    n = write_jsonl(snakemake.output[split], items)
    groups = {getattr(it, "subject", None) for it in items} - {None}
    log.info("%s %s: %d items%s", task.name, split, n, f", {len(groups)} subjects" if groups else "")
