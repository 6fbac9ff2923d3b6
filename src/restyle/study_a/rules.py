"""Study A, step 1: explanatory rules from Ruozhiba questions (or a fixed list from config).

The teacher reads batches of Ruozhiba questions with their answers and, from each perspective
(education, psychology, cognitive science by default), writes rules explaining why such questions
teach well ("extract"). One consolidation call merges near-duplicates into the final N rules
("consolidate"); a rule that still lacks rewriting instructions gets them from one more call per
rule ("instructions"). Every teacher call goes through `restyle.teacher.Session.ask`.

Replies are read leniently (`restyle.study_a.replies`), because the offline default teacher
(SmolLM2-135M) rarely keeps a format: the line format `Name: explanation` per rule, with list
markers, bold and lead-ins like "The reason is that" stripped. For an openai teacher,
`structured` asks for a JSON schema instead.
Nothing is ever invented: every kept name, description and instruction is the teacher's own text
(a candidate without a name is named by the first words of its own description, which provenance
records as `name_from: description`). When consolidation yields fewer than N usable rules, the
best-formed extracted candidates fill the set. Every candidate that is not kept, and every reply
line that could not be read, is listed with the reason in the dropped file.

The rules document (results/study_a/rules/rules.json) is described in docs/schema.md.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Sequence

from restyle import teacher
from restyle.io import read_jsonl, write_json, write_jsonl
from restyle.records import RuozhibaItem
from restyle.study_a import BASELINES
from restyle.study_a.replies import (MIN_DESCRIPTION_WORDS, clean, parse_instructions,
                                    parse_rule_blocks, parse_rule_lines, words)
from restyle.teacher import Prompt, Request, template_hash

log = logging.getLogger(__name__)

SLUG_RE = r"[a-z0-9]+(?:-[a-z0-9]+)*"

EXTRACT_TEMPLATE: Prompt = (
    "Trick questions:\n{questions}\n\n"
    "Why are trick questions like these good teaching material? Answer from the view of "
    "{perspective}, one reason per line, each line in the form  Name: explanation")
CONSOLIDATE_TEMPLATE: Prompt = (
    "Here are rules that explain why trick questions teach well:\n{candidates}\n\n"
    "Merge rules that say the same thing and write the {n} most useful rules. For each rule "
    "write three lines:\nName: <short name>\nDescription: <one paragraph>\n"
    "Instructions: <how to rewrite an exam question so that it follows the rule>")
INSTRUCTIONS_TEMPLATE: Prompt = (
    "Rule: {name}: {description}\n\n"
    "In two sentences, tell a teacher how to rewrite a multiple-choice exam question so that it "
    "follows this rule.\nInstructions:")
TEMPLATES = {"extract": EXTRACT_TEMPLATE, "consolidate": CONSOLIDATE_TEMPLATE,
             "instructions": INSTRUCTIONS_TEMPLATE}


def template_hashes() -> dict[str, str]:
    """The hash of each template the rules job sends (a param of rule study_a_rules)."""
    return {name: template_hash(text) for name, text in TEMPLATES.items()}

_RULE_ITEM = {"type": "object", "required": ["name", "description"],
              "properties": {"name": {"type": "string"}, "description": {"type": "string"},
                             "instructions": {"type": "string"}}}
EXTRACT_SCHEMA = {"type": "object", "required": ["rules"],
                  "properties": {"rules": {"type": "array", "items": _RULE_ITEM}}}
CONSOLIDATE_SCHEMA = {
    "type": "object", "required": ["rules"],
    "properties": {"rules": {"type": "array", "items": {
        **_RULE_ITEM, "required": ["name", "description", "instructions"]}}}}

DUPLICATE_JACCARD = 0.6


def slugify(name: str, taken: Sequence[str] = ()) -> str:
    """Lowercase ASCII words joined by '-'; never a reserved or taken slug."""
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = "-".join(re.findall(r"[a-z0-9]+", ascii_name.lower())[:6])
    if not slug:
        slug = f"rule-{template_hash(name)[:8]}"
    if slug in BASELINES:
        slug += "-rule"
    base, i = slug, 2
    while slug in taken:
        slug, i = f"{base}-{i}", i + 1
    return slug


def _jaccard(a: str, b: str) -> float:
    x, y = set(words(a)), set(words(b))
    return len(x & y) / max(1, len(x | y))


def _score(candidate: dict) -> float:
    """How well-formed a candidate is: a name, a description of a sensible length."""
    n = len(words(candidate["description"]))
    return (2.0 if candidate["name"] else 0.0) + (1.0 if 8 <= n <= 60 else 0.5 if n <= 100
                                                  else 0.0)


def rank_candidates(candidates: list[dict]) -> tuple[list[dict], list[dict]]:
    """(distinct candidates, best-formed first, alternating perspectives; near-duplicates with
    the candidate each repeats). Ties keep extraction order."""
    distinct, duplicates = [], []
    for cand in sorted(candidates, key=lambda c: -_score(c)):
        twin = next((d for d in distinct if _jaccard(d["description"], cand["description"])
                     >= DUPLICATE_JACCARD or (cand["name"] and d["name"]
                                              and cand["name"].lower() == d["name"].lower())),
                    None)
        if twin is not None:
            duplicates.append({**cand, "duplicate_of": twin["id"]})
        else:
            distinct.append(cand)
    by_view: dict[str, list[dict]] = {}
    for cand in distinct:
        by_view.setdefault(cand["perspective"], []).append(cand)
    ranked, queues = [], list(by_view.values())
    while any(queues):
        for queue in queues:
            if queue:
                ranked.append(queue.pop(0))
    return ranked, duplicates


def _params(cfg: dict) -> dict:
    return {"max_tokens": cfg["max_tokens"], "temperature": cfg["temperature"]}


def _request(rid: str, template: str, content: str, params: dict, schema: dict | None) -> Request:
    text = TEMPLATES[template]
    return Request(id=rid, messages=[{"role": "user", "content": content}], template=template,
                   template_hash=template_hash(text), params=params, schema=schema)


def extraction_requests(questions: Sequence[RuozhibaItem], cfg: dict,
                        structured: bool) -> list[tuple[Request, dict]]:
    """One request per (question batch, perspective), with what it covered."""
    size = cfg["questions_per_batch"]
    batches = [questions[i:i + size] for i in range(0, len(questions), size)]
    if cfg.get("max_batches"):
        batches = batches[:cfg["max_batches"]]
    out = []
    for b, batch in enumerate(batches):
        shown = "\n".join(f"- {q.question} ({q.answer})" for q in batch)
        for perspective in cfg["perspectives"]:
            content = EXTRACT_TEMPLATE.format(questions=shown, perspective=perspective)
            req = _request(f"extract/batch{b}/{slugify(perspective)}", "extract", content,
                           _params(cfg["extract"]), EXTRACT_SCHEMA if structured else None)
            out.append((req, {"batch": b, "perspective": perspective,
                              "question_ids": [q.id for q in batch]}))
    return out


def structured_output(cfg: dict, backend: dict) -> bool:
    """Whether replies are asked for as JSON (config `structured_output`; `auto`: where the
    teacher's backend takes a JSON schema, restyle.teacher.backends)."""
    return cfg["structured_output"] == "always" or (
        cfg["structured_output"] == "auto"
        and teacher.backends.get(backend["backend"]).structured_output)


def consolidation_request(ranked: Sequence[dict], cfg: dict, structured: bool) -> Request:
    """The one request that merges the ranked candidates into `count` rules."""
    shown = "\n".join(f"{i + 1}. {c['name'] or 'Rule'}: {c['description']}"
                      for i, c in enumerate(ranked))
    return _request("consolidate", "consolidate",
                    CONSOLIDATE_TEMPLATE.format(candidates=shown, n=cfg["count"]),
                    _params(cfg["consolidate"]), CONSOLIDATE_SCHEMA if structured else None)


def instructions_requests(rules: Sequence[dict], cfg: dict) -> list[Request]:
    """One request per rule ({name, description}) asking how to rewrite a question by it."""
    return [_request(f"instructions/{i}", "instructions",
                     INSTRUCTIONS_TEMPLATE.format(name=r["name"], description=r["description"]),
                     _params(cfg["instructions"]), None) for i, r in enumerate(rules)]


def _prov(result: teacher.Result) -> dict:
    p = result.provenance
    return {"request_id": result.id, "backend": p["backend"], "model": p["model"],
            "template": p["template"], "template_hash": p["template_hash"],
            "params": p["params"], "cache_key": p["cache_key"],
            "prompt_tokens": p.get("prompt_tokens"), "completion_tokens": p.get("completion_tokens"),
            "cached": result.cached}


def extract(questions: Sequence[RuozhibaItem], cfg: dict, backend: dict,
            session: teacher.Session) -> dict:
    """Run extraction, consolidation and instructions through the stage's teacher session;
    return {"rules": [...], "candidates": [...], "dropped": [...]}.

    Raises ValueError when the teacher gave no usable rule at all, and what `Session.ask`
    raises when the teacher itself fails.
    """
    structured = structured_output(cfg, backend)
    n = cfg["count"]
    candidates, ranked, dropped = _extract(questions, cfg, backend, session, structured)
    final, consolidate_dropped = _consolidate(ranked, cfg, backend, session, structured)
    pool, covered = _fill(final, ranked)
    contenders = _instructions(final, pool, n, cfg, backend, session)
    kept, not_kept = _select(contenders, pool, final, n)
    dropped += consolidate_dropped + covered + not_kept
    if not kept:
        _log_dropped(dropped)
        raise ValueError("the teacher gave no complete rule (name, description and rewriting "
                         "instructions); see the dropped file for why each was not usable")
    if len(kept) < n:
        log.warning("only %d of the %d rules asked for are usable; see the dropped file",
                    len(kept), n)
    for c in candidates:
        c.pop("as_rule", None)
    return {"rules": [_ordered(r) for r in kept], "candidates": candidates, "dropped": dropped}


def _log_dropped(dropped: list[dict]) -> None:
    for d in dropped:
        log.warning("dropped %s: %s (%r)", d["request_id"], d["reason"], d["text"])


def _extract(questions: Sequence[RuozhibaItem], cfg: dict, backend: dict,
             session: teacher.Session, structured: bool
             ) -> tuple[list[dict], list[dict], list[dict]]:
    """(every candidate, the candidates ranked without near-duplicates, dropped rows) of the
    extraction requests; ValueError when no candidate is usable."""
    dropped: list[dict] = []
    planned = extraction_requests(questions, cfg, structured)
    results = session.ask([req for req, _ in planned], backend, "extract")
    candidates = []
    for (req, meta), res in zip(planned, results):
        if not res.ok:
            dropped.append({"stage": "extract", "request_id": req.id, "text": None,
                            "reason": f"teacher failed: {res.error}"})
            continue
        if structured:
            found = [{"name": clean(r["name"]) or None,
                      "description": clean(r["description"])}
                     for r in res.parsed["rules"]]
            rejected = [{"text": json.dumps(f, ensure_ascii=False),
                         "reason": f"explanation under {MIN_DESCRIPTION_WORDS} words"}
                        for f in found if len(words(f["description"])) < MIN_DESCRIPTION_WORDS]
            found = [f for f in found if len(words(f["description"])) >= MIN_DESCRIPTION_WORDS]
        else:
            found, rejected = parse_rule_lines(res.text, req.messages[0]["content"])
        dropped += [{"stage": "extract", "request_id": req.id, **r} for r in rejected]
        if not found:
            dropped.append({"stage": "extract", "request_id": req.id, "text": res.text,
                            "reason": "no rule could be read from the reply"})
        for i, f in enumerate(found):
            candidates.append({"id": f"{req.id}/{i}", **f, **meta,
                               "provenance": _prov(res)})
    ranked, duplicates = rank_candidates(candidates)
    dropped += [{"stage": "extract", "request_id": d["id"].rsplit("/", 1)[0],
                 "text": json.dumps({"name": d["name"], "description": d["description"]},
                                    ensure_ascii=False),
                 "candidate": d["id"], "reason": f"near-duplicate of {d['duplicate_of']}"}
                for d in duplicates]
    if not ranked:
        _log_dropped(dropped)
        raise ValueError("the teacher gave no usable rule candidate; see the dropped file "
                         "for every reply line and why it was not usable")
    return candidates, ranked, dropped


def _consolidate(ranked: list[dict], cfg: dict, backend: dict, session: teacher.Session,
                 structured: bool) -> tuple[list[dict], list[dict]]:
    """(the consolidated rules, dropped rows): one request merges near-duplicates into the final
    N rules."""
    creq = consolidation_request(ranked, cfg, structured)
    [cres] = session.ask([creq], backend, "consolidate")
    final: list[dict] = []
    dropped: list[dict] = []
    if not cres.ok:
        dropped.append({"stage": "consolidate", "request_id": creq.id, "text": None,
                        "reason": f"teacher failed: {cres.error}"})
        return final, dropped
    if structured:
        parsed, rejected = [], []
        for r in cres.parsed["rules"]:
            rule = {"name": clean(r["name"]), "description": clean(r["description"]),
                    "instructions": clean(r["instructions"]) or None}
            if rule["name"] and len(words(rule["description"])) >= MIN_DESCRIPTION_WORDS:
                parsed.append(rule)
            else:
                rejected.append({"text": json.dumps(r, ensure_ascii=False),
                                 "reason": "no name or description under "
                                           f"{MIN_DESCRIPTION_WORDS} words"})
    else:
        parsed, rejected = parse_rule_blocks(cres.text)
    dropped += [{"stage": "consolidate", "request_id": creq.id, **r} for r in rejected]
    if not parsed:
        dropped.append({"stage": "consolidate", "request_id": creq.id, "text": cres.text,
                        "reason": "no complete rule could be read from the reply; "
                                  "falling back to the best-formed candidates"})
    for rule in parsed:
        twin = next((f for f in final if f["name"].lower() == rule["name"].lower()
                     or _jaccard(f["description"], rule["description"])
                     >= DUPLICATE_JACCARD), None)
        if twin is not None:
            dropped.append({"stage": "consolidate", "request_id": creq.id,
                            "text": json.dumps(rule, ensure_ascii=False),
                            "reason": f"near-duplicate of consolidated rule "
                                      f"'{twin['name']}'"})
        else:
            final.append({**rule, "origin": "consolidation", "name_from": "teacher",
                          "provenance": _prov(cres)})
    return final, dropped


def _fill(final: list[dict], ranked: list[dict]) -> tuple[list[dict], list[dict]]:
    """(the best-formed candidates the consolidation did not already cover, each with the rule
    it would make as "as_rule", dropped rows of the covered ones)."""
    pool, dropped = [], []
    for cand in ranked:
        twin = next((f for f in final if _jaccard(f["description"], cand["description"])
                     >= DUPLICATE_JACCARD), None)
        if twin is not None:
            dropped.append({"stage": "select", "request_id": cand["id"].rsplit("/", 1)[0],
                            "candidate": cand["id"], "text": cand["description"],
                            "reason": f"covered by consolidated rule '{twin['name']}'"})
        else:
            pool.append(cand)
    for cand in pool:
        name, name_from = cand["name"], "teacher"
        if not name:
            name, name_from = " ".join(cand["description"].split()[:6]).rstrip(".,;:"), \
                "description"
        cand["as_rule"] = {"name": name, "description": cand["description"],
                           "instructions": None, "origin": "candidate",
                           "name_from": name_from, "candidate": cand["id"],
                           "perspective": cand["perspective"],
                           "question_ids": cand["question_ids"],
                           "provenance": cand["provenance"]}
    return pool, dropped


def _instructions(final: list[dict], pool: list[dict], n: int, cfg: dict, backend: dict,
                  session: teacher.Session) -> list[dict]:
    """The rules that may be kept (up to 2N), with instructions asked in one call for those
    lacking them; a rule still without usable ones is marked "unusable" with the reason."""
    contenders = (final + [c["as_rule"] for c in pool])[:2 * n]
    need = [r for r in contenders if not r["instructions"]]
    ireqs = instructions_requests(need, cfg)
    for rule, req, res in zip(need, ireqs, session.ask(ireqs, backend, "instructions")):
        text = parse_instructions(res.text) if res.ok else None
        if text:
            rule["instructions"] = text
            rule["instructions_provenance"] = _prov(res)
        else:
            rule["unusable"] = (f"teacher failed to write instructions: {res.error}"
                                if not res.ok else "no usable rewriting instructions in the "
                                                   f"reply: {res.text!r}")
    return contenders


def _select(contenders: list[dict], pool: list[dict], final: list[dict], n: int
            ) -> tuple[list[dict], list[dict]]:
    """(the first N usable contenders, each given its slug; dropped rows of the others and of
    the candidates ranked too low to contend)."""
    kept, taken, dropped = [], [], []
    for rule in contenders:
        why = rule.pop("unusable", None)
        if why is None and len(kept) < n:
            rule["slug"] = slugify(rule["name"], taken)
            taken.append(rule["slug"])
            kept.append(rule)
        else:
            dropped.append({"stage": "select", "request_id": rule["provenance"]["request_id"],
                            "candidate": rule.get("candidate"),
                            "text": json.dumps({k: rule[k] for k in ("name", "description")},
                                               ensure_ascii=False),
                            "reason": why or f"not among the {n} rules kept"})
    for cand in pool[max(0, 2 * n - len(final)):]:
        dropped.append({"stage": "select", "request_id": cand["id"].rsplit("/", 1)[0],
                        "candidate": cand["id"], "text": cand["description"],
                        "reason": f"not among the {n} rules kept (ranked lower)"})
    return kept, dropped


def _ordered(rule: dict) -> dict:
    head = {k: rule[k] for k in ("slug", "name", "description", "instructions")}
    return {**head, **{k: v for k, v in rule.items() if k not in head}}


def fixed(rules: Sequence[dict]) -> list[dict]:
    """The rule list pinned in config, slugged and checked (no teacher call)."""
    out, taken = [], []
    for i, rule in enumerate(rules):
        slug = rule.get("slug") or slugify(rule["name"], taken)
        if slug in taken or slug in BASELINES or not re.fullmatch(SLUG_RE, slug):
            raise ValueError(f"config study_a.rules.fixed[{i}].slug: '{slug}' is reserved, "
                             f"repeated or not of the form {SLUG_RE}")
        taken.append(slug)
        out.append({"slug": slug, "name": rule["name"], "description": rule["description"],
                    "instructions": rule.get("instructions") or None, "origin": "fixed",
                    "provenance": {"source": "config study_a.rules.fixed", "index": i}})
    return out


def wording(rule: dict) -> dict:
    """The part of a rule the rewrite depends on (a change reruns that rule's rewrite only)."""
    return {k: rule.get(k) for k in ("slug", "name", "description", "instructions")}


def wording_hash(rule: dict) -> str:
    """The one hash of a rule's wording: rules.json's `wording_hash`, every SFT row's
    `rule_hash`."""
    return teacher.json_hash(wording(rule))


def document(rules: list[dict], mode: str, cfg: dict, teacher_name: str | None,
             backend: dict | None, questions_path: str | None) -> dict:
    """The rules.json document: the rules plus how the set was made."""
    return {"study": "A", "mode": mode, "count_requested": cfg["count"],
            "count": len(rules),
            "teacher": None if backend is None else {
                "name": teacher_name, "backend": backend["backend"],
                "model": teacher.model_name(backend)},
            "perspectives": cfg["perspectives"] if mode == "extracted" else None,
            "questions": questions_path if mode == "extracted" else None,
            "template_hashes": template_hashes() if mode == "extracted" else None,
            "rules": [{**r, "wording_hash": wording_hash(r)} for r in rules]}


def run(cfg: dict, questions_path: str | None, out: dict, *, backend: dict | None,
        teacher_name: str | None, session: teacher.Session) -> dict:
    """Make study A's rules, config `fixed` ones or extracted by the teacher from the Ruozhiba
    questions at `questions_path`, and write the files `out` names (rules, candidates,
    dropped). Returns the rules.json document."""
    if cfg["fixed"]:
        found = {"rules": fixed(cfg["fixed"]), "candidates": [], "dropped": []}
        doc = document(found["rules"], "fixed", cfg, None, None, None)
    else:
        found = extract(read_jsonl(questions_path, RuozhibaItem.from_dict), cfg, backend, session)
        doc = document(found["rules"], "extracted", cfg, teacher_name, backend, questions_path)
    write_jsonl(out["candidates"], found["candidates"])
    write_jsonl(out["dropped"], found["dropped"])
    write_json(out["rules"], doc)  # last: the checkpoint's main output appears when all is written
    log.info("%s: %d rules (%s): %s; %d candidates, %d dropped", out["rules"], doc["count"],
             doc["mode"], ", ".join(r["slug"] for r in doc["rules"]), len(found["candidates"]),
             len(found["dropped"]))
    return doc
