"""Study A, step 2: rule-guided rewriting of MMLU training items into SFT sets, the two
baselines (`original`: the item with a bare answer; `teacher_plain`: the teacher's own reasoning,
no rule) and the quality gate.

Rewrite reply format (read leniently; a small model rarely keeps it exactly):

    Question: <the rewritten question>
    A. <option>  ... D. <option>        (options mode "teacher" only)
    Reasoning: <reasoning in the spirit of the rule>
    Answer: <letter>

Options mode `teacher`: the teacher writes the four options too, and the gate checks they are all
there and still say what the originals say (so the gold letter still names the right answer).
Mode `keep`: the teacher rewrites only the question and reasoning; the original options are
attached verbatim.

Quality gate, in order (the first failing check is the reason an item is dropped): the teacher
call failed; the reply has no question / no reasoning / no final answer ("parse"); an option is
missing or changed ("options"); the final answer is not the gold option ("answer"); optionally,
a near-duplicate of a kept row in the same set ("duplicate").
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from difflib import SequenceMatcher

from restyle import teacher
from restyle.io import read_jsonl, write_csv, write_jsonl
from restyle.records import LETTERS, MCItem, SFTRecord
from restyle.study_a.rules import wording_hash
from restyle.study_a.replies import Parsed, Rejected, parse_reply
from restyle.tasks.mmlu import format_mc, format_options, round_robin
from restyle.teacher import Prompt, Request, Result, json_hash, template_hash

log = logging.getLogger(__name__)

REWRITE_TEMPLATE: Prompt = (
    "Rule: {name}: {description}\n{instructions}\n"
    "Rewrite the multiple-choice question below so that it follows the rule. {options_ask}"
    "Then explain the answer in the spirit of the rule.\n\n"
    "Question: {question}\n{options}\nCorrect answer: {letter}\n\n"
    "Reply in this format:\nQuestion: <rewritten question>\n{options_format}"
    "Reasoning: <two or three sentences>\nAnswer: {letter}")
PLAIN_TEMPLATE: Prompt = (
    "{question}\n{options}\n\n{hint}Explain the reasoning in two or three sentences, then end "
    "with the line\nAnswer: <letter>")
OPTIONS_ASK: dict[str, Prompt] = {"teacher": "Keep the four options and their meaning. ", "keep": ""}
OPTIONS_FORMAT: dict[str, Prompt] = {"teacher": "A. <option>\nB. <option>\nC. <option>\nD. <option>\n", "keep": ""}

STAGES = ("teacher", "parse", "options", "answer", "duplicate")
STATS_FIELDS = ["sft_set", "rule", "subject", "total", "kept", "dropped",
                *(f"dropped_{s}" for s in STAGES)]



def sent_template_hash(options_mode: str | None) -> str:
    """The template hash every request of a rule's set (options mode `options_mode`), or of the
    teacher_plain set (None), carries: a param of its job, so editing the template reruns them."""
    if options_mode is None:
        return template_hash(PLAIN_TEMPLATE)
    return template_hash(REWRITE_TEMPLATE + OPTIONS_ASK[options_mode] + OPTIONS_FORMAT[options_mode])


def final_line(item: MCItem) -> str:
    return f"The answer is ({item.answer_letter}) {item.choices[item.answer]}"


def select_items(items: Sequence[MCItem], limit: int | None) -> list[MCItem]:
    """At most `limit` items, taken round-robin over subjects (all when None), in file order."""
    chosen = {it.id for it in round_robin(items, limit)}
    return [it for it in items if it.id in chosen]


def load_items(path, items_per_set: int | None) -> list[MCItem]:
    """The MMLU training items every study A set is made of (config
    study_a.rewrite.items_per_set)."""
    return select_items(read_jsonl(path, MCItem.from_dict), items_per_set)


def set_requests(items: Sequence[MCItem], rewrite_cfg: dict, rule: dict | None,
                 plain_cfg: dict | None) -> list[Request]:
    """The teacher requests of one set: `rule`'s rewrites, or (no rule) the teacher_plain answers
    (config study_a.teacher_plain as `plain_cfg`)."""
    if rule is None:
        return plain_requests(items, {**rewrite_cfg, **plain_cfg})
    return rewrite_requests(rule, items, rewrite_cfg)


def rewrite_requests(rule: dict, items: Sequence[MCItem], cfg: dict) -> list[Request]:
    mode = cfg["options"]
    params = {"max_tokens": cfg["max_tokens"], "temperature": cfg["temperature"]}
    how = f"How to apply it: {rule['instructions']}\n" if rule.get("instructions") else ""
    reqs = []
    for item in items:
        content = REWRITE_TEMPLATE.format(
            name=rule["name"], description=rule["description"], instructions=how,
            options_ask=OPTIONS_ASK[mode], question=item.question.strip(),
            options=format_options(item.choices), letter=item.answer_letter,
            options_format=OPTIONS_FORMAT[mode])
        reqs.append(Request(id=item.id, messages=[{"role": "user", "content": content}],
                            template=f"study_a_rewrite_{mode}",
                            template_hash=sent_template_hash(mode),
                            params=params))
    return reqs


def plain_requests(items: Sequence[MCItem], cfg: dict) -> list[Request]:
    params = {"max_tokens": cfg["max_tokens"], "temperature": cfg["temperature"]}
    reqs = []
    for item in items:
        hint = f"The correct answer is {item.answer_letter}. " if cfg["show_answer"] else ""
        content = PLAIN_TEMPLATE.format(question=item.question.strip(),
                                        options=format_options(item.choices), hint=hint)
        reqs.append(Request(id=item.id, messages=[{"role": "user", "content": content}],
                            template="study_a_teacher_plain" + ("_hint" if hint else ""),
                            template_hash=sent_template_hash(None), params=params))
    return reqs


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", text.lower()))


def check_options(parsed: Parsed, item: MCItem, min_similarity: float) -> None:
    """Rejected("options") unless all four options are there and each matches the original."""
    missing = [letter for letter in LETTERS if letter not in parsed.options]
    if missing:
        raise Rejected("options", f"option(s) {', '.join(missing)} missing")
    for letter, original in zip(LETTERS, item.choices):
        got, want = _norm(parsed.options[letter]), _norm(original)
        ratio = 1.0 if got == want else SequenceMatcher(None, got, want).ratio()
        if ratio < min_similarity:
            raise Rejected("options", f"option {letter} changed ({parsed.options[letter]!r} vs "
                                      f"{original!r}, similarity {ratio:.2f})")


# the reply format's own placeholders, which an echoing or lazy teacher sends back unfilled
_PLACEHOLDER = re.compile(r"<(?:rewritten question|two or three sentences|option|letter)>")


def gate(parsed: Parsed, item: MCItem, options_mode: str, gate_cfg: dict) -> None:
    if any(_PLACEHOLDER.search(text or "") for text in
           (parsed.question, parsed.reasoning, *parsed.options.values())):
        raise Rejected("parse", "the reply repeats the format's placeholders instead of "
                                "filling them in")
    if options_mode == "teacher" and parsed.question is not None and gate_cfg["check_options"]:
        check_options(parsed, item, gate_cfg["option_similarity"])
    if parsed.letter != item.answer_letter:
        raise Rejected("answer", f"teacher's final answer is {parsed.letter}, gold is "
                                 f"{item.answer_letter}")


def _shingles(text: str) -> set[str]:
    words = _norm(text).split()
    return {" ".join(words[i:i + 3]) for i in range(max(1, len(words) - 2))}


def near_duplicate(text: str, kept: list[tuple[str, set[str]]], threshold: float) -> str | None:
    """The id of a kept row whose prompt shares >= threshold of word 3-grams (Jaccard)."""
    mine = _shingles(text)
    for rid, theirs in kept:
        if len(mine & theirs) / max(1, len(mine | theirs)) >= threshold:
            return rid
    return None


def build_set(sft_set: str, items: Sequence[MCItem], requests: Sequence[Request],
              results: Sequence[Result], *, rule: dict | None, teacher_name: str,
              options_mode: str, gate_cfg: dict) -> tuple[list[SFTRecord], list[dict]]:
    """Turn teacher results into SFT records; everything dropped comes back with its reason."""
    records, dropped, seen = [], [], []
    rule_fields = ({"rule": rule["slug"], "rule_name": rule["name"],
                    "rule_hash": wording_hash(rule)}
                   if rule else {"rule": None})
    for item, req, res in zip(items, requests, results):
        base = {"id": f"{sft_set}/{item.id}", "source_id": item.id, "subject": item.subject,
                "sft_set": sft_set, **rule_fields}
        try:
            if not res.ok:
                raise Rejected("teacher", res.error or "no reply")
            parsed = parse_reply(res.text, rewrite=rule is not None)
            gate(parsed, item, options_mode, gate_cfg)
            if rule is not None and options_mode == "teacher":
                question = format_mc(parsed.question, [parsed.options[x] for x in LETTERS])
            else:
                question = format_mc(parsed.question or item.question, item.choices)
            if gate_cfg["near_duplicates"]:
                twin = near_duplicate(question, seen, gate_cfg["near_duplicate_threshold"])
                if twin:
                    raise Rejected("duplicate", f"near-duplicate of {twin}")
        except Rejected as e:
            dropped.append({**base, "stage": e.stage, "reason": e.reason,
                            "reply": res.text})
            continue
        seen.append((base["id"], _shingles(question)))
        prov = res.provenance
        records.append(SFTRecord(
            id=base["id"], source_id=item.id, dataset=sft_set,
            prompt=[{"role": "user", "content": question}],
            completion=f"{parsed.reasoning}\n\n{final_line(item)}",
            provenance={"study": "A", "sft_set": sft_set, "source_id": item.id,
                        "subject": item.subject, **rule_fields, "teacher": teacher_name,
                        "backend": prov["backend"], "model": prov["model"],
                        "template": prov["template"], "template_hash": prov["template_hash"],
                        "prompt_hash": json_hash(req.messages), "params": prov["params"],
                        "prompt_tokens": prov["prompt_tokens"],
                        "completion_tokens": prov["completion_tokens"],
                        "cache_key": prov["cache_key"], "batch": prov["batch"],
                        "cached": res.cached}))
    return records, dropped


def original_set(sft_set: str, items: Sequence[MCItem]) -> list[SFTRecord]:
    """The MMLU items themselves with a bare answer: no teacher."""
    return [SFTRecord(id=f"{sft_set}/{it.id}", source_id=it.id, dataset=sft_set,
                      prompt=[{"role": "user", "content": format_mc(it.question, it.choices)}],
                      completion=final_line(it),
                      provenance={"study": "A", "sft_set": sft_set, "source_id": it.id,
                                  "subject": it.subject, "rule": None, "teacher": None,
                                  "template": "study_a_original", "cache_key": ""})
            for it in items]


def stats_rows(sft_set: str, rule: str | None, items: Sequence[MCItem],
               dropped: Sequence[dict]) -> list[dict]:
    """Kept and dropped counts (by gate stage) per subject, plus an `all` row."""
    total = Counter(it.subject for it in items)
    drops = Counter((d["subject"], d["stage"]) for d in dropped)
    rows = []
    for subject in [*sorted(total), "all"]:
        n = sum(total.values()) if subject == "all" else total[subject]
        by_stage = {s: (sum(v for (_, st), v in drops.items() if st == s) if subject == "all"
                        else drops[(subject, s)]) for s in STAGES}
        lost = sum(by_stage.values())
        rows.append({"sft_set": sft_set, "rule": rule or "", "subject": subject, "total": n,
                     "kept": n - lost, "dropped": lost,
                     **{f"dropped_{s}": v for s, v in by_stage.items()}})
    return rows


def write_stats(path, rows: Sequence[dict]) -> None:
    write_csv(path, rows, STATS_FIELDS)


def run(sft_set: str, items_path, out: dict, *, rule: dict | None, rewrite_cfg: dict,
        plain_cfg: dict | None, gate_cfg: dict, backend: dict, teacher_name: str,
        session: teacher.Session) -> list[SFTRecord]:
    """Make one teacher-written set (a rule's, or teacher_plain's when `rule` is None) and write
    its files; `out` names the paths sft, dropped and stats. Returns the records kept."""
    items = load_items(items_path, rewrite_cfg["items_per_set"])
    requests = set_requests(items, rewrite_cfg, rule, plain_cfg)
    results = session.ask(requests, backend)
    records, dropped = build_set(sft_set, items, requests, results, rule=rule,
                                 teacher_name=teacher_name, options_mode=rewrite_cfg["options"],
                                 gate_cfg=gate_cfg)
    write_jsonl(out["dropped"], dropped)
    write_stats(out["stats"], stats_rows(sft_set, rule and rule["slug"], items, dropped))
    write_jsonl(out["sft"], records)  # last: the set appears only when its side files are there
    log.info("%s: kept %d of %d items, dropped %d (see %s)", out["sft"], len(records), len(items),
             len(dropped), out["dropped"])
    if not records:
        log.warning("%s: no item passed the quality gate", out["sft"])
    return records


def run_original(sft_set: str, items_path, out: dict, items_per_set: int | None) -> int:
    """Make the original set (no teacher) and write its files (`out`: sft, stats); its size."""
    items = load_items(items_path, items_per_set)
    write_stats(out["stats"], stats_rows(sft_set, None, items, []))
    return write_jsonl(out["sft"], original_set(sft_set, items))
