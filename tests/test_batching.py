"""Batch limits that fit the device: `auto` is the CPU default off CUDA; on CUDA the limits halve
on out-of-memory until a batch fits, and the run then scores exactly as a run with the limits it
found. CUDA's out-of-memory error is raised here by stand-ins above a threshold, as a GPU with
that much free memory would."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from restyle import batching, evaluate, models, teacher
from restyle.batching import AUTO, Limits
from restyle.records import MCItem, SFTRecord
from restyle.study_b import familiarity


def test_auto_is_the_cpu_default_off_cuda_and_the_gpu_start_on_cuda():
    assert batching.resolve("cpu", AUTO, AUTO, cpu_rows=16, cpu_tokens=8192) == Limits(16, 8192)
    assert batching.resolve("cpu", 4, None, cpu_rows=16) == Limits(4, None)
    assert batching.resolve(torch.device("cuda", 0), AUTO, 100, cpu_rows=16) == Limits(
        batching.GPU_START_ROWS, 100, frozenset({"rows"}))
    assert batching.resolve("cuda", None, AUTO, cpu_tokens=8192, stretch=2.0) == Limits(
        None, batching.GPU_START_TOKENS, frozenset({"tokens"}), 2.0)
    assert batching.resolve("cpu", None, AUTO, cpu_tokens=8192, stretch=2.0) == Limits(None, 8192)


def test_batches_by_length_within_rows_tokens_and_stretch():
    lengths = [5, 40, 9, 10, 20, 11, 3]
    assert list(batching.length_batches(lengths, max_tokens=60)) == [[1], [4, 5, 3], [2, 0, 6]]
    assert list(batching.length_batches(lengths, max_rows=3, shortest_first=True)) == [
        [6, 0, 2], [3, 5, 4], [1]]
    # no row padded to more than twice its length
    assert list(batching.length_batches(lengths, max_stretch=2)) == [[1, 4], [5, 3, 2], [0, 6]]


def oom_above(limit, size):
    """A batch function that records its batches and raises CUDA's out-of-memory error when
    `size(batch)` exceeds `limit`."""
    done = []

    def process(batch):
        if size(batch) > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test stand-in)")
        done.append(batch)
    return process, done


def test_halving_finds_the_largest_row_count_that_fits_and_batches_as_a_fixed_run():
    lengths = [10] * 40
    process, done = oom_above(5, len)
    limits = batching.run_batches(lengths, process, Limits(rows=64, auto=frozenset({"rows"})),
                                  "test")
    assert limits.rows == 5  # 40 -> 20 -> 10 -> 5: the first that fits
    fixed, fixed_done = oom_above(5, len)
    assert batching.run_batches(lengths, fixed, Limits(rows=5), "test") == Limits(rows=5)
    assert done == fixed_done and sorted(i for b in done for i in b) == list(range(40))


def test_halving_tokens_keeps_every_item_once_and_within_a_factor_two():
    lengths = [(7 * i) % 50 + 5 for i in range(300)]
    process, done = oom_above(1000, lambda b: len(b) * max(lengths[i] for i in b))
    limits = batching.run_batches(lengths, process, Limits(rows=512, tokens=2 ** 18,
                                                           auto=frozenset({"tokens"})), "test")
    assert limits.rows == 512 and 1000 // 2 <= limits.tokens <= 1000
    assert sorted(i for b in done for i in b) == list(range(300))


def test_out_of_memory_propagates_without_auto_or_for_a_single_row():
    process, _ = oom_above(0, len)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        batching.run_batches([3, 4], process, Limits(rows=2), "test")
    with pytest.raises(torch.cuda.OutOfMemoryError):
        batching.run_batches([3, 4], process, Limits(rows=2, auto=frozenset({"rows"})), "test")


class OutOfMemoryAbove(torch.nn.Module):
    """The model, raising CUDA's out-of-memory error on inputs of more than `tokens` tokens."""

    def __init__(self, model, tokens):
        super().__init__()
        self.model, self.tokens = model, tokens

    def forward(self, input_ids, **kwargs):
        if input_ids.numel() > self.tokens:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test stand-in)")
        return self.model(input_ids=input_ids, **kwargs)


@pytest.fixture(scope="module")
def loaded(smollm2_manifest):
    return models.load_checkpoint(smollm2_manifest)


