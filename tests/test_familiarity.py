"""The familiarity scorer on the real bundled SmolLM2: equal to the model's own loss per example,
masked exactly as restyle.chat.encode (the training formatter) masks, with and without a LoRA
adapter on top."""

from __future__ import annotations

import math

import pytest
import torch

from restyle import familiarity, models
from restyle.chat import IGNORE_INDEX, encode
from restyle.familiarity import Score
from restyle.records import SFTRecord

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


@pytest.mark.parametrize("batch_size, max_batch_tokens", [(3, None), (8, 200)])
def test_batched_scores_equal_the_models_own_loss(model_tok, batch_size, max_batch_tokens):
    model, tok = model_tok
    recs = records(system=True)
    scores = familiarity.score_records(model, tok, recs, batch_size=batch_size,
                                       max_batch_tokens=max_batch_tokens)
    for rec, s in zip(recs, scores):
        assert s.mean_nll == pytest.approx(direct_mean_nll(model, tok, rec), abs=1e-4)
        assert s.perplexity == pytest.approx(math.exp(s.mean_nll))


def test_truncation_matches_training(model_tok):
    model, tok = model_tok
    rec = records()[1]
    prompt_len = len(encode(tok, rec.prompt, "x").input_ids) - 3  # "x" + end-of-turn tokens
    [s] = familiarity.score_records(model, tok, [rec], max_length=prompt_len + 5)
    assert s.tokens == 5
    assert s.mean_nll == pytest.approx(direct_mean_nll(model, tok, rec, prompt_len + 5), abs=1e-4)


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
        assert s.nll_sum == pytest.approx(by_hand, abs=1e-3)


def test_naive_loop_equals_batched(model_tok):
    model, tok = model_tok
    enc = familiarity.encode_records(tok, records())
    naive = familiarity.score_naive(model, enc)
    batched = familiarity.score_encoded(model, enc, batch_size=4, pad_id=tok.pad_token_id)
    assert [s.tokens for s in naive] == [s.tokens for s in batched]
    for a, b in zip(naive, batched):
        assert a.mean_nll == pytest.approx(b.mean_nll, abs=1e-4)


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
        assert a.mean_nll == pytest.approx(direct_mean_nll(tuned, tok2, rec), abs=1e-4)
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
