"""Study A's data stages: rule extraction (checkpoint), rule-guided rewriting, baselines and the
quality gate; unit tests of the parsers and the gate, then real Snakemake runs with the local
SmolLM2 teacher and with an HTTP teacher (tests/chat_server.py) giving scripted replies."""

from __future__ import annotations

import csv
import json
import re
import sys
import time
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from chat_server import ChatServer  # noqa: E402
from test_workflow import snakemake  # noqa: E402

from restyle.study_a import replies, rewrite, rules  # noqa: E402
from restyle.io import read_jsonl  # noqa: E402
from restyle.records import MCItem, SFTRecord  # noqa: E402

DEFAULT = yaml.safe_load((Path(__file__).parents[1] / "config" / "config.yaml").read_text())
ITEM = MCItem(id="mmlu/anatomy/validation/0", subject="anatomy", question="Which bone is longest?",
              choices=["femur", "tibia", "ulna", "rib"], answer=0)


# ---------------------------------------------------------------- parsing rules


def test_rule_lines_are_read_leniently_and_rejects_have_reasons():
    reply = ("1. **Counterintuitive Thinking**: Questions that overturn an obvious assumption "
             "make learners check it.\n"
             "The answer to this question is: \"The reason is that humans are curious and like "
             "to explore the world.\"\n"
             "- Short: too short\n"
             "为什么长寿的人大多是老年人？这是因果颠倒\n"
             "Trick questions: are echoed from the prompt here\n"
             "what makes the answer what makes the answer what makes the answer go round\n"
             "1. **Counterintuitive Thinking**: Questions that overturn an obvious assumption "
             "make learners check it.\n")
    found, rejected = replies.parse_rule_lines(
        reply, prompt="Trick questions: are echoed from the prompt here")
    assert found == [
        {"name": "Counterintuitive Thinking",
         "description": "Questions that overturn an obvious assumption make learners check it."},
        {"name": None, "description": "humans are curious and like to explore the world."}]
    reasons = [r["reason"] for r in rejected]
    assert reasons == ["explanation under 5 words", "not English (rules are asked for in English)",
                       "echoes the prompt", "repeats itself", "repeats an earlier line"]


def test_rule_blocks_and_instructions():
    reply = ("Rule 1\nName: Exaggeration\nDescription: Push a quantity to an absurd extreme so\n"
             "the principle stands out.\nInstructions: Scale one number up by a million.\n\n"
             "Name: Vague\nDescription: too short\n"
             "Name: Humor in Social Commentary\nDescription: A joke about daily life keeps "
             "attention on the point.\n")
    found, rejected = replies.parse_rule_blocks(reply)
    assert found == [
        {"name": "Exaggeration", "description": "Push a quantity to an absurd extreme so the "
         "principle stands out.", "instructions": "Scale one number up by a million."},
        {"name": "Humor in Social Commentary", "description": "A joke about daily life keeps "
         "attention on the point.", "instructions": None}]
    assert [r["reason"] for r in rejected] == ["description under 5 words"]
    assert replies.parse_instructions("Instructions: Ask the question from the opposite side "
                                    "first.") == "Ask the question from the opposite side first."
    assert replies.parse_instructions("Sure.") is None


def test_slugs_are_unique_and_never_a_baseline_name():
    assert rules.slugify("Blurring the Conceptual Boundaries") == "blurring-the-conceptual-boundaries"
    assert rules.slugify("Original") == "original-rule"
    assert rules.slugify("Exaggeration", taken=["exaggeration"]) == "exaggeration-2"
    assert re.fullmatch(rules.SLUG_RE, rules.slugify("幽默"))
    with pytest.raises(ValueError, match="reserved, repeated"):
        rules.fixed([{"name": "a b", "description": "d"}, {"name": "A-B", "description": "e",
                                                           "slug": "a-b"}])


