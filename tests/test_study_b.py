"""Study B's data side: answer extraction, every variant and its filters against a scripted
OpenAI-compatible server (deterministic), and a real Snakemake run of the stage."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from chat_server import ChatServer  # noqa: E402
from conftest import REPO  # noqa: E402

from restyle import study_b, tasks, teacher  # noqa: E402
from restyle.answers import extract_choice, extract_number, numbers_match  # noqa: E402
from restyle.io import read_jsonl, write_jsonl  # noqa: E402
from restyle.records import MathItem, MCItem, SFTRecord  # noqa: E402
from restyle.study_b import variants  # noqa: E402

SNAKEMAKE = str(Path(sys.executable).parent / "snakemake")


# ---------------------------------------------------------------- answers

@pytest.mark.parametrize("text, expected", [
    ("3*4 = <<3*4=12>>12 apples.\n#### 1,200", "1200"),
    ("#### $42.", "42"),
    ("So she pays 5 dollars.\nFinal Answer: 1,000.50", "1000.50"),
    ("The final answer is -3.", "-3"),
    ("the answer is $7", "7"),
    ("She had 5, ate 2 and has 3 left.", "3"),
    ("#### 18\nThen some chatter about 99 bottles", "18"),  # '####' wins over the last number
    ("no digits at all", None),
    ("", None),
])
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_numbers_match():
    assert numbers_match("1,000", "1000.00") and numbers_match("$5.", "5")
    assert not numbers_match("3", "4") and not numbers_match(None, "4")
    assert numbers_match("x", "x") and not numbers_match("x", "y")


@pytest.mark.parametrize("text, expected", [
    ("The answer is (C).", 2), ("Answer: B", 1), ("B. Paris", 1), ("(A) because ...", 0),
    ("D", 3), ("**D**", 3), ("I first thought (A), but the answer is B.", 1),
    ("The correct option is A.", 0), ("The answer is a cat", None), ("none of these", None),
    ("The answer to the question is: C", 2),
])
def test_extract_choice(text, expected):
    assert extract_choice(text) == expected


def test_extract_choice_explicit_only_reads_an_answer_sentence_only():
    assert extract_choice("(A) because ...", explicit_only=True) is None
    assert extract_choice("I first thought (A), but the answer is B.", explicit_only=True) == 1


def test_teacher_roles_name_the_teachers_each_variant_asks():
    cfg = {"teacher": "t", "target_teachers": {"m": "s", "other": "o"}}
    roles = {v: study_b.teacher_roles(v, cfg, "m") for v in study_b.VARIANTS}
    teacher, target = {"teacher": "t"}, {"target": "s"}
    assert roles == {"human": {}, "teacher": teacher, "teacher_rewrite": teacher,
                     "teacher_steps": teacher, "teacher_detailed_steps": teacher,
                     "self_rewrite": target, "minimum_change": {**teacher, **target},
                     "best_of_n": teacher, "low_ppl": {}, "high_ppl": {}}
    assert list(roles["minimum_change"]) == ["teacher", "target"]  # the order its params keep
    assert study_b.teacher_roles("self_rewrite", cfg, "other") == {"target": "o"}


def test_per_model_variants_get_one_set_per_writer_or_target():
    cfg = {"variants": ["human", "self_rewrite", "best_of_n", "low_ppl"], "writers": None}
    assert study_b.labels(cfg, ["a", "b"]) == [
        "human", "self_rewrite@a", "self_rewrite@b", "best_of_n@a", "best_of_n@b", "low_ppl@a",
        "low_ppl@b"]
    writers = study_b.labels({**cfg, "writers": ["a", "w"]}, ["a", "b"])
    assert [x for x in writers if x.startswith("self_rewrite")] == ["self_rewrite@a",
                                                                    "self_rewrite@w"]
    name = study_b.sft_set_name("gsm8k", "self_rewrite", "w")
    assert name == "studyB-gsm8k-self_rewrite@w"
    assert study_b.parse_set_name(name) == ("gsm8k", "self_rewrite", "w")
    assert study_b.parse_set_name("studyB-gsm8k-human") == ("gsm8k", "human", None)
    assert [x for x in writers if study_b.trained_by(x, "b")] == ["human", "best_of_n@b",
                                                                  "low_ppl@b"]


# ---------------------------------------------------------------- variants on a scripted server

GSM = [MathItem(id=f"g/{i}", question=f"Sam has {i} bags with 3 apples each. How many apples?",
                answer=f"{i}*3 = <<{i}*3={3 * i}>>{3 * i} apples.\n#### {3 * i}", final=str(3 * i))
       for i in range(1, 7)]
MMLU = [MCItem(id=f"m/{i}", subject="s", question=f"Question number {i}?",
               choices=["w", "x", "y", "z"], answer=i % 4) for i in range(4)]


def _item_of(text: str) -> MathItem | None:
    m = re.search(r"Sam has (\d+) bags", text)
    return GSM[int(m.group(1)) - 1] if m else None


def script(body: dict) -> str:
    """Replies by model and template. The teacher answers items 1-3 right and 4-6 wrong; the
    target's drafts are always wrong; corrections are right; rewrites keep the answer except
    item 2's, which loses its number; item 5 makes the server fail (see FAULTS)."""
    text, model = body["messages"][-1]["content"], body["model"]
    if text.startswith("Question number"):  # MMLU: right for 0 and 1, no letter for 3
        n = int(re.search(r"number (\d+)", text).group(1))
        return {0: "Because... The answer is (A).", 1: "The answer is (B).",
                2: "The answer is (A).", 3: "I am not sure."}[n]
    item = _item_of(text)
    if item is None:  # a problem this script does not know (the Snakemake test's data)
        return "I do not know.\n#### 999"
    if text.startswith("Rewrite the answer"):
        who = "Target" if model == "target-m" else "Teacher"
        if item.id == "g/2":
            return f"{who} rewrite without a number."
        return f"{who} rewrite: {item.question.split('.')[0]} gives {item.final}.\n#### {item.final}"
    if text.startswith("Below are a question"):
        draft = text.split("Student's answer:\n")[1].split("\n\nWrite only")[0]
        return draft.replace("#### 0", f"#### {item.final}")
    if model == "target-m":
        return "I think it is small.\n#### 0"
    if "step by step in detail" in text:
        return f"Step 1 in detail. Step 2 in detail.\n#### {item.final}"
    right = int(item.id.split("/")[1]) <= 3
    seed = body.get("seed", 0)
    pad = " and so on" * (seed + 1) if body.get("temperature", 0) > 0 else ""
    return f"Teacher solution{pad}.\n#### {item.final if right else 999}"


