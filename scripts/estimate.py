from restyle import estimate, logs, sizing
from restyle.io import write_csv
from restyle.models import read_manifest

log = logs.to_file(snakemake.log[0], snakemake.rule)
p, inp = snakemake.params, snakemake.input
study_b_arms = {}
study_a_on = p.study_a["enabled"]
planned = [*(estimate.study_a(p.study_a, p.study_a_backend, inp.study_a, inp.get("ruozhiba"))
             if study_a_on else []),
           *estimate.study_b(p.study_b, p.variant_backends, p.variant_names,
                             dict(zip(p.study_b["tasks"], inp.study_b)), p.cache, study_b_arms,
                             p.releases)]
rows = estimate.table(planned, p.cache, p.prices)
write_csv(snakemake.output.teacher, rows, estimate.COLUMNS)
text = estimate.format_table(rows)
log.info("teacher requests of this config, nothing sent:\n%s", text)

# a bundled model's architecture is in its prepared folder; any other source is read directly
targets = {m: {"settings": p.train[m], "source": read_manifest(inp[f"model_{m}"])["path"]
               if f"model_{m}" in inp.keys() else p.sources[m]} for m in p.train}
eval_files = {t: {k: inp[f"{k}_{t}"] for k in ("questions", "dev") if f"{k}_{t}" in inp.keys()}
              for t in p.eval["tasks"]}
compute = estimate.compute(targets, len(p.seeds),
                           estimate.study_a_sets(p.study_a, inp.study_a) if study_a_on else [],
                           study_b_arms, p.controls, p.eval, eval_files, "results")
write_csv(snakemake.output.compute, compute, sizing.COLUMNS)
compute_text = sizing.format_table(compute)
log.info("compute of this config:\n%s", compute_text)
# on the console too: `snakemake -f estimate` is run to read these tables
print(f"\n{text}\n(tokens and cost: of the requests to send; completion tokens are the max_tokens"
      f" bound; {snakemake.output.teacher} has every column)\n\n{compute_text}\n(throughput: "
      f"{'; '.join(sorted({r['throughput'] for r in compute}))}; {snakemake.output.compute} has "
      "every column)\n", flush=True)
