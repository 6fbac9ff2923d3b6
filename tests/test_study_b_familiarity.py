"""The familiarity scorer on the real bundled SmolLM2: equal to the model's own loss per example,
masked exactly as restyle.chat.encode (the training formatter) masks, with and without a LoRA
adapter on top."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from restyle import batching, models
from restyle.chat import IGNORE_INDEX, encode
from restyle.records import SFTRecord
from restyle.study_b import familiarity
from restyle.study_b.familiarity import Score

QUESTIONS = [
    ("What is 2+2?", "4"),
    ("Ava buys 3 boxes of pencils with 12 pencils in each box. She gives 5 away. How many are "
     "left?", "Ava buys 3*12 = <<3*12=36>>36 pencils.\nAfter giving some away, she has "
     "36-5 = <<36-5=31>>31 pencils.\n#### 31"),
    ("Name a colour.", "Blue is a colour that many people like, as the sky is often blue."),
    ("Explain photosynthesis in one sentence.", "Plants turn light, water and carbon dioxide "
     "into sugar and oxygen."),
    ("Say hi.", "Hi!"),
    ("Count to five.", "1, 2, 3, 4, 5."),
    ("Is 17 prime?", "Yes. 17 has no divisors other than 1 and itself, so it is prime.\n#### yes"),
]


def records(n=len(QUESTIONS), system=False):
    out = []
    for i, (q, a) in enumerate(QUESTIONS[:n]):
        prompt = [{"role": "user", "content": q}]
        if system and i % 2:
            prompt = [{"role": "system", "content": "You are terse."}, *prompt]
        out.append(SFTRecord(id=f"s/{i}", source_id=str(i), dataset="s", prompt=prompt,
                             completion=a, provenance={}))
    return out


@pytest.fixture(scope="module")
def model_tok(smollm2_manifest):
    return models.load_checkpoint(smollm2_manifest)


def direct_mean_nll(model, tokenizer, rec, max_length=None):
    """The reference: one example, the model's own loss with labels=-100 on the prompt."""
    enc = encode(tokenizer, rec.prompt, rec.completion, max_length=max_length)
    with torch.no_grad():
        return float(model(input_ids=torch.tensor([enc.input_ids]),
                           labels=torch.tensor([enc.labels])).loss)


def agrees(model, reference: float):
    """Equal to `reference` up to the rounding of the model's dtype (fp32 on a CPU, bf16 on a
    GPU): restyle.batching.agreement_bound."""
    return pytest.approx(reference, abs=batching.agreement_bound(model.dtype, reference))


@pytest.mark.parametrize("batch_size, max_batch_tokens", [(3, None), (8, 200)])
def test_batched_scores_equal_the_models_own_loss(model_tok, batch_size, max_batch_tokens):
    model, tok = model_tok
    recs = records(system=True)
    scores = familiarity.score_records(model, tok, recs, batch_size=batch_size,
                                       max_batch_tokens=max_batch_tokens)
    for rec, s in zip(recs, scores):
        assert s.mean_nll == agrees(model, direct_mean_nll(model, tok, rec))
        assert s.perplexity == pytest.approx(math.exp(s.mean_nll))


def test_truncation_matches_training(model_tok):
    model, tok = model_tok
    rec = records()[1]
    prompt_len = len(encode(tok, rec.prompt, "x").input_ids) - 3  # "x" + end-of-turn tokens
    [s] = familiarity.score_records(model, tok, [rec], max_length=prompt_len + 5)
    assert s.tokens == 5
    assert s.mean_nll == agrees(model, direct_mean_nll(model, tok, rec, prompt_len + 5))


