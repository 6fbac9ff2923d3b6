from restyle import logs, teacher
from restyle.io import read_jsonl, write_json, write_jsonl
from restyle.records import RuozhibaItem
from restyle.study_a import rules

log = logs.to_file(snakemake.log.main, snakemake.rule)
p, out = snakemake.params, snakemake.output
session = teacher.Session(p.cache, snakemake.rule, prices=p.prices,
                          failures_path=snakemake.log.failures, accounting_path=out.accounting)
session.write()
if p.cfg["fixed"]:
    found = {"rules": rules.fixed(p.cfg["fixed"]), "candidates": [], "dropped": []}
    doc = rules.document(found["rules"], "fixed", p.cfg, None, None, None)
else:
    teacher.backends.get(p.backend["backend"]).use_threads(snakemake.threads)
    questions = read_jsonl(snakemake.input.questions, RuozhibaItem.from_dict)
    found = rules.extract(questions, p.cfg, p.backend, session)
    doc = rules.document(found["rules"], "extracted", p.cfg, p.teacher, p.backend,
                         snakemake.input.questions)
write_jsonl(out.candidates, found["candidates"])
write_jsonl(out.dropped, found["dropped"])
write_json(out.rules, doc)  # last: the checkpoint's main output appears only when all is written
log.info("%s: %d rules (%s): %s; %d candidates, %d dropped", out.rules, doc["count"], doc["mode"],
         ", ".join(r["slug"] for r in doc["rules"]), len(found["candidates"]),
         len(found["dropped"]))
