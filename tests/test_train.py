"""Fine-tuning: real LoRA runs of SmolLM2 on CPU, in process and through the launcher (torchrun,
gloo), DeepSpeed ZeRO on CPU, kill-and-resume, packing without cross-attention, the GPU check,
and the Snakemake rule."""

from __future__ import annotations

import json
import os
import re
import signal
import stat
import subprocess
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from restyle import config, launch, models, train
from restyle.chat import IGNORE_INDEX, encode
from restyle.io import read_jsonl
from restyle.records import SFTRecord
from restyle.train import (Job, TrainSettings, build_trainer, complete_checkpoints, launch_job, run,
                           tensorboard_dir)

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


def toy_records(n: int = 16) -> list[dict]:
    """Additions with a fixed answer pattern (easy to learn in a few steps); some prompts carry
    a system message or an earlier exchange, so the masks cover more than one template path."""
    rows = []
    for i in range(n):
        a, b = 3 + 7 * i % 41, 5 + 11 * i % 37
        prompt = [{"role": "user", "content": f"What is {a} plus {b}?"}]
        if i % 4 == 1:
            prompt.insert(0, {"role": "system", "content": "Answer briefly."})
        if i % 4 == 2:
            prompt = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                      *prompt]
        rows.append({"id": f"toy/{i}", "source_id": f"q{i}", "dataset": "toy", "prompt": prompt,
                     "completion": f"{a} + {b} = {a + b}. Final Answer: {a + b}",
                     "provenance": {}})
    return rows


@pytest.fixture(scope="module")
def sft_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sft") / "toy.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in toy_records()))
    return path


def default_settings(**overrides) -> dict:
    """Config train of config/config.yaml with the schema's defaults filled in (as the rules see
    it), resolved for one model, then made small for a test."""
    settings = config.default_settings(REPO / "config" / "config.yaml", REPO / "config" / "schema.yaml")
    settings.update(max_length=96, per_device_batch_size=4, batch_size=4, max_steps=4,
                    learning_rate=2e-3, warmup_ratio=0.0, logging_steps=1, save_steps=100)
    settings.update(overrides)
    return settings


def make_job(tmp: Path, manifest: Path, sft: Path, seed: int = 0, **overrides) -> Job:
    out = tmp / "out"
    return Job(manifest=str(manifest), sft=str(sft), adapter_dir=str(out / "adapter"),
               metrics=str(out / "train_metrics.json"), checkpoint_dir=str(tmp / "checkpoints"),
               seed=seed, settings=default_settings(**overrides),
               labels={"model": "smollm2", "sft_set": "toy"})


def scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar of a TensorBoard run folder, as tensorboard reads it: tag -> [(step, value)]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)]
            for tag in events.Tags()["scalars"]}


def expected_encodings(manifest: Path, sft: Path, max_length: int):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(models.read_manifest(manifest)["path"])
    return tokenizer, [encode(tokenizer, r.prompt, r.completion, max_length)
                       for r in read_jsonl(sft, SFTRecord.from_dict)]


def mean_nll(model, tokenizer, encodings) -> float:
    import torch

    total = count = 0.0
    with torch.no_grad():
        for enc in encodings:
            out = model(input_ids=torch.tensor([enc.input_ids]), labels=torch.tensor([enc.labels]))
            n = enc.n_response_tokens
            total, count = total + out.loss.item() * n, count + n
    return total / count


# ---------------------------------------------------------------- in process