def test_scored_tokens_are_exactly_the_training_labels(model_tok):
    """The scorer's NLL is the sum over exactly the positions where chat.encode (what training
    feeds TRL) puts a label, computed here by hand from an unbatched forward pass."""
    model, tok = model_tok
    recs = records(system=True)
    scores = familiarity.score_records(model, tok, recs, batch_size=4)
    for rec, s in zip(recs, scores):
        enc = encode(tok, rec.prompt, rec.completion)
        labelled = [i for i, t in enumerate(enc.labels) if t != IGNORE_INDEX]
        # the labelled tokens are the response and the template's end of turn, nothing else
        assert tok.decode([enc.input_ids[i] for i in labelled]) == rec.completion + "<|im_end|>\n"
        assert labelled == list(range(labelled[0], len(enc.input_ids)))
        prompt_text = tok.apply_chat_template(rec.prompt, add_generation_prompt=True, tokenize=False)
        assert tok.decode(enc.input_ids[:labelled[0]]) == prompt_text
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([enc.input_ids])).logits[0].float(), -1)
        by_hand = -sum(float(logp[i - 1, enc.input_ids[i]]) for i in labelled)
        assert s.tokens == len(labelled)
        assert s.nll_sum == pytest.approx(
            by_hand, abs=max(1e-3, batching.agreement_bound(model.dtype, by_hand)))  # a sum


def test_naive_loop_equals_batched(model_tok):
    model, tok = model_tok
    enc = familiarity.encode_records(tok, records())
    naive = familiarity.score_naive(model, enc)
    batched = familiarity.score_encoded(model, enc, batch_size=4, pad_id=tok.pad_token_id)
    assert [s.tokens for s in naive] == [s.tokens for s in batched]
    for a, b in zip(naive, batched):
        assert b.mean_nll == agrees(model, a.mean_nll)


def test_shared_prompt_prefix_runs_once(model_tok):
    """The opening every prompt shares (here the chat template's system turn) runs in one pass of
    its own; the batches then run each example's remaining tokens only, and score as above."""
    model, tok = model_tok
    recs = records()
    enc = familiarity.encode_records(tok, recs)
    start = familiarity.prompt_prefix(enc)
    assert tok.decode(enc[0].input_ids[:start]).startswith("<|im_start|>system\nYou are a helpful")
    assert all(e.labels[start] == IGNORE_INDEX for e in enc)  # a prompt token before each response
    widths = []
    hook = model.register_forward_pre_hook(
        lambda _m, _a, kw: widths.append(tuple(kw["input_ids"].shape)), with_kwargs=True)
    try:
        scores = familiarity.score_encoded(model, enc, batch_size=len(enc), pad_id=tok.pad_token_id)
    finally:
        hook.remove()
    assert widths == [(1, start), (len(enc), max(len(e.input_ids) for e in enc) - start)]
    for rec, s in zip(recs, scores):
        assert s.mean_nll == agrees(model, direct_mean_nll(model, tok, rec))


def test_lora_adapter_on_top(tmp_path, smollm2_manifest, model_tok):
    from peft import LoraConfig, get_peft_model

    base, tok = models.load_checkpoint(smollm2_manifest)
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False, lora_alpha=64))
    peft_model.save_pretrained(tmp_path / "adapter")
    tuned, tok2 = models.load_checkpoint(smollm2_manifest, tmp_path / "adapter")
    recs = records(4)
    after = familiarity.score_records(tuned, tok2, recs, batch_size=4)
    before = familiarity.score_records(*model_tok, recs, batch_size=4)
    for rec, a, b in zip(recs, after, before):
        assert a.mean_nll == agrees(tuned, direct_mean_nll(tuned, tok2, rec))
        assert abs(a.mean_nll - b.mean_nll) > 1e-3  # the adapter changes the scores


