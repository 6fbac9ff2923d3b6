import json
import os
import shutil
import stat

import pytest
import torch

from restyle import models
from restyle.io import DataError
from restyle.packaged import SMOLLM2_GGUF, installed_path


@pytest.fixture(scope="module")
def loaded(smollm2_manifest):
    return models.load(smollm2_manifest)


def test_manifest_describes_the_converted_folder(smollm2_manifest):
    manifest = models.read_manifest(smollm2_manifest)
    assert manifest["source"] == "bundled:smollm2-135m-instruct"
    assert manifest["parameters"] == 134_515_008
    assert manifest["convert_seconds"] > 0
    folder = smollm2_manifest.parent / "hf"
    assert manifest["path"] == str(folder)
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= \
        {p.name for p in folder.iterdir()}
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())
    assert not (smollm2_manifest.parent / "hf.partial").exists()
    # readable by colleagues on a shared folder (safetensors alone writes 0600)
    umask = os.umask(0)
    os.umask(umask)
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.iterdir()} == {0o666 & ~umask}


def test_converted_model_computes_what_the_gguf_model_computes(loaded):
    from transformers import AutoModelForCausalLM

    model, tokenizer = loaded
    gguf = installed_path(SMOLLM2_GGUF)
    reference = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32).eval()
    ids = tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        ours, theirs = model(ids).logits, reference(ids).logits
    assert ours.shape == (1, ids.shape[1], 49152)
    torch.testing.assert_close(ours, theirs)


def test_converted_model_answers_with_its_chat_template(loaded):
    model, tokenizer = loaded
    assert "<|im_start|>" in tokenizer.chat_template
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=16, do_sample=False)
    reply = tokenizer.decode(out[0, prompt["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in reply


def test_local_folder_is_used_in_place(smollm2_manifest, tmp_path):
    folder = smollm2_manifest.parent / "hf"
    manifest = models.prepare("local", {"source": str(folder)}, tmp_path / "local", tmp_path)
    assert manifest["path"] == str(folder)
    assert sorted(p.name for p in (tmp_path / "local").iterdir()) == ["manifest.json"]


def test_folder_that_is_not_a_model_names_the_config_key(smollm2_manifest, tmp_path):
    folder = tmp_path / "not_a_model"
    shutil.copytree(smollm2_manifest.parent / "hf", folder, ignore=shutil.ignore_patterns("config.json"))
    with pytest.raises(DataError, match="config models.broken.source: .* has no config.json"):
        models.prepare("broken", {"source": str(folder)}, tmp_path / "out", tmp_path)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_unreachable_hub_id_names_the_config_key(tmp_path):
    # conftest sets HF_HUB_OFFLINE=1, as on a cluster node without internet
    with pytest.raises(DataError, match="config models.llama.source: could not fetch "
                                        "'meta-llama/Meta-Llama-3-8B-Instruct'"):
        models.prepare("llama", {"source": "meta-llama/Meta-Llama-3-8B-Instruct"},
                       tmp_path / "out", tmp_path)
    with pytest.raises(DataError, match="config models.x.source: 'no//such id' is neither"):
        models.prepare("x", {"source": "no//such id"}, tmp_path / "out", tmp_path)


def test_unknown_bundled_model(tmp_path):
    with pytest.raises(DataError, match="unknown bundled model 'gpt-5' \\(known: smollm2-135m-instruct\\)"):
        models.prepare("m", {"source": "bundled:gpt-5"}, tmp_path / "out", tmp_path)
