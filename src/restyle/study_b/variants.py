"""Study B's response variants: the same training questions, answered in different styles.

One SFT set per (task, variant), `studyB-{task}-{variant}` (`results/sft/{set}.jsonl`), or per
(task, variant, model), `studyB-{task}-{variant}@{model}`, for a variant made by or for one model
(restyle.study_b.PER_MODEL); every set holds the same prompt for a question, the user turn the
evaluation asks (`Task.prompt`: the question, then `study_b.instructions[task]`), only the
completion differs:

- human: the ground truth as people wrote it (the task's `human_answer`: GSM8K's worked
  solution, for MMLU the bare answer "The answer is (C).", a code task's solution).
- teacher: the teacher's own answer to the prompt.
- teacher_rewrite: the teacher rewrites the human answer in its own words, keeping its content.
- teacher_steps / teacher_detailed_steps: the teacher answers step by step / in detailed steps.
- self_rewrite: the set's model (a teacher entry serving it) rewrites the human answer (SDFT).
- minimum_change: the target model answers; the teacher corrects that answer with the smallest
  edits that make it right, keeping the target's wording.
- best_of_n: n sampled teacher answers (distinct seeds); the correct one the target model finds
  least perplexing is kept.
- low_ppl / high_ppl: the lower and upper halves, by target-model perplexity, of another set
  (`study_b.ppl_split_of`); an odd middle example goes to neither.

A set named in `study_b.release_sets` is read from study B's data release instead (`_released`:
the paper's own GPT-4, Claude or minimum-change answers), and then filtered like a made one.

Every completion is judged by its task's checker (restyle.tasks: the final number, option
letter or mathematical answer against the gold one; a code task's program run against the
problem's tests in restyle.sandbox), the one the evaluation uses, and dropped when wrong while
`study_b.filter_correct` is on; dropped items and why go to a side file, counts to a
stats CSV. A set may end up empty (a weak teacher gets every answer wrong): its SFT file is then
empty and its stats say so; nothing is made up to fill it.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from restyle import teacher as teacher_mod
from restyle import tasks
from restyle.data import release
from restyle.io import DataError, read_jsonl, write_csv, write_jsonl
from restyle.records import SFTRecord
from restyle.study_b import PPL_SPLITS, SCORED_VARIANTS, VARIANTS, sft_set_name
from restyle.tasks import Check, Task
from restyle.teacher import Prompt, Request, Result, json_hash, template_hash

log = logging.getLogger(__name__)

STATS_COLUMNS = ["task", "variant", "sft_set", "questions", "candidates", "kept", "dropped",
                 "teacher_failed", "no_answer", "wrong_answer", "other_dropped",
                 "mean_completion_chars", "prompt_tokens", "completion_tokens", "cost"]

TEMPLATES: dict[str, Prompt] = {
    "answer": "{prompt}",
    "steps": "{prompt}\n\nAnswer step by step: write one short step per line, then the final "
             "answer. {format}",
    "detailed_steps": "{prompt}\n\nAnswer step by step in detail: explain every step and why it "
                      "follows from the previous ones, then give the final answer. {format}",
    "rewrite": "Rewrite the answer below in your own words. Keep its content, its reasoning and "
               "its final answer; do not add new facts. {format}\n\nQuestion:\n{question}\n\n"
               "Answer:\n{answer}\n\nWrite only the rewritten answer.",
    "minimum_change": "Below are a question, its correct final answer and a student's answer. "
                      "Correct the student's answer with as few edits as possible so that its "
                      "reasoning and final answer are right. Keep the student's wording wherever "
                      "it is right; if the whole answer is right, copy it unchanged. {format}\n\n"
                      "Question:\n{question}\n\nCorrect final answer: {gold}\n\n"
                      "Student's answer:\n{draft}\n\nWrite only the corrected answer.",
}


# the answer format a template asks of a question in the release's format (data.{task}.prompt
# release), whose own instruction says how to end ("... after 'Final Answer:'")
RELEASE_FORMAT = "End the answer as the question asks."


def template_hashes(task: str, variant: str, release_format: bool = False) -> dict[str, str]:
    """Hashes of the prompt text `variant` sends for `task` (a param of its job): each template it
    uses and, when one asks for it, the answer format: the task's (restyle.tasks), or
    RELEASE_FORMAT for questions in the release's format (`release_format`)."""
    names = VARIANTS[variant].templates
    out = {name: template_hash(TEMPLATES[name]) for name in names}
    if any("{format}" in TEMPLATES[name] for name in names):
        fmt = RELEASE_FORMAT if release_format else tasks.get(task).answer_format
        out["format"] = template_hash(fmt)
    return out


