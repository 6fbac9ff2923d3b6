"""Supervised fine-tuning of a target model on one SFT set: TRL's SFTTrainer, LoRA or full.

Every example is tokenized by `restyle.chat.encode` (the model's own chat template, labels -100
on the prompt), the same function the familiarity scorer uses, and handed to SFTTrainer already
tokenized (`input_ids` + `labels`: TRL 1.16 keeps a dataset's own `labels` column and skips its
tokenization), so the loss is on the response only and the masked tokens are exactly the ones
perplexity is measured on.

Batches on a GPU are padding-free when flash attention (3 or 2, the flash-attn package) is
installed: it keeps the examples of one row apart by their `position_ids` without a dense
(tokens x tokens) mask (`kernel_plan`). The examples of a micro-batch are then laid end to end in
one row, so no FLOP goes to padding (padded to the longest in a batch of 16, examples of 150-1100
tokens waste about 40 % of them). Optional packing is TRL's best-fit packing into such rows of
`max_length`; no token attends across examples. Flex attention also takes such rows, but only
when asked for (attn_implementation flex_attention): on an H200 (torch 2.11, transformers 5.23,
an 822M Llama, batch 16 of 150-1024 tokens) its padding-free full fine-tuning did not finish 12
steps in 270 s (`benchmarks/gpu.py --quick`). Without flash attention batches
are padded, and packing is turned off with a warning: SDPA would get the block-diagonal mask as a
dense 4D mask, slower and bigger than padding. On CPU nothing changes: padded batches, and
packing through SDPA's dense mask (small rows, and the tests check that no token attends across
examples).

Liger's Triton kernels (config `use_liger_kernel`) and torch.compile (`torch_compile`) are passed
to TRL; both need a GPU. TRL 1.16 applies Liger's layer kernels (RMSNorm, RoPE, SwiGLU) but not
its fused cross-entropy, which its own fused LM head replaces, and marks the switch deprecated in
favour of hub kernels (a download, so not here); it still works. Its per-step extras, mean token
accuracy and the entropy over the full vocabulary, are computed inside that chunked LM-head
kernel in the same pass as the loss (the logits are never materialised, entropy gets no
backward), so they cost a few scalar host syncs per micro-batch; SFTConfig has no switch for
them, and they stay on (`benchmarks/gpu.py --profile` shows where a step's time goes).

`train_metrics.json` reports throughput from the batches themselves (non-padding and padded
tokens, the whole loop and the steady part after warm-up), model FLOPs per token
(`flops_per_token`, attention included), achieved FLOP/s and MFU against the device's peak
(`device_peak_flops`; `mfu_6n` without attention, as tools using the 6N convention report it),
and peak memory.

A run is one `Job` (model, SFT file, seed, settings resolved from config `train`). It runs
under `restyle.launch` (torchrun, one process per GPU, or CPU processes with gloo) or in process
(`run(job)` without torchrun). Checkpoints go to `job.checkpoint_dir`, outside the rule's
declared outputs, every `save_steps` steps; a rerun of the same job (same settings, data and
model, recorded in `fingerprint.json`) resumes from the last complete checkpoint. On SIGTERM, and
in a SLURM job `stop_before_end` seconds before its time limit, training saves a checkpoint at
the end of its step and stops (the job then requeues itself: `launch_job`). The adapter (or
the full model) appears at `job.adapter_dir` by one rename at the end, then `train_metrics.json`.

Settings keys are the ones of config `train` (config/schema.yaml describes each); per-model
overrides come from `train.per_model.{model}` (`restyle.config.settings_for`). A job carries them
as the plain dict rule train's params hold (JSON to the launched processes, recorded verbatim in
`train_metrics.json`); each process reads them through one `TrainSettings` record made from it.
"""

from __future__ import annotations

import argparse
import functools
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
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from restyle.chat import encode
from restyle.io import DataError, open_permissions, read_jsonl, write_json
from restyle.models import read_manifest
from restyle.records import SFTRecord

log = logging.getLogger(__name__)

SCHEMA = Path(__file__).resolve().parents[2] / "config" / "schema.yaml"
FINGERPRINT = "fingerprint.json"
JOB_FILE = "job.json"
TRAINER_STATE = "trainer_state.json"  # written last into a checkpoint: its presence = complete
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
# Settings that do not change what is computed; a change of these keeps the checkpoints.
_NOT_FINGERPRINTED = {"logging_steps", "save_steps", "keep_checkpoints", "per_model", "seeds",
                      "report_to"}
TENSORBOARD = "tensorboard"  # beside checkpoints/ in a run's folder: its training curves


@functools.lru_cache(maxsize=None)
def schema_defaults() -> dict:
    """Config `train`'s defaults as config/schema.yaml states them, a nested section's
    (lora, resources) key by key."""
    import yaml

    keys = yaml.safe_load(SCHEMA.read_text(encoding="utf-8"))["properties"]["train"]["properties"]
    return {key: {k: v["default"] for k, v in spec["properties"].items()}
            if "properties" in spec else spec["default"] for key, spec in keys.items()}