class ScriptedServer(ChatServer):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: list[dict] = []

    def completion(self, body, name, fault):
        out = super().completion(body, name, fault)
        self.seen.append(body)
        out["choices"][0]["message"]["content"] = script(body)
        return out


CFG = {"items": None, "filter_correct": True,
       "instructions": {"gsm8k": "Solve it. End with '#### <number>'.",
                        "mmlu": "End with 'The answer is (X)'."},
       "generation": {"max_tokens": 64, "temperature": 0.0, "seed": 0},
       "sampling": {"temperature": 0.8, "top_p": 0.95}, "best_of_n": 3,
       "ppl_split_of": "teacher",
       "familiarity": {"batch_size": 4, "max_batch_tokens": None, "max_length": None}}


def backends(server):
    # item 5's scripted failure is one of 6: within this budget, so the set is still built
    common = {"backend": "openai", "base_url": server.url, "backoff_s": 0.01, "max_retries": 0,
              "max_failed_share": 0.5}
    return ({"teacher": {**common, "model": "teacher-m"}, "target": {**common, "model": "target-m"}},
            {"teacher": "gpt", "target": "self"})


def build(tmp_path, server, task, variant, items, scorer=None, source=None, cfg=CFG):
    if server is None:  # no teacher calls
        return variants.build(variants.Context(tasks.get(task), variant, cfg, items, None, scorer,
                                               source))
    b, names = backends(server)
    session = teacher.Session(tmp_path / "cache.db", variants.sft_set_name(task, variant),
                              prices={"teacher-m": {"input": 1, "output": 2}},
                              failures_path=tmp_path / f"{variant}.failures.jsonl",
                              accounting_path=tmp_path / f"{variant}.accounting.csv")
    ctx = variants.Context(tasks.get(task), variant, cfg, items, session, scorer, source, backends=b,
                           names=names)
    return variants.build(ctx)


def kept_ids(built):
    return [r.source_id for r in built.records]


def reasons(built):
    """source id -> why the question was dropped (best_of_n's per-sample rows left out)."""
    return {d["source_id"]: d["reason"].split(":")[0] for d in built.dropped
            if not d["reason"].startswith("sample: ")}