# ---------------------------------------------------------------- items of a task

def load_items(task: Task, path: str | Path, cap: int | None) -> list:
    """The task's training items; with a cap, the first `cap` the task selects."""
    return task.select(read_jsonl(path, task.record.from_dict), cap)


# ---------------------------------------------------------------- teacher calls

def _request(item, variant: str, template: str, messages_text: str,
             params: dict) -> Request:
    return Request(id=f"{variant}/{item.id}", messages=[{"role": "user", "content": messages_text}],
                   template=template, template_hash=template_hash(TEMPLATES[template]),
                   params=params)


# ---------------------------------------------------------------- candidates and filtering

@dataclass
class Candidate:
    item: object  # the task's record
    text: str | None  # None when the teacher call failed
    provenance: dict
    error: str | None = None


@dataclass
class Built:
    records: list[SFTRecord]
    dropped: list[dict]
    stats: dict
    reasons: Counter  # why questions were dropped -> how many


class Context:
    """What building one set needs: task, variant (and the model of a per-model set), config
    section, items, and the teachers: the job's teacher session (whose steps' failures and
    accounting go to the job's two side files as soon as each step ends) with a backend dict and
    a config name per role ("teacher", "target")."""

    def __init__(self, task: Task, variant: str, cfg: dict, items: Sequence,
                 session: teacher_mod.Session | None = None,
                 scorer: Callable[[list[SFTRecord]], list[float]] | None = None,
                 source_records: Sequence[SFTRecord] | None = None, *,
                 backends: dict[str, dict] | None = None, names: dict[str, str] | None = None,
                 jobs: int = 1, judge: bool = True, model: str | None = None,
                 release: dict | None = None):
        self.task, self.variant, self.cfg, self.items = task, variant, cfg, list(items)
        self.session, self.scorer, self.source_records = session, scorer, source_records
        self.backends, self.names = backends or {}, names or {}
        self.jobs = jobs  # checks run at once (a code task's programs)
        self.judge = judge  # False: every reply is kept unchecked (the estimate's stand-ins)
        # a released set (study_b.release_sets): {dir, file, train, key}, see `_released`
        self.release = release
        self.instruction = cfg["instructions"][task.config_key]
        self.sft_set = sft_set_name(task.name, variant, model)
        self.base_provenance = {"study": "B", "task": task.name, "variant": variant,
                                "sft_set": self.sft_set, **({"set_model": model} if model else {})}
        self._sent: dict[str, list[dict]] = {}  # request id -> messages, for the prompt hash

    def prompt(self, item) -> list[dict]:
        """The prompt every variant of this question shares (training sees exactly this)."""
        return [{"role": "user", "content": self.task.prompt(item, self.instruction)}]

    def fill(self, template: str, item, **extra) -> str:
        own = getattr(item, "verbatim", None) is not None  # asked in the release's format
        fields = {"prompt": self.prompt(item)[-1]["content"],
                  "format": RELEASE_FORMAT if own else self.task.answer_format,
                  "question": self.task.question(item), "answer": self.task.human_answer(item),
                  "gold": self.task.gold(item), **extra}
        return TEMPLATES[template].format(**fields)

    def params(self, **extra) -> dict:
        gen = self.cfg["generation"]
        return {"max_tokens": gen["max_tokens"], "temperature": gen["temperature"],
                "seed": gen["seed"], **extra}

    def candidates_from(self, results: Sequence[Result], items: Sequence, role: str
                        ) -> list[Candidate]:
        out = []
        name = self.names[role]
        for item, r in zip(items, results):
            prov = {**self.base_provenance, "teacher_name": name, **r.provenance,
                    "prompt_hash": json_hash(self._messages(r))}
            out.append(Candidate(item, r.text if r.ok else None, prov, r.error))
        return out

    def _messages(self, result: Result) -> list[dict]:
        return self._sent.get(result.id, [])

    def ask(self, role: str, requests: list[Request], step: str) -> list[Result]:
        self._sent.update({r.id: r.messages for r in requests})
        return self.session.ask(requests, self.backends[role], step)


def _dropped_row(ctx: Context, item, reason: str, text: str | None = None,
                 extracted: str | None = None) -> dict:
    return {"task": ctx.task.name, "variant": ctx.variant, "source_id": item.id,
            "reason": reason, "extracted": extracted, "completion": text}