@dataclass(frozen=True)
class Lora:
    """Config `train.lora`."""

    rank: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]

    @classmethod
    def of(cls, lora: Mapping) -> Lora:
        """The record of a config `train.lora` dict over the schema's defaults."""
        given = {**schema_defaults()["lora"], **lora}
        return cls(**{**given, "target_modules": tuple(given["target_modules"])})


@dataclass(frozen=True)
class Resources:
    """The keys of config `train.resources` training computes from: the others only schedule the
    job (restyle.config.SCHEDULING) and are not in rule train's params."""

    gpu: int  # per node; 0 = CPU
    nodes: int


@dataclass(frozen=True)
class TrainSettings:
    """What a training job computes from: config `train` for its model without the sizing and
    scheduling keys (restyle.config.training_settings, rule train's params `settings`), with
    `deepspeed` the JSON file of the ZeRO stage (or None). config/schema.yaml describes each."""

    method: str
    lora: Lora
    learning_rate: float
    lr_scheduler: str
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    epochs: float
    max_steps: int | None
    batch_size: int
    per_device_batch_size: int
    max_length: int
    packing: bool
    gradient_checkpointing: bool
    attn_implementation: str | None
    use_liger_kernel: bool | str
    torch_compile: bool
    logging_steps: int
    report_to: str
    save_steps: int
    keep_checkpoints: bool
    deepspeed: str | None
    cpu_processes: int
    resources: Resources

    @classmethod
    def of(cls, settings: Mapping) -> TrainSettings:
        """The record of a settings dict over the schema's defaults (a validated config has
        them all; tests and benchmarks may give fewer). Keys that are not training's (sizing,
        scheduling) are left out."""
        defaults = schema_defaults()
        given = {**defaults, **settings}
        resources = {**defaults["resources"], **given["resources"]}
        return cls(**{f.name: given[f.name] for f in fields(cls)
                      if f.name not in ("lora", "resources")}, lora=Lora.of(given["lora"]),
                   resources=Resources(**{f.name: resources[f.name] for f in fields(Resources)}))


def gradient_accumulation(settings: TrainSettings, world_size: int) -> int:
    """Steps accumulated so that per_device_batch_size x processes x steps = batch_size."""
    per_step = settings.per_device_batch_size * world_size
    if settings.batch_size % per_step:
        raise DataError(f"config train.batch_size {settings.batch_size} is not a multiple of "
                        f"per_device_batch_size {settings.per_device_batch_size} x "
                        f"{world_size} process(es)")
    return settings.batch_size // per_step