def test_lora_fine_tune_learns_masks_the_prompt_and_saves_a_loadable_adapter(
        tmp_path, smollm2_manifest, sft_file):
    import torch
    from transformers import TrainerCallback

    from restyle.models import load_checkpoint as load_model
    from restyle.models import load

    # study B's adapters (rank 8 on q_proj, v_proj), whatever the offline default trains
    job = make_job(tmp_path, smollm2_manifest, sft_file, max_steps=3,
                   lora={"rank": 8, "alpha": 16, "dropout": 0.05,
                         "target_modules": ["q_proj", "v_proj"]})
    tokenizer, encodings = expected_encodings(smollm2_manifest, sft_file, 96)
    expected = {tuple(e.input_ids): e.labels for e in encodings}
    seen_rows = []
    checkpoint_modes = set()

    class CheckpointModes(TrainerCallback):  # after restyle's own on_save, added before it
        def on_save(self, args, state, control, **kwargs):
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            checkpoint_modes.update(stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()
                                    if p.is_file())

    def record_batches(trainer):
        trainer.add_callback(CheckpointModes())
        collate = trainer.data_collator

        def recording(examples):
            batch = collate(examples)
            for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
                n = int(mask.sum())
                assert (labels[n:] == IGNORE_INDEX).all()  # padding is never trained
                seen_rows.append((tuple(ids[:n].tolist()), labels[:n].tolist()))
            return batch

        trainer.data_collator = recording

    metrics = run(job, trainer_hook=record_batches)

    # every row the trainer was fed is an encoded example with exactly encode()'s labels:
    # -100 on every prompt token, the token itself on every response token
    assert len(seen_rows) >= 3 * 4  # 3 steps of 4 (the data loader may collate one batch ahead)
    for ids, labels in seen_rows:
        assert labels == expected[ids]
        first_trained = next(i for i, t in enumerate(labels) if t != IGNORE_INDEX)
        assert first_trained > 10 and all(t == IGNORE_INDEX for t in labels[:first_trained])

    out = Path(job.adapter_dir)
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    # readable by colleagues on a shared folder: the umask's permissions, as open() gives
    umask = os.umask(0)
    os.umask(umask)
    assert {stat.S_IMODE(p.stat().st_mode) for p in [*out.iterdir(), Path(job.metrics)]} == {
        0o666 & ~umask} == checkpoint_modes
    assert not Path(job.checkpoint_dir).exists()  # removed after success (keep_checkpoints false)
    saved = json.loads(Path(job.metrics).read_text())
    assert saved["steps"] == 3 and saved["processes"] == 1 and saved["device"] == "cpu"
    assert saved["dtype"] == "float32" and saved["resumed_from_step"] is None
    assert [p["step"] for p in saved["loss_curve"]] == [1, 2, 3]
    assert saved["final_loss"] < saved["first_loss"]
    assert saved["tokens_seen"] > 0 and saved["tokens_per_second"] > 0
    assert saved["peak_memory_mb"] > 100 and saved["train_seconds_this_run"] > 0
    # throughput from the batches: padded on CPU (examples of different lengths), steady after
    # one warm-up step of three; no MFU without a known GPU peak
    assert saved["padded_tokens_this_run"] > saved["tokens_this_run"] > 12 * 20
    assert 0 < saved["padding_fraction"] < 0.5
    assert saved["padded_tokens_per_second"] > saved["tokens_per_second"]
    assert saved["steady_after_steps"] == 1 and saved["steady_steps"] == 2
    assert saved["steady_tokens_per_second"] > 0 and saved["steady_padded_tokens_per_second"] > 0
    assert saved["device_name"] == "cpu" and saved["device_peak_flops"] is None
    assert saved["mfu"] is None and saved["mfu_6n"] is None
    assert saved["achieved_flops_per_second"] == pytest.approx(
        saved["flops_per_token"] * saved["steady_tokens_per_second"])
    # LoRA on SmolLM2-135M: 4 x its 134.5M linear weights (LM head included) + 6 x the adapters
    assert 4 * 134.5e6 < saved["flops_per_token_6n"] < 4 * 134.6e6 + 6 * 1e6
    # and attention, 12 x 30 layers x 576 x each token's row length (rows of 20-odd tokens here)
    attention = saved["flops_per_token"] - saved["flops_per_token_6n"]
    assert 12 * 30 * 576 * 10 < attention < 12 * 30 * 576 * 200
    assert {k: saved[k] for k in ("attn_implementation", "padding_free", "packing",
                                  "use_liger_kernel", "torch_compile")} == {
        "attn_implementation": "sdpa", "padding_free": False, "packing": False,
        "use_liger_kernel": False, "torch_compile": False}
    assert saved["model"] == "smollm2" and saved["sft_set"] == "toy" and saved["seed"] == 0
    assert metrics == saved
    # the curves (train.report_to tensorboard) outlive the checkpoints, one record a step
    curves = scalars(tensorboard_dir(job))
    for tag in ("train/loss", "train/learning_rate", "train/grad_norm",
                "train/tokens_per_second_per_process"):
        assert [step for step, _ in curves[tag]] == [1, 2, 3], tag
    assert [v for _, v in curves["train/loss"]] == pytest.approx(
        [p["loss"] for p in saved["loss_curve"]], rel=1e-5)
    assert all(v > 0 for _, v in curves["train/tokens_per_second_per_process"])
    assert "train/mfu" not in curves  # no known peak on a CPU

    # the adapter loads on the base model (as evaluation does), changes its output, and lowers
    # the response loss on the training set
    base, _ = load(smollm2_manifest)
    tuned, _ = load_model(smollm2_manifest, out)
    probe = torch.tensor([encodings[0].input_ids])
    with torch.no_grad():
        assert not torch.allclose(base(probe).logits, tuned(probe).logits, atol=1e-3)
    sample = encodings[::3]
    assert mean_nll(tuned, tokenizer, sample) < mean_nll(base, tokenizer, sample) - 0.05


