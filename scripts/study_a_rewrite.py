from restyle import logs, teacher
from restyle.study_a import rewrite

log = logs.to_file(snakemake.log.main, snakemake.rule)
p, out = snakemake.params, snakemake.output
teacher.backends.get(p.backend["backend"]).use_threads(snakemake.threads)
session = teacher.Session(p.cache, p.sft_set, prices=p.prices,
                          failures_path=snakemake.log.failures, accounting_path=out.accounting)
session.write()  # its side files exist even when there is nothing to ask
rewrite.run(p.sft_set, snakemake.input.mmlu, out, rule=p.rule, rewrite_cfg=p.cfg,
            plain_cfg=p.plain, gate_cfg=p.gate, backend=p.backend, teacher_name=p.teacher,
            session=session)
