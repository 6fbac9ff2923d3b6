"""Sizing the compute of a run: the tokens each training and evaluation job processes, its
GPU-hours at a stated throughput (`make estimate`, results/compute.csv), and a train job's SLURM
wall time (`train.resources.runtime: auto`).

FLOPs come from the model's architecture alone (its config.json, built on PyTorch's meta device:
no weight is read or downloaded, so a 70B model is sized on a laptop) and are counted by
restyle.train's own functions, the ones its measured MFU uses: a trained token costs
`flops_per_token` (6 per trained weight, 4 per frozen one: LoRA's base) plus `attention_flops`
per token of its row; an evaluated token costs a forward pass, 2 per weight and a third of
attention's.

Throughput is FLOP/s per process (one GPU, or one CPU process):
- measured, where this folder has finished train jobs of the model: the median of their
  train_metrics.json `achieved_flops_per_second / processes`;
- else stated: `train.expected_mfu` x the peak of `train.resources.device`
  (restyle.train.DEVICE_PEAK_FLOPS).
Evaluation is sized at the same rate. Generation is memory-bound and runs below it, and its
length is the `max_new_tokens` bound, so evaluation GPU-hours are rough; training's are the ones
an allocation is sized by.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from restyle import train

MEASURED, STATED = "measured", "expected_mfu"
# the keys of config `train` (resolved for one model) and of its `resources` that sizing reads;
# the estimate's params hold only these, so that another (the learning rate) does not redo it
TRAIN_KEYS = ("method", "lora", "max_length", "epochs", "max_steps", "batch_size", "save_steps",
              "expected_mfu", "cpu_processes")
RESOURCE_KEYS = ("gpu", "nodes", "device", "runtime_margin", "startup_s", "max_runtime",
                 "stop_before_end")


def sized_settings(settings: dict) -> dict:
    """What sizing reads of `settings` (config train for one model), as a plain dict: the
    estimate's params."""
    return {**{k: settings[k] for k in TRAIN_KEYS},
            "resources": {k: settings["resources"][k] for k in RESOURCE_KEYS}}


@dataclass(frozen=True)
class Settings:
    """What sizing reads of config train for one model: TRAIN_KEYS, then RESOURCE_KEYS (from
    `train.resources`). config/schema.yaml describes each."""

    method: str
    lora: train.Lora
    max_length: int
    epochs: float
    max_steps: int | None
    batch_size: int
    save_steps: int
    expected_mfu: float
    cpu_processes: int
    gpu: int  # per node; 0 = CPU
    nodes: int
    device: str | None
    runtime_margin: float
    startup_s: int
    max_runtime: int | None
    stop_before_end: int

    @classmethod
    def of(cls, settings: Mapping) -> Settings:
        """The record of config train for one model (restyle.config.settings_for, or the
        estimate's `sized_settings`) over the schema's defaults."""
        defaults = train.schema_defaults()
        given = {**defaults, **settings}
        resources = {**defaults["resources"], **given["resources"]}
        return cls(**{k: given[k] for k in TRAIN_KEYS if k != "lora"},
                   lora=train.Lora.of(given["lora"]), **{k: resources[k] for k in RESOURCE_KEYS})


class SizingError(ValueError):
    pass


@dataclass(frozen=True)
class Flops:
    """FLOPs per token of one model under one training setting."""

    train: int  # per trained token, linear layers (restyle.train.flops_per_token)
    attention: int  # per trained token and token of its row (restyle.train.attention_flops)
    forward: int  # per evaluated token, linear layers

    def training(self, tokens: float, context: float) -> float:
        """FLOPs of training on `tokens` tokens whose rows' squared lengths sum to `context`."""
        return self.train * tokens + self.attention * context

    def inference(self, tokens: float, context: float) -> float:
        return self.forward * tokens + self.attention / 3 * context


@dataclass(frozen=True)
class Rate:
    flops_per_second: float | None  # per process; None: unknown
    source: str  # MEASURED ("measured by N train job(s)"), STATED, or why it is unknown


