"""Supervised fine-tuning of a target model on one SFT set: TRL's SFTTrainer, LoRA or full.

Every example is tokenized by `restyle.chat.encode` (the model's own chat template, labels -100
on the prompt), the same function the familiarity scorer uses, and handed to SFTTrainer already
tokenized (`input_ids` + `labels`: TRL 1.16 keeps a dataset's own `labels` column and skips its
tokenization), so the loss is on the response only and the masked tokens are exactly the ones
perplexity is measured on. Optional packing is TRL's best-fit packing with padding-free batches:
the examples of a row are told apart by their `position_ids`, from which transformers builds a
block-diagonal causal mask (flash attention uses them directly), so no token attends across
examples.

A run is one `Job` (model, SFT file, seed, settings resolved from config `train`). It runs
under `restyle.launch` (torchrun, one process per GPU, or CPU processes with gloo) or in process
(`run(job)` without torchrun). Checkpoints go to `job.checkpoint_dir`, outside the rule's
declared outputs, every `save_steps` steps; a rerun of the same job (same settings, data and
model, recorded in `fingerprint.json`) resumes from the last complete checkpoint. The adapter (or
the full model) appears at `job.adapter_dir` by one rename at the end, then `train_metrics.json`.

Settings keys are the ones of config `train` (config/schema.yaml describes each); per-model
overrides come from `train.per_model.{model}` (`settings_for`).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from restyle.chat import encode
from restyle.io import DataError, read_jsonl, write_json
from restyle.records import SFTRecord

log = logging.getLogger(__name__)

FINGERPRINT = "fingerprint.json"
JOB_FILE = "job.json"
TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: its presence = complete
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Settings that do not change what is computed; a change of these keeps the checkpoints.
_NOT_FINGERPRINTED = {"logging_steps", "save_steps", "keep_checkpoints", "per_model", "seeds"}


def settings_for(train_cfg: dict, model: str) -> dict:
    """Config `train` with `train.per_model.{model}` merged over it (nested dicts key by key);
    `per_model` and `seeds` removed."""
    base = {k: copy.deepcopy(v) for k, v in train_cfg.items() if k not in ("per_model", "seeds")}
    override = (train_cfg.get("per_model") or {}).get(model) or {}
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **copy.deepcopy(value)}
        else:
            base[key] = copy.deepcopy(value)
    return base


def resource(config: dict, model: str, name: str):
    """Rule train's resource `name` for `model` (config train.resources, per model); None (unset)
    leaves the resource out of the job, so the SLURM executor plugin adds no flag for it."""
    return settings_for(config["train"], model)["resources"][name]


def threads(config: dict, model: str) -> int:
    """CPU cores of a training job: cpus_per_gpu per GPU, or cpus_per_gpu on CPU."""
    res = settings_for(config["train"], model)["resources"]
    return max(1, res["gpu"]) * res["cpus_per_gpu"]


def output_paths(config: dict, sft_sets, models=None, seeds=None) -> list[str]:
    """train_metrics.json of every (model, SFT set, seed); models default to [target_model],
    seeds to config train.seeds."""
    models = models or [config["target_model"]]
    seeds = config["train"]["seeds"] if seeds is None else seeds
    return [f"results/train/{m}/{s}/seed{seed}/train_metrics.json"
            for m in models for s in sft_sets for seed in seeds]


def gradient_accumulation(settings: dict, world_size: int) -> int:
    """Steps accumulated so that per_device_batch_size x processes x steps = batch_size."""
    per_step = settings["per_device_batch_size"] * world_size
    if settings["batch_size"] % per_step:
        raise DataError(f"config train.batch_size {settings['batch_size']} is not a multiple of "
                        f"per_device_batch_size {settings['per_device_batch_size']} x "
                        f"{world_size} process(es)")
    return settings["batch_size"] // per_step


@dataclass
class Job:
    """One fine-tune: everything a launched process needs, written as JSON for the launcher."""

    manifest: str  # resources/models/{model}/manifest.json
    sft: str  # results/sft/{sft_set}.jsonl
    adapter_dir: str  # final adapter (LoRA) or full model folder
    metrics: str  # train_metrics.json
    checkpoint_dir: str  # Trainer checkpoints; not a rule output, survives a failed run
    seed: int
    settings: dict  # config train, resolved for the model (settings_for); deepspeed = file or null
    gpus: int = 0  # GPUs the job was given; 0 = CPU
    labels: dict = field(default_factory=dict)  # model, sft_set: copied into the metrics

    def save(self, path: str | os.PathLike) -> None:
        write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | os.PathLike) -> Job:
        return cls(**json.loads(Path(path).read_text()))


# ---------------------------------------------------------------- data


def load_examples(path: str | os.PathLike, tokenizer, max_length: int):
    """The SFT file as a `datasets.Dataset` of `input_ids` and `labels` (restyle.chat.encode).

    Examples whose response is cut away entirely by `max_length` are dropped (with a warning);
    an empty file or a file with no response left is an error naming the file."""
    from datasets import Dataset

    records = read_jsonl(path, SFTRecord.from_dict)
    if not records:
        raise DataError(f"{path}: no SFT examples")
    rows = {"input_ids": [], "labels": []}
    dropped = truncated = 0
    for rec in records:
        full = encode(tokenizer, rec.prompt, rec.completion)
        enc = encode(tokenizer, rec.prompt, rec.completion, max_length)
        truncated += len(full.input_ids) > max_length
        if enc.n_response_tokens == 0:
            dropped += 1
            continue
        rows["input_ids"].append(enc.input_ids)
        rows["labels"].append(enc.labels)
    if truncated:
        log.warning("%s: %d of %d examples are longer than max_length %d and lose the end of "
                    "their response", path, truncated, len(records), max_length)
    if dropped:
        log.warning("%s: %d example(s) dropped: their prompt alone fills max_length %d",
                    path, dropped, max_length)
    if not rows["input_ids"]:
        raise DataError(f"{path}: no example keeps a response token within max_length {max_length}")
    return Dataset.from_dict(rows)


# ---------------------------------------------------------------- checkpoints


def _sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fingerprint(job: Job) -> dict:
    """What a checkpoint was computed from; resuming under anything else would mix two runs."""
    settings = {k: v for k, v in job.settings.items() if k not in _NOT_FINGERPRINTED}
    settings["resources"] = {"gpu": job.settings.get("resources", {}).get("gpu", job.gpus)}
    model_path = json.loads(Path(job.manifest).read_text())["path"]
    return {"settings": settings, "seed": job.seed, "gpus": job.gpus,
            "sft_sha256": _sha256(job.sft), "model_path": model_path}


def complete_checkpoints(checkpoint_dir: str | os.PathLike) -> list[Path]:
    """checkpoint-N folders holding a trainer state (saved to the end), by step."""
    root = Path(checkpoint_dir)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir()
             if p.is_dir() and (m := _CHECKPOINT_RE.match(p.name)) and (p / TRAINER_STATE).is_file()]
    return [p for _, p in sorted(found)]


def prepare_checkpoints(job: Job) -> Path | None:
    """Make `job.checkpoint_dir` safe to resume from; return the checkpoint to resume (or None).

    Checkpoints of another job (other settings, data or model) are removed, and so are folders a
    kill left half-written (no trainer state); the run's fingerprint is written for next time."""
    root = Path(job.checkpoint_dir)
    mine = fingerprint(job)
    if root.is_dir():
        try:
            theirs = json.loads((root / FINGERPRINT).read_text())
        except (OSError, ValueError):
            theirs = None
        if theirs != mine:
            if any(root.iterdir()):
                log.warning("%s: checkpoints from a different run (settings, data or model "
                            "changed); starting over", root)
            shutil.rmtree(root)
    root.mkdir(parents=True, exist_ok=True)
    write_json(root / FINGERPRINT, mine)
    complete = set(complete_checkpoints(root))
    for p in root.iterdir():
        if p.is_dir() and _CHECKPOINT_RE.match(p.name) and p not in complete:
            log.warning("%s: incomplete checkpoint (the run was killed while saving it); removed", p)
            shutil.rmtree(p)
    last = max(complete, key=lambda p: int(p.name.split("-")[1]), default=None)
    if last is not None:
        log.info("resuming from %s", last)
    return last