def test_score_sets_and_summary(model_tok):
    model, tok = model_tok
    per_example, summary = familiarity.score_sets(
        model, tok, {"a": records(5), "empty": []}, "smol", "base", batch_size=2)
    assert [r["id"] for r in per_example] == [f"s/{i}" for i in range(5)]
    a, empty = summary
    assert a["dataset"] == "a" and a["model"] == "smol" and a["run"] == "base" and a["count"] == 5
    ppl = [r["perplexity"] for r in per_example]
    assert a["mean_perplexity"] == pytest.approx(sum(ppl) / 5)
    assert a["corpus_perplexity"] == pytest.approx(
        math.exp(sum(r["nll_sum"] for r in per_example) / sum(r["tokens"] for r in per_example)))
    assert a["median_perplexity"] == pytest.approx(sorted(ppl)[2])
    assert empty["count"] == 0 and math.isnan(empty["corpus_perplexity"])


def test_summary_statistics_by_hand():
    scores = [Score(1, math.log(2.0)), Score(3, 3 * math.log(8.0)), Score(0, 0.0)]
    s = familiarity.summarize(scores)
    assert s["count"] == 2 and s["tokens"] == 4  # the empty example is left out
    assert s["mean_perplexity"] == pytest.approx(5.0)  # (2 + 8) / 2
    assert s["corpus_perplexity"] == pytest.approx(math.exp((math.log(2) + 3 * math.log(8)) / 4))
    assert s["q1_perplexity"] == pytest.approx(3.5) and s["q3_perplexity"] == pytest.approx(6.5)
    assert s["median_perplexity"] == pytest.approx(5.0)


# Statistics over per-example tables: pure pandas/numpy, no model.

def table(dataset, tokens, nll_sum, source_ids=None, model="smol", run="base"):
    """A per-example table (familiarity.PER_EXAMPLE_COLUMNS) for one set."""
    source_ids = source_ids if source_ids is not None else [str(i) for i in range(len(tokens))]
    rows = []
    for sid, t, s in zip(source_ids, tokens, nll_sum):
        rows.append({"model": model, "run": run, "dataset": dataset, "id": f"{dataset}/{sid}",
                     "source_id": sid, "tokens": t, "nll_sum": s,
                     "mean_nll": s / t if t else math.nan,
                     "perplexity": math.exp(s / t) if t else math.nan})
    return pd.DataFrame(rows, columns=familiarity.PER_EXAMPLE_COLUMNS)


def test_set_statistics_by_hand():
    # 1 token at perplexity 2, 3 tokens at perplexity 8, and an example without response tokens
    df = table("x", [1, 3, 0], [math.log(2.0), 3 * math.log(8.0), 0.0])
    [row] = familiarity.set_statistics(df, n_boot=500).to_dict("records")
    assert list(familiarity.set_statistics(df, n_boot=10).columns) == \
        familiarity.SET_STATISTICS_COLUMNS
    assert (row["model"], row["run"], row["dataset"]) == ("smol", "base", "x")
    assert row["examples"] == 2 and row["mean_response_tokens"] == pytest.approx(2.0)
    # exp((log 2 + 3 log 8) / 4) = exp(10 log 2 / 4) = 2 ** 2.5
    assert row["corpus_perplexity"] == pytest.approx(2 ** 2.5)
    assert row["mean_perplexity"] == pytest.approx(5.0)
    # resamples of two examples: both the first (2), both the second (8), or one of each
    assert row["corpus_ppl_low"] == pytest.approx(2.0) and row["corpus_ppl_high"] == \
        pytest.approx(8.0)
    assert row["mean_ppl_low"] == pytest.approx(2.0) and row["mean_ppl_high"] == \
        pytest.approx(8.0)