@functools.lru_cache(maxsize=32)
def _flops(config_source: str, method: str, lora: train.Lora) -> Flops:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(config_source)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
        if method == "lora":
            from peft import get_peft_model

            model = get_peft_model(model, train.lora_config(lora))
    forward = sum(2 * m.weight.numel() for m in model.modules()
                  if isinstance(m, torch.nn.Linear))
    return Flops(train.flops_per_token(model), train.attention_flops(config), forward)


def model_flops(config_source: str | Path, settings: Settings) -> Flops:
    """FLOPs per token of the model whose config.json is in folder `config_source` (or is the
    Hugging Face id's, fetched alone) under training `settings` (method, lora)."""
    try:
        return _flops(str(config_source), settings.method, settings.lora)
    except OSError as e:  # no config.json there, or the hub out of reach
        raise SizingError(f"the architecture of {config_source} is not at hand ({e})") from e


@functools.lru_cache(maxsize=4096)
def _process_rate(path: Path, modified: int) -> float | None:
    metrics = json.loads(path.read_text(encoding="utf-8"))
    if metrics.get("achieved_flops_per_second") and metrics.get("processes"):
        return metrics["achieved_flops_per_second"] / metrics["processes"]
    return None


def measured_rate(results: str | Path, model: str) -> Rate | None:
    """The median FLOP/s per process of `model`'s finished train jobs under `results`. Each
    train_metrics.json is read once per version: `runtime: auto` asks this at every submission."""
    rates = [r for path in sorted(Path(results, "train", model).glob(
        "*/seed*/train_metrics.json")) if (r := _process_rate(path, path.stat().st_mtime_ns))]
    if not rates:
        return None
    return Rate(statistics.median(rates), f"{MEASURED} by {len(rates)} train job(s)")


def rate(settings: Settings, results: str | Path, model: str) -> Rate:
    """The throughput sizing uses for `model` (module doc): measured, else stated."""
    measured = measured_rate(results, model)
    if measured:
        return measured
    device = settings.device
    if not device:
        return Rate(None, "unknown: no finished train job of the model measured it and "
                          "train.resources.device is not set")
    peak = train.device_peak_flops(device)
    return Rate(settings.expected_mfu * peak, f"{STATED} {settings.expected_mfu:g} x "
                                                 f"{device} peak {peak / 1e12:g} TFLOP/s")


# ---------------------------------------------------------------- tokens


def training_tokens(lengths: Sequence[int], settings: Settings) -> tuple[float, float, int]:
    """(tokens, sum of rows' squared lengths, optimizer steps) of training on rows of `lengths`
    tokens (already cut to max_length): `epochs` passes, or `max_steps` batches of
    `batch_size` rows of the mean length."""
    rows = len(lengths)
    if not rows:
        return 0.0, 0.0, 0
    squares = sum(n * n for n in lengths)
    if settings.max_steps:
        seen = settings.max_steps * settings.batch_size / rows
        return sum(lengths) * seen, squares * seen, settings.max_steps
    steps = math.ceil(rows / settings.batch_size * settings.epochs)
    return sum(lengths) * settings.epochs, squares * settings.epochs, steps


def row_lengths(records, count: Callable[[list[dict], str], int], max_length: int) -> list[int]:
    """Tokens of each SFT record as training sees it (prompt and completion, cut to
    max_length); `count(prompt, completion)`."""
    return [min(count(r.prompt, r.completion), max_length) for r in records]


def chat_counter(tokenizer) -> Callable[[list[dict], str], int]:
    """Counts as training tokenizes: the model's chat template (restyle.chat.encode)."""
    from restyle.chat import encode

    return lambda prompt, completion: len(encode(tokenizer, prompt, completion).input_ids)


