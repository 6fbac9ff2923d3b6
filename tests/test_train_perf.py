"""Training throughput and kernels: the FLOP formula, the peak table, the throughput arithmetic,
which attention kernel, batch layout, Liger and torch.compile a job gets on CPU and (simulated) on
a GPU, and the GPU benchmark's CPU rehearsal."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from conftest import REPO
from restyle import config, train
from restyle.io import DataError


def tiny_llama(tmp_path=None, **overrides):
    """A 2-layer Llama config (and, with tmp_path, a folder holding just its config.json)."""
    from transformers import LlamaConfig

    config = LlamaConfig(**{"vocab_size": 100, "hidden_size": 16, "intermediate_size": 32,
                            "num_hidden_layers": 2, "num_attention_heads": 4,
                            "num_key_value_heads": 2, "tie_word_embeddings": True, **overrides})
    if tmp_path is not None:
        config.save_pretrained(tmp_path)
    return config


# per layer q 16x16, k and v 16x8, o 16x16, MLP 3 x 16x32; the tied LM head 100x16
LINEAR_WEIGHTS = 2 * (256 + 128 + 128 + 256 + 3 * 512) + 1600


def test_flops_per_token_is_6n_for_full_and_4n_plus_6_adapters_for_lora():
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_llama())
    assert train.flops_per_token(model) == 6 * LINEAR_WEIGHTS  # embeddings excluded, head counted
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    adapters = 2 * (16 * 2 + 2 * 16) + 2 * (16 * 2 + 2 * 8)  # A and B of q (16->16), v (16->8)
    assert sum(p.numel() for p in lora.parameters() if p.requires_grad) == adapters
    assert train.flops_per_token(lora) == 4 * LINEAR_WEIGHTS + 6 * adapters


def test_attention_flops_are_palms_12_layers_hidden_per_context_token():
    assert train.attention_flops(tiny_llama()) == 12 * 2 * 16
    # an explicit head_dim (Qwen3, Gemma): heads x head_dim, not the hidden size
    assert train.attention_flops(tiny_llama(head_dim=8)) == 12 * 2 * 4 * 8


def test_device_peak_flops_by_name():
    peak = train.device_peak_flops
    assert peak("NVIDIA H200") == peak("NVIDIA H100 80GB HBM3") == peak("NVIDIA GH200 480GB") == 989e12
    assert peak("NVIDIA H200 NVL") == peak("NVIDIA H100 NVL") == 835e12
    assert peak("NVIDIA H100 PCIe") == 756e12 and peak("NVIDIA H20") == 148e12
    assert peak("NVIDIA GB200") == 2500e12 and peak("NVIDIA B200") == 2250e12
    assert peak("NVIDIA A100-SXM4-80GB") == peak("NVIDIA A100 80GB PCIe") == 312e12
    assert peak("NVIDIA A10") == 125e12 and peak("NVIDIA A10G") is None
    assert peak("NVIDIA L40S") == 362e12 and peak("NVIDIA L4") == 121e12
    # no bf16 on a V100: restyle trains in fp32 there, against the fp32 peak
    assert peak("Tesla V100-SXM2-32GB") == 15.7e12 and peak("Tesla V100-PCIE-16GB") == 14e12
    assert peak("cpu") is None
    assert peak("NVIDIA RTX A1000 Laptop GPU") is None  # not an A100
    # a MIG slice has a fraction of the SMs: unknown, never the whole GPU's peak
    assert peak("NVIDIA H100 80GB HBM3 MIG 1g.10gb") is None
    assert peak("NVIDIA A100-SXM4-40GB MIG 3g.20gb") is None


def test_throughput_sums_tokens_over_processes_and_takes_the_slowest():
    # steady: 40 rows of 100 tokens, each row's context 100 x 100
    one = {"tokens": 6000, "padded_tokens": 8000, "seconds": 2.0, "steady_tokens": 4000,
           "steady_padded_tokens": 5000, "steady_context_tokens": 40 * 100**2,
           "steady_seconds": 1.0, "steady_steps": 3}
    two = {**one, "seconds": 2.5, "steady_seconds": 1.25}
    out = train.throughput([one, two], flops_token=1000, attention=3, peak_flops=1e7)
    assert out["tokens_this_run"] == 12000 and out["padding_fraction"] == pytest.approx(0.25)
    assert out["tokens_per_second"] == 12000 / 2.5 and out["padded_tokens_per_second"] == 16000 / 2.5
    assert out["steady_tokens_per_second"] == 8000 / 1.25 and out["steady_steps"] == 3
    # each token: 1000 in the linear layers, 3 x its row's 100 tokens in attention
    assert out["flops_per_token"] == pytest.approx(1000 + 3 * 100)
    assert out["flops_per_token_6n"] == 1000
    assert out["achieved_flops_per_second"] == pytest.approx(1300 * 8000 / 1.25)
    assert out["mfu"] == pytest.approx(1300 * 8000 / 1.25 / 2e7)
    assert out["mfu_6n"] == pytest.approx(1000 * 8000 / 1.25 / 2e7)
    # no steady part (one step in all), no peak: nulls, not zeros
    short = train.throughput([{**one, "steady_tokens": 0, "steady_seconds": 0.0}], 1000, 3, None)
    assert short["steady_tokens_per_second"] is None and short["mfu"] is None
    assert train.throughput([one], 1000, 3, None)["mfu"] is None
    assert train.throughput([one], 1000, 3, None)["mfu_6n"] is None


def test_progress_counts_each_rows_length_squared_padded_or_packed():
    """What attention costs a batch: sum over its rows of T^2, from the attention mask of a
    padded batch or the restarting position_ids of a packed (padding-free) row."""
    import torch

    progress = train._metrics_callback()
    progress.tokens = progress.padded = progress.context = 0
    progress.count({"input_ids": torch.zeros(2, 4, dtype=torch.long),
                    "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])})
    assert int(progress.context) == 3**2 + 4**2 and int(progress.tokens) == 7
    progress.count({"input_ids": torch.zeros(1, 5, dtype=torch.long),
                    "position_ids": torch.tensor([[0, 1, 0, 1, 2]])})
    assert int(progress.context) == 25 + 2**2 + 3**2


def settings(**overrides) -> train.TrainSettings:
    return train.TrainSettings.of({"packing": False, "attn_implementation": None,
                                   "use_liger_kernel": "auto", "torch_compile": False,
                                   **overrides})


@pytest.fixture()
def gpu_kernels(monkeypatch):
    """transformers' view of the GPU's attention kernels: flex attention only (no flash-attn),
    as on a GPU machine with torch and no flash-attn wheel; tests flip flash on."""
    from transformers import utils

    monkeypatch.setattr(utils, "is_flash_attn_3_available", lambda: False)
    monkeypatch.setattr(utils, "is_flash_attn_2_available", lambda: False)
    monkeypatch.setattr(utils, "is_torch_flex_attn_available", lambda: True)
    monkeypatch.setattr(train, "liger_architectures", lambda: None)  # not installed
    return utils


def test_kernel_plan_on_cpu_keeps_padded_batches_and_packing(tmp_path, caplog):
    tiny_llama(tmp_path)
    assert train.kernel_plan(settings(), "cpu", tmp_path) == {
        "attn_implementation": None, "padding_free": False, "packing": False,
        "use_liger_kernel": False, "torch_compile": False}
    packed = train.kernel_plan(settings(packing=True), "cpu", tmp_path)
    assert packed["packing"] and packed["padding_free"] and packed["attn_implementation"] is None
    with caplog.at_level(logging.WARNING, logger="restyle.train"):
        both = train.kernel_plan(settings(use_liger_kernel=True, torch_compile=True), "cpu", tmp_path)
    assert not both["use_liger_kernel"] and not both["torch_compile"]
    assert "use_liger_kernel is true, but Liger's kernels need a GPU" in caplog.text
    assert "torch_compile is true, but it pays on a GPU only" in caplog.text


def test_kernel_plan_on_a_gpu_goes_padding_free_with_flash_attention_only(tmp_path, gpu_kernels,
                                                                          monkeypatch, caplog):
    tiny_llama(tmp_path)
    # flex attention alone is not chosen unasked: padded batches, packing off with a warning
    with caplog.at_level(logging.WARNING, logger="restyle.train"):
        plan = train.kernel_plan(settings(packing=True, torch_compile=True), "cuda", tmp_path)
    assert plan == {"attn_implementation": None, "padding_free": False, "packing": False,
                    "use_liger_kernel": False, "torch_compile": True}
    assert "training without packing" in caplog.text
    monkeypatch.setattr(gpu_kernels, "is_flash_attn_2_available", lambda: True)
    plan = train.kernel_plan(settings(), "cuda", tmp_path)
    assert plan["attn_implementation"] == "flash_attention_2" and plan["padding_free"]  # unpacked too
    monkeypatch.setattr(gpu_kernels, "is_flash_attn_3_available", lambda: True)
    assert train.kernel_plan(settings(), "cuda", tmp_path)["attn_implementation"] == "flash_attention_3"
    explicit = train.kernel_plan(settings(attn_implementation="flex_attention"), "cuda", tmp_path)
    assert explicit["attn_implementation"] == "flex_attention" and explicit["padding_free"]


def test_packing_without_a_varlen_kernel_on_a_gpu_falls_back_with_a_warning(tmp_path, gpu_kernels,
                                                                           caplog):
    tiny_llama(tmp_path)
    with caplog.at_level(logging.WARNING, logger="restyle.train"):
        plan = train.kernel_plan(settings(packing=True, attn_implementation="sdpa"), "cuda",
                                 tmp_path)
    assert plan == {"attn_implementation": "sdpa", "padding_free": False, "packing": False,
                    "use_liger_kernel": False, "torch_compile": False}
    assert "config train.packing is true, but llama has no attention kernel" in caplog.text
    assert "training without packing" in caplog.text


def test_liger_auto_true_false(tmp_path, gpu_kernels, monkeypatch):
    tiny_llama(tmp_path)

    def liger(value):
        return train.kernel_plan(settings(use_liger_kernel=value), "cuda", tmp_path)["use_liger_kernel"]

    assert liger("auto") is False and liger(False) is False  # not importable here
    with pytest.raises(DataError, match=r"config train.use_liger_kernel is true, but liger_kernel "
                                        r"cannot be imported here \(pip install liger-kernel"):
        liger(True)
    monkeypatch.setattr(train, "liger_architectures", lambda: {"llama", "qwen2"})
    assert liger("auto") is True and liger(True) is True and liger(False) is False
    monkeypatch.setattr(train, "liger_architectures", lambda: {"qwen2"})
    assert liger("auto") is False
    with pytest.raises(DataError, match="Liger has no kernels for 'llama'"):
        liger(True)


def test_new_train_keys_reach_the_rule_params():
    """use_liger_kernel and torch_compile are in the settings rule train passes as params (so a
    change reruns training), per-model overrides included."""
    settings_ = config.default_settings(REPO / "config" / "config.yaml", REPO / "config" / "schema.yaml")
    assert settings_["use_liger_kernel"] == "auto" and settings_["torch_compile"] is False
    per_model = config.settings_for({**settings_, "per_model": {"m": {"torch_compile": True}}}, "m")
    assert per_model["torch_compile"] is True


def test_gpu_benchmark_rehearses_every_arm_on_cpu():
    """benchmarks/gpu.py --cpu-smoke: every arm with a 2-layer model for 2 steps; without the flag
    a machine without CUDA is refused with a clear message."""
    script = str(REPO / "benchmarks" / "gpu.py")
    refused = subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "no CUDA GPU" in refused.stderr
    smoke = subprocess.run([sys.executable, script, "--cpu-smoke"], capture_output=True, text=True,
                           timeout=300)
    assert smoke.returncode == 0, smoke.stdout[-3000:] + smoke.stderr[-3000:]
    out = smoke.stdout
    assert "load average" in out
    for arm in ("LoRA", "LoRA + packing", "full, padded (sdpa)", "full", "full + packing",
                "plain Trainer", "MMLU-shaped, max_batch_tokens auto", "familiarity, auto"):
        assert f"| {arm} |" in out, arm
