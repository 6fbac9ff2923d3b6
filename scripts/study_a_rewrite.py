from restyle import logs, teacher
from restyle.io import read_jsonl, write_jsonl
from restyle.records import MCItem
from restyle.study_a import rewrite

log = logs.to_file(snakemake.log.main, snakemake.rule)
p, out = snakemake.params, snakemake.output
items = rewrite.select_items(read_jsonl(snakemake.input.mmlu, MCItem.from_dict),
                             p.cfg["items_per_set"])
if p.rule is None:
    requests = rewrite.plain_requests(items, {**p.cfg, **p.plain})
else:
    requests = rewrite.rewrite_requests(p.rule, items, p.cfg)
teacher.backends.get(p.backend["backend"]).use_threads(snakemake.threads)
session = teacher.Session(p.cache, p.sft_set, prices=p.prices,
                          failures_path=snakemake.log.failures, accounting_path=out.accounting)
session.write()  # its side files exist even when there is nothing to ask
results = session.ask(requests, p.backend)
records, dropped = rewrite.build_set(p.sft_set, items, requests, results, rule=p.rule,
                                     teacher_name=p.teacher, options_mode=p.cfg["options"],
                                     gate_cfg=p.gate)
write_jsonl(out.dropped, dropped)
rewrite.write_stats(out.stats, rewrite.stats_rows(p.sft_set, p.rule and p.rule["slug"], items,
                                                  dropped))
write_jsonl(out.sft, records)
log.info("%s: kept %d of %d items, dropped %d (see %s)", out.sft, len(records), len(items),
         len(dropped), out.dropped)
if not records:
    log.warning("%s: no item passed the quality gate", out.sft)
