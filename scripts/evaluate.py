import torch

from restyle import evaluate, logs, models, tasks
from restyle.io import read_jsonl

log = logs.to_file(snakemake.log[0], snakemake.rule)
torch.set_num_threads(snakemake.threads)  # the cores Snakemake gave this job
wc, cfg = snakemake.wildcards, snakemake.params.cfg
task = tasks.get(wc.task)
items = read_jsonl(snakemake.input.questions, task.record.from_dict)
model, tokenizer = models.load_checkpoint(snakemake.input.manifest, snakemake.params.checkpoint)
# config eval.{task} (validated: every key there) read once, as the task's options record
if task.evaluation == tasks.LOGLIK:
    dev = read_jsonl(snakemake.input.dev, task.record.from_dict)
    rows, limits = evaluate.evaluate_mc(model, tokenizer, items, dev, evaluate.MCOptions(**cfg))
    samples, drawn = 1, {}
else:
    options = evaluate.GenerationOptions(**cfg)
    rows, limits = evaluate.evaluate_generation(model, tokenizer, task, items, options,
                                                jobs=snakemake.threads)
    rows.insert(1, "subject", wc.task)
    samples = options.samples
    drawn = evaluate.sampling(options)  # how the replies were drawn, on every summary row
labels = evaluate.run_labels(wc.model, wc.run)
summary = evaluate.summarize(rows, wc.task, labels)
summary = summary.assign(**drawn)
for k in (k for k in (1, 10, 100) if 1 < samples and k <= samples):
    # a generation task's one subject is all its questions
    summary[f"pass@{k}"] = evaluate.pass_at_k(rows, k)
# the batch limits the run ended with (`auto` picks them for the device); empty = no limit
summary["batch_size"], summary["max_batch_tokens"] = limits.rows, limits.tokens
for column, value in reversed([*labels.items(), ("task", wc.task)]):
    rows.insert(0, column, value)
rows.to_csv(snakemake.output.per_item, index=False)
summary.to_csv(snakemake.output.summary, index=False)
overall = summary[summary.subject == evaluate.ALL_SUBJECTS].iloc[0]
log.info("%s %s: accuracy %.3f +- %.3f over %d questions (batches of at most %s rows, %s "
         "tokens)", wc.run, wc.task, overall.accuracy, overall.stderr, overall.n, limits.rows,
         limits.tokens)