# ---------------------------------------------------------------- trainer


def _distributed() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _device(job: Job) -> str:
    import torch

    return "cuda" if job.gpus > 0 and torch.cuda.is_available() else "cpu"


def _metrics_callback():
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """Times this run's training loop and logs each loss line (main process only)."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start_step = state.global_step
            self.start_tokens = state.num_input_tokens_seen
            self.t0 = time.perf_counter()
            self.seconds = None

        def on_train_end(self, args, state, control, **kwargs):
            self.seconds = time.perf_counter() - self.t0

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "loss" in logs:
                log.info("step %d/%d loss %.4f lr %.3g", state.global_step, state.max_steps,
                         logs["loss"], logs.get("learning_rate", float("nan")))

    return Progress()


def build_trainer(job: Job):
    """The SFTTrainer of a job (model loaded, data tokenized), ready to `train()`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    s = job.settings
    rank, world = _distributed()
    if job.gpus > 0 and world != job.gpus:
        raise RuntimeError(f"{world} process(es) started for {job.gpus} GPU(s); start one per GPU "
                           "(python -m restyle.launch)")
    device = _device(job)
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    if device == "cuda" and not bf16:
        log.warning("this GPU has no bf16; training in fp32")
    model_path = json.loads(Path(job.manifest).read_text())["path"]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dataset = load_examples(job.sft, tokenizer, s["max_length"])
    accumulation = gradient_accumulation(s, world)

    args = SFTConfig(
        output_dir=job.checkpoint_dir,
        seed=job.seed,
        data_seed=job.seed,
        per_device_train_batch_size=s["per_device_batch_size"],
        gradient_accumulation_steps=accumulation,
        learning_rate=s["learning_rate"],
        lr_scheduler_type=s["lr_scheduler"],
        warmup_steps=s["warmup_ratio"],  # a float below 1 is a ratio of the total steps
        weight_decay=s["weight_decay"],
        max_grad_norm=s["max_grad_norm"],
        num_train_epochs=s["epochs"],
        max_steps=s["max_steps"] if s["max_steps"] is not None else -1,
        logging_steps=s["logging_steps"],
        save_strategy="steps",
        save_steps=s["save_steps"],
        save_total_limit=2,  # the last complete checkpoint survives a kill while saving the next
        bf16=bf16,
        fp16=False,
        use_cpu=device == "cpu",
        ddp_backend="gloo" if device == "cpu" and world > 1 else None,
        ddp_find_unused_parameters=False if world > 1 and s["method"] == "lora" else None,
        # transformers 5 names it activation checkpointing; the old names (which TRL's config
        # sets by default) are cleared so they do not warn
        activation_checkpointing=s["gradient_checkpointing"],
        activation_checkpointing_kwargs={"use_reentrant": False},
        gradient_checkpointing=None,
        gradient_checkpointing_kwargs=None,
        deepspeed=s["deepspeed"],
        max_length=s["max_length"],
        packing=s["packing"],
        packing_strategy="bfd",
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    # after SFTConfig: with ZeRO-3 it has registered the DeepSpeed config, and from_pretrained
    # then loads the weights partitioned across the processes, once the process group is up
    # (`args.device` starts it; ZeRO-3 would otherwise see a world of one process)
    _ = args.device
    if s["deepspeed"]:  # on CPU accelerate starts torch.distributed but not DeepSpeed's view of it
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo" if device == "cpu" else "nccl")
    set_seed(job.seed)  # the adapter's initialisation too (PEFT wraps before Trainer seeds)
    dtype = torch.bfloat16 if bf16 else torch.float32
    model_kwargs = {"dtype": dtype}
    if s.get("attn_implementation"):
        model_kwargs["attn_implementation"] = s["attn_implementation"]
    model = AutoModelForCausalLM.from_pretrained(model_path, **model_kwargs)
    peft_config = None
    if s["method"] == "lora":
        from peft import LoraConfig

        lora = s["lora"]
        targets = list(lora["target_modules"])
        targets = "all-linear" if targets == ["all-linear"] else targets
        peft_config = LoraConfig(r=lora["rank"], lora_alpha=lora["alpha"],
                                 lora_dropout=lora["dropout"],
                                 target_modules=targets, task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config, callbacks=[_metrics_callback()])
    if rank == 0:
        log.info("%s: %d examples, %s on %s x%d, effective batch %d (%d per device x %d "
                 "process(es) x %d accumulation), deepspeed %s, packing %s", job.sft, len(dataset),
                 s["method"], device, world, s["batch_size"], s["per_device_batch_size"], world,
                 accumulation, s["deepspeed"] or "off", s["packing"])
    return trainer


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _gather(value):
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, value)
        return out
    return [value]


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def run(job: Job, trainer_hook=None) -> dict | None:
    """Train (resuming from the last checkpoint if any), save the adapter or model atomically,
    write train_metrics.json. Runs in each launched process; returns the metrics on rank 0.
    `trainer_hook(trainer)`, if given, sees the trainer before training (tests use it to record
    the batches the trainer is fed)."""
    started = time.perf_counter()
    rank, world = _distributed()
    if world == 1 and "LOCAL_RANK" not in os.environ:
        prepare_checkpoints(job)  # in process; under the launcher, launch_job did it once
    resume = complete_checkpoints(job.checkpoint_dir)
    resume = str(resume[-1]) if resume else None
    if resume and rank == 0:
        log.info("resuming from %s", resume)
    trainer = build_trainer(job)
    if trainer_hook is not None:
        trainer_hook(trainer)
    progress = next(cb for cb in trainer.callback_handler.callbacks
                    if type(cb).__name__ == "Progress")
    result = trainer.train(resume_from_checkpoint=resume)

    final = Path(job.adapter_dir)
    tmp = final.with_name(final.name + ".partial")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    _barrier()
    trainer.save_model(str(tmp))  # every process: ZeRO-3 gathers the weights
    device = _device(job)
    peaks = _gather(_peak_memory_mb(device))
    _barrier()
    if rank != 0:
        return None
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)

    state = trainer.state
    curve = [{k: e[k] for k in ("step", "epoch", "loss", "learning_rate", "grad_norm",
                                "mean_token_accuracy") if k in e}
             for e in state.log_history if "loss" in e]
    run_tokens = state.num_input_tokens_seen - progress.start_tokens
    s = job.settings
    metrics = {
        **job.labels,
        "seed": job.seed,
        "method": s["method"],
        "device": device,
        "dtype": "bfloat16" if trainer.args.bf16 else "float32",
        "processes": world,
        "deepspeed": Path(s["deepspeed"]).stem if s["deepspeed"] else None,
        "zero_stage": (trainer.accelerator.state.deepspeed_plugin.zero_stage
                       if trainer.is_deepspeed_enabled else None),
        "packing": s["packing"],
        "examples": len(trainer.train_dataset) if not s["packing"] else None,
        "steps": state.global_step,
        "planned_steps": state.max_steps,
        "epochs": state.epoch,
        "effective_batch_size": s["batch_size"],
        "per_device_batch_size": s["per_device_batch_size"],
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "resumed_from_step": progress.start_step or None,
        "loss_curve": curve,
        "first_loss": curve[0]["loss"] if curve else None,
        "final_loss": curve[-1]["loss"] if curve else None,
        "train_loss_this_run": result.training_loss,
        "tokens_seen": state.num_input_tokens_seen,
        "tokens_per_second": (run_tokens / progress.seconds) if progress.seconds else None,
        "train_seconds_this_run": progress.seconds,
        "wall_seconds_this_run": time.perf_counter() - started,
        "peak_memory_mb": max(peaks),
        "peak_memory_kind": "cuda max allocated, max over processes" if device == "cuda"
        else "process max RSS, max over processes",
        "settings": s,
    }
    write_json(job.metrics, metrics)
    if not s.get("keep_checkpoints"):
        shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
    log.info("done: %d steps, final loss %s, %.0f tokens/s, adapter at %s", state.global_step,
             metrics["final_loss"], metrics["tokens_per_second"] or math.nan, final)
    return metrics


