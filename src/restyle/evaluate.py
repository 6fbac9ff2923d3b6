"""Evaluation of a base model or a fine-tuned checkpoint on multiple-choice and generation tasks.

Multiple choice follows lm-evaluation-harness's MMLU task: the prompt is the subject line, the
k-shot examples (first k dev items of the subject) and the question with its lettered options,
ending in "Answer:"; the prediction is the letter whose continuation (" A" .. " D") has the
highest log-likelihood. The four letters are single tokens after the same prompt, so one forward
pass per question scores all four. The questions of a subject share a prefix (the chat
template's system turn, the subject line, the k-shot examples): its key/value cache is computed
once per subject and each question runs its own tokens only. Every other task (restyle.tasks) is
answered with the model's chat template, greedily or with `eval.{task}.samples` replies sampled
as config says and nothing else (a model's generation_config.json changes no reply), and each
reply is judged by the task's checker; sampled replies are scored per question.
"""

from __future__ import annotations

import logging
import math
import sys
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pandas as pd
import torch
from tqdm import tqdm

from restyle import batching, stats
from restyle.batching import AUTO, Limits, left_pad
from restyle.tasks.mmlu import format_mc
from restyle.records import LETTERS, MCItem
from restyle.runs import parse_run
from restyle.tasks import NO_ANSWER, Task

log = logging.getLogger(__name__)

SUBJECT_LINE = "The following are multiple choice questions (with answers) about {subject}.\n\n"
ALL_SUBJECTS = "ALL"  # the summary row that averages over every question (not over subjects)
SUMMARY_COLUMNS = ["model", "run", "sft_set", "seed", "task", "subject", "n", "accuracy", "stderr",
                   "no_answer_rate"]
# What `auto` batch limits are off CUDA: the config defaults from before `auto`.
CPU_MAX_BATCH_TOKENS = batching.CPU_MAX_BATCH_TOKENS
CPU_GENERATION_BATCH_SIZE = 16


def question_block(item: MCItem) -> str:
    return f"{format_mc(item.question, item.choices)}\nAnswer:"


def mc_prompt(item: MCItem, shots: Sequence[MCItem] = ()) -> str:
    """lm-evaluation-harness's MMLU prompt: subject line, solved examples, the question."""
    header = SUBJECT_LINE.format(subject=item.subject.replace("_", " "))
    solved = "".join(f"{question_block(s)} {s.answer_letter}\n\n" for s in shots)
    return header + solved + question_block(item)


def shots_by_subject(dev: Sequence[MCItem], k: int) -> dict[str, list[MCItem]]:
    shots: dict[str, list[MCItem]] = defaultdict(list)
    for item in dev:
        if len(shots[item.subject]) < k:
            shots[item.subject].append(item)
    return shots


def letter_token_ids(tokenizer, chat: bool) -> list[int]:
    """Token ids of the four answer continuations; each must be a single token."""
    ids = []
    for letter in LETTERS:
        # after "Answer:" the continuation is " A"; after a chat template's assistant header it is "A"
        toks = tokenizer.encode(letter if chat else f" {letter}", add_special_tokens=False)
        if len(toks) != 1:
            raise ValueError(f"the tokenizer splits answer letter {letter!r} into {len(toks)} tokens")
        ids.append(toks[0])
    return ids


def _encode_prompts(tokenizer, prompts: Sequence[str], chat: bool) -> list[list[int]]:
    if chat:
        return [list(tokenizer.apply_chat_template([{"role": "user", "content": p}],
                                                   add_generation_prompt=True,
                                                   tokenize=True)["input_ids"]) for p in prompts]
    # one call: a fast tokenizer encodes a batch on all cores (one by one, 1,600 5-shot prompts
    # took 0.9 s to encode on 2 cores, more than an H200 took to score them); it refuses an
    # empty batch
    return [list(ids) for ids in tokenizer(list(prompts))["input_ids"]] if prompts else []