@pytest.mark.parametrize("packing, attention", [(True, "sdpa"), (False, "flex_attention")])
def test_padding_free_rows_keep_examples_apart(tmp_path, smollm2_manifest, sft_file, monkeypatch,
                                              packing, attention):
    """Padding-free rows, packed (TRL best-fit; on CPU through SDPA's dense mask) or not (the
    micro-batch's examples end to end, through flex attention's block mask: the path a GPU takes
    with flash-attn or flex_attention asked for), hold whole examples with encode()'s labels, and a forward pass
    over a row gives each example the logits it gets alone: no cross-attention."""
    import torch

    if attention == "flex_attention":  # as on a GPU; flex attention runs on CPU too
        monkeypatch.setattr(train, "varlen_attention", lambda *a: attention)
    job = make_job(tmp_path, smollm2_manifest, sft_file, packing=packing, max_length=256)
    _, encodings = expected_encodings(smollm2_manifest, sft_file, 256)
    expected = {tuple(e.input_ids): e.labels for e in encodings}
    trainer = build_trainer(job, TrainSettings.of(job.settings))
    assert trainer.padding_free and trainer.args.packing == packing
    assert trainer.model.config._attn_implementation == attention
    batch = next(iter(trainer.get_train_dataloader()))
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] == 1
    pos, ids, labels = batch["position_ids"][0], batch["input_ids"][0], batch["labels"][0]
    starts = [*(pos == 0).nonzero().flatten().tolist(), len(pos)]
    segments = list(zip(starts[:-1], starts[1:]))
    assert len(segments) > 2
    for a, b in segments:
        want = expected[tuple(ids[a:b].tolist())]
        assert labels[a:b].tolist() == [IGNORE_INDEX, *want[1:]]
    model = trainer.model.eval()
    with torch.no_grad():
        # no cache: with one, transformers would not look for examples in the position_ids
        packed = model(input_ids=ids[None], position_ids=pos[None], use_cache=False).logits[0]
        for a, b in segments:
            alone = model(input_ids=ids[None, a:b], use_cache=False).logits[0]
            # rounding only (flex attention sums in another order: 1e-4 on logits of about 30);
            # a token attending across examples would move them by whole units
            assert torch.allclose(packed[a:b], alone, atol=5e-4)


# ---------------------------------------------------------------- launcher


def test_train_settings_are_the_schema_keys_training_computes_from():
    """TrainSettings has a field per key of config `train` but seeds, per_model and the sizing
    and scheduling keys (restyle.config), and the schema's defaults where a dict lacks one."""
    defaults = train.schema_defaults()
    assert {f.name for f in fields(TrainSettings)} == (
        set(defaults) - {"seeds", "per_model", *config.SIZING})
    assert {f.name for f in fields(train.Lora)} == set(defaults["lora"])
    assert {f.name for f in fields(train.Resources)} == (
        set(defaults["resources"]) - set(config.SCHEDULING))
    assert TrainSettings.of({}).lora.rank == defaults["lora"]["rank"]


