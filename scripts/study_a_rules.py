from pathlib import Path

from restyle import logs, rules
from restyle.io import read_jsonl, write_json, write_jsonl
from restyle.records import RuozhibaItem
from restyle.teacher import ACCOUNTING_FIELDS

log = logs.to_file(snakemake.log[0], snakemake.rule)
p, out = snakemake.params, snakemake.output
if p.cfg["fixed"]:
    found = {"rules": rules.fixed(p.cfg["fixed"]), "candidates": [], "dropped": [],
             "failures": [], "accounting": ",".join(ACCOUNTING_FIELDS) + "\n"}
    doc = rules.document(found["rules"], "fixed", p.cfg, None, None, None)
else:
    if p.backend["backend"] == "local":
        import torch

        torch.set_num_threads(snakemake.threads)
    questions = read_jsonl(snakemake.input.questions, RuozhibaItem.from_dict)
    found = rules.extract(questions, p.cfg, p.backend, p.cache, p.prices)
    doc = rules.document(found["rules"], "extracted", p.cfg, p.teacher, p.backend,
                         snakemake.input.questions)
write_jsonl(out.candidates, found["candidates"])
write_jsonl(out.dropped, found["dropped"])
write_jsonl(out.failures, found["failures"])
Path(out.accounting).write_text(found["accounting"], encoding="utf-8")
write_json(out.rules, doc)  # last: the checkpoint's main output appears only when all is written
log.info("%s: %d rules (%s): %s; %d candidates, %d dropped", out.rules, doc["count"], doc["mode"],
         ", ".join(r["slug"] for r in doc["rules"]), len(found["candidates"]),
         len(found["dropped"]))