def test_ranking_drops_near_duplicates_and_alternates_perspectives():
    cands = [{"id": f"c{i}", "name": n, "description": d, "perspective": p}
             for i, (n, d, p) in enumerate([
                 ("X", "learners question what they take for granted every day", "education"),
                 ("Y", "learners question what they take for granted each day", "education"),
                 (None, "humour keeps attention on the lesson and makes it stick", "education"),
                 ("Z", "surprise opens a knowledge gap that curiosity wants to close", "psychology"),
             ])]
    ranked, dupes = rules.rank_candidates(cands)
    assert [c["id"] for c in ranked] == ["c0", "c3", "c2"]
    assert [(d["id"], d["duplicate_of"]) for d in dupes] == [("c1", "c0")]


# ---------------------------------------------------------------- rewrite parsing and the gate

GATE = {"check_options": True, "option_similarity": 0.8, "near_duplicates": False,
        "near_duplicate_threshold": 0.9}


def _gate(reply, mode="teacher", rewrite_=True):
    parsed = replies.parse_reply(reply, rewrite=rewrite_)
    rewrite.gate(parsed, ITEM, mode, GATE)
    return parsed


def test_a_good_rewrite_passes_the_gate():
    parsed = _gate("Question: If the body were a building, which beam would be longest?\n"
                   "A. Femur\nB. tibia\nC) ulna\nD. rib\n"
                   "Reasoning: A thigh carries the most load, so its bone is the longest.\n"
                   "Answer: A")
    assert parsed.question.startswith("If the body were a building")
    assert parsed.reasoning == "A thigh carries the most load, so its bone is the longest."
    assert parsed.options["C"] == "ulna" and parsed.letter == "A"


@pytest.mark.parametrize("reply, stage, reason", [
    ("Question: Which beam is longest in a body?\nA. femur\nB. tibia\nC. ulna\nD. rib\n"
     "Reasoning: Shins are long.\nAnswer: B", "answer", "final answer is B, gold is A"),
    ("Question: Which beam is longest in a body?\nA. femur\nB. tibia\nC. ulna\n"
     "Reasoning: Thighs are long.\nAnswer: A", "options", "option(s) D missing"),
    ("Question: Which beam is longest in a body?\nA. the skull\nB. tibia\nC. ulna\nD. rib\n"
     "Reasoning: Thighs are long.\nAnswer: A", "options", "option A changed"),
    ("Question: Which beam is longest in a body?\nA. femur\nB. tibia\nC. ulna\nD. rib\n"
     "Reasoning: Thighs are long.", "parse", "no final answer letter"),
    ("A. femur\n\nThe answer is A.", "parse", "no rewritten question"),
    ("Question: Which beam is longest in a body?\nAnswer: A", "parse", "no reasoning"),
])
def test_the_gate_drops_with_a_reason(reply, stage, reason):
    with pytest.raises(replies.Rejected) as e:
        _gate(reply)
    assert e.value.stage == stage and reason in e.value.reason


@pytest.mark.parametrize("mode", ["teacher", "keep"])
def test_the_gate_drops_a_teacher_that_echoes_the_prompt(mode):
    rule = {"slug": "x", "name": "Exaggeration", "description": "Push a quantity to an extreme.",
            "instructions": "Exaggerate one number."}
    [request] = rewrite.rewrite_requests(rule, [ITEM], {"options": mode, "max_tokens": 8,
                                                        "temperature": 0.0})
    with pytest.raises(replies.Rejected) as e:
        _gate(f"echo: {request.messages[-1]['content']}", mode)
    assert e.value.stage == "parse" and "repeats the format's placeholders" in e.value.reason


def test_keep_mode_and_teacher_plain_parse():
    parsed = _gate("Which bone would a giant measure first?\nThe thigh is longest. "
                   "The answer is (A).", mode="keep")
    assert parsed.question == "Which bone would a giant measure first?"
    plain = _gate("The femur runs the length of the thigh and is the longest bone.\nAnswer: A",
                  rewrite_=False)
    assert plain.question is None and plain.reasoning.startswith("The femur runs")


