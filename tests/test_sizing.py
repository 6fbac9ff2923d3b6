"""restyle.sizing: FLOPs from an architecture alone, the throughput a run measured, and the
SLURM wall time of `train.resources.runtime: auto`."""

from __future__ import annotations

import json
from dataclasses import fields, replace
from pathlib import Path

import pytest

from restyle import sizing

# config.json of the paper's two target models (their hub files' architecture keys)
LLAMA2_13B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 5120,
              "intermediate_size": 13824, "num_hidden_layers": 40, "num_attention_heads": 40,
              "num_key_value_heads": 40, "vocab_size": 32000, "max_position_embeddings": 4096}
MISTRAL_7B = {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
              "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
              "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128,
              "vocab_size": 32000, "max_position_embeddings": 32768}
LORA = {"rank": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}


def write_config(folder: Path, config: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize("config", [LLAMA2_13B, MISTRAL_7B], ids=["llama2-13b", "mistral-7b"])
def test_flops_of_the_paper_models_from_their_config_alone(tmp_path, config):
    """The linear weights of a Llama block (q, k, v, o; gate, up, down) and the LM head, counted
    by hand: full fine-tuning 6N; LoRA 4N for the frozen base plus 6 per adapter weight (rank 8
    on q_proj and v_proj); attention 12 x layers x heads x head_dim. No weight file exists."""
    folder = write_config(tmp_path / "model", config)
    h, layers, heads = config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or h // heads
    kv = config["num_key_value_heads"] * head_dim
    block = h * heads * head_dim * 2 + 2 * h * kv + 3 * h * config["intermediate_size"]
    n = layers * block + h * config["vocab_size"]
    adapter = layers * 8 * ((h + heads * head_dim) + (h + kv))
    full = sizing.model_flops(folder, sizing.Settings.of({"method": "full", "lora": LORA}))
    lora = sizing.model_flops(folder, sizing.Settings.of({"method": "lora", "lora": LORA}))
    assert full.train == 6 * n and full.forward == 2 * n
    assert lora.train == 4 * n + 6 * adapter and lora.forward == 2 * (n + adapter)
    assert lora.attention == full.attention == 12 * layers * heads * head_dim
    assert 12.8e9 < n < 12.9e9 if config is LLAMA2_13B else 7.1e9 < n < 7.3e9


def test_an_architecture_out_of_reach_is_a_sizing_error(tmp_path):
    with pytest.raises(sizing.SizingError, match="architecture of .*nothing.* is not at hand"):
        sizing.model_flops(tmp_path / "nothing", sizing.Settings.of({"method": "full", "lora": LORA}))


def settings(**resources) -> sizing.Settings:
    return sizing.Settings.of(
        {"method": "lora", "lora": LORA, "max_steps": None, "epochs": 2, "batch_size": 4,
         "max_length": 100, "save_steps": 10, "expected_mfu": 0.4, "cpu_processes": 1,
         "resources": {"gpu": 2, "nodes": 1, "device": None, "runtime_margin": 1.5,
                       "startup_s": 240, "max_runtime": None, "stop_before_end": 300,
                       **resources}})


def test_the_record_holds_what_sizing_reads_whether_made_from_the_config_or_the_params():
    """Settings' fields are TRAIN_KEYS and RESOURCE_KEYS; rule train's runtime makes it from
    config train for the model, the estimate from its params (`sized_settings`): the same."""
    from restyle import config

    repo = Path(__file__).resolve().parents[1]
    assert [f.name for f in fields(sizing.Settings)] == [*sizing.TRAIN_KEYS, *sizing.RESOURCE_KEYS]
    resolved = config.default_settings(repo / "config" / "config.yaml",
                                       repo / "config" / "schema.yaml")
    assert sizing.Settings.of(resolved) == sizing.Settings.of(sizing.sized_settings(resolved))


def test_tokens_steps_and_the_wall_time_of_a_job():
    s = settings()
    tokens, context, steps = sizing.training_tokens([100, 50, 50, 20, 80], s)
    assert (tokens, context, steps) == (600, 2 * (100**2 + 2 * 50**2 + 20**2 + 80**2), 3)
    s = replace(s, max_steps=10)  # 10 batches of 4 rows of the mean length (60)
    assert sizing.training_tokens([100, 50, 50, 20, 80], s)[0] == pytest.approx(10 * 4 * 60)
    # one hour of computing: x1.5, plus 4 minutes' start-up and the 5 kept for the last
    # checkpoint
    assert sizing.runtime_minutes(3600, 100, settings()) == 99
    # a partition limit of 60 min: the job runs in allocations of 60 min, each past a checkpoint
    assert sizing.runtime_minutes(3600, 100, settings(max_runtime=60)) == 60
    # 10 steps of 1 h each (x1.5) cannot fit 2 h: refused, naming the keys
    with pytest.raises(sizing.SizingError, match=r"max_runtime 120 min cannot fit one checkpoint"
                                                 r" interval \(10 steps.*\(540 s\): lower train.save_steps"):
        sizing.runtime_minutes(36000 * 10, 100, settings(max_runtime=120))


def test_the_rate_is_measured_by_finished_jobs_else_stated(tmp_path):
    s = settings(device="H100")
    stated = sizing.rate(s, tmp_path, "m")
    assert stated.flops_per_second == pytest.approx(0.4 * 989e12)
    assert stated.source == "expected_mfu 0.4 x H100 peak 989 TFLOP/s"
    assert sizing.rate(settings(), tmp_path, "m").flops_per_second is None
    for i, (achieved, processes) in enumerate([(8e14, 2), (3e14, 1), (None, 2)]):
        path = tmp_path / "train" / "m" / f"set{i}" / "seed0" / "train_metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"achieved_flops_per_second": achieved,
                                    "processes": processes}))
    measured = sizing.rate(s, tmp_path, "m")  # the median per process of the two that measured
    assert measured.flops_per_second == pytest.approx(3.5e14)
    assert measured.source == "measured by 2 train job(s)"


def test_an_unknown_device_or_runtime_is_named_in_the_config_check():
    from restyle.checks import ConfigError, check

    repo = Path(__file__).resolve().parents[1]
    bad = {"train": {"resources": {"runtime": "soon"},
                     "per_model": {"smollm2-135m": {"resources": {"device": "H1000"}}}}}
    with pytest.raises(ConfigError) as e:
        check(bad, repo / "config" / "schema.yaml")
    assert "train.per_model.smollm2-135m.resources.device: 'H1000' is not a GPU" in str(e.value)
    assert "train.resources.runtime" in str(e.value)
