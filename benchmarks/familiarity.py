"""The familiarity scorer: batched (sorted by length, left-padded, logits only where a response
token is predicted; the prompt opening every example shares run once, or with every example)
vs a naive loop (one example at a time, the model's own loss over full
logits), same model, same data; each arm timed --repeats times (median reported), with the
machine's load average printed; the results must agree within `restyle.batching.agreement_bound`
(1e-4 in fp32 on a CPU, 2^-7 relative in bf16 on a GPU).

    .venv/bin/python benchmarks/familiarity.py [--manifest resources/models/smollm2-135m/manifest.json]
        [--data resources/data/gsm8k/train.jsonl] [--n 32] [--batch-size 16] [--repeats 3]

Data: the GSM8K-format training problems as SFT examples (question + instruction -> human
solution), the shape study B scores. Without --manifest the bundled SmolLM2 is converted into a
temporary folder first.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from timing import REPEATS, load_average, timed

from restyle import batching, models
from restyle.tasks import gsm8k
from restyle.io import read_jsonl
from restyle.records import MathItem, SFTRecord
from restyle.study_b import familiarity

INSTRUCTION = "Solve the problem step by step. End with a line '#### <number>'."


def sft_records(data: str | None, n: int) -> list[SFTRecord]:
    items = (read_jsonl(data, MathItem.from_dict) if data
             else gsm8k.generate(n, seed=0, split="train"))[:n]
    return [SFTRecord(id=f"b/{it.id}", source_id=it.id, dataset="b",
                      prompt=[{"role": "user", "content": gsm8k.TASK.prompt(it, INSTRUCTION)}],
                      completion=it.answer, provenance={}) for it in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest")
    parser.add_argument("--data")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--batch-size", default=16,
                        type=lambda v: v if v == batching.AUTO else int(v))
    parser.add_argument("--repeats", type=int, default=REPEATS)
    args = parser.parse_args()
    load_before = load_average()
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
        naive, naive_s = timed(lambda: familiarity.score_naive(model, encoded), args.repeats)
        batched, batched_s = timed(lambda: familiarity.score_encoded(
            model, encoded, batch_size=args.batch_size, pad_id=tok.pad_token_id), args.repeats)
        unshared, unshared_s = timed(lambda: familiarity.score_encoded(
            model, encoded, batch_size=args.batch_size, pad_id=tok.pad_token_id,
            share_prefix=False), args.repeats)
    assert [a.tokens for a in naive] == [b.tokens for b in batched] == [b.tokens for b in unshared]
    dtype = next(model.parameters()).dtype
    pairs = [(a, b) for a, b in zip(naive + naive, batched + unshared) if a.tokens]
    diff = max(abs(a.mean_nll - b.mean_nll) for a, b in pairs)
    # (share of the bound, example) of the example furthest from agreement
    worst = max((abs(a.mean_nll - b.mean_nll) / batching.agreement_bound(dtype, a.mean_nll), i)
                for i, (a, b) in enumerate(pairs))
    print(f"{len(encoded)} examples, {tokens} response tokens, "
          f"{sum(len(e.input_ids) for e in encoded)} tokens in all, a shared prompt opening of "
          f"{familiarity.prompt_prefix(encoded)} tokens; device "
          f"{next(model.parameters()).device}, {dtype}, max |mean NLL difference| {diff:.2e} "
          f"({worst[0]:.2f} of the agreement bound at its worst)")
    print(f"before: {load_before}; after: {load_average()}; median of {args.repeats} runs")
    print(f"| {'scorer':<40} | {'seconds':>8} | {'response tokens/s':>17} | {'speed-up':>8} |")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 19}|{'-' * 10}|")
    for name, sec in (("naive (1 example, full logits)", naive_s),
                      (f"batched (batch {args.batch_size}, sorted)", unshared_s),
                      ("batched + shared prompt opening once", batched_s)):
        print(f"| {name:<40} | {sec:>8.2f} | {tokens / sec:>17.1f} | {naive_s / sec:>7.2f}x |")
    a, b = pairs[worst[1]]
    assert worst[0] <= 1, (f"batched and naive disagree: mean NLL {b.mean_nll} vs {a.mean_nll}, "
                           f"over the {dtype} bound {batching.agreement_bound(dtype, a.mean_nll):.2e}")


if __name__ == "__main__":
    main()