def test_generated_variants_are_filtered_and_carry_provenance(tmp_path):
    faults = {}
    with ScriptedServer(faults=faults) as server:
        # item 5's teacher request fails with a 400 (not retried): recorded, not fatal
        prompt5 = tasks.get("gsm8k").prompt(GSM[4], CFG["instructions"]["gsm8k"])
        server.faults[prompt5] = ["400"]
        human = build(tmp_path, server, "gsm8k", "human", GSM)
        teacher = build(tmp_path, server, "gsm8k", "teacher", GSM)
        rewrite = build(tmp_path, server, "gsm8k", "teacher_rewrite", GSM)
        self_rw = build(tmp_path, server, "gsm8k", "self_rewrite", GSM)
        detailed = build(tmp_path, server, "gsm8k", "teacher_detailed_steps", GSM)
        mc = build(tmp_path, server, "gsm8k", "minimum_change", GSM)
        sent = len(server.requests)
        again = build(tmp_path, server, "gsm8k", "teacher_rewrite", GSM)
        assert len(server.requests) == sent  # a rerun is answered from the cache

    assert kept_ids(human) == [it.id for it in GSM] and human.stats["kept"] == 6
    assert human.records[0].completion == GSM[0].answer
    assert kept_ids(teacher) == ["g/1", "g/2", "g/3"]
    assert reasons(teacher) == {"g/4": "wrong_answer", "g/5": "teacher_failed", "g/6": "wrong_answer"}
    assert teacher.stats | {} == {**teacher.stats, "kept": 3, "dropped": 3, "wrong_answer": 2,
                                  "teacher_failed": 1, "no_answer": 0}
    assert kept_ids(rewrite) == ["g/1", "g/3", "g/4", "g/5", "g/6"]
    assert reasons(rewrite) == {"g/2": "no_answer"}
    assert [r.completion for r in again.records] == [r.completion for r in rewrite.records]
    assert all(r.completion.startswith("Target rewrite") for r in self_rw.records)
    assert len(detailed.records) == 6 and "in detail" in detailed.records[0].completion
    # minimum change: the target's (wrong) draft corrected by the teacher, wording kept
    assert kept_ids(mc) == [it.id for it in GSM]
    assert mc.records[0].completion == "I think it is small.\n#### 3"
    assert mc.records[0].provenance["draft"]["model"] == "target-m"
    assert mc.records[0].provenance["model"] == "teacher-m"

    # every set holds the same prompt for a question; provenance on every generated row
    prompts = {r.source_id: r.prompt for r in human.records}
    for built in (teacher, rewrite, self_rw, detailed, mc):
        for r in built.records:
            assert r.prompt == prompts[r.source_id]
            assert r.id == f"{r.dataset}/{r.source_id}" and r.dataset == built.stats["sft_set"]
            p = r.provenance
            assert p["variant"] == built.stats["variant"] and p["task"] == "gsm8k"
            for key in ("model", "backend", "template", "template_hash", "prompt_hash",
                        "params", "prompt_tokens", "completion_tokens", "cache_key"):
                assert p[key] not in (None, ""), key
            assert p["correct"] and p["extracted"] == p["gold"]
    assert self_rw.records[0].provenance["model"] == "target-m"
    assert self_rw.records[0].provenance["teacher_name"] == "self"
    assert teacher.records[0].provenance["params"] == {"max_tokens": 64, "temperature": 0.0,
                                                       "seed": 0}
    # failures side file and accounting with prices
    [failure] = [json.loads(x) for x in (tmp_path / "teacher.failures.jsonl").read_text().splitlines()]
    assert failure["id"] == "teacher/g/5" and "400" in failure["error"]
    [acct] = list(csv.DictReader(open(tmp_path / "teacher.accounting.csv")))
    assert acct["stage"] == "studyB-gsm8k-teacher:teacher" and acct["failed"] == "1"
    assert float(acct["cost"]) > 0 and teacher.stats["cost"] == float(acct["cost"])
    mc_acct = list(csv.DictReader(open(tmp_path / "minimum_change.accounting.csv")))
    assert [a["model"] for a in mc_acct] == ["target-m", "teacher-m"]


def test_filter_off_keeps_wrong_answers_but_marks_them(tmp_path):
    with ScriptedServer() as server:
        built = build(tmp_path, server, "gsm8k", "teacher", GSM, cfg={**CFG, "filter_correct": False})
    assert len(built.records) == 6
    assert [r.provenance["correct"] for r in built.records] == [True] * 3 + [False] * 3