@pytest.mark.parametrize("configs", [["config.yaml"], ["config.yaml", "paper.yaml"]])
def test_a_job_records_its_params_settings_verbatim(tmp_path, configs):
    """What scripts/train.py gives a job, and so train_metrics.json's `settings`, is rule train's
    params `settings` with the deepspeed file: byte for byte what it was before TrainSettings
    (key order included, which follows the config file), for the default config and the paper's
    merged over it; the record made of it holds the same keys and values."""
    from snakemake.utils import update_config

    merged = {}
    for name in configs:
        update_config(merged, yaml.safe_load((REPO / "config" / name).read_text()))
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(merged, sort_keys=False))
    params = config.training_settings(
        config.default_settings(config_file, REPO / "config" / "schema.yaml"), "any")
    before = dict(params)
    before["deepspeed"] = "config/deepspeed/zero2.json"  # scripts/train.py before the record
    given = {**params, "deepspeed": "config/deepspeed/zero2.json"}  # and now
    assert json.dumps(given, indent=2) == json.dumps(before, indent=2)
    assert json.loads(json.dumps(asdict(TrainSettings.of(given)))) == given


def test_deepspeed_configs_are_valid_for_the_installed_deepspeed(tmp_path):
    from accelerate.utils import DeepSpeedPlugin
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import TrainingArguments
    from transformers.integrations import HfDeepSpeedConfig

    for stage in (2, 3):
        path = REPO / "config" / "deepspeed" / f"zero{stage}.json"
        assert HfDeepSpeedConfig(str(path)).get_value("zero_optimization.stage") == stage
        assert DeepSpeedPlugin(hf_ds_config=str(path)).zero_stage == stage
        args = TrainingArguments(output_dir=str(tmp_path), deepspeed=str(path), use_cpu=True,
                                 per_device_train_batch_size=4, gradient_accumulation_steps=2)
        filled = args.hf_deepspeed_config.config
        for key, value in {"stage3_prefetch_bucket_size": 1e6, "reduce_bucket_size": 1e6,
                           "stage3_param_persistence_threshold": 1e4}.items():
            if filled["zero_optimization"].get(key) == "auto":
                filled["zero_optimization"][key] = value
        assert "auto" not in json.dumps(filled)
        # DeepSpeed's own parser: unknown or misspelt keys and inconsistent batch sizes fail here
        ds = DeepSpeedConfig(filled)
        assert ds.zero_optimization_stage == stage and ds.train_batch_size == 8


def test_deepspeed_zero2_trains_on_cpu(tmp_path, smollm2_manifest, sft_file):
    """ZeRO-2 over two gloo processes on CPU (DeepSpeed's CPU accelerator). DeepSpeed compiles its
    shared-memory all-reduce op (g++ and ninja) the first time, about a minute, cached after."""
    job = make_job(tmp_path, smollm2_manifest, sft_file, cpu_processes=2, per_device_batch_size=2,
                   max_steps=1, deepspeed=str(REPO / "config" / "deepspeed" / "zero2.json"))
    launch_job(job, gpus=0, cpus=2, log_path=str(tmp_path / "train.log"))
    metrics = json.loads(Path(job.metrics).read_text())
    assert metrics["deepspeed"] == "zero2" and metrics["zero_stage"] == 2
    assert metrics["processes"] == 2 and metrics["steps"] == 1
    assert (Path(job.adapter_dir) / "adapter_model.safetensors").is_file()


def test_killed_run_resumes_from_its_last_checkpoint(tmp_path, smollm2_manifest, sft_file):
    job = make_job(tmp_path, smollm2_manifest, sft_file, max_steps=3, save_steps=1,
                   per_device_batch_size=1, batch_size=1)
    job_file = tmp_path / "job.json"
    job.save(job_file)
    code = ("import sys; from restyle.train import Job, launch_job; "
            "launch_job(Job.load(sys.argv[1]), gpus=0, cpus=2, log_path=sys.argv[2])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(job_file), str(tmp_path / "1.log")],
                            start_new_session=True)
    deadline = time.time() + 240
    while not complete_checkpoints(job.checkpoint_dir):
        assert proc.poll() is None, (tmp_path / "1.log").read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # launcher, torchrun and the worker, like a node loss
    proc.wait()
    assert not Path(job.metrics).exists() and not Path(job.adapter_dir).exists()
    done = int(complete_checkpoints(job.checkpoint_dir)[-1].name.split("-")[1])
    assert 1 <= done < 3

    launch_job(job, gpus=0, cpus=2, log_path=str(tmp_path / "2.log"))
    metrics = json.loads(Path(job.metrics).read_text())
    assert metrics["resumed_from_step"] >= done
    # the resumed run adds its own event file to the first run's curves: every step is there
    assert len(list(tensorboard_dir(job).glob("events.out.tfevents.*"))) == 2
    assert {step for step, _ in scalars(tensorboard_dir(job))["train/loss"]} == {1, 2, 3}
    assert metrics["steps"] == metrics["planned_steps"] == 3
    assert [p["step"] for p in metrics["loss_curve"]] == [1, 2, 3]
    assert "resuming from" in (tmp_path / "2.log").read_text()