def text_counter(encoding) -> Callable[[list[dict], str], int]:
    """Counts with a tiktoken encoding where the model's tokenizer is not at hand: each message
    and the reply, plus 4 tokens a turn for a chat template's markers."""
    def count(prompt: list[dict], completion: str) -> int:
        texts = [m["content"] for m in prompt] + [completion]
        return sum(len(encoding.encode(t, disallowed_special=())) + 4 for t in texts)
    return count


# ---------------------------------------------------------------- SLURM wall time


def runtime_minutes(seconds: float, steps: int, settings: Settings) -> int:
    """sbatch -t of a train job that computes for `seconds` over `steps` optimizer steps:
    seconds x runtime_margin, plus startup_s (loading the model and data) and stop_before_end
    (the time kept for saving the last checkpoint), at most max_runtime. A capped job runs in
    several allocations, so each must reach its next checkpoint: an allocation shorter than
    that (save_steps steps with the margin, start-up, stop_before_end) would be requeued forever
    without progress, and is refused."""
    margin = settings.runtime_margin
    fixed = settings.startup_s + settings.stop_before_end
    wanted = math.ceil((seconds * margin + fixed) / 60)
    if settings.max_runtime is None or wanted <= settings.max_runtime:
        return max(1, wanted)
    interval = seconds / max(steps, 1) * min(settings.save_steps, steps) * margin
    if math.ceil((interval + fixed) / 60) > settings.max_runtime:
        raise SizingError(
            f"config train.resources.max_runtime {settings.max_runtime} min cannot fit one "
            f"checkpoint interval ({settings.save_steps} steps, about {interval / 60:.0f} min "
            f"with the margin) plus startup_s and stop_before_end ({fixed:g} s): lower "
            "train.save_steps")
    return settings.max_runtime


@functools.lru_cache(maxsize=8)
def _tokenizer(model_path: str):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_path)


@functools.lru_cache(maxsize=64)
def _set_lengths(sft: str, modified: int, model_path: str, max_length: int) -> tuple[int, ...]:
    from restyle.io import read_jsonl
    from restyle.records import SFTRecord

    return tuple(row_lengths(read_jsonl(sft, SFTRecord.from_dict),
                             chat_counter(_tokenizer(model_path)), max_length))


def train_runtime(sft: str, manifest: str, settings: Settings, model: str,
                  results: str | Path = "results") -> int:
    """`runtime: auto` of rule train (minutes), from the job's SFT set as its model tokenizes
    it; evaluated by Snakemake when the job is ready to submit (a missing input is its `<TBD>`
    until then)."""
    from restyle.models import read_manifest

    model_path = read_manifest(manifest)["path"]
    lengths = _set_lengths(sft, Path(sft).stat().st_mtime_ns, model_path, settings.max_length)
    tokens, context, steps = training_tokens(lengths, settings)
    speed = rate(settings, results, model)
    if speed.flops_per_second is None:
        raise SizingError(f"train.resources.runtime auto for {model}: the throughput is "
                          f"{speed.source}; set train.resources.device (a GPU) or a runtime "
                          "in minutes")
    flops = model_flops(model_path, settings).training(tokens, context)
    return runtime_minutes(flops / (speed.flops_per_second * processes(settings)), steps,
                           settings)


def processes(settings: Settings) -> int:
    """Training processes of a job: one per GPU, or cpu_processes, on each node."""
    return (settings.gpu or settings.cpu_processes) * settings.nodes


# ---------------------------------------------------------------- make estimate

# results/compute.csv: one row per kind of job and target model, then totals. `jobs` of them,
# each processing `tokens` (per job) in `steps` optimizer steps; gpu_hours per job and
# total_gpu_hours for all; runtime_auto: the sbatch -t (minutes) `runtime: auto` would ask
COLUMNS = ["model", "job", "name", "basis", "jobs", "rows", "tokens", "steps", "gpu_hours",
           "total_gpu_hours", "runtime_auto", "throughput", "counter"]
TOTAL = "TOTAL"


