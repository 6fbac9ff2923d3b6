"""Rule train: one fine-tune through restyle.launch (torchrun; srun on several nodes), see
restyle.train."""

import signal

from restyle import logs
from restyle.config import settings_for
from restyle.launch import die_with_parent
from restyle.train import Job, launch_job

# Snakemake runs this script as its own child (bash execs it), so Snakemake killed alone, even
# by kill -9, ends this launcher; SIGTERM: the launcher forwards it to torchrun, which stops the
# workers (on several nodes to srun, which passes it to every node's launcher)
die_with_parent(signal.SIGTERM)

log = logs.to_file(snakemake.log[0], snakemake.rule)
settings = dict(snakemake.params.settings)
deepspeed = list(snakemake.input.deepspeed)
settings["deepspeed"] = deepspeed[0] if deepspeed else None  # the JSON file of zero2/zero3
job = Job(manifest=snakemake.input.manifest, sft=snakemake.input.sft,
          adapter_dir=snakemake.output.adapter, metrics=snakemake.output.metrics,
          checkpoint_dir=snakemake.params.checkpoints, seed=int(snakemake.wildcards.seed),
          settings=settings,
          labels={"model": snakemake.wildcards.model, "sft_set": snakemake.wildcards.sft_set})
# per node, from config (the job's `gpu` resource is unset on several nodes, see rules/train.smk);
# stop_before_end schedules only, so it is not among the params (restyle.config.SCHEDULING)
resources = settings_for(snakemake.config["train"], snakemake.wildcards.model)["resources"]
launch_job(job, gpus=resources["gpu"], cpus=snakemake.threads, log_path=snakemake.log[0],
           nodes=resources["nodes"], stop_before_end=resources["stop_before_end"])
