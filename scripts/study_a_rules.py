from restyle import logs, teacher
from restyle.study_a import rules

log = logs.to_file(snakemake.log.main, snakemake.rule)
p, out = snakemake.params, snakemake.output
session = teacher.Session(p.cache, snakemake.rule, prices=p.prices,
                          failures_path=snakemake.log.failures, accounting_path=out.accounting)
session.write()  # its side files exist even when there is nothing to ask
if p.backend:
    teacher.backends.get(p.backend["backend"]).use_threads(snakemake.threads)
rules.run(p.cfg, snakemake.input.get("questions"), out, backend=p.backend, teacher_name=p.teacher,
          session=session)