def test_near_duplicates_items_and_stats():
    kept = [("x/1", rewrite._shingles("which bone is the longest in the human body today"))]
    assert rewrite.near_duplicate("Which bone is the longest in the human body today?", kept,
                                  0.9) == "x/1"
    assert rewrite.near_duplicate("Which organ filters blood?", kept, 0.9) is None
    items = [MCItem(f"mmlu/{s}/v/{i}", s, f"q{i}", ["a", "b", "c", "d"], 0)
             for s in ("a", "b") for i in range(3)]
    assert [it.id for it in rewrite.select_items(items, 3)] == [
        "mmlu/a/v/0", "mmlu/a/v/1", "mmlu/b/v/0"]
    rows = rewrite.stats_rows("studyA-x", "x", items,
                              [{"subject": "a", "stage": "answer"}, {"subject": "b",
                                                                     "stage": "parse"}])
    assert [(r["subject"], r["kept"], r["dropped_answer"], r["dropped_parse"]) for r in rows] == [
        ("a", 2, 1, 0), ("b", 2, 0, 1), ("all", 4, 1, 1)]


# ---------------------------------------------------------------- workflow runs


def _mmlu_csv(root: Path, subjects=("anatomy", "astronomy"), n=4) -> Path:
    for split in ("dev", "val", "test"):
        (root / split).mkdir(parents=True)
        for subject in subjects:
            rows = "".join(f'"Which option is right for {subject} item {i}?",a,b,c,d,'
                           f'{"ABCD"[(i + len(subject)) % 4]}\n' for i in range(n))
            (root / split / f"{subject}_{split}.csv").write_text(rows)
    return root


def _config(tmp_path, model_hf, **study_a):
    return {
        "models": {"tiny": {"source": str(model_hf)}},
        "target_models": ["tiny"],
        # every teacher of the default config (other stages check theirs), on the tiny model
        "teachers": {name: {**t, "model_key": "tiny"} if t["backend"] == "local" else t
                     for name, t in DEFAULT["teachers"].items()},
        "data": {"mmlu": {"source": "csv", "csv_dir": str(_mmlu_csv(tmp_path / "mmlu")),
                          "subjects": ["anatomy", "astronomy"],
                          "per_subject": {"train": 4, "dev": 1, "test": 2}}},
        "study_a": study_a,
    }


def _jobs(plan: str) -> dict[str, int]:
    """The job counts of a dry run's "Job stats" table."""
    table = plan.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def _rows(path):
    return read_jsonl(path, SFTRecord.from_dict)


def _stats(path):
    return {(r["sft_set"], r["subject"]): r for r in csv.DictReader(open(path))}