def filter_candidates(ctx: Context, candidates: Sequence[Candidate]
                      ) -> tuple[list[tuple[Candidate, Check]], list[dict]]:
    """(kept candidates with the task's verdict on each, dropped rows), in candidate order.
    The replies are checked together, so a code task runs up to `ctx.jobs` programs at once."""
    answered = [c for c in candidates if c.text is not None and c.text.strip()]
    verdicts = (ctx.task.check_all([c.item for c in answered], [c.text for c in answered],
                                   ctx.jobs) if ctx.judge else [Check(None)] * len(answered))
    checks = dict(zip(map(id, answered), verdicts))
    kept, dropped = [], []
    for c in candidates:
        if c.text is None:
            dropped.append(_dropped_row(ctx, c.item, f"teacher_failed: {c.error}"))
            continue
        if not c.text.strip():
            dropped.append(_dropped_row(ctx, c.item, "no_answer: empty reply", c.text))
            continue
        check = checks[id(c)]
        if not check.correct and ctx.cfg["filter_correct"]:
            dropped.append(_dropped_row(ctx, c.item, check.reason, c.text, check.extracted))
            continue
        kept.append((c, check))
    return kept, dropped


def to_record(ctx: Context, c: Candidate, check: Check, **extra_prov) -> SFTRecord:
    prov = {**c.provenance, "extracted": check.extracted, "gold": ctx.task.gold(c.item),
            "correct": check.correct, **extra_prov}
    return SFTRecord(id=f"{ctx.sft_set}/{c.item.id}", source_id=c.item.id, dataset=ctx.sft_set,
                     prompt=ctx.prompt(c.item), completion=c.text.strip(), provenance=prov)


# ---------------------------------------------------------------- the variants

def _human(ctx: Context) -> list[Candidate]:
    return [Candidate(it, ctx.task.human_answer(it),
                      {**ctx.base_provenance, "source": "human ground truth"})
            for it in ctx.items]


def _released(ctx: Context) -> list[Candidate]:
    """A set read from study B's release: the row of file `release.file` that answers each
    question (restyle.data.release.replies); no teacher is asked."""
    r = ctx.release
    return [Candidate(it, answer if isinstance(answer, str) else None,
                      {**ctx.base_provenance, **prov},
                      None if isinstance(answer, str) else "no text 'answer' in the release row")
            for it, answer, prov in release.replies(r["dir"], r["file"], r["train"], ctx.items,
                                                    r["key"])]


def _single(role: str, template: str) -> Callable[[Context], list[Candidate]]:
    def build(ctx: Context) -> list[Candidate]:
        reqs = [_request(it, ctx.variant, template, ctx.fill(template, it), ctx.params())
                for it in ctx.items]
        return ctx.candidates_from(ctx.ask(role, reqs, ctx.variant), ctx.items, role)
    return build


def _minimum_change(ctx: Context) -> list[Candidate]:
    drafts = ctx.ask("target", [_request(it, "draft", "answer", ctx.fill("answer", it),
                                         ctx.params()) for it in ctx.items], "draft")
    draft_cands = ctx.candidates_from(drafts, ctx.items, "target")
    out, todo, todo_drafts = [], [], []
    for it, d in zip(ctx.items, draft_cands):
        if d.text is None or not d.text.strip():
            out.append(Candidate(it, None, d.provenance, d.error or "empty draft from the target"))
        else:
            todo.append(it)
            todo_drafts.append(d)
    reqs = [_request(it, ctx.variant, "minimum_change",
                     ctx.fill("minimum_change", it, draft=d.text.strip()), ctx.params())
            for it, d in zip(todo, todo_drafts)]
    fixed = ctx.candidates_from(ctx.ask("teacher", reqs, "correct"), todo, "teacher")
    for c, d in zip(fixed, todo_drafts):
        c.provenance["draft"] = {"text": d.text, **{k: d.provenance[k] for k in (
            "teacher_name", "backend", "model", "template_hash", "params", "cache_key",
            "prompt_tokens", "completion_tokens") if k in d.provenance}}
        out.append(c)
    return out


