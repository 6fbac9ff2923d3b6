"""restyle's training and scoring on a CUDA GPU, beside a plain transformers Trainer, with
random-initialised weights (speed is real, loss values are not), so nothing is downloaded.

    python benchmarks/gpu.py [--arch llama-822m|smollm2-135m] [--steps 20] [--repeats 3]
        [--batch 16] [--seq 1024] [--quick] [--compile] [--profile] [--budget 300] [--json PATH]
    python benchmarks/gpu.py --cpu-smoke    # rehearsal on CPU: every arm, 2 layers, 2 steps

(a) restyle's own trainer path (`restyle.train.run`, so the figures are what train_metrics.json
says) on variable-length synthetic SFT records of 150-1100 tokens: LoRA and full fine-tuning,
without and with packing, with Liger where liger_kernel imports, and full fine-tuning forced onto
padded batches (attn_implementation sdpa) to show what padding-free batches buy. (b) a plain
transformers Trainer on fixed-length random sequences of --seq tokens (no TRL, SDPA): the
reference of issue 16, in the same run, so the ratios are side by side. (c) scoring: MMLU-shaped
0-shot questions (restyle.evaluate) and familiarity (restyle.study_b.familiarity) at the old CPU batch
limits, a hand-picked large one and `auto`.

Every arm runs --repeats times, round-robin (each arm once, then each again), and the tables show
the median. The run keeps to --budget seconds: past it, arms not yet started are skipped (the tables say
how many repeats each median has). The tokenizer is a word-level one written here (one token per
word), so record lengths are exact; the model shape is --arch's with its real vocabulary size.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from restyle import config, evaluate, train  # noqa: E402
from restyle.chat import encode  # noqa: E402
from restyle.records import MCItem, SFTRecord  # noqa: E402
from restyle.study_b import familiarity  # noqa: E402

ARCHS = {
    # Llama-shaped, 822M parameters (TinyLlama's layout with SmolLM2's vocabulary): the 822M
    # model of issue 16's tables
    "llama-822m": dict(vocab_size=49152, hidden_size=2048, intermediate_size=5632,
                       num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
                       max_position_embeddings=2048, tie_word_embeddings=True),
    # the bundled SmolLM2-135M-Instruct's shape
    "smollm2-135m": dict(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                         num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                         max_position_embeddings=8192, rope_theta=100000.0,
                         tie_word_embeddings=True),
    # --cpu-smoke
    "tiny": dict(vocab_size=2048, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                 tie_word_embeddings=True),
}
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
MMLU_QUESTIONS, FAMILIARITY_EXAMPLES = 400, 256  # issue 16's scoring table


def word_tokenizer(out: Path, words: int = 1000):
    """A word-level tokenizer with a ChatML template: each whitespace-separated word is one token
    (unknown words map to <|endoftext|>), the answer letters are single tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = [*SPECIALS, "system", "user", "assistant", "A", "B", "C", "D",
             *(f"w{i}" for i in range(words))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token=SPECIALS[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=SPECIALS[0],
                                   pad_token=SPECIALS[0], eos_token=SPECIALS[2],
                                   additional_special_tokens=SPECIALS[1:2])
    fast.chat_template = CHATML
    fast.save_pretrained(out)
    return fast


def random_model(arch: dict, out: Path, device: str) -> int:
    """A Llama model of shape `arch` with random weights (bf16 on a GPU), saved to `out`;
    returns its parameter count."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(
            LlamaConfig(**arch), dtype=torch.bfloat16 if device == "cuda" else torch.float32)
    model.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    del model
    return n


def words(rng, n: int) -> str:
    return " ".join(f"w{i}" for i in rng.integers(0, 1000, n))


def sft_records(n: int, shortest: int, longest: int, seed: int = 0) -> list[dict]:
    """SFT records whose rendered length (template tokens included) is uniform in
    [shortest, longest] tokens, a quarter of it prompt."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = int(rng.integers(shortest, longest + 1)) - 8  # ChatML adds 8 tokens
        prompt = max(1, length // 4)
        rows.append({"id": f"bench/{i}", "source_id": f"q{i}", "dataset": "bench",
                     "prompt": [{"role": "user", "content": words(rng, prompt)}],
                     "completion": words(rng, length - prompt), "provenance": {}})
    return rows


def mc_items(n: int, longest: int, seed: int = 1) -> list[MCItem]:
    """MMLU-shaped questions: most prompts short (30-200 words), a fifth long (up to `longest`),
    as MMLU's subjects make them."""
    rng = np.random.default_rng(seed)
    short = min(200, longest // 2)
    items = []
    for i in range(n):
        length = int(rng.integers(min(30, short // 2), short) if rng.random() < 0.8
                     else rng.integers(short, longest - 20))
        items.append(MCItem(id=f"mc/{i}", subject="bench", question=words(rng, length),
                            choices=[words(rng, int(rng.integers(1, 12))) for _ in range(4)],
                            answer=int(rng.integers(0, 4))))
    return items


def fresh() -> None:
    """After an arm: free its memory and forget what it compiled (flex attention, torch.compile),
    so that the next arm starts as a new training job would, with the on-disk compile caches
    warm, as for a second job on the same node."""
    import torch

    gc.collect()
    torch._dynamo.reset()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ---------------------------------------------------------------- (a) restyle's trainer


def restyle_arm(ctx: dict, name: str, profile: list | None = None, **overrides) -> dict:
    """One restyle.train.run with the config's train settings (schema defaults) under
    `overrides`; its train_metrics.json."""
    settings = config.default_settings(REPO / "config" / "config.yaml",
                                      REPO / "config" / "schema.yaml")
    # Liger off unless the arm turns it on: the config's auto would turn it on wherever it can
    settings.update({"max_length": ctx["seq"], "per_device_batch_size": ctx["batch"],
                     "batch_size": ctx["batch"], "max_steps": ctx["steps"], "save_steps": 10**6,
                     "use_liger_kernel": False, **overrides})
    out = Path(tempfile.mkdtemp(dir=ctx["tmp"], prefix="arm-"))
    job = train.Job(manifest=str(ctx["manifest"]), sft=str(ctx["sft"]),
                    adapter_dir=str(out / "adapter"), metrics=str(out / "train_metrics.json"),
                    checkpoint_dir=str(out / "checkpoints"), seed=0, settings=settings,
                    gpus=1 if ctx["device"] == "cuda" else 0, labels={"arm": name})
    metrics = train.run(job, trainer_hook=lambda trainer: quiet(trainer, profile))
    shutil.rmtree(out)  # a full model is GBs; 20-odd runs would fill the disk
    fresh()
    return {"tokens/s whole loop": metrics["tokens_per_second"],
            "tokens/s steady": metrics["steady_tokens_per_second"], "MFU": metrics["mfu"],
            "peak memory GB": metrics["peak_memory_mb"] / 1024,
            "padding": metrics["padding_fraction"], "attention": metrics["attn_implementation"],
            "padding-free": metrics["padding_free"], "packing": metrics["packing"],
            "liger": metrics["use_liger_kernel"]}


def quiet(trainer, profile: list | None = None) -> None:
    """Keep the trainer's log lines off stdout (the tables go there); with `profile`, add the
    profiler."""
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)
    if profile is not None:
        trainer.add_callback(profiler(profile))


def profiler(tables: list):
    """A callback that profiles three steady steps (after the warm-up steps) and appends the
    busiest kernels and the share of wall time the GPU was busy to `tables`."""
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule
    from transformers import TrainerCallback

    warm = train.STEADY_WARMUP_STEPS
    prof = profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA],
                   schedule=schedule(wait=warm - 1, warmup=1, active=3, repeat=1))

    class Profile(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            prof.start()

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (warm, warm + 3):  # the active steps' wall time
                torch.cuda.synchronize()
                self.marks = [*getattr(self, "marks", []), time.perf_counter()]
            prof.step()

        def on_train_end(self, args, state, control, **kwargs):
            prof.stop()
            events = prof.key_averages()
            busy = sum(e.self_device_time_total for e in events) / 1e6
            wall = self.marks[1] - self.marks[0]
            tables.append(f"GPU busy {busy / wall:.0%} of the wall time of 3 steady steps "
                          f"({busy:.2f} s of kernels in {wall:.2f} s)\n"
                          + events.table(sort_by="self_device_time_total", row_limit=20))

    return Profile()


# ---------------------------------------------------------------- (b) plain Trainer


def plain_arm(ctx: dict, batch: int, liger: bool = False, compile_: bool = False) -> dict:
    """transformers' Trainer alone on fixed-length random sequences (no TRL, no padding, SDPA,
    the model's own loss over full logits), timed by restyle's Progress callback."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    cuda = ctx["device"] == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    model = AutoModelForCausalLM.from_pretrained(
        ctx["hf"], dtype=torch.bfloat16 if cuda else torch.float32, attn_implementation="sdpa")
    ids = np.random.default_rng(2).integers(0, 1000, (ctx["steps"] * batch, ctx["seq"])).tolist()
    args = TrainingArguments(output_dir=str(ctx["tmp"] / "plain"),
                             per_device_train_batch_size=batch, max_steps=ctx["steps"], bf16=cuda,
                             use_cpu=not cuda,
                             use_liger_kernel=liger, torch_compile=compile_, report_to="none",
                             save_strategy="no", logging_steps=ctx["steps"], disable_tqdm=True)
    trainer = Trainer(model=model, args=args,
                      train_dataset=Dataset.from_dict({"input_ids": ids, "labels": ids}))
    quiet(trainer)
    progress = train.track_progress(trainer)
    flops = train.flops_per_token(model)
    trainer.train()
    out = train.throughput([progress.counts()], flops, train.attention_flops(model.config),
                           ctx["peak"])
    memory = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    del trainer, model
    fresh()
    return {"tokens/s whole loop": out["tokens_per_second"],
            "tokens/s steady": out["steady_tokens_per_second"], "MFU": out["mfu"],
            "peak memory GB": memory}


# ---------------------------------------------------------------- (c) scoring


def scoring_round(ctx: dict) -> list[tuple[str, str, dict]]:
    """One round of every scoring arm with one loaded model, as (section, arm, figures):
    MMLU-shaped questions through evaluate_mc and familiarity through score_batched, at each
    batch limit."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cuda = ctx["device"] == "cuda"
    model = AutoModelForCausalLM.from_pretrained(
        ctx["hf"], dtype=torch.bfloat16 if cuda else torch.float32).to(ctx["device"]).eval()
    tok = AutoTokenizer.from_pretrained(ctx["hf"])
    encoded = [encode(tok, r.prompt, r.completion) for r in ctx["scoring_records"]]
    tokens = sum(e.n_response_tokens for e in encoded)
    items = ctx["mc_items"]
    evaluate.evaluate_mc(model, tok, items[:8], [], evaluate.MCOptions())  # CUDA warm-up
    out = []
    for label, value in (("8192 (the old default)", 8192), ("65536", 65536), ("auto", "auto")):
        start = time.perf_counter()
        _, limits = evaluate.evaluate_mc(model, tok, items, [],
                                         evaluate.MCOptions(max_batch_tokens=value))
        seconds = time.perf_counter() - start
        out.append(("mmlu", f"MMLU-shaped, max_batch_tokens {label}",
                    {"questions/s": len(items) / seconds,
                     "batch tokens at the end": limits.tokens}))
    for label, rows, value in (("16 rows / 8192 tokens (the old default)", 16, 8192),
                               ("65536 tokens", None, 65536), ("auto", "auto", "auto")):
        limits = familiarity.resolve_limits(model, rows, value)
        start = time.perf_counter()
        _, limits = familiarity.score_batched(model, encoded, limits, tok.pad_token_id)
        seconds = time.perf_counter() - start
        out.append(("familiarity", f"familiarity, {label}",
                    {"response tokens/s": tokens / seconds,
                     "batch tokens at the end": limits.tokens}))
    del model
    fresh()
    return out


# ---------------------------------------------------------------- running and printing


def arms(ctx: dict, args, liger: bool) -> list[tuple[str, str, callable]]:
    """(section, name, run) for every arm, in the order they run within a round."""
    # the figures issue 16 asks for first, so a run cut short by --budget still has them
    out = [("restyle", "full", lambda: restyle_arm(ctx, "full", method="full")),
           ("plain", "plain Trainer", lambda: plain_arm(ctx, ctx["batch"])),
           ("restyle", "full, padded (sdpa)",
            lambda: restyle_arm(ctx, "full, padded", method="full", attn_implementation="sdpa"))]
    if liger:
        out.append(("restyle", "full + Liger",
                    lambda: restyle_arm(ctx, "full + Liger", method="full", use_liger_kernel=True)))
    out += [("restyle", "full + packing",
             lambda: restyle_arm(ctx, "full + packing", method="full", packing=True)),
            ("restyle", "LoRA", lambda: restyle_arm(ctx, "LoRA", method="lora")),
            ("restyle", "LoRA + packing",
             lambda: restyle_arm(ctx, "LoRA + packing", method="lora", packing=True)),
            ("scoring", "scoring", lambda: scoring_round(ctx))]
    if liger:
        out += [("plain", "plain Trainer + Liger",
                 lambda: plain_arm(ctx, ctx["batch"], liger=True)),
                ("restyle", "full + packing + Liger",
                 lambda: restyle_arm(ctx, "full + packing + Liger", method="full", packing=True,
                                     use_liger_kernel=True))]
    if args.compile:
        out.append(("plain", "plain Trainer + torch.compile",
                    lambda: plain_arm(ctx, ctx["batch"], compile_=True)))
    if not args.quick:
        out.append(("plain", f"plain Trainer, batch {2 * ctx['batch']}",
                    lambda: plain_arm(ctx, 2 * ctx["batch"])))
    return out


PERCENT = {"MFU", "padding"}


def fmt(value, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (bool, str)):
        return str(value)
    if percent:
        return f"{value:.1%}"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def median_row(runs: list[dict]) -> dict:
    """Each column's median over the repeats (a text column: the first run's value)."""
    row = {}
    for key, value in runs[0].items():
        numbers = [r[key] for r in runs if isinstance(r[key], (int, float))
                   and not isinstance(r[key], bool)]
        row[key] = statistics.median(numbers) if numbers and len(numbers) == len(runs) else value
    return row


def table(title: str, rows: dict[str, list[dict]], reference: float | None = None) -> None:
    print(f"\n{title}\n")
    if not rows:
        print("(no run finished)")
        return
    columns = list(next(iter(rows.values()))[0])
    extra = ["vs plain Trainer (steady)"] if reference else []
    print("| what | " + " | ".join(columns + extra) + " | repeats |")
    print("|---" * (len(columns) + len(extra) + 2) + "|")
    for name, runs in rows.items():
        row = median_row(runs)
        cells = [fmt(row[c], c in PERCENT) for c in columns]
        if reference:
            steady = row["tokens/s steady"]
            cells.append(f"{steady / reference:.2f}x" if steady else "n/a")
        print(f"| {name} | " + " | ".join(cells) + f" | {len(runs)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["llama-822m", "smollm2-135m"], default="llama-822m")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seq", type=int, default=1024)
    parser.add_argument("--quick", action="store_true",
                        help="1 repeat of 12 steps, no batch-2x reference (about 2 minutes)")
    parser.add_argument("--compile", action="store_true",
                        help="add the plain Trainer with torch.compile (about 45 s more)")
    parser.add_argument("--profile", action="store_true",
                        help="profile 3 steady steps of restyle's full fine-tuning after the runs")
    parser.add_argument("--budget", type=float, default=300,
                        help="seconds; later rounds are skipped past it (the first always runs)")
    parser.add_argument("--json", help="write every run's figures here")
    parser.add_argument("--cpu-smoke", action="store_true",
                        help="rehearse every arm on CPU with a 2-layer model and 2 steps")
    args = parser.parse_args()

    import torch

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    load_start = os.getloadavg()
    if args.cpu_smoke:
        device, arch = "cpu", ARCHS["tiny"]
        args.steps, args.repeats, args.batch, args.seq, args.profile = 2, 1, 4, 128, False
        args.quick = True
        lengths, scoring = (20, 120), (16, 8)
    elif not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py: no CUDA GPU here (torch.cuda.is_available() is False); "
                 "run it on a GPU machine, or rehearse with --cpu-smoke")
    else:
        device, arch = "cuda", ARCHS[args.arch]
        if args.quick:
            args.repeats, args.steps = 1, 12
        lengths, scoring = (150, 1100), (MMLU_QUESTIONS, FAMILIARITY_EXAMPLES)
        lengths = (min(lengths[0], args.seq // 2), min(lengths[1], args.seq))
    if args.profile and args.steps < train.STEADY_WARMUP_STEPS + 3:
        sys.exit(f"--profile needs --steps of at least {train.STEADY_WARMUP_STEPS + 3}")

    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    liger = device == "cuda" and train.liger_architectures() is not None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hf = tmp / "model"
        word_tokenizer(hf)
        parameters = random_model(arch, hf, device)
        (tmp / "manifest.json").write_text(json.dumps({"path": str(hf)}))
        records = sft_records(args.steps * args.batch, *lengths)
        (tmp / "sft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        ctx = {"tmp": tmp, "hf": hf, "manifest": tmp / "manifest.json", "sft": tmp / "sft.jsonl",
               "device": device, "steps": args.steps, "batch": args.batch, "seq": args.seq,
               "peak": train.device_peak_flops(name) if device == "cuda" else None,
               "mc_items": mc_items(scoring[0], lengths[1]),
               "scoring_records": [SFTRecord.from_dict(r, "bench") for r in
                                   sft_records(scoring[1], *lengths, seed=3)]}
        import peft
        import transformers
        import trl

        print(f"{name}: dense bf16 peak {fmt(ctx['peak'] and ctx['peak'] / 1e12)} TFLOP/s; "
              f"torch {torch.__version__}, transformers {transformers.__version__}, "
              f"trl {trl.__version__}, peft {peft.__version__}, liger "
              f"{'yes' if liger else 'not importable: its arms are left out'}")
        print(f"model: {args.arch if device == 'cuda' else 'tiny'} shape, {parameters / 1e6:.1f}M "
              f"parameters, random weights; seq {args.seq}, batch {args.batch}, {args.steps} "
              f"steps; SFT records {lengths[0]}-{lengths[1]} tokens; load average at start "
              f"{load_start[0]:.2f} {load_start[1]:.2f} {load_start[2]:.2f}")
        results: dict[str, dict[str, list[dict]]] = {
            "restyle": {}, "plain": {}, "mmlu": {}, "familiarity": {}}
        timings: dict[str, float] = {}
        failed: dict[str, str] = {}  # a failing arm is reported, and the others still run
        plan = arms(ctx, args, liger)
        for round_ in range(args.repeats):
            for section, arm, fn in plan:
                elapsed = time.perf_counter() - started
                if arm in failed:
                    continue
                # past the budget even round 1 stops, so the tables of what ran still print
                if elapsed > args.budget or (round_ and elapsed + timings[arm] > args.budget):
                    print(f"[{elapsed:5.0f} s] budget {args.budget:.0f} s: round {round_ + 1} "
                          f"skips {arm}", file=sys.stderr)
                    continue
                t0 = time.perf_counter()
                try:
                    out = fn()
                except Exception as error:  # reported at the end, exit status 1
                    traceback.print_exc()
                    failed[arm] = f"{type(error).__name__}: {error}"
                    fresh()
                    continue
                timings[arm] = time.perf_counter() - t0
                print(f"[{time.perf_counter() - started:5.0f} s] round {round_ + 1}/{args.repeats} "
                      f"{arm}: {timings[arm]:.1f} s {json.dumps(out, default=str)}",
                      file=sys.stderr)
                for part, key, row in (out if section == "scoring" else [(section, arm, out)]):
                    results[part].setdefault(key, []).append(row)
        profiles: list[str] = []
        if args.profile:
            restyle_arm(ctx, "full (profiled)", profile=profiles, method="full")

    plain = (median_row(results["plain"]["plain Trainer"])["tokens/s steady"]
             if "plain Trainer" in results["plain"] else None)
    table(f"(a) restyle.train.run, {args.steps} steps of {args.batch} variable-length records; "
          "tokens are non-padding tokens; MFU = model FLOPs (6N full, 4N + 6N_adapter LoRA, plus "
          "attention's 12 x layers x hidden x row length) / dense bf16 peak", results["restyle"], plain)
    table(f"(b) plain transformers Trainer, fixed-length random sequences of {args.seq} tokens, "
          "SDPA", results["plain"], plain)
    table(f"(c) scoring: {len(ctx['mc_items'])} MMLU-shaped 0-shot questions (restyle.evaluate)",
          results["mmlu"])
    table(f"(c) scoring: familiarity of {len(ctx['scoring_records'])} SFT records "
          "(restyle.study_b.familiarity)", results["familiarity"])
    for text in profiles:
        print("\nprofile of restyle's full fine-tuning (padding-free where a kernel allows):\n")
        print(text)
    load_end = os.getloadavg()
    print(f"\nload average at end {load_end[0]:.2f} {load_end[1]:.2f} {load_end[2]:.2f}; "
          f"{time.perf_counter() - started:.0f} s in all")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "args": vars(args),
                                               "results": results, "failed": failed},
                                              indent=1, default=str))
    for arm, error in failed.items():
        print(f"FAILED {arm}: {error}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
