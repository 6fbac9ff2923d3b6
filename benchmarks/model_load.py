"""Why `prepare_model` converts the bundled GGUF once: loading the converted Hugging Face folder
vs dequantizing the GGUF on every load, same model, same machine, one run.

    .venv/bin/python benchmarks/model_load.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from restyle import models
from restyle.packaged import SMOLLM2_GGUF, materialize


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        gguf = materialize(SMOLLM2_GGUF, Path(tmp))
        manifest = models.prepare("smollm2", {"source": "bundled:smollm2-135m-instruct"},
                                  Path(tmp) / "model", tmp)
        folder = manifest["path"]
        gguf_s = timed(lambda: AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32), args.repeats)
        hf_s = timed(lambda: AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32),
                     args.repeats)
    print(f"{'load path':<34}{'median s':>10}{'ratio':>8}")
    print(f"{'GGUF, dequantized on load':<34}{gguf_s:>10.2f}{gguf_s / hf_s:>8.1f}")
    print(f"{'converted HF folder (safetensors)':<34}{hf_s:>10.2f}{1.0:>8.1f}")
    print(f"one-time conversion: {manifest['convert_seconds']:.1f} s")


if __name__ == "__main__":
    main()