# ---------------------------------------------------------------- launching


def launch_job(job: Job, gpus: int, cpus: int, log_path: str | None = None) -> None:
    """What the Snakemake rule runs: check the GPUs, prepare the checkpoints, start one process
    per GPU (or `cpu_processes` on CPU) through `restyle.launch`. After success the checkpoints
    are removed unless `keep_checkpoints`."""
    from restyle import launch

    job.gpus = gpus
    launch.check_gpus(gpus)  # before touching anything
    prepare_checkpoints(job)
    job_file = Path(job.checkpoint_dir) / JOB_FILE
    job.save(job_file)
    launch.run(["--job", str(job_file)], gpus=gpus, cpus=cpus,
               cpu_processes=job.settings.get("cpu_processes", 1), log_path=log_path)
    if not (Path(job.metrics).is_file() and Path(job.adapter_dir).is_dir()):
        raise RuntimeError("training ended without writing its outputs")


def main(argv: list[str] | None = None) -> None:
    """Entry of each launched process: `python -m restyle.train --job job.json`."""
    from restyle import launch

    # first of all, so that no kill of torchrun (or of its launcher) leaves this process training
    # alone; SIGKILL: the Trainer has no clean stop on a signal, and a rerun resumes from the last
    # complete checkpoint anyway
    launcher = os.environ.get(launch.LAUNCHER_PID)
    launch.die_with_parent(signal.SIGKILL, grandparent=int(launcher) if launcher else None)
    parser = argparse.ArgumentParser(description="one training process (started by restyle.launch)")
    parser.add_argument("--job", required=True)
    args = parser.parse_args(argv)
    rank, _ = _distributed()
    logging.basicConfig(stream=sys.stderr, level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    run(Job.load(args.job))


if __name__ == "__main__":
    main()