def _best_of_n(ctx: Context) -> tuple[list[tuple[Candidate, Check, dict]], list[dict]]:
    n, sampling = ctx.cfg["best_of_n"], ctx.cfg["sampling"]
    reqs, owners = [], []
    for it in ctx.items:
        for i in range(n):
            params = ctx.params(temperature=sampling["temperature"], top_p=sampling["top_p"],
                                seed=ctx.cfg["generation"]["seed"] + i)
            req = _request(it, ctx.variant, "answer", ctx.fill("answer", it), params)
            reqs.append(Request(f"{req.id}#{i}", req.messages, req.template, req.template_hash,
                                req.params))
            owners.append((it, i))
    cands = ctx.candidates_from(ctx.ask("teacher", reqs, "samples"), [o[0] for o in owners],
                                "teacher")
    for c, (_, i) in zip(cands, owners):
        c.provenance["sample"] = i
    kept, dropped = filter_candidates(ctx, cands)
    by_item: dict[str, list[tuple[Candidate, Check]]] = defaultdict(list)
    for c, check in kept:
        by_item[c.item.id].append((c, check))
    why_dropped: dict[str, set[str]] = defaultdict(set)  # by item: no scan of every drop per item
    for d in dropped:
        why_dropped[d["source_id"]].add(d["reason"].split(":")[0])
    records_in = [to_record(ctx, c, check) for c, check in kept]
    ppl = ctx.scorer(records_in) if records_in else []
    ppl_of = {(c.item.id, c.provenance["sample"]): p for (c, _), p in zip(kept, ppl)}
    chosen, final_dropped = [], []
    for it in ctx.items:
        options = by_item.get(it.id, [])
        if not options:
            reasons = sorted(why_dropped[it.id])
            final_dropped.append(_dropped_row(
                ctx, it, f"{'/'.join(reasons) or 'other'}: no acceptable sample among {n}"))
            continue
        scored = sorted(options, key=lambda o: ppl_of[(it.id, o[0].provenance["sample"])])
        c, check = scored[0]
        chosen.append((c, check, {"n": n, "acceptable_samples": len(options),
                               "target_perplexity": ppl_of[(it.id, c.provenance["sample"])]}))
    # the per-sample drops stay on record too, marked as samples
    side = [{**d, "reason": f"sample: {d['reason']}"} for d in dropped]
    return chosen, final_dropped + side