def test_mmlu_letters_are_checked(tmp_path):
    with ScriptedServer() as server:
        human = build(tmp_path, server, "mmlu", "human", MMLU)
        teacher = build(tmp_path, server, "mmlu", "teacher", MMLU)
    assert [r.completion for r in human.records] == [f"The answer is ({x})." for x in "ABCD"]
    assert "A. w\nB. x\nC. y\nD. z" in human.records[0].prompt[0]["content"]
    assert kept_ids(teacher) == ["m/0", "m/1"]
    assert reasons(teacher) == {"m/2": "wrong_answer", "m/3": "no_answer"}


def test_best_of_n_keeps_the_lowest_perplexity_correct_sample(tmp_path):
    scored = []

    def fake_ppl(records):  # longer completions are "less familiar"
        scored.extend(records)
        return [float(len(r.completion)) for r in records]

    with ScriptedServer() as server:
        built = build(tmp_path, server, "gsm8k", "best_of_n", GSM, scorer=fake_ppl)
        seeds = sorted({b["seed"] for b in server.seen})
        temps = {b["temperature"] for b in server.seen}
    assert seeds == [0, 1, 2] and temps == {0.8}
    assert kept_ids(built) == ["g/1", "g/2", "g/3"]
    assert all(r.provenance["sample"] == 0 for r in built.records)  # the shortest reply
    assert built.records[0].provenance["acceptable_samples"] == 3
    assert len(scored) == 9  # only correct samples are scored
    assert reasons(built)["g/4"] == "wrong_answer"
    assert sum(d["reason"].startswith("sample: wrong_answer") for d in built.dropped) == 9
    assert built.stats["kept"] == 3 and built.stats["dropped"] == 3  # per question, not sample


def test_perplexity_halves(tmp_path):
    source = [SFTRecord(id=f"studyB-gsm8k-teacher/g/{i}", source_id=f"g/{i}",
                        dataset="studyB-gsm8k-teacher", prompt=[{"role": "user", "content": "q"}],
                        completion="x" * n, provenance={"model": "t"})
              for i, n in enumerate([5, 1, 4, 2, 3])]
    ppl = lambda recs: [float(len(r.completion)) for r in recs]  # noqa: E731
    low = build(tmp_path, None, "gsm8k", "low_ppl", [], scorer=ppl, source=source)
    high = build(tmp_path, None, "gsm8k", "high_ppl", [], scorer=ppl, source=source)
    assert [len(r.completion) for r in low.records] == [1, 2]  # source order kept
    assert sorted(len(r.completion) for r in high.records) == [4, 5]
    assert low.records[0].id == "studyB-gsm8k-low_ppl/g/1"
    assert low.records[0].provenance["split_of"] == "studyB-gsm8k-teacher"
    assert low.records[0].provenance["median_perplexity"] == 3.0
    assert low.stats["kept"] == 2 and low.stats["dropped"] == 3
    empty = build(tmp_path, None, "gsm8k", "low_ppl", [], scorer=ppl, source=[])
    assert empty.records == [] and empty.stats["kept"] == 0


def test_empty_variant_writes_an_empty_set_and_stats(tmp_path):
    out = {k: tmp_path / f"out.{k}" for k in ("sft", "dropped", "stats", "failures", "accounting")}
    items = tmp_path / "train.jsonl"
    write_jsonl(items, GSM[3:4] + GSM[5:6])  # the teacher gets both wrong
    with ScriptedServer() as server:
        b, names = backends(server)
        stats = variants.run("gsm8k", "teacher", CFG, items, out, b, names, tmp_path / "c.db", {})
    assert stats["kept"] == 0 and stats["wrong_answer"] == 2
    assert out["sft"].read_text() == "" and variants.count_rows(out["sft"]) == 0
    [row] = list(csv.DictReader(open(out["stats"])))
    assert row["kept"] == "0" and row["questions"] == "2"
    assert len(out["dropped"].read_text().splitlines()) == 2


def test_mmlu_cap_is_round_robin_over_subjects(tmp_path):
    rows = [MCItem(id=f"m/{s}/{i}", subject=s, question="q", choices=list("abcd"), answer=0)
            for s in ("a", "b") for i in range(4)]
    write_jsonl(tmp_path / "t.jsonl", rows)
    got = variants.load_items(tasks.get("mmlu"), tmp_path / "t.jsonl", 3)
    assert [it.id for it in got] == ["m/a/0", "m/b/0", "m/a/1"]