@torch.no_grad()
def next_token_logprobs(model, tokenizer, seqs: Sequence[list[int]], token_ids: Sequence[int],
                        limits: Limits, desc: str = "scoring",
                        groups: Sequence[Sequence[int]] | None = None
                        ) -> tuple[torch.Tensor, Limits]:
    """log p(token | seq) for each seq and each of `token_ids`: one forward pass per seq,
    batched by length so that padding stays small; and the batch limits the run ended with.

    `groups` (indices of `seqs`, e.g. the questions of one subject behind the same k-shot
    examples): the token prefix common to a group is run once and every seq of the group is
    scored from its key/value cache, over its own tokens only. The tokens are those of the whole
    seq, cut where they part, so the scores are the ones a pass over the whole seq gives (up to
    rounding). A batch counts its rows x (prefix + longest rest) tokens against the limits: the
    cache is that big once copied for every row. Without groups, nothing is shared."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = torch.empty((len(seqs), len(token_ids)), dtype=torch.float32)
    columns = torch.tensor(list(token_ids), device=device)
    with tqdm(total=len(seqs), desc=desc, unit="q", disable=not sys.stderr.isatty()) as bar:
        for group in groups or [range(len(seqs))]:
            group = list(group)
            start = batching.shared_prefix([seqs[i] for i in group]) if groups else 0
            prefix = batching.PrefixCache(model, seqs[group[0]][:start])

            def score(batch: list[int]) -> None:
                rows = [group[j] for j in batch]
                ids, mask, positions = left_pad([seqs[i][start:] for i in rows], pad)
                logits = model(**prefix.continue_batch(ids.to(device), mask.to(device),
                                                       positions.to(device)),
                               logits_to_keep=1).logits[:, -1, :].float()
                out[rows] = torch.log_softmax(logits, dim=-1)[:, columns].cpu()
                bar.update(len(rows))

            limits = batching.run_batches([len(seqs[i]) for i in group], score, limits, desc)
    return out, limits


@dataclass(frozen=True)
class MCOptions:
    k_shot: int = 0
    chat_template: bool = False
    max_batch_tokens: int | str = AUTO


def evaluate_mc(model, tokenizer, items: Sequence[MCItem], dev: Sequence[MCItem],
                options: MCOptions) -> tuple[pd.DataFrame, Limits]:
    """One row per item (id, subject, gold, pred, correct, logprob_A..D), and the batch limits
    the scoring ended with."""
    shots = shots_by_subject(dev, options.k_shot)
    prompts = [mc_prompt(it, shots.get(it.subject, [])) for it in items]
    seqs = _encode_prompts(tokenizer, prompts, options.chat_template)
    limits = batching.resolve(next(model.parameters()).device, tokens=options.max_batch_tokens,
                              cpu_tokens=CPU_MAX_BATCH_TOKENS, stretch=batching.SCORING_STRETCH)
    # every question of a subject repeats the same opening: the chat template's system turn,
    # the subject line and the k-shot examples
    by_subject: dict[str, list[int]] = defaultdict(list)
    for i, item in enumerate(items):
        by_subject[item.subject].append(i)
    scores, limits = next_token_logprobs(model, tokenizer, seqs,
                                         letter_token_ids(tokenizer, options.chat_template),
                                         limits, desc="multiple choice",
                                         groups=list(by_subject.values()))
    pred = scores.argmax(dim=-1).tolist()
    rows = pd.DataFrame({"id": [it.id for it in items], "subject": [it.subject for it in items],
                         "gold": [LETTERS[it.answer] for it in items],
                         "pred": [LETTERS[p] for p in pred],
                         "prompt_tokens": [len(s) for s in seqs]})
    rows["correct"] = rows["gold"] == rows["pred"]
    for j, letter in enumerate(LETTERS):
        rows[f"logprob_{letter}"] = scores[:, j].numpy()
    return rows, limits


@dataclass(frozen=True)
class GenerationOptions:
    instruction: str = ""
    max_new_tokens: int = 256
    batch_size: int | str = AUTO
    # samples > 1: that many sampled replies per question (pass@k), else one greedy reply
    samples: int = 1
    temperature: float = 0.8
    top_p: float = 1.0  # 1.0: off
    top_k: int = 0  # 0: off
    seed: int = 0


SAMPLED_WITH = ("temperature", "top_p", "top_k")  # config eval.{task}'s sampling settings


def sampling(options: GenerationOptions) -> dict:
    """How the replies are drawn, as the summary records it (samples, do_sample, temperature,
    top_p, top_k, sampling_seed): greedy, or sampled with config eval.{task}'s settings and
    seed; None where unused."""
    sampled = options.samples > 1
    return {"samples": options.samples, "do_sample": sampled,
            **{k: getattr(options, k) if sampled else None for k in SAMPLED_WITH},
            "sampling_seed": options.seed if sampled else None}


def decoding(model, options: GenerationOptions, pad: int):
    """The whole of generate()'s settings for the evaluation's replies: `sampling(options)`, the
    length limit and the model's own token ids (its end-of-turn tokens), nothing else. A model's
    generation_config.json may set sampling and penalties (Llama-2-chat: temperature 0.6, top_p
    0.9); none of it reaches a reply (`_alone`)."""
    from transformers import GenerationConfig

    drawn = sampling(options)
    own = model.generation_config
    return GenerationConfig(max_new_tokens=options.max_new_tokens, pad_token_id=pad,
                            bos_token_id=own.bos_token_id, eos_token_id=own.eos_token_id,
                            **{k: drawn[k] for k in ("do_sample", *SAMPLED_WITH)
                               if drawn[k] is not None})


@contextmanager
def _alone(model, config):
    """`config` as the model's own generation_config while generating: generate() takes every
    setting its `generation_config` argument leaves unset (repetition_penalty, top_k, ...) from
    the model's own, then from transformers' defaults, which switch every logits processor
    off. A PEFT model generates with its base model's."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    own, hf.generation_config = hf.generation_config, config
    try:
        yield
    finally:
        hf.generation_config = own