def test_local_teacher_end_to_end(tmp_path, smollm2_manifest):
    """The offline default's shape, shrunk: SmolLM2 extracts and rewrites; whatever it kept
    is its own text, and every item is either in its set or in the dropped file."""
    work = tmp_path / "work"
    config = _config(tmp_path, smollm2_manifest.parent / "hf",
                     rules={"perspectives": ["education", "cognitive science"], "count": 1,
                            "questions_per_batch": 4, "max_batches": 1,
                            "extract": {"max_tokens": 48}, "consolidate": {"max_tokens": 24},
                            "instructions": {"max_tokens": 24}},
                     rewrite={"items_per_set": 2, "max_tokens": 32})
    start = time.monotonic()
    result = snakemake(work, "results/study_a/stats.csv", config=config)
    assert result.returncode == 0, result.stderr[-3000:]
    doc = json.loads((work / "results/study_a/rules/rules.json").read_text())
    assert doc["mode"] == "extracted" and doc["teacher"]["backend"] == "local"
    assert 1 <= doc["count"] <= 1
    candidates = [json.loads(x) for x in (work / "results/study_a/rules/candidates.jsonl").open()]
    cache = (work / "resources/teacher/cache.sqlite").read_bytes().decode("utf-8", "ignore")
    for rule in doc["rules"]:
        # the teacher's own words: in its cached replies (a candidate or the consolidation)
        assert rule["description"] in cache or rule["description"] in {
            c["description"] for c in candidates}
        assert rule["instructions"] and rule["provenance"]["cache_key"]
    slug = doc["rules"][0]["slug"]
    stats = _stats(work / "results/study_a/stats.csv")
    for name in ("studyA-original", "studyA-teacher_plain", f"studyA-{slug}"):
        rows = _rows(work / f"results/sft/{name}.jsonl")
        dropped = _dropped(work, name) if name != "studyA-original" else []
        assert len(rows) + len(dropped) == 2 == int(stats[(name, "all")]["total"])
        assert int(stats[(name, "all")]["kept"]) == len(rows)
        assert all(d["reason"] and d["stage"] in rewrite.STAGES for d in dropped)
        for row in rows:
            assert row.completion.endswith(rewrite.final_line(
                next(it for it in read_jsonl(work / "resources/data/mmlu/train.jsonl",
                                             MCItem.from_dict) if it.id == row.source_id)))
            assert row.provenance["subject"] in ("anatomy", "astronomy")
    assert (work / f"results/study_a/mmlu/{slug}/accounting.csv").exists()
    print(f"local study A stage: {time.monotonic() - start:.0f} s")


def _dropped(work, sft_set):
    """A study A set's dropped rows (results/study_a/mmlu/{name}/, name without studyA-)."""
    path = work / "results/study_a/mmlu" / sft_set.removeprefix("studyA-") / "dropped.jsonl"
    return [json.loads(x) for x in path.open()]