def _ppl_split(ctx: Context) -> tuple[list[SFTRecord], list[dict]]:
    source = list(ctx.source_records or [])
    if not source:
        return [], []
    ppl = ctx.scorer(source)
    order = sorted(range(len(source)), key=lambda i: (ppl[i], source[i].id))
    half = len(source) // 2
    low, high = order[:half], order[len(source) - half:]
    chosen = low if ctx.variant == "low_ppl" else high
    median = ppl[order[len(order) // 2]] if len(order) % 2 else (
        (ppl[order[half - 1]] + ppl[order[half]]) / 2)
    records = []
    for rank, i in enumerate(order):
        if i not in chosen:
            continue
        src = source[i]
        prov = {**src.provenance, **ctx.base_provenance, "split_of": src.dataset,
                "target_perplexity": ppl[i], "perplexity_rank": rank, "median_perplexity": median}
        records.append(SFTRecord(id=f"{ctx.sft_set}/{src.source_id}", source_id=src.source_id,
                                 dataset=ctx.sft_set, prompt=src.prompt,
                                 completion=src.completion, provenance=prov))
    dropped = [{"task": ctx.task.name, "variant": ctx.variant, "source_id": source[i].source_id,
                "reason": f"other: in the {'upper' if ctx.variant == 'low_ppl' else 'lower'} half"
                          if i in (high if ctx.variant == "low_ppl" else low) else
                          "other: middle example of an odd-sized set",
                "extracted": None, "completion": None}
               for i in order if i not in chosen]
    return records, dropped


# variant -> (role, template) of the variants that ask one teacher one thing and keep what is right
SINGLE = {v: (t.roles[0], t.templates[0]) for v, t in VARIANTS.items()
          if t.filter == "correct" and len(t.roles) == 1 and len(t.templates) == 1}


def build(ctx: Context) -> Built:
    """The SFT records, dropped rows and stats row of one (task, variant)."""
    v = ctx.variant
    if v in PPL_SPLITS:
        records, dropped = _ppl_split(ctx)
        candidates = len(ctx.source_records or [])
    elif v == "best_of_n":
        chosen, dropped = _best_of_n(ctx)
        records = [to_record(ctx, c, check, **extra) for c, check, extra in chosen]
        candidates = len(ctx.items) * ctx.cfg["best_of_n"]
    else:
        if ctx.release:
            cands = _released(ctx)
        elif v == "human":
            cands = _human(ctx)
        elif v == "minimum_change":
            cands = _minimum_change(ctx)
        elif v in SINGLE:
            cands = _single(*SINGLE[v])(ctx)
        else:
            raise DataError(f"config study_b.variants: unknown variant '{v}' "
                            f"(known: {', '.join(VARIANTS)})")
        kept, dropped = filter_candidates(ctx, cands)
        records = [to_record(ctx, c, check) for c, check in kept]
        candidates = len(cands)
    final_drops = [d for d in dropped if not d["reason"].startswith("sample: ")]
    reasons = Counter(d["reason"].split(":")[0].split("/")[0] for d in final_drops)
    totals = ctx.session.totals() if ctx.session else {"prompt_tokens": 0, "completion_tokens": 0,
                                                       "cost": 0.0}
    stats = {"task": ctx.task.name, "variant": v, "sft_set": ctx.sft_set,
             "questions": len(ctx.items) if v not in PPL_SPLITS else candidates,
             "candidates": candidates, "kept": len(records), "dropped": len(final_drops),
             "teacher_failed": reasons.get("teacher_failed", 0),
             "no_answer": reasons.get("no_answer", 0),
             "wrong_answer": reasons.get("wrong_answer", 0),
             "other_dropped": sum(n for r, n in reasons.items()
                                  if r not in ("teacher_failed", "no_answer", "wrong_answer")),
             "mean_completion_chars": round(sum(len(r.completion) for r in records)
                                            / len(records), 1) if records else None,
             **totals}
    return Built(records, dropped, stats, reasons)


def count_rows(path: str | Path) -> int:
    """Examples in an SFT JSONL file (0 for an empty set)."""
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def make_scorer(manifest: str | Path, batch_size: int | str, max_length: int | None,
                max_batch_tokens: int | str | None) -> Callable[[list[SFTRecord]], list[float]]:
    """Target-model perplexity of SFT records, the model loaded on first use."""
    loaded = {}

    def score(records: list[SFTRecord]) -> list[float]:
        from restyle import models
        from restyle.study_b import familiarity

        if "model" not in loaded:
            loaded["model"], loaded["tokenizer"] = models.load_checkpoint(manifest)
        scores = familiarity.score_records(loaded["model"], loaded["tokenizer"], records,
                                           batch_size, max_length, max_batch_tokens)
        return [s.perplexity for s in scores]
    return score


def run(task_name: str, variant: str, cfg: dict, items_path: str | Path, out: dict,
        backends: dict[str, dict], names: dict[str, str], cache_path: str | Path,
        prices: dict | None, target_manifest: str | Path | None = None,
        source_path: str | Path | None = None, jobs: int = 1, model: str | None = None,
        release: dict | None = None) -> dict:
    """Build one set (of `model`, for a per-model variant) and write its files. `out` names the
    paths: sft, dropped, stats, failures, accounting. `backends`/`names` map the roles "teacher"
    and "target" to a backend dict for restyle.teacher.Session.ask and the config name of that
    teacher; `jobs`: checks run at once; `release`: where a released set is read (Context).
    Returns the stats row."""
    task = tasks.get(task_name, "study_b.tasks")
    items = load_items(task, items_path, cfg["items"])
    session = teacher_mod.Session(cache_path, sft_set_name(task.name, variant, model),
                                  prices=prices,
                                  failures_path=out["failures"],
                                  accounting_path=out["accounting"])
    session.write()  # a variant that asks no teacher still has (empty) side files
    scorer = None
    if variant in SCORED_VARIANTS:
        fam = cfg["familiarity"]
        scorer = make_scorer(target_manifest, fam["batch_size"], fam["max_length"],
                             fam["max_batch_tokens"])
    source = (read_jsonl(source_path, SFTRecord.from_dict) if variant in PPL_SPLITS else None)
    ctx = Context(task, variant, cfg, items, session, scorer, source, backends=backends,
                  names=names, jobs=jobs, model=model, release=release)
    built = build(ctx)
    # said here, not in build: the estimate (restyle.estimate) builds sets from stand-in replies
    log.info("%s: %d of %d kept (%s)", ctx.sft_set, len(built.records), built.stats["questions"],
             ", ".join(f"{k} {n}" for k, n in sorted(built.reasons.items())) or "none dropped")
    if not built.records:
        log.warning("%s is EMPTY: no %s answer passed the filters; its SFT file is written "
                    "empty and later stages skip it", ctx.sft_set, variant)
    write_jsonl(out["sft"], built.records)
    write_jsonl(out["dropped"], built.dropped)
    write_csv(out["stats"], [built.stats], STATS_COLUMNS)
    return built.stats