@dataclass
class Job:
    """One fine-tune: everything a launched process needs, written as JSON for the launcher."""

    manifest: str  # resources/models/{model}/manifest.json
    sft: str  # results/sft/{sft_set}.jsonl
    adapter_dir: str  # final adapter (LoRA) or full model folder
    metrics: str  # train_metrics.json
    checkpoint_dir: str  # Trainer checkpoints; not a rule output, survives a failed run
    seed: int
    # rule train's params `settings` (restyle.config.training_settings), deepspeed = file or null:
    # JSON as given, recorded in train_metrics.json; read through TrainSettings.of
    settings: dict
    gpus: int = 0  # GPUs the job was given, per node; 0 = CPU
    nodes: int = 1  # SLURM nodes, each running gpus (or cpu_processes) processes
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
    settings["resources"] = {"gpu": job.settings["resources"]["gpu"]}
    model_path = read_manifest(job.manifest)["path"]
    return {"settings": settings, "seed": job.seed, "gpus": job.gpus, "nodes": job.nodes,
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


# ---------------------------------------------------------------- stopping before the end

STOP_AT = "RESTYLE_STOP_AT"  # epoch seconds after which training stops at its next step's end
STOPPED = "stopped.json"  # in the checkpoint folder: the run stopped early, and why
RUNS = "runs.jsonl"  # in the checkpoint folder: the steps each run (allocation) trained
STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class TrainingStopped(RuntimeError):
    """Training saved a checkpoint and stopped before its last step; a rerun resumes there."""


def _stop_callback():
    """A TrainerCallback that ends training cleanly before SLURM ends the job: once a stop signal
    (SIGTERM: preemption, scancel, the time limit; SIGUSR1: a warning) arrived in any process,
    or the next step, as long as the last one, would end past $RESTYLE_STOP_AT, it has the
    Trainer save a complete checkpoint at the end of the current optimizer step and leave its
    loop. Every process decides the same step: the flag is all-reduced (max) at each step's end,
    a signal seldom reaching every node at once."""
    from transformers import TrainerCallback

    class Stop(TrainerCallback):
        def __init__(self):
            self.reason = None  # a stop signal arrived here
            self.stopped = None  # why training stopped early (None: it did not)
            self.stop_at = float(os.environ.get(STOP_AT) or "inf")
            self.step_end = time.time()  # when the last step ended (or training began)
            self.previous = {}

        def _signalled(self, signum, _frame):
            self.reason = self.reason or signal.Signals(signum).name

        def install(self) -> None:
            self.previous = {s: signal.signal(s, self._signalled) for s in STOP_SIGNALS}

        def restore(self) -> None:
            for s, handler in self.previous.items():
                signal.signal(s, handler)

        def on_train_begin(self, args, state, control, **kwargs):
            self.step_end = time.time()

        def _agreed(self, args) -> str | None:
            import torch
            import torch.distributed as dist

            now, last = time.time(), self.step_end
            self.step_end = now
            local = 2 if self.reason else 1 if 2 * now - last >= self.stop_at else 0
            if dist.is_available() and dist.is_initialized():
                device = args.device if dist.get_backend() == "nccl" else "cpu"
                flag = torch.tensor([local], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                local = int(flag.item())
            return {0: None, 1: "time limit", 2: self.reason or "signal"}[local]

        def on_step_end(self, args, state, control, **kwargs):
            reason = self._agreed(args)
            if reason and state.global_step < state.max_steps:
                self.stopped = reason
                control.should_save = True
                control.should_training_stop = True

    return Stop()


# ---------------------------------------------------------------- kernels

# Attention implementations that take padding-free rows (examples told apart by position_ids)
# without building a dense mask, best first
VARLEN_ATTENTION = ("flash_attention_3", "flash_attention_2", "flex_attention")


def varlen_attention(requested: str | None, device: str, model_class) -> str | None:
    """The attention implementation of `model_class` on `device` that keeps the examples of a
    padding-free row apart without a dense mask, or None. An explicit `requested` one is kept:
    None unless it is such a kernel. Unasked, flash attention only (flex attention was far
    slower, see the module docstring). None on CPU, where SDPA (dense mask) stays."""
    if device != "cuda":
        return None
    if requested:
        return requested if requested in VARLEN_ATTENTION else None
    from transformers import utils

    usable = {"flash_attention_3": utils.is_flash_attn_3_available(),
              "flash_attention_2": utils.is_flash_attn_2_available()}
    return next((name for name, ok in usable.items() if ok and model_class._supports_flash_attn),
                None)


def liger_architectures() -> set[str] | None:
    """Model types (config.model_type) Liger has kernels for; None when liger_kernel cannot be
    imported (it is not installed, or there is no Triton)."""
    try:
        from liger_kernel.transformers.monkey_patch import MODEL_TYPE_TO_APPLY_LIGER_FN
    except ImportError:
        return None
    return set(MODEL_TYPE_TO_APPLY_LIGER_FN)


def use_liger(setting, device: str, model_type: str) -> bool:
    """Config train.use_liger_kernel (auto, true, false) resolved for this device and model:
    auto = on when on a GPU, liger_kernel imports and has kernels for the architecture."""
    if setting is False:
        return False
    if device != "cuda":
        if setting is True:
            log.warning("config train.use_liger_kernel is true, but Liger's kernels need a GPU; "
                        "off on CPU")
        return False
    supported = liger_architectures()
    if supported is None or model_type not in supported:
        if setting is True:
            why = ("liger_kernel cannot be imported here (pip install liger-kernel; it needs "
                   "Triton)" if supported is None else f"Liger has no kernels for {model_type!r}")
            raise DataError(f"config train.use_liger_kernel is true, but {why}; set it to auto "
                            "or false")
        return False
    return True


def kernel_plan(settings: TrainSettings, device: str, model_path: str | os.PathLike) -> dict:
    """How the model runs: attention implementation, padding-free batches, packing, Liger,
    torch.compile (see the module docstring). Decided from the model's config before loading it."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_path)
    requested = settings.attn_implementation
    varlen = varlen_attention(requested, device,
                              AutoModelForCausalLM._model_mapping[type(config)])
    packing = settings.packing
    if packing and device == "cuda" and varlen is None:
        log.warning("config train.packing is true, but %s has no attention kernel here that "
                    "keeps packed examples apart without a dense mask (attn_implementation %s; "
                    "flash-attn not installed): training without packing, "
                    "which is faster than packing through a dense block-diagonal mask",
                    config.model_type, requested or "default")
        packing = False
    compile_ = settings.torch_compile
    if compile_ and device != "cuda":
        log.warning("config train.torch_compile is true, but it pays on a GPU only; off on CPU")
        compile_ = False
    return {"attn_implementation": varlen or requested,
            # TRL's best-fit packing always lays its rows out padding-free
            "padding_free": packing or varlen is not None,
            "packing": packing,
            "use_liger_kernel": use_liger(settings.use_liger_kernel, device, config.model_type),
            "torch_compile": compile_}


# ---------------------------------------------------------------- throughput

# Peak FLOP/s per device in the dtype restyle trains in there: dense bf16 tensor cores (no
# sparsity), or plain fp32 on a GPU without bf16 (V100). Keyed by a word of
# torch.cuda.get_device_name() ("NVIDIA H100 80GB HBM3", "Tesla V100-SXM2-32GB"); the first match
# wins, so a variant (NVL, PCIe) comes before its family
DEVICE_PEAK_FLOPS = (
    ("GH200", 989e12), ("H200 NVL", 835e12), ("H200", 989e12), ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12), ("H100", 989e12), ("H800", 989e12), ("H20", 148e12),
    ("GB200", 2500e12), ("B200", 2250e12), ("A100", 312e12), ("A800", 312e12), ("A10", 125e12),
    ("L40S", 362e12), ("L40", 181e12), ("L4", 121e12), ("RTX 4090", 165e12),
    ("RTX A6000", 155e12), ("MI300X", 1307e12), ("V100-PCIE", 14e12), ("V100", 15.7e12),
)
STEADY_WARMUP_STEPS = 5  # optimizer steps left out of the steady rate (CUDA set-up, compilation)


def device_peak_flops(name: str) -> float | None:
    """Peak FLOP/s of a GPU by its name (DEVICE_PEAK_FLOPS); None for an unknown one and for a
    MIG slice ("... MIG 3g.40gb"), which has only part of the GPU's SMs."""
    if re.search(r"\bMIG\b", name):
        return None
    return next((flops for key, flops in DEVICE_PEAK_FLOPS
                 if re.search(rf"\b{re.escape(key)}\b", name)), None)


def flops_per_token(model) -> int:
    """Model FLOPs of one trained token, forward and backward, from the linear layers' weights.

    A linear layer of n weights costs 2n FLOPs per token forward, 2n for the gradient of its
    input and, when trained, 2n for the gradient of its weights: 6n trained, 4n frozen. So full
    fine-tuning is the usual 6N (N = linear weights, the LM head included and counted even when
    tied to the input embedding, which is a lookup and costs nothing), and LoRA is
    4 N_base + 6 N_adapter: the frozen base still carries the activations' gradients back to the
    adapters of the lower layers. Attention, which has no weights, is `attention_flops`;
    recomputation under activation checkpointing is not model FLOPs. For dense models (Llama, Qwen,
    Mistral ...): experts fused into one parameter are not linear layers and are not counted.
    TRL's fused LM head projects only the trained (response) positions, so on prompt-heavy data
    the GPU does a little less than this. Weights partitioned by ZeRO-3 count whole
    (`ds_numel`)."""
    import torch

    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            weight = module.weight
            n = getattr(weight, "ds_numel", weight.numel())
            total += (6 if weight.requires_grad else 4) * n
    return total


def attention_flops(config) -> int:
    """Attention's FLOPs per trained token and token of its row, forward and backward: the
    scores and the weighted sum, 2 x 2 x heads x head_dim per layer forward, 3x that in all
    (PaLM's and nanoGPT's 12 x layers x hidden x sequence length per token, without halving for
    the causal mask). LoRA pays all of it too: the gradients flow through attention to the
    adapters below. A row of T tokens costs this x T^2 (summed over rows as
    `steady_context_tokens` by `Progress.counts`)."""
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 12 * config.num_hidden_layers * heads * head_dim


def throughput(per_process: list[dict], flops_token: int, attention: int,
               peak_flops: float | None) -> dict:
    """train_metrics.json's throughput keys from each process's token counts and times
    (`Progress.counts`): tokens are summed over processes, seconds are the slowest process's.
    Tokens are non-padding tokens (every token of a padding-free row), padded ones are what the
    model computed on, padding included; FLOP/s and MFU use the non-padding tokens, so padding
    shows as lost utilisation. MFU is against `peak_flops` per process (null when unknown):
    `mfu` counts attention (`attention` FLOPs per context token, `attention_flops`), `mfu_6n`
    the linear layers only (`flops_token`), as the 6N convention does."""

    def rate(tokens: str, seconds: str) -> float | None:
        slowest = max(p[seconds] or 0.0 for p in per_process)
        return sum(p[tokens] for p in per_process) / slowest if slowest > 0 else None

    steady = rate("steady_tokens", "steady_seconds")
    achieved = achieved_6n = None
    if steady is not None:
        achieved_6n = flops_token * steady
        achieved = achieved_6n + attention * rate("steady_context_tokens", "steady_seconds")
    peak = peak_flops * len(per_process) if peak_flops else None
    padded = sum(p["padded_tokens"] for p in per_process)
    return {
        "tokens_this_run": sum(p["tokens"] for p in per_process),
        "padded_tokens_this_run": padded,
        "padding_fraction": 1 - sum(p["tokens"] for p in per_process) / padded if padded else None,
        "tokens_per_second": rate("tokens", "seconds"),
        "padded_tokens_per_second": rate("padded_tokens", "seconds"),
        "steady_tokens_per_second": steady,
        "steady_padded_tokens_per_second": rate("steady_padded_tokens", "steady_seconds"),
        "steady_steps": per_process[0]["steady_steps"],
        # over the steady part: the linear layers' and attention's FLOPs per token
        "flops_per_token": achieved / steady if achieved else None,
        "flops_per_token_6n": flops_token,
        "achieved_flops_per_second": achieved,
        "device_peak_flops": peak_flops,
        "mfu": achieved / peak if achieved and peak else None,
        "mfu_6n": achieved_6n / peak if achieved_6n and peak else None,
    }


def _synchronize(device) -> None:
    """Wait for the GPU's queued work, so that a clock read means the work before it is done."""
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


# ---------------------------------------------------------------- trainer


def _distributed() -> tuple[int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def _device(job: Job) -> str:
    import torch

    return "cuda" if job.gpus > 0 and torch.cuda.is_available() else "cpu"


@functools.cache
def _progress_class():
    """The Progress callback class, made once (transformers is imported only when training)."""
    from transformers import TrainerCallback

    class Progress(TrainerCallback):
        """Times this run's training loop, counts the tokens of the batches it trains on (`count`,
        from `track_progress`), marks where the steady part after warm-up starts, and logs each
        loss line (main process only)."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.start_step = state.global_step
            planned = state.max_steps - state.global_step
            # at least one step of warm-up, and at least one step after it when there are two
            self.warmup = min(STEADY_WARMUP_STEPS, max(1, planned // 4))
            self.tokens = 0  # a device tensor once counting starts: no host sync per batch
            self.context = 0  # sum of each row's length squared (attention_flops)
            self.padded = 0
            self.steady_start = self.end = None
            _synchronize(args.device)
            self.t0 = time.perf_counter()
            self.seconds = None
            self.last = (self.t0, 0, 0)  # time, tokens, context tokens at the last loss record

        def count(self, inputs) -> None:
            import torch

            ids = inputs["input_ids"]
            mask = inputs.get("attention_mask")
            # a padding-free row has no attention mask and no padding
            self.tokens = self.tokens + (mask.sum() if mask is not None else ids.numel())
            self.padded += ids.numel()
            # sum over tokens of 2 x position + 1 is T^2 for a row of T: packed rows restart
            # their position_ids at each example, a padded row's positions count its mask
            position = inputs.get("position_ids")
            if position is None:
                position = (mask.cumsum(-1) - 1 if mask is not None
                            else torch.arange(ids.shape[-1], device=ids.device).expand_as(ids))
            weight = 2 * position + 1
            self.context = self.context + (weight * mask if mask is not None else weight).sum()

        def _mark(self, args, state):
            _synchronize(args.device)
            return (time.perf_counter(), int(self.tokens), self.padded, state.global_step,
                    int(self.context))

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step - self.start_step == self.warmup:
                self.steady_start = self._mark(args, state)

        def on_train_end(self, args, state, control, **kwargs):
            self.end = self._mark(args, state)
            self.seconds = self.end[0] - self.t0

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                open_permissions(Path(args.output_dir) / f"checkpoint-{state.global_step}")

        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.is_world_process_zero and logs and "loss" in logs:
                log.info("step %d/%d loss %.4f lr %.3g", state.global_step, state.max_steps,
                         logs["loss"], logs.get("learning_rate", float("nan")))
                if self.flops is not None:  # for the curves (a callback added after this one)
                    logs.update(self.rates(args, state))

        # (FLOPs per token, per context token, device peak FLOP/s or None): set by `run` when
        # the loss records carry throughput (train.report_to tensorboard)
        flops = None

        def rates(self, args, state) -> dict:
            """This process's tokens/s and MFU since the last loss record (a host sync, once per
            record). MFU counts attention as train_metrics.json's `mfu` does."""
            t, tokens, _, _, context = self._mark(args, state)
            t0, tokens0, context0 = self.last
            self.last = (t, tokens, context)
            if t <= t0:
                return {}
            flops_token, attention, peak = self.flops
            out = {"tokens_per_second_per_process": (tokens - tokens0) / (t - t0)}
            if peak:
                achieved = (flops_token * (tokens - tokens0) + attention * (context - context0))
                out["mfu"] = achieved / (t - t0) / peak
            return out

        def counts(self) -> dict:
            """This process's tokens and seconds, whole loop and steady part (zero seconds when
            the run was too short for one step after warm-up)."""
            t1, tokens, padded, step, context = self.end
            steady = self.steady_start and self.steady_start[3] < step
            t0, tokens0, padded0, step0, context0 = self.steady_start if steady else self.end
            return {"tokens": tokens, "padded_tokens": padded, "seconds": self.seconds,
                    "steady_tokens": tokens - tokens0, "steady_padded_tokens": padded - padded0,
                    "steady_context_tokens": context - context0,
                    "steady_seconds": t1 - t0, "steady_steps": step - step0}

    return Progress


def _metrics_callback():
    return _progress_class()()


def track_progress(trainer):
    """Add the Progress callback to a transformers Trainer and feed it every batch the trainer
    trains on (the batches themselves: the data loader prefetches, so its own counts run ahead).
    Returns the callback. The benchmarks use it on a plain Trainer too."""
    progress = _metrics_callback()
    trainer.add_callback(progress)
    step = trainer.training_step

    def counted_step(model, inputs, *args, **kwargs):
        progress.count(inputs)
        return step(model, inputs, *args, **kwargs)

    trainer.training_step = counted_step
    return progress


def lora_config(lora: Lora):
    """PEFT's LoraConfig of config `train.lora`."""
    from peft import LoraConfig

    targets = list(lora.target_modules)
    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules="all-linear" if targets == ["all-linear"] else targets,
                      task_type="CAUSAL_LM")


def build_trainer(job: Job, s: TrainSettings):
    """The SFTTrainer of a job (model loaded, data tokenized) under its settings `s`
    (TrainSettings.of(job.settings)), ready to `train()`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
    from trl import SFTConfig, SFTTrainer

    rank, world = _distributed()
    if job.gpus > 0 and world != job.gpus * job.nodes:
        raise RuntimeError(f"{world} process(es) started for {job.gpus} GPU(s) x {job.nodes} "
                           "node(s); start one per GPU (python -m restyle.launch)")
    device = _device(job)
    bf16 = device == "cuda" and torch.cuda.is_bf16_supported()
    if device == "cuda" and not bf16:
        log.warning("this GPU has no bf16; training in fp32")
    model_path = read_manifest(job.manifest)["path"]
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dataset = load_examples(job.sft, tokenizer, s.max_length)
    accumulation = gradient_accumulation(s, world)
    plan = kernel_plan(s, device, model_path)

    args = SFTConfig(
        output_dir=job.checkpoint_dir,
        seed=job.seed,
        data_seed=job.seed,
        per_device_train_batch_size=s.per_device_batch_size,
        gradient_accumulation_steps=accumulation,
        learning_rate=s.learning_rate,
        lr_scheduler_type=s.lr_scheduler,
        warmup_steps=s.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=s.weight_decay,
        max_grad_norm=s.max_grad_norm,
        num_train_epochs=s.epochs,
        max_steps=s.max_steps if s.max_steps is not None else -1,
        logging_steps=s.logging_steps,
        save_strategy="steps",
        save_steps=s.save_steps,
        save_total_limit=2,  # the last complete checkpoint survives a kill while saving the next
        bf16=bf16,
        fp16=False,
        use_cpu=device == "cpu",
        ddp_backend="gloo" if device == "cpu" and world > 1 else None,
        ddp_find_unused_parameters=False if world > 1 and s.method == "lora" else None,
        # transformers 5 names it activation checkpointing; the old names (which TRL's config
        # sets by default) are cleared so they do not warn
        activation_checkpointing=s.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False},
        gradient_checkpointing=None,
        gradient_checkpointing_kwargs=None,
        deepspeed=s.deepspeed,
        # padding-free rows without packing: TRL refuses a max_length it would not enforce, and
        # load_examples has cut every example to it already
        max_length=s.max_length if plan["packing"] or not plan["padding_free"] else None,
        packing=plan["packing"],
        packing_strategy="bfd",
        padding_free=plan["padding_free"],
        use_liger_kernel=plan["use_liger_kernel"],
        torch_compile=plan["torch_compile"],
        include_num_input_tokens_seen="non_padding",
        # TensorBoard through its callback (`_curves`), into the run's own folder; wandb by
        # transformers' integration (WANDB_DIR, WANDB_MODE from the environment)
        report_to="wandb" if s.report_to == "wandb" else "none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    # after SFTConfig: with ZeRO-3 it has registered the DeepSpeed config, and from_pretrained
    # then loads the weights partitioned across the processes, once the process group is up
    # (`args.device` starts it; ZeRO-3 would otherwise see a world of one process)
    _ = args.device
    if s.deepspeed:  # on CPU accelerate starts torch.distributed but not DeepSpeed's view of it
        import deepspeed

        deepspeed.init_distributed(dist_backend="gloo" if device == "cpu" else "nccl")
    set_seed(job.seed)  # the adapter's initialisation too (PEFT wraps before Trainer seeds)
    dtype = torch.bfloat16 if bf16 else torch.float32
    model_kwargs = {"dtype": dtype}
    if plan["attn_implementation"]:
        model_kwargs["attn_implementation"] = plan["attn_implementation"]
    model = AutoModelForCausalLM.from_pretrained(model_path, **model_kwargs)
    peft_config = lora_config(s.lora) if s.method == "lora" else None
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    track_progress(trainer)
    if rank == 0:
        log.info("%s: %d examples, %s on %s x%d, effective batch %d (%d per device x %d "
                 "process(es) x %d accumulation), deepspeed %s, %s", job.sft, len(dataset),
                 s.method, device, world, s.batch_size, s.per_device_batch_size, world,
                 accumulation, s.deepspeed or "off",
                 ", ".join(f"{k} {v}" for k, v in _kernels(trainer).items()))
    return trainer


def _kernels(trainer) -> dict:
    """What the trainer runs with (kernel_plan as applied), for the log and the metrics."""
    args = trainer.args
    return {"attn_implementation": trainer.model.config._attn_implementation,
            "padding_free": trainer.padding_free, "packing": args.packing,
            "use_liger_kernel": args.use_liger_kernel, "torch_compile": args.torch_compile}


def _peak_memory_mb(device: str) -> float:
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


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


def tensorboard_dir(job: Job) -> Path:
    """Where a run's TensorBoard event files go: `tensorboard` beside its checkpoints, so they
    outlive them (`tensorboard --logdir results/train` shows every run)."""
    return Path(job.checkpoint_dir).parent / TENSORBOARD


def _curves(job: Job, resume: str | None):
    """The TensorBoard callback of a run: loss, learning rate, grad norm and (from Progress)
    tokens/s and MFU per loss record. A run that starts over drops the curves of an earlier one;
    a resumed run adds its own event file to them."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    folder = tensorboard_dir(job)
    if resume is None:
        shutil.rmtree(folder, ignore_errors=True)
    return TensorBoardCallback(SummaryWriter(log_dir=str(folder)))


def run(job: Job, trainer_hook=None) -> dict | None:
    """Train (resuming from the last checkpoint if any), save the adapter or model atomically,
    write train_metrics.json. Runs in each launched process; returns the metrics on rank 0.
    `trainer_hook(trainer)`, if given, sees the trainer before training (tests use it to record
    the batches the trainer is fed). On a stop signal, or once the clock passes
    $RESTYLE_STOP_AT, it saves a checkpoint at the end of the step, records why in
    checkpoint_dir/stopped.json and returns None without outputs (`_stop_callback`)."""
    started = time.perf_counter()
    rank, world = _distributed()
    if world == 1 and "LOCAL_RANK" not in os.environ:
        prepare_checkpoints(job)  # in process; under the launcher, launch_job did it once
    resume = complete_checkpoints(job.checkpoint_dir)
    resume = str(resume[-1]) if resume else None
    if resume and rank == 0:
        log.info("resuming from %s", resume)
    device = _device(job)
    if device == "cuda":
        import torch

        torch.cuda.reset_peak_memory_stats()  # this run's peak, also when run twice in a process
    s = TrainSettings.of(job.settings)
    trainer = build_trainer(job, s)
    if trainer_hook is not None:
        trainer_hook(trainer)
    progress = next(cb for cb in trainer.callback_handler.callbacks
                    if isinstance(cb, _progress_class()))
    flops_token, attention = flops_per_token(trainer.model), attention_flops(trainer.model.config)
    if s.report_to == "tensorboard" and rank == 0:
        progress.flops = (flops_token, attention, device_peak_flops(_device_name(device))
                          if device == "cuda" else None)
        trainer.add_callback(_curves(job, resume))
    stop = _stop_callback()
    trainer.add_callback(stop)
    stop.install()
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    finally:
        stop.restore()
    runs = Path(job.checkpoint_dir) / RUNS
    if rank == 0:
        with open(runs, "a", encoding="utf-8") as f:
            f.write(json.dumps({"from_step": progress.start_step,
                                "to_step": trainer.state.global_step,
                                "stopped": stop.stopped}) + "\n")
    if stop.stopped:
        if rank == 0:
            write_json(Path(job.checkpoint_dir) / STOPPED,
                       {"step": trainer.state.global_step, "reason": stop.stopped})
            log.warning("stopped at step %d of %d (%s); checkpoint saved, a rerun resumes there",
                        trainer.state.global_step, trainer.state.max_steps, stop.stopped)
        _barrier()
        return None

    final = Path(job.adapter_dir)
    tmp = final.with_name(final.name + ".partial")
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    _barrier()
    trainer.save_model(str(tmp))  # every process: ZeRO-3 gathers the weights
    processes = _gather({**progress.counts(), "peak_memory_mb": _peak_memory_mb(device)})
    _barrier()
    if rank != 0:
        return None
    open_permissions(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)

    state = trainer.state
    curve = [{k: e[k] for k in ("step", "epoch", "loss", "learning_rate", "grad_norm",
                                "mean_token_accuracy") if k in e}
             for e in state.log_history if "loss" in e]
    kernels = _kernels(trainer)
    device_name = _device_name(device)
    bf16 = trainer.args.bf16
    metrics = {
        **job.labels,
        "seed": job.seed,
        "method": s.method,
        "device": device,
        "device_name": device_name,
        "dtype": "bfloat16" if bf16 else "float32",
        "processes": world,
        "nodes": job.nodes,
        "deepspeed": Path(s.deepspeed).stem if s.deepspeed else None,
        "zero_stage": (trainer.accelerator.state.deepspeed_plugin.zero_stage
                       if trainer.is_deepspeed_enabled else None),
        **kernels,  # packing as run: false where a GPU has no kernel for it (kernel_plan)
        "examples": len(trainer.train_dataset) if not kernels["packing"] else None,
        "steps": state.global_step,
        "planned_steps": state.max_steps,
        "epochs": state.epoch,
        "effective_batch_size": s.batch_size,
        "per_device_batch_size": s.per_device_batch_size,
        "gradient_accumulation_steps": trainer.args.gradient_accumulation_steps,
        "resumed_from_step": progress.start_step or None,
        # each run that trained this, in order: steps (from_step, to_step], why it stopped early
        "runs": [json.loads(line) for line in runs.read_text(encoding="utf-8").splitlines()],
        "loss_curve": curve,
        "first_loss": curve[0]["loss"] if curve else None,
        "final_loss": curve[-1]["loss"] if curve else None,
        "train_loss_this_run": result.training_loss,
        "tokens_seen": state.num_input_tokens_seen,
        # the table's peak is in the dtype a GPU trains in: bf16, or fp32 where it has none
        **throughput(processes, flops_token, attention,
                     device_peak_flops(device_name) if device == "cuda" else None),
        "steady_after_steps": progress.warmup,
        "train_seconds_this_run": progress.seconds,
        "wall_seconds_this_run": time.perf_counter() - started,
        "peak_memory_mb": max(p["peak_memory_mb"] for p in processes),
        "peak_memory_kind": "cuda max allocated, max over processes" if device == "cuda"
        else "process max RSS, max over processes",
        "settings": job.settings,  # as rule train's params gave them, key order included
    }
    write_json(job.metrics, metrics)
    if not s.keep_checkpoints:
        shutil.rmtree(job.checkpoint_dir, ignore_errors=True)
    log.info("done: %d steps, final loss %s, %.0f tokens/s (steady %.0f, MFU %s), adapter at %s",
             state.global_step, metrics["final_loss"], metrics["tokens_per_second"] or math.nan,
             metrics["steady_tokens_per_second"] or math.nan,
             f"{metrics['mfu']:.1%}" if metrics["mfu"] is not None else "n/a", final)
    return metrics


# ---------------------------------------------------------------- launching


def launch_job(job: Job, gpus: int, cpus: int, log_path: str | None = None,
               nodes: int = 1, stop_before_end: float | None = None) -> None:
    """What the Snakemake rule runs: check the GPUs (or, on several nodes, the SLURM job's
    nodes; each node's launcher checks its GPUs), prepare the checkpoints, start one process per
    GPU (or `cpu_processes` on CPU) on each node through `restyle.launch`. `gpus` and `cpus` are
    per node. After success the checkpoints are removed unless `keep_checkpoints`.

    In a SLURM job with a time limit, training stops `stop_before_end` seconds before it with a
    checkpoint, and the job is requeued (`scontrol requeue`: SLURM ends it and starts it again,
    resuming there); where SLURM refuses, TrainingStopped fails the job for Snakemake's retry.
    A stop by signal (scancel, preemption) raises too, with no requeue: a cancelled job stays
    cancelled, a preempted one SLURM requeues itself."""
    from restyle import launch

    job = replace(job, gpus=gpus, nodes=nodes)  # what the launched processes read (job.json)
    if nodes == 1:  # before touching anything
        launch.check_gpus(gpus)
    else:
        launch.job_hosts(nodes)
    prepare_checkpoints(job)
    stopped = Path(job.checkpoint_dir) / STOPPED
    stopped.unlink(missing_ok=True)  # an earlier run's
    end = launch.job_end() if stop_before_end is not None else None
    if end is not None:  # every launched process inherits it, on every node (srun passes it)
        os.environ[STOP_AT] = str(end - stop_before_end)
        log.info("the job ends at %s: training stops with a checkpoint %d s before",
                 time.strftime("%H:%M:%S", time.localtime(end)), stop_before_end)
    job_file = Path(job.checkpoint_dir) / JOB_FILE
    job.save(job_file)
    launch.run(["--job", str(job_file)], gpus=gpus, cpus=cpus,
               cpu_processes=TrainSettings.of(job.settings).cpu_processes, log_path=log_path,
               nodes=nodes)
    if stopped.is_file():
        info = json.loads(stopped.read_text())
        if info["reason"] == "time limit" and launch.requeue():
            # slurmctld has the job pending again already: the failure below ends this run only
            log.info("requeued at step %d; SLURM starts the job again", info["step"])
        raise TrainingStopped(f"training stopped at step {info['step']} ({info['reason']}); "
                              f"a rerun resumes from {job.checkpoint_dir}")
    if not (Path(job.metrics).is_file() and Path(job.adapter_dir).is_dir()):
        raise RuntimeError("training ended without writing its outputs")


def main(argv: list[str] | None = None) -> None:
    """Entry of each launched process: `python -m restyle.train --job job.json`."""
    from restyle import launch

    # first of all, so that no kill of torchrun (or of its launcher) leaves this process training
    # alone; SIGKILL: torchrun is gone only after its own stop (SIGTERM, forwarded to these
    # processes, which save at the end of their step) or a kill, and then none can wait
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
