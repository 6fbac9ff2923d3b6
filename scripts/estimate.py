from restyle import estimate, logs
from restyle.io import write_csv

log = logs.to_file(snakemake.log[0], snakemake.rule)
p, inp = snakemake.params, snakemake.input
planned = [*estimate.study_a(p.study_a, p.study_a_backend, inp.study_a, inp.get("ruozhiba")),
           *estimate.study_b(p.study_b, p.variant_backends, p.variant_names,
                             dict(zip(p.study_b["tasks"], inp.study_b)), p.cache)]
rows = estimate.table(planned, p.cache, p.prices)
write_csv(snakemake.output[0], rows, estimate.COLUMNS)
text = estimate.format_table(rows)
log.info("teacher requests of this config, nothing sent:\n%s", text)
# on the console too: `snakemake -f estimate` is run to read this table
print(f"\n{text}\n(tokens and cost: of the requests to send; completion tokens are the max_tokens"
      f" bound; {snakemake.output[0]} has every column)\n", flush=True)