def test_checkpoints_of_other_settings_are_not_resumed(tmp_path, smollm2_manifest, sft_file):
    from restyle.train import prepare_checkpoints

    job = make_job(tmp_path, smollm2_manifest, sft_file)
    fake = Path(job.checkpoint_dir) / "checkpoint-3"
    fake.mkdir(parents=True)
    (fake / "trainer_state.json").write_text("{}")
    (Path(job.checkpoint_dir) / "checkpoint-5").mkdir()  # killed while saving: no trainer state
    assert prepare_checkpoints(job) is None  # no fingerprint: not this run's, removed
    fake.mkdir()
    (fake / "trainer_state.json").write_text("{}")
    (Path(job.checkpoint_dir) / "checkpoint-5").mkdir()
    assert prepare_checkpoints(job) == fake  # same run: resume; the half-written one is removed
    assert not (Path(job.checkpoint_dir) / "checkpoint-5").exists()
    job.settings["learning_rate"] *= 2
    assert prepare_checkpoints(job) is None and not fake.exists()


def test_gpu_count_mismatch_stops_with_a_clear_message(tmp_path, smollm2_manifest, sft_file,
                                                       monkeypatch):
    with pytest.raises(launch.LaunchError, match=r"asked for 2 GPU\(s\) \(config "
                       r"train.resources.gpu\) but 0 are visible"):
        launch.check_gpus(2, visible=0)
    launch.check_gpus(0, visible=0)
    launch.check_gpus(1, visible=1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    job = make_job(tmp_path, smollm2_manifest, sft_file)
    with pytest.raises(launch.LaunchError, match="CUDA_VISIBLE_DEVICES=''"):
        launch_job(job, gpus=2, cpus=2)
    assert not Path(job.adapter_dir).exists()


def test_job_port_is_unique_per_slurm_job():
    ports = {launch.job_port({"SLURM_JOB_ID": str(j)}) for j in (101, 102, 103)}
    assert len(ports) == 3 and 29500 not in ports
    assert all(launch.PORT_BASE <= p < launch.PORT_BASE + launch.PORT_SPAN for p in ports)


# ---------------------------------------------------------------- Snakemake rule


def snakemake(workdir: Path, config: dict, *args: str) -> subprocess.CompletedProcess:
    path = workdir / "test-config.yaml"
    path.write_text(yaml.safe_dump(config))
    cmd = [SNAKEMAKE, *args, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2",
           "--configfile", str(REPO / "config" / "config.yaml"), str(path)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


@pytest.fixture()
def workdir(tmp_path, smollm2_manifest, sft_file):
    work = tmp_path / "work"
    (work / "results" / "sft").mkdir(parents=True)
    (work / "results" / "sft" / "toy.jsonl").write_text(sft_file.read_text())
    model = {"source": str(smollm2_manifest.parent / "hf")}
    config = {"models": {"smollm2-135m": model},
              "train": {"max_steps": 2, "batch_size": 4, "per_device_batch_size": 2,
                        "max_length": 96, "cpu_processes": 2, "seeds": [0, 1]}}
    return work, config


TARGET = "results/train/smollm2-135m/toy/seed1/train_metrics.json"


def test_rule_trains_with_two_cpu_processes_through_the_launcher(workdir):
    """A real train job, then `runtime: auto` sized by its measured throughput: the next seed's
    sbatch -t is its measured time x runtime_margin (restyle.sizing), and switching the runtime
    (or any scheduling key) reruns no training."""
    work, config = workdir
    config["train"]["max_steps"] = 8  # 3 steps after the warm-up: a measured throughput
    result = snakemake(work, config, TARGET)
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((work / TARGET).read_text())
    assert metrics["seed"] == 1 and metrics["processes"] == 2 and metrics["steps"] == 8
    assert metrics["gradient_accumulation_steps"] == 1  # 2 per device x 2 processes = batch 4
    log = (work / "logs/train/smollm2-135m/toy/seed1.log").read_text()
    assert "launching 2 process(es) on CPU (gloo)" in log and "--nproc-per-node=2" in log
    assert "[rank 0]" in log and "[rank 1]" in log and "127.0.0.1:29500" not in log
    assert (work / "results/train/smollm2-135m/toy/seed1/adapter/adapter_config.json").is_file()
    assert not (work / "results/train/smollm2-135m/toy/seed1/checkpoints").exists()
    assert (work / "logs/benchmarks/train/smollm2-135m/toy/seed1.tsv").is_file()
    assert "Nothing to be done" in snakemake(work, config, TARGET, "-n").stdout

    margin = 60  # minutes of the estimate = its seconds
    config["train"]["resources"] = {"runtime": "auto", "runtime_margin": margin,
                                    "startup_s": 0, "stop_before_end": 0, "mem_mb": 3000}
    assert "Nothing to be done" in snakemake(work, config, TARGET, "-n").stdout
    plan = snakemake(work, config, TARGET.replace("seed1", "seed0"), "-n")
    assert plan.returncode == 0, plan.stderr
    [minutes] = re.findall(r"\bruntime=(\d+)", plan.stdout)
    steady = metrics["steady_tokens_per_second"] / metrics["tokens_per_second"]
    measured = metrics["train_seconds_this_run"] / steady  # the whole run at the steady pace
    assert 0.5 * measured <= int(minutes) <= 2 * measured + 1, (minutes, measured)


def test_rule_resources_per_model_and_gpu_check(workdir):
    work, config = workdir
    config["train"]["per_model"] = {"smollm2-135m": {
        "deepspeed": "zero2",
        "resources": {"gpu": 2, "cpus_per_gpu": 3, "mem_mb": 64000, "runtime": 240,
                      "slurm_partition": "gpu", "slurm_extra": "--constraint=a100"}}}
    plan = snakemake(work, config, TARGET, "-n")
    assert plan.returncode == 0, plan.stderr
    [resources] = [line for line in plan.stdout.splitlines() if "cpus_per_gpu=" in line]
    for value in ("gpu=2,", "cpus_per_gpu=3,", "runtime=240,", "slurm_partition=gpu,",
                  "slurm_extra=--constraint=a100,", "mem_mb=64000,"):
        assert f" {value}" in resources, resources
    assert "config/deepspeed/zero2.json" in plan.stdout  # the DeepSpeed file is an input
    assert "slurm_account" not in plan.stdout  # unset: no -A flag

    result = snakemake(work, config, TARGET, "--resources", "gpu=2")
    assert result.returncode != 0
    log = (work / "logs/train/smollm2-135m/toy/seed1.log").read_text()
    assert "training asked for 2 GPU(s) (config train.resources.gpu) but 0 are visible" in log
    assert not (work / "results/train/smollm2-135m/toy/seed1/adapter").exists()
    assert not (work / TARGET).exists()


def test_bad_train_config_names_the_key(workdir):
    work, config = workdir
    config["train"]["per_model"] = {"smollm2-135m": {"lora": {"rnak": 4}}}
    result = snakemake(work, config, TARGET, "-n")
    assert result.returncode != 0
    assert "config train.per_model.smollm2-135m.lora.rnak: unknown key" in result.stdout + result.stderr


# ---------------------------------------------------------------- kill -9: no worker left behind


def running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in "ZX"  # a zombie has ended, unreaped


def job_processes(root: Path) -> dict[int, str]:
    """Running training processes (launcher, torchrun, workers) whose command line or working
    directory lies under `root`, by pid: their command lines."""
    root, found = str(root.resolve()), {}
    for proc in Path("/proc").iterdir():
        try:
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            cwd = os.readlink(proc / "cwd")
        except (OSError, ValueError):
            continue
        if (proc.name.isdigit() and ("restyle." in cmd or "train.py" in cmd)
                and (root in cmd or cwd.startswith(root)) and running(int(proc.name))):
            found[int(proc.name)] = cmd
    return found


def workers(root: Path) -> list[int]:
    return [pid for pid, cmd in job_processes(root).items()
            if "-m restyle.train" in cmd and "torch.distributed.run" not in cmd]


def wait_for(condition, seconds: float, what: str):
    deadline = time.time() + seconds
    while not (value := condition()):
        assert time.time() < deadline, f"after {seconds} s: {what}"
        time.sleep(0.2)
    return value


def kill_all(root: Path, session: int) -> None:
    """Cleanup after a failed test: no process of it outlives it."""
    for pid in [session, *job_processes(root)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux")
def test_a_process_whose_parent_already_ended_exits_at_once():
    code = ("import os; from restyle.launch import die_with_parent; "
            "die_with_parent(15, parent=os.getppid() + 1); print('still here')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 1 and "still here" not in result.stdout


@pytest.mark.parametrize("victim", ["launcher", "torchrun"])
def test_kill_9_of_the_launcher_or_torchrun_ends_the_workers(tmp_path, smollm2_manifest, sft_file,
                                                              victim):
    job = make_job(tmp_path, smollm2_manifest, sft_file, max_steps=10_000)
    job.save(tmp_path / "job.json")
    log = tmp_path / "train.log"
    launcher = subprocess.Popen([sys.executable, "-m", "restyle.launch", "--cpus", "2", "--log",
                                 str(log), "--", "--job", str(tmp_path / "job.json")],
                                start_new_session=True)
    try:
        # the worker has started training (its startup, the parent-death signal first, is over)
        wait_for(lambda: log.is_file() and "[rank 0]" in log.read_text(), 120, "no worker log")
        [worker] = workers(tmp_path)
        [torchrun] = [p for p, cmd in job_processes(tmp_path).items() if "torch.distributed.run" in cmd]
        os.kill(launcher.pid if victim == "launcher" else torchrun, signal.SIGKILL)
        wait_for(lambda: not (running(worker) or running(torchrun)), 10,
                 f"worker {worker} or torchrun {torchrun} still running")
        assert launcher.wait(timeout=10) != 0
        assert not job_processes(tmp_path)
    finally:
        kill_all(tmp_path, launcher.pid)


@pytest.mark.parametrize("kill", ["process group", "snakemake alone"])
def test_kill_9_of_snakemake_ends_training_and_the_rerun_resumes(workdir, kill):
    """Whether the whole job (snakemake's process group) or snakemake alone is killed -9 during
    training, no process of the job is left; the rerun resumes from the last checkpoint."""
    work, config = workdir
    config["train"].update(max_steps=8, save_steps=2, cpu_processes=1, batch_size=2,
                           per_device_batch_size=2)
    (work / "test-config.yaml").write_text(yaml.safe_dump(config))
    cmd = [SNAKEMAKE, TARGET, "-s", str(REPO / "Snakefile"), "-d", str(work), "--cores", "2",
           "--configfile", str(REPO / "config" / "config.yaml"), str(work / "test-config.yaml")]
    out = work.parent / "snakemake.out"
    with out.open("w") as f:
        smk = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    run_dir = work / "results/train/smollm2-135m/toy/seed1"
    try:
        wait_for(lambda: complete_checkpoints(run_dir / "checkpoints") or smk.poll() is not None,
                 180, "no checkpoint")
        assert smk.poll() is None, out.read_text()[-3000:]
        job = job_processes(work)
        assert len(job) == 3 and len(workers(work)) == 1, job  # launcher, torchrun, worker
        if kill == "process group":
            os.killpg(smk.pid, signal.SIGKILL)
        else:
            os.kill(smk.pid, signal.SIGKILL)
        smk.wait()
        wait_for(lambda: not any(map(running, job)), 10, f"still running: {job_processes(work)}")
        assert not job_processes(work)
    finally:
        kill_all(work, smk.pid)
    assert not (work / TARGET).exists() and not (run_dir / "adapter").exists()
    done = int(complete_checkpoints(run_dir / "checkpoints")[-1].name.split("-")[1])

    assert snakemake(work, config, TARGET, "--unlock").returncode == 0  # the killed run's lock
    result = snakemake(work, config, TARGET)
    assert result.returncode == 0, result.stdout + result.stderr
    log = (work / "logs/train/smollm2-135m/toy/seed1.log").read_text()  # the rerun's alone
    assert f"resuming from {run_dir.relative_to(work)}/checkpoints/checkpoint-{done}" in log
    metrics = json.loads((work / TARGET).read_text())
    assert metrics["resumed_from_step"] == done and metrics["steps"] == 8
