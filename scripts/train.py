"""Rule train: one fine-tune through restyle.launch (torchrun; srun on several nodes), see
restyle.train."""

import signal

from restyle import logs
from restyle.config import resource
from restyle.launch import die_with_parent
from restyle.train import Job, TrainSettings, launch_job

# Snakemake runs this script as its own child (bash execs it), so Snakemake killed alone, even
# by kill -9, ends this launcher; SIGTERM: the launcher forwards it to torchrun, which stops the
# workers (on several nodes to srun, which passes it to every node's launcher)
die_with_parent(signal.SIGTERM)

log = logs.to_file(snakemake.log[0], snakemake.rule)
wc = snakemake.wildcards
deepspeed = list(snakemake.input.deepspeed)
settings = {**snakemake.params.settings,
            "deepspeed": deepspeed[0] if deepspeed else None}  # the JSON file of zero2/zero3
# the resources' one route: config resolved at parse time by restyle.config (see `resource`).
# GPUs per node and nodes as the params settings hold them (the job's `gpu` resource is unset on
# several nodes), the cores as the rule's threads, and stop_before_end, which only schedules and
# so is not among the params, from `resource`
resources = TrainSettings.of(settings).resources
job = Job(manifest=snakemake.input.manifest, sft=snakemake.input.sft,
          adapter_dir=snakemake.output.adapter, metrics=snakemake.output.metrics,
          checkpoint_dir=snakemake.params.checkpoints, seed=int(wc.seed), settings=settings,
          gpus=resources.gpu, nodes=resources.nodes,
          labels={"model": wc.model, "sft_set": wc.sft_set})
launch_job(job, gpus=job.gpus, cpus=snakemake.threads, log_path=snakemake.log[0],
           nodes=job.nodes, stop_before_end=resource(snakemake.config, wc.model, "stop_before_end"))