def test_set_statistics_intervals_contain_the_estimate_and_sets_are_separate():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 200, 300)
    nll = tokens * rng.uniform(0.5, 2.5, 300)
    same = table("same", [10] * 50, [10 * 1.3] * 50)  # identical examples
    df = pd.concat([table("x", tokens, nll), table("x", tokens, nll + tokens, run="r/seed0"),
                    same, table("empty", [0, 0], [0.0, 0.0])])
    out = familiarity.set_statistics(df, n_boot=1000, seed=1)
    assert list(zip(out.run, out.dataset)) == [("base", "same"), ("base", "x"), ("r/seed0", "x")]
    for row in out.itertuples():
        assert row.corpus_ppl_low <= row.corpus_perplexity <= row.corpus_ppl_high
        assert row.mean_ppl_low <= row.mean_perplexity <= row.mean_ppl_high
    x = out[(out.dataset == "x") & (out.run == "base")].iloc[0]
    assert x.corpus_ppl_low < x.corpus_perplexity < x.corpus_ppl_high
    assert x.corpus_perplexity == pytest.approx(math.exp(nll.sum() / tokens.sum()))
    assert x.examples == 300 and x.mean_response_tokens == pytest.approx(tokens.mean())
    trained = out[out.run == "r/seed0"].iloc[0]  # one nat more per token: e times the perplexity
    assert trained.corpus_perplexity == pytest.approx(math.e * x.corpus_perplexity)
    s = out[out.dataset == "same"].iloc[0]
    assert s.corpus_ppl_low == s.corpus_ppl_high == pytest.approx(math.exp(1.3))
    assert s.mean_ppl_low == s.mean_ppl_high == pytest.approx(math.exp(1.3))
    # a set's row does not depend on the other sets in the table, and a seed repeats it
    alone = familiarity.set_statistics(table("x", tokens, nll), n_boot=1000, seed=1)
    pd.testing.assert_frame_equal(alone, out.iloc[[1]].reset_index(drop=True))
    pd.testing.assert_frame_equal(out, familiarity.set_statistics(df, n_boot=1000, seed=1))
    other = familiarity.set_statistics(df, n_boot=1000, seed=2)
    assert other.corpus_ppl_low.iloc[1] != x.corpus_ppl_low
    assert familiarity.set_statistics(df.iloc[:0]).columns.tolist() == \
        familiarity.SET_STATISTICS_COLUMNS


def paired_pair(n=200, seed=0):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(5, 300, n)
    nll = tokens * rng.uniform(0.3, 3.0, n)
    return tokens, nll


def test_paired_perplexity_doubled_per_token():
    tokens, nll = paired_pair()
    b_tokens = tokens + 7  # b answers in other words: its own lengths
    df = pd.concat([table("a", tokens, nll),
                    table("b", b_tokens, nll / tokens * b_tokens + b_tokens * math.log(2))])
    r = familiarity.paired_perplexity(df, "a", "b", n_boot=1000)
    assert list(r) == familiarity.PAIRED_PERPLEXITY_KEYS
    assert (r["model"], r["run"], r["a"], r["b"], r["n"]) == ("smol", "base", "a", "b", 200)
    assert r["tokens_a"] == tokens.sum() and r["tokens_b"] == b_tokens.sum()
    assert r["corpus_ppl_a"] == pytest.approx(math.exp(nll.sum() / tokens.sum()))
    assert r["ratio"] == pytest.approx(r["corpus_ppl_b"] / r["corpus_ppl_a"])
    # same lengths, and b's NLL is a's + log 2 per token: a ratio of 2 on every resample
    same_len = pd.concat([table("a", tokens, nll),
                          table("b", tokens, nll + tokens * math.log(2))])
    r = familiarity.paired_perplexity(same_len, "a", "b", n_boot=1000)
    assert r["ratio"] == pytest.approx(2.0)
    assert r["ratio_low"] == pytest.approx(2.0) and r["ratio_high"] == pytest.approx(2.0)
    assert r["excludes_one"] is True
    back = familiarity.paired_perplexity(same_len, "b", "a", n_boot=1000)
    assert back["ratio"] == pytest.approx(0.5) and back["excludes_one"] is True