QUESTIONS = [MCItem(id=f"q/{i}", subject="global_facts", answer=i % 4,
                    question="Which number comes next? " * (1 + i % 5) + str(i),
                    choices=[str(i), str(i + 1), str(i + 2), str(i + 3)]) for i in range(24)]


def test_auto_on_a_cpu_is_the_default_for_every_stage(loaded):
    model, tokenizer = loaded
    _, limits = evaluate.evaluate_mc(model, tokenizer, QUESTIONS[:2], [], evaluate.MCOptions())
    assert limits == Limits(tokens=evaluate.CPU_MAX_BATCH_TOKENS) == Limits(tokens=8192)
    assert familiarity.resolve_limits(model, AUTO, AUTO) == Limits(16, 8192)
    assert evaluate.GenerationOptions().batch_size == AUTO
    assert batching.resolve(model.device, rows=AUTO, cpu_rows=evaluate.CPU_GENERATION_BATCH_SIZE
                            ) == Limits(rows=16)


def test_scoring_halves_to_a_size_that_fits_and_equals_a_fixed_run(loaded):
    model, tokenizer = loaded
    seqs = [tokenizer.encode(evaluate.mc_prompt(q)) for q in QUESTIONS]
    letters = evaluate.letter_token_ids(tokenizer, chat=False)
    small = OutOfMemoryAbove(model, 400)
    auto, limits = evaluate.next_token_logprobs(
        small, tokenizer, seqs, letters,
        Limits(tokens=2 ** 18, auto=frozenset({"tokens"}), stretch=batching.SCORING_STRETCH))
    assert 400 // 2 <= limits.tokens <= 400
    fixed, _ = evaluate.next_token_logprobs(model, tokenizer, seqs, letters,
                                            replace(limits, auto=frozenset()))
    assert torch.equal(auto, fixed)


def test_familiarity_halves_to_a_size_that_fits_and_equals_a_fixed_run(loaded):
    model, tokenizer = loaded
    records = [SFTRecord(id=f"s/{i}", source_id=str(i), dataset="s",
                         prompt=[{"role": "user", "content": q.question}],
                         completion=f"The answer is {q.choices[q.answer]}." * (1 + i % 3),
                         provenance={}) for i, q in enumerate(QUESTIONS)]
    encoded = familiarity.encode_records(tokenizer, records)
    small = OutOfMemoryAbove(model, 600)
    auto, limits = familiarity.score_batched(
        small, encoded, Limits(rows=512, tokens=2 ** 18, auto=frozenset({"rows", "tokens"})),
        tokenizer.pad_token_id)
    assert limits.tokens <= 600
    fixed, _ = familiarity.score_batched(model, encoded, limits, tokenizer.pad_token_id)
    assert auto == fixed


def test_local_teacher_halves_to_a_size_that_fits_and_records_it(tmp_path, smollm2_manifest,
                                                                  monkeypatch):
    prompts = ["What is 2+2?", "Name a colour.", "What is the capital of France?", "Say hi."]
    reqs = [teacher.Request(f"p{i}", [{"role": "user", "content": p}], "t", "h",
                            {"max_tokens": 8}) for i, p in enumerate(prompts)]
    cfg = {"backend": "local", "manifest": str(smollm2_manifest)}

    def run(name, batch_size):
        results, row = teacher.generate(reqs, {**cfg, "batch_size": batch_size},
                                        tmp_path / f"{name}.db", stage="s")
        return [r.text for r in results], row["batch_size"]

    cpu_auto = run("cpu_auto", AUTO)
    assert cpu_auto[1] == teacher.LOCAL_BATCH_SIZE == 8
    fixed = run("fixed", 2)
    assert fixed[1] == 2
    # a CUDA device whose memory holds two prompts at a time
    monkeypatch.setattr(batching, "resolve",
                        lambda device, rows, **_: Limits(rows=8, auto=frozenset({"rows"})))
    generate_batch = teacher.local._local_batch

    def oom_above_two(model, tokenizer, seqs, prefix, params, seed):
        if len(seqs) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test stand-in)")
        return generate_batch(model, tokenizer, seqs, prefix, params, seed)

    monkeypatch.setattr(teacher.local, "_local_batch", oom_above_two)
    assert run("gpu_auto", AUTO) == fixed