@torch.no_grad()
def generate_answers(model, tokenizer, prompts: Sequence[str],
                     options: GenerationOptions) -> tuple[list[str], Limits]:
    """Replies to user prompts with the model's chat template, batched by length: greedy, or
    sampled as config eval.{task} says (`decoding`) when `options.samples` > 1 (the caller
    repeats each prompt; one seed for the job, so a rerun on the same device and batch size
    samples the same); and the batch limits the run ended with."""
    device = next(model.parameters()).device
    if options.samples > 1:
        torch.manual_seed(options.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = decoding(model, options, pad)
    seqs = _encode_prompts(tokenizer, prompts, chat=True)
    replies: list[str] = [""] * len(seqs)
    limits = batching.resolve(device, rows=options.batch_size, cpu_rows=CPU_GENERATION_BATCH_SIZE)
    with tqdm(total=len(seqs), desc="generation", unit="q", disable=not sys.stderr.isatty()) as bar:
        def answer(batch: list[int]) -> None:
            ids, mask, _ = (t.to(device) for t in left_pad([seqs[i] for i in batch], pad))
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            for row, i in enumerate(batch):
                replies[i] = tokenizer.decode(out[row, ids.shape[1]:], skip_special_tokens=True)
            bar.update(len(batch))

        with _alone(model, config):
            limits = batching.run_batches([len(s) for s in seqs], answer, limits, "generation")
    return replies, limits


def evaluate_generation(model, tokenizer, task: Task, items: Sequence,
                        options: GenerationOptions, jobs: int = 1) -> tuple[pd.DataFrame, Limits]:
    """One row per item and sample (id, gold, pred: the answer the task read from the reply,
    correct, status: passed, failed, no_answer, or a code task's timeout/error, reason, response;
    `sample` when there are several), and the batch limits the generation ended with. `jobs`:
    checks run at once (code tasks)."""
    n = options.samples
    items = [it for it in items for _ in range(n)]
    prompts = [task.prompt(it, options.instruction) for it in items]
    replies, limits = generate_answers(model, tokenizer, prompts, options)
    checks = task.check_all(items, replies, jobs)
    rows = pd.DataFrame({"id": [it.id for it in items], "gold": [task.gold(it) for it in items],
                         "pred": [c.extracted or "" for c in checks],
                         "correct": [c.correct for c in checks],
                         "status": [c.status for c in checks],
                         "reason": [c.reason or "" for c in checks],
                         "response": replies})
    if n > 1:
        rows.insert(1, "sample", [i % n for i in range(len(rows))])
    return rows, limits


def pass_at_k(items: pd.DataFrame, k: int) -> float:
    """pass@k (restyle.stats.pass_at_k) of every question's samples, averaged over questions."""
    per_question = items.groupby("id")["correct"].agg(["size", "sum"])
    return float(sum(stats.pass_at_k(n, c, k) for n, c in zip(per_question["size"],
                                                                per_question["sum"]))
                 / len(per_question))


def accuracy_stderr(scores: pd.Series) -> tuple[int, float, float]:
    """n, accuracy and its standard error from one score per question (its correctness, or the
    share of its sampled replies that are correct): sample standard deviation / sqrt(n), as
    lm-eval; for 0/1 scores sqrt(acc (1 - acc) / (n - 1))."""
    n = len(scores)
    acc = float(scores.mean()) if n else float("nan")
    stderr = float(scores.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    return n, acc, stderr


def run_labels(model: str, run: str) -> dict:
    """Columns naming a run (restyle.runs): its model, name, SFT set and seed."""
    sft_set, seed = parse_run(run)
    return {"model": model, "run": run, "sft_set": sft_set, "seed": seed}


def summarize(items: pd.DataFrame, task: str, labels: dict) -> pd.DataFrame:
    """Per-subject rows and an ALL row (micro-average over questions), with `labels` (model, run,
    sft_set, seed) on every row. A question's sampled replies (several rows of one id) count as
    one question scored by the share that is correct: n counts questions and the standard error
    is clustered by question, since the replies to one question are not independent. Each row's
    no-answer rate is the share of replies the task's checker read no answer in (items `status`
    no_answer), per question, averaged; 0 for a log-likelihood task, whose items have no status:
    it always picks an option."""
    no_answer = items["status"] == NO_ANSWER if "status" in items else False
    per_question = items.assign(no_answer=no_answer).groupby("id", sort=False).agg(
        correct=("correct", "mean"), no_answer=("no_answer", "mean"),
        **({"subject": ("subject", "first")} if "subject" in items else {}))
    groups = [(s, g) for s, g in per_question.groupby("subject", sort=True)] \
        if "subject" in per_question else []
    groups.append((ALL_SUBJECTS, per_question))
    rows = []
    for subject, group in groups:
        n, acc, stderr = accuracy_stderr(group["correct"])
        rate = float(group["no_answer"].mean()) if len(group) else float("nan")
        rows.append({**labels, "task": task, "subject": subject, "n": n, "accuracy": acc,
                     "stderr": stderr, "no_answer_rate": rate})
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