def test_paired_perplexity_identical_sets_and_noise():
    tokens, nll = paired_pair()
    df = pd.concat([table("a", tokens, nll), table("b", tokens, nll)])
    r = familiarity.paired_perplexity(df, "a", "b")
    assert r["ratio"] == 1.0 and r["ratio_low"] == 1.0 and r["ratio_high"] == 1.0
    assert r["excludes_one"] is False
    # b differs from a by noise with no direction: the interval holds the estimate and 1
    rng = np.random.default_rng(5)
    noisy = pd.concat([table("a", tokens, nll),
                       table("b", tokens, nll + tokens * rng.normal(0, 0.2, len(tokens)))])
    r = familiarity.paired_perplexity(noisy, "a", "b", n_boot=2000, seed=3)
    assert r["ratio_low"] < r["ratio"] < r["ratio_high"]
    assert r["ratio_low"] < 1 < r["ratio_high"] and r["excludes_one"] is False


def test_paired_perplexity_uses_only_shared_questions():
    a = table("a", [2, 4, 6, 8], [2.0, 4.0, 6.0, 8.0], source_ids=["q1", "q2", "q3", "q4"])
    # b answers q3, q4 (and q5, q6 that a lacks); q2 has no response tokens and does not count
    b = table("b", [0, 3, 5, 1, 1], [0.0, 6.0, 15.0, 9.0, 9.0],
              source_ids=["q2", "q3", "q4", "q5", "q6"])
    other_run = table("b", [1, 1], [50.0, 50.0], source_ids=["q1", "q2"], run="b/seed0")
    r = familiarity.paired_perplexity(pd.concat([a, b, other_run]), "a", "b", n_boot=300)
    assert r["n"] == 2
    assert r["tokens_a"] == 14 and r["tokens_b"] == 8
    assert r["corpus_ppl_a"] == pytest.approx(math.exp(14 / 14))
    assert r["corpus_ppl_b"] == pytest.approx(math.exp(21 / 8))
    assert r["ratio"] == pytest.approx(math.exp(21 / 8 - 1))
    assert r["ratio_low"] <= r["ratio"] <= r["ratio_high"]
    # by hand: the two resampled question sets {q3, q3} and {q4, q4} bound the ratio
    assert r["ratio_low"] >= math.exp(2 - 1) - 1e-9 and r["ratio_high"] <= math.exp(3 - 1) + 1e-9
    # source ids match across files that parsed them as numbers and as text
    a_num = a.assign(source_id=[1, 2, 3, 4])
    b_txt = b.assign(source_id=["2", "3", "4", "5", "6"])
    assert familiarity.paired_perplexity(pd.concat([a_num, b_txt]), "a", "b")["n"] == 2


def test_paired_perplexity_none_models_and_determinism():
    a = table("a", [2, 4], [2.0, 4.0], source_ids=["q1", "q2"])
    b = table("b", [2, 4], [3.0, 5.0], source_ids=["q3", "q4"])
    assert familiarity.paired_perplexity(pd.concat([a, b]), "a", "b") is None
    assert familiarity.paired_perplexity(pd.concat([a, b]), "a", "missing") is None
    assert familiarity.paired_perplexity(pd.concat([a, b]), "a", "b", run="x/seed0") is None
    tokens, nll = paired_pair(300, seed=2)
    other_tokens, other_nll = paired_pair(300, seed=3)
    df = pd.concat([table("a", tokens, nll), table("b", other_tokens, other_nll),
                    table("a", tokens, nll * 2, model="big"),
                    table("b", other_tokens, other_nll, model="big")])
    with pytest.raises(ValueError, match="several models"):
        familiarity.paired_perplexity(df, "a", "b")
    one = familiarity.paired_perplexity(df, "a", "b", seed=7, model="smol")
    assert one == familiarity.paired_perplexity(df, "a", "b", seed=7, model="smol")
    assert one["model"] == "smol"
    assert one != familiarity.paired_perplexity(df, "a", "b", seed=8, model="smol")
    big = familiarity.paired_perplexity(df, "a", "b", seed=7, model="big")
    assert big["corpus_ppl_a"] == pytest.approx(one["corpus_ppl_a"] ** 2)