class ScriptedServer(ChatServer):
    """Replies scripted from the prompt: extraction and consolidation as JSON, rewrites by the
    item's number (0 good, 1 wrong answer, 2 an option missing, 3 unreadable)."""

    def completion(self, body, name, fault):
        content = self.reply(body["messages"][-1]["content"])
        return {"id": self.next_id("chatcmpl"), "object": "chat.completion",
                "created": int(time.time()), "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 50, "completion_tokens": len(content) // 4 + 1,
                          "total_tokens": 50 + len(content) // 4 + 1}}

    @staticmethod
    def reply(prompt: str) -> str:
        if prompt.startswith("Trick questions:"):
            view = "education" if "view of education" in prompt else "psychology"
            found = [{"name": "Counterintuitive Thinking", "description": "Questions that "
                      "overturn an obvious assumption make learners check what they take for "
                      "granted."},
                     {"name": "Vague", "description": "It is fun."}]
            if view == "psychology":
                found = [{"name": "Counterintuitive thinking", "description": "Overturning an "
                          "obvious assumption makes learners check what they take for granted."},
                         {"name": "Humor in Social Commentary", "description": "A joke about "
                          "daily life keeps attention on the point and makes it memorable."}]
            return json.dumps({"rules": found})
        if "Merge rules" in prompt:
            return json.dumps({"rules": [
                {"name": "Counterintuitive Thinking", "description": "Overturn an obvious "
                 "assumption so that learners check what they take for granted.",
                 "instructions": "Ask the question from the side that seems wrong at first."},
                {"name": "Exaggeration", "description": "Push a quantity to an absurd extreme "
                 "so that the principle behind it stands out.", "instructions": ""},
                {"name": "Humor in Social Commentary", "description": "A joke about daily life "
                 "keeps attention on the point and makes it memorable.",
                 "instructions": "Frame the question as a wry remark about everyday life."}]})
        if prompt.startswith("Rule: Exaggeration") and "Instructions:" in prompt[-20:]:
            return "Scale one number in the question up by a million while asking the same fact."
        gold = re.search(r"(?:Correct answer:|The correct answer is) ([A-D])", prompt).group(1)
        i = int(re.search(r"item (\d+)", prompt).group(1))
        wrong = "ABCD"[("ABCD".index(gold) + 1) % 4]
        if prompt.startswith("Rule:"):
            rule = prompt.split(":")[1].strip()
            options = "A. a\nB. b\nC. c\n" + ("" if i == 2 else "D. d\n")
            if i == 3:
                return "I cannot do that."
            return (f"Question: Seen through {rule}, which option is right for item {i}?\n"
                    f"{options}Reasoning: Looking at it through {rule}, the option follows.\n"
                    f"Answer: {wrong if i == 1 else gold}")
        return f"The option follows from the definition.\nAnswer: {wrong if i % 2 else gold}"


def test_http_teacher_rules_rewrites_gate_fanout_and_selective_rerun(tmp_path,
                                                                     smollm2_manifest):
    work = tmp_path / "work"
    with ScriptedServer() as server:
        config = _config(tmp_path, smollm2_manifest.parent / "hf", teacher="api",
                         rules={"perspectives": ["education", "psychology"], "count": 2,
                                "questions_per_batch": 20},
                         rewrite={"items_per_set": None, "max_tokens": 64})
        config["teachers"]["api"] = {"backend": "openai", "model": "m", "base_url": server.url,
                                     "max_retries": 0}
        config["prices"] = {"m": {"input": 1.0, "output": 2.0}}
        result = snakemake(work, "results/study_a/stats.csv", config=config)
        assert result.returncode == 0, result.stderr[-3000:]

        doc = json.loads((work / "results/study_a/rules/rules.json").read_text())
        assert [(r["slug"], r["origin"]) for r in doc["rules"]] == [
            ("counterintuitive-thinking", "consolidation"), ("exaggeration", "consolidation")]
        exaggeration = doc["rules"][1]
        assert exaggeration["instructions"].startswith("Scale one number")
        assert exaggeration["instructions_provenance"]["template"] == "instructions"
        dropped = [json.loads(x) for x in (work / "results/study_a/rules/dropped.jsonl").open()]
        reasons = {d["reason"].split(" (")[0].split(" '")[0] for d in dropped}
        assert "not among the 2 rules kept" in reasons  # Humor, third in consolidation
        assert any(d["reason"].startswith("explanation under") for d in dropped)  # "It is fun."
        assert any(d["reason"].startswith("near-duplicate of extract/") for d in dropped)
        accounting = list(csv.DictReader((work / "results/study_a/rules/accounting.csv").open()))
        assert [a["stage"] for a in accounting] == [
            "study_a_rules:extract", "study_a_rules:consolidate", "study_a_rules:instructions"]
        assert all(float(a["cost"]) > 0 for a in accounting)

        sets = ["studyA-original", "studyA-teacher_plain", "studyA-counterintuitive-thinking",
                "studyA-exaggeration"]
        stats = _stats(work / "results/study_a/stats.csv")  # fan-out: every set is in it
        assert {s for s, _ in stats} == set(sets)
        for name in sets[2:]:
            rows = _rows(work / f"results/sft/{name}.jsonl")
            assert [r.source_id.rsplit("/", 1)[1] for r in rows] == ["0", "0"]  # item 0 only
            row = rows[0]
            assert row.id == f"{name}/{row.source_id}" and row.dataset == name
            assert row.prompt[0]["content"].startswith("Seen through ")
            assert row.prompt[0]["content"].endswith("A. a\nB. b\nC. c\nD. d")
            assert re.search(r"\n\nThe answer is \([A-D]\) [abcd]$", row.completion)
            prov = row.provenance
            assert prov["rule"] == name.removeprefix("studyA-") and prov["teacher"] == "api"
            assert prov["subject"] in ("anatomy", "astronomy") and prov["model"] == "m"
            assert prov["prompt_hash"] and prov["template_hash"] and prov["completion_tokens"]
            drops = _dropped(work, name)
            assert sorted((d["source_id"].rsplit("/", 1)[1], d["stage"]) for d in drops) == [
                ("1", "answer"), ("1", "answer"), ("2", "options"), ("2", "options"),
                ("3", "parse"), ("3", "parse")]
            for subject in ("anatomy", "astronomy"):
                s = stats[(name, subject)]
                assert (s["total"], s["kept"], s["dropped_answer"], s["dropped_options"],
                        s["dropped_parse"]) == ("4", "1", "1", "1", "1")
        plain = _rows(work / "results/sft/studyA-teacher_plain.jsonl")
        assert sorted(r.source_id.rsplit("/", 1)[1] for r in plain) == ["0", "0", "2", "2"]
        assert plain[0].prompt[0]["content"].startswith("Which option is right for")
        original = _rows(work / "results/sft/studyA-original.jsonl")
        assert len(original) == 8 and original[0].provenance["teacher"] is None
        assert re.fullmatch(r"The answer is \([A-D]\) [abcd]", original[0].completion)

        target = "results/study_a/stats.csv"
        assert "Nothing to be done" in snakemake(work, "-n", target, config=config).stdout
        # a changed wording of one rule reruns that rule's rewrite (and what follows) only
        doc["rules"][1]["description"] = "Push one number to an absurd extreme."
        (work / "results/study_a/rules/rules.json").write_text(json.dumps(doc))
        plan = snakemake(work, "-n", target, config=config).stdout
        assert _jobs(plan) == {"study_a_rewrite": 1, "study_a_stats": 1}
        assert "name=exaggeration" in plan and "name=counterintuitive" not in plan


def test_fixed_rules_skip_extraction_and_rerun_only_the_changed_rule(tmp_path, smollm2_manifest):
    work = tmp_path / "work"
    fixed = [{"name": "Counterintuitive Thinking", "description": "Overturn an obvious "
              "assumption so that learners check it.", "instructions": "Start from the wrong "
              "side."},
             {"name": "Exaggeration", "description": "Push a quantity to an absurd extreme."}]
    with ScriptedServer() as server:
        config = _config(tmp_path, smollm2_manifest.parent / "hf", teacher="api",
                         rules={"fixed": fixed}, baselines=["teacher_plain"],
                         rewrite={"items_per_set": 2})
        config["teachers"]["api"] = {"backend": "openai", "model": "m", "base_url": server.url}
        targets = ["results/study_a/rules/rules.json", "results/study_a/stats.csv"]
        result = snakemake(work, *targets, config=config)
        assert result.returncode == 0, result.stderr[-3000:]
        assert not any(r.startswith("Trick questions") for r in server.requests)  # no extraction
        doc = json.loads((work / "results/study_a/rules/rules.json").read_text())
        assert doc["mode"] == "fixed" and doc["teacher"] is None
        assert [r["slug"] for r in doc["rules"]] == ["counterintuitive-thinking", "exaggeration"]
        assert not (work / "results/sft/studyA-original.jsonl").exists()
        assert (work / "results/sft/studyA-exaggeration.jsonl").exists()

        config["study_a"]["rules"]["fixed"][1]["description"] = "Make one number absurdly big."
        plan = snakemake(work, "-n", *targets, config=config).stdout
        # rules.json is rewritten from config (no teacher); one rewrite reruns
        assert _jobs(plan) == {"study_a_rules": 1, "study_a_rewrite": 1, "study_a_stats": 1}
        assert "name=exaggeration" in plan and "name=counterintuitive" not in plan


def test_bad_study_a_config_names_the_key(tmp_path):
    result = snakemake(tmp_path, config={"study_a": {"teacher": "gpt9"}})
    assert result.returncode != 0
    assert "config study_a.teacher: 'gpt9' is not a key of teachers" in result.stderr
    result = snakemake(tmp_path, config={"study_a": {"rules": {"cuont": 3}}})
    assert "config study_a.rules.cuont: unknown key" in result.stderr
