from restyle import logs
from restyle.study_b import parse_label, variants

log = logs.to_file(snakemake.log.main, snakemake.rule)
wc, out = snakemake.wildcards, snakemake.output
variant, model = parse_label(wc.label)
stats = variants.run(
    wc.task, variant, snakemake.params.cfg, snakemake.input.questions,
    {**{k: out[k] for k in ("sft", "dropped", "stats", "accounting")},
     "failures": snakemake.log.failures},
    snakemake.params.backends, snakemake.params.names, snakemake.params.cache,
    snakemake.params.prices, target_manifest=snakemake.params.target_manifest,
    source_path=snakemake.input.get("source"), jobs=snakemake.threads, model=model,
    release=snakemake.params.release)
log.info("stats: %s", stats)