@dataclass
class Evaluation:
    """The evaluation jobs of one task for one model: their prompts (each question as evaluated,
    restyle.controls' positive set), the tokens generated per question (max_new_tokens x
    samples; 0 for a log-likelihood task) and how many checkpoints are evaluated on it."""

    task: str
    prompts: list  # SFTRecord: prompt as evaluated
    generated: int
    jobs: int


def table(model: str, settings: Settings, seeds: int, arms: Sequence, evaluations: Sequence[Evaluation],
          flops: Flops | None, speed: Rate, count: Callable[[list[dict], str], int],
          counter: str) -> list[dict]:
    """Rows (COLUMNS) of one target model: a train row per SFT set (`arms`: restyle.estimate.Arm,
    each trained once per seed), an evaluate row per task, and the model's TOTAL. GPU-hours and
    runtime are empty where the architecture (`flops` None) or the throughput is unknown."""
    per_second = speed.flops_per_second
    known = flops is not None and per_second is not None

    def hours(work: float) -> float | None:
        return work / per_second / 3600 if known else None

    rows = []
    for arm in arms:
        lengths = row_lengths(arm.records, count, settings.max_length)
        tokens, context, steps = training_tokens(lengths, settings)
        gpu_hours = hours(flops.training(tokens, context)) if known else None
        rows.append({"job": "train", "name": arm.name, "basis": arm.basis, "jobs": seeds,
                     "rows": len(lengths), "tokens": round(tokens), "steps": steps,
                     "gpu_hours": gpu_hours, "runtime_auto": runtime_minutes(
                         gpu_hours * 3600 / processes(settings), steps, settings)
                     if gpu_hours is not None and steps else None})
    for ev in evaluations:
        prompts = [count(r.prompt, "") for r in ev.prompts]
        tokens = sum(prompts) + ev.generated * len(prompts)
        context = sum((n + ev.generated) ** 2 for n in prompts)
        rows.append({"job": "evaluate", "name": ev.task, "basis": "exact" if not ev.generated
                     else "from config", "jobs": ev.jobs, "rows": len(prompts), "tokens": tokens,
                     "steps": None, "gpu_hours": hours(flops.inference(tokens, context))
                     if known else None, "runtime_auto": None})
    for row in rows:
        row.update(model=model, throughput=speed.source, counter=counter,
                   total_gpu_hours=None if row["gpu_hours"] is None
                   else row["gpu_hours"] * row["jobs"])
    return [*rows, total(f"{TOTAL} {model}", rows)]


def total(name: str, rows: Sequence[dict]) -> dict:
    """The sum of `rows`' jobs and GPU-hours (unknown when one row's is)."""
    gpu = [r["total_gpu_hours"] for r in rows]
    return {"model": "/".join(dict.fromkeys(r["model"] for r in rows)), "job": name,
            "name": "", "basis": "exact" if all(r["basis"] == "exact" for r in rows)
            else "from config", "jobs": sum(r["jobs"] for r in rows),
            "total_gpu_hours": None if None in gpu else sum(gpu),
            "throughput": "/".join(dict.fromkeys(r["throughput"] for r in rows)),
            "counter": "/".join(dict.fromkeys(r["counter"] for r in rows))}


def format_table(rows: Sequence[dict]) -> str:
    """The console table of results/compute.csv."""
    head = ["model", "job", "name", "basis", "jobs", "tokens/job", "GPU-h/job", "GPU-h",
            "sbatch -t auto"]

    def num(value, spec):
        return "unknown" if value is None else format(value, spec)

    body = [[r["model"], r["job"], r["name"], r["basis"], f"{r['jobs']:,}",
             "" if r["job"].startswith(TOTAL) else f"{r['tokens']:,}",
             "" if r["job"].startswith(TOTAL) else num(r["gpu_hours"], ",.2f"),
             num(r["total_gpu_hours"], ",.1f"),
             "" if r.get("runtime_auto") is None else f"{r['runtime_auto']} min"] for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    return "\n".join("  ".join(str(x).ljust(w) if i < 4 else str(x).rjust(w)
                               for i, (x, w) in enumerate(zip(line, widths)))
                     for line in [head, *body])
