"""The familiarity scorer: batched (sorted by length, left-padded, logits only where a response
token is predicted) vs a naive loop (one example at a time, the model's own loss over full
logits), same model, same data, one run; the results must agree.

    .venv/bin/python benchmarks/familiarity.py [--manifest resources/models/smollm2-135m/manifest.json]
        [--data resources/data/gsm8k/train.jsonl] [--n 32] [--batch-size 16]

Data: the GSM8K-format training problems as SFT examples (question + instruction -> human
solution), the shape study B scores. Without --manifest the bundled SmolLM2 is converted into a
temporary folder first.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from restyle import familiarity, gsm8k, models, variants
from restyle.io import read_jsonl
from restyle.records import MathItem, SFTRecord

INSTRUCTION = "Solve the problem step by step. End with a line '#### <number>'."


def sft_records(data: str | None, n: int) -> list[SFTRecord]:
    items = (read_jsonl(data, MathItem.from_dict) if data
             else gsm8k.generate(n, seed=0, split="train"))[:n]
    return [SFTRecord(id=f"b/{it.id}", source_id=it.id, dataset="b",
                      prompt=variants.sft_prompt("gsm8k", it, INSTRUCTION),
                      completion=it.answer, provenance={}) for it in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest")
    parser.add_argument("--data")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = args.manifest
        if manifest is None:
            models.prepare("smollm2", {"source": "bundled:smollm2-135m-instruct"},
                           Path(tmp) / "model", tmp)
            manifest = Path(tmp) / "model" / "manifest.json"
        model, tok = models.load_checkpoint(manifest)
        encoded = familiarity.encode_records(tok, sft_records(args.data, args.n))
        tokens = sum(e.n_response_tokens for e in encoded)
        familiarity.score_encoded(model, encoded[:2], pad_id=tok.pad_token_id)  # warm-up
        start = time.perf_counter()
        naive = familiarity.score_naive(model, encoded)
        naive_s = time.perf_counter() - start
        start = time.perf_counter()
        batched = familiarity.score_encoded(model, encoded, batch_size=args.batch_size,
                                            pad_id=tok.pad_token_id)
        batched_s = time.perf_counter() - start
    diff = max(abs(a.mean_nll - b.mean_nll) for a, b in zip(naive, batched))
    assert [a.tokens for a in naive] == [b.tokens for b in batched]
    assert diff < 1e-4, f"batched and naive disagree by {diff}"
    print(f"{len(encoded)} examples, {tokens} response tokens, "
          f"{sum(len(e.input_ids) for e in encoded)} tokens in all; device "
          f"{next(model.parameters()).device}, max |mean NLL difference| {diff:.2e}")
    print(f"| {'scorer':<30} | {'seconds':>8} | {'response tokens/s':>17} | {'speed-up':>8} |")
    print(f"|{'-' * 32}|{'-' * 10}|{'-' * 19}|{'-' * 10}|")
    for name, sec in (("naive (1 example, full logits)", naive_s),
                      (f"batched (batch {args.batch_size}, sorted)", batched_s)):
        print(f"| {name:<30} | {sec:>8.2f} | {tokens / sec:>17.1f} | {naive_s / sec:>7.2f}x |")


if __name__ == "__main__":
    main()