# ---------------------------------------------------------------- the Snakemake stage

def test_snakemake_stage_on_tiny_inputs(tmp_path, smollm2_manifest):
    """Teacher variants through the scripted HTTP server, self_rewrite by the real local target
    model, perplexity halves and the familiarity rule on the real model."""
    workdir = tmp_path / "work"
    with ScriptedServer() as server:
        config = {
            "models": {"tiny": {"source": str(smollm2_manifest.parent / "hf")}},
            "target_models": ["tiny"],
            "teachers": {"scripted": {"backend": "openai", "model": "teacher-m",
                                      "base_url": server.url, "max_retries": 0},
                         "target": {"backend": "local", "model_key": "tiny", "batch_size": 4},
                         "local": {"backend": "local", "model_key": "tiny"}},  # other stages
            "data": {"gsm8k": {"per_split": {"train": 4, "test": 2}, "seed": 5}},
            "study_b": {"tasks": ["gsm8k"], "teacher": "scripted", "items": 3,
                        "variants": ["human", "teacher", "self_rewrite", "low_ppl", "high_ppl"],
                        "ppl_split_of": "human", "generation": {"max_tokens": 24},
                        "target_teachers": {"tiny": "target"}},
        }
        path = workdir / "config.yaml"
        path.parent.mkdir(parents=True)
        path.write_text(yaml.safe_dump(config))
        cmd = [SNAKEMAKE, "results/study_b/stats.csv", "results/familiarity/tiny/base/summary.csv",
               "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--cores", "2",
               "--configfile", str(path)]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        again = subprocess.run([*cmd, "-n"], capture_output=True, text=True, timeout=120)
    assert "Nothing to be done" in again.stdout

    res = workdir / "results"
    stats = {r["variant"]: r for r in csv.DictReader(open(res / "study_b" / "stats.csv"))}
    assert list(stats) == config["study_b"]["variants"]
    assert stats["human"]["kept"] == "3"
    human = read_jsonl(res / "sft" / "studyB-gsm8k-human.jsonl", SFTRecord.from_dict)
    assert len(human) == 3
    # the scripted teacher: synthetic problems are not "Sam has" ones, so it answers 999
    assert stats["teacher"]["wrong_answer"] == "3" and stats["teacher"]["kept"] == "0"
    assert (res / "sft" / "studyB-gsm8k-teacher.jsonl").read_text() == ""
    # the sets picked by or written by the target model carry its name
    low = read_jsonl(res / "sft" / "studyB-gsm8k-low_ppl@tiny.jsonl", SFTRecord.from_dict)
    high = read_jsonl(res / "sft" / "studyB-gsm8k-high_ppl@tiny.jsonl", SFTRecord.from_dict)
    assert len(low) == len(high) == 1
    assert low[0].provenance["target_perplexity"] < high[0].provenance["target_perplexity"]
    # self_rewrite really ran the local target model: kept or dropped, every item is accounted for
    sr = stats["self_rewrite"]
    assert int(sr["kept"]) + int(sr["dropped"]) == 3 and int(sr["completion_tokens"]) > 0
    summary = {r["dataset"]: r for r in csv.DictReader(
        open(res / "familiarity" / "tiny" / "base" / "summary.csv"))}
    assert set(summary) == {f"studyB-gsm8k-{v}" for v in (
        "human", "teacher", "self_rewrite@tiny", "low_ppl@tiny", "high_ppl@tiny")}
    assert summary["studyB-gsm8k-human"]["count"] == "3"
    assert summary["studyB-gsm8k-teacher"]["count"] == "0"  # an empty set gives a row, no crash
    per_example = list(csv.DictReader(open(res / "familiarity" / "tiny" / "base" / "per_example.csv")))
    low_ppl = [r for r in per_example if r["dataset"] == "studyB-gsm8k-low_ppl@tiny"][0]
    assert float(low_ppl["perplexity"]) == pytest.approx(low[0].provenance["target_perplexity"],
                                                         rel=1e-4)
    for name in ("study_b/gsm8k/teacher.log", "familiarity/tiny/base.log"):
        assert (workdir / "logs" / name).is_file()
    assert (workdir / "logs" / "benchmarks" / "study_b" / "gsm8k" / "human.tsv").is_file()
