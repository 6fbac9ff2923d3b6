"""The estimate command (`snakemake -f estimate`, restyle.estimate): what the configured run will
ask its teachers, counted before anything is sent, and the same count after the run."""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from chat_server import ChatServer  # noqa: E402
from test_teacher import closed_port  # noqa: E402
from test_workflow import snakemake  # noqa: E402

from restyle import accounting, estimate, teacher  # noqa: E402
from restyle.records import RuozhibaItem  # noqa: E402

PRICES = {"m": {"input": 1.0, "output": 2.0}}
SETS = ["studyA-exaggeration", "studyA-irony", "studyA-teacher_plain",
        "studyB-gsm8k-teacher", "studyB-gsm8k-minimum_change@tiny"]


def small_config(tiny, url: str) -> dict:
    """Two fixed rules and teacher_plain over the 4 MMLU train items (rewrite max_tokens 16),
    study B's teacher and minimum_change over the 3 GSM8K train problems (max_tokens 20), one
    priced OpenAI-compatible teacher in both of study B's roles."""
    _, config = tiny
    rule = {"description": "Say it with a twist.", "instructions": "Twist one word."}
    return {**config,
            "teachers": {"api": {"backend": "openai", "model": "m", "base_url": url,
                                 "max_retries": 0}},
            "prices": PRICES,
            "study_a": {"teacher": "api", "baselines": ["original", "teacher_plain"],
                        "rules": {"fixed": [{"name": "Exaggeration", **rule},
                                            {"name": "Irony", **rule}]},
                        "rewrite": {"items_per_set": None, "max_tokens": 16}},
            "study_b": {"tasks": ["gsm8k"], "variants": ["human", "teacher", "minimum_change"],
                        "teacher": "api", "target_teachers": {"tiny": "api"}, "items": None,
                        "generation": {"max_tokens": 20}}}


def read_estimate(workdir: Path) -> dict[str, dict]:
    return {r["stage"]: r for r in csv.DictReader((workdir / "results/estimate.csv").open())}


def test_estimate_sends_nothing_and_counts_by_hand(tiny):
    workdir, _ = tiny
    url = f"http://127.0.0.1:{closed_port()}/v1"  # a request sent would fail the job
    result = snakemake(workdir, "-f", "estimate", config=small_config(tiny, url))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = read_estimate(workdir)
    counted = {stage: (int(r["requests"]), int(r["to_send"]), int(r["completion_tokens"]),
                       r["basis"]) for stage, r in rows.items()}
    assert counted == {
        "studyA-{rule}": (8, 8, 8 * 16, "exact"),  # 2 rules x 4 items
        "studyA-teacher_plain": (4, 4, 4 * 16, "exact"),
        "studyB-gsm8k-teacher:teacher": (3, 3, 3 * 20, "exact"),
        # the same model answers the same prompts as in the teacher variant: sent there once
        "studyB-gsm8k-minimum_change@tiny:draft": (3, 0, 3 * 20, "exact"),
        "studyB-gsm8k-minimum_change@tiny:correct": (3, 3, 3 * 20, "from config"),  # holds a draft
        "TOTAL": (21, 18, 12 * 16 + 9 * 20, "from config")}
    total = rows["TOTAL"]
    prompt = sum(int(r["prompt_tokens"]) for s, r in rows.items() if s != "TOTAL")
    assert int(total["prompt_tokens"]) == prompt and total["counter"] == "approx"
    cost = (prompt * 1.0 + (12 * 16 + 9 * 20) * 2.0) / 1e6
    assert abs(float(total["cost"]) - cost) < 1e-9
    assert abs(float(total["batch_cost"]) - cost / 2) < 1e-9
    assert "TOTAL" in result.stdout and "to send" in result.stdout  # the table, on the console
    assert not (workdir / "results/sft").exists() and not (workdir / "results/rules").exists()

    # an unpriced model's cost is unknown, never 0, in its stage and in the total
    unpriced = {**small_config(tiny, url), "prices": {}}
    assert snakemake(workdir, "-f", "estimate", config=unpriced).returncode == 0
    assert {r["cost"] for r in read_estimate(workdir).values()} == {""}


def test_estimated_requests_are_the_requests_sent_and_the_report_sums_them(tiny):
    workdir, _ = tiny
    with ChatServer() as server:
        config = small_config(tiny, server.url)
        assert snakemake(workdir, "-f", "estimate", config=config).returncode == 0
        before = read_estimate(workdir)
        assert not server.requests
        result = snakemake(workdir, *(f"results/sft/{s}.jsonl" for s in SETS), config=config)
        assert result.returncode == 0, result.stderr[-3000:]
        assert len(server.requests) == int(before["TOTAL"]["to_send"]) == 18
        assert snakemake(workdir, "-f", "estimate", config=config).returncode == 0
    after = read_estimate(workdir)
    assert [after["TOTAL"][k] for k in ("requests", "cached", "to_send")] == ["21", "21", "0"]
    # the corrections are now built from the cached drafts: exact
    assert after["studyB-gsm8k-minimum_change@tiny:correct"]["basis"] == "exact"

    # the report's teacher bill: the accounting CSVs summed per stage beside the estimate
    paths = [workdir / f"results/sft/{s}.accounting.csv" for s in SETS[:3]] + [
        workdir / f"results/studyB/gsm8k/{v}/accounting.csv" for v in ("teacher", "minimum_change@tiny")]
    bill = accounting.compare(pd.read_csv(workdir / "results/estimate.csv"),
                              pd.concat(map(pd.read_csv, paths))).set_index("stage")
    assert (bill.requests == bill.requests_estimated).all()
    assert bill.loc["studyA-{rule}", "requests"] == 8 and bill.loc["TOTAL", "requests"] == 21
    # (the test server echoes the prompt whatever max_tokens says: no bound to check here)
    assert bill.loc["TOTAL", "cost"] > 0 and bill.loc["TOTAL", "cost_estimated"] > 0


def test_extracted_rules_are_estimated_from_the_config(tmp_path):
    """Extraction is exact; the consolidation, the instructions and the rewrites hold teacher
    output, so they are counted from the config: one request, `count`, `count` x items."""
    questions = tmp_path / "ruozhiba.jsonl"
    questions.write_text("".join(json.dumps(RuozhibaItem(f"r{i}", f"q{i}?", "a.", "t").to_dict())
                                 + "\n" for i in range(5)))
    mmlu = tmp_path / "train.jsonl"
    mmlu.write_text("".join(json.dumps({"id": f"m{i}", "subject": "s", "question": f"Q{i}?",
                                        "choices": ["a", "b", "c", "d"], "answer": 1}) + "\n"
                            for i in range(6)))
    rcfg = {"fixed": [], "perspectives": ["a", "b"], "count": 3, "questions_per_batch": 2,
            "max_batches": None, "structured_output": "auto",
            **{k: {"max_tokens": 10, "temperature": 0.0}
               for k in ("extract", "consolidate", "instructions")}}
    cfg = {"teacher": "t", "rules": rcfg, "baselines": ["original"], "teacher_plain": {},
           "rewrite": {"items_per_set": None, "options": "teacher", "max_tokens": 8,
                       "temperature": 0.0}}
    planned = estimate.study_a(cfg, {"backend": "openai", "model": "m"}, mmlu, questions)
    assert [(p.stage, p.basis, len(p.requests)) for p in planned] == [
        ("study_a_rules:extract", "exact", 3 * 2),  # 3 batches of 5 questions x 2 perspectives
        ("study_a_rules:consolidate", "from config", 1),
        ("study_a_rules:instructions", "from config", 3),
        ("studyA-{rule}", "from config", 3 * 6)]
    assert planned[0].requests[0].schema is not None  # JSON replies from an openai teacher


def test_prompts_are_counted_with_tiktoken_where_it_knows_the_model(monkeypatch):
    class Encoding:
        def encode(self, text):
            return text.split()

    def encoding_for_model(model):
        if model == "offline-model":
            raise OSError("could not fetch the encoding file")
        if model != "gpt-4o":
            raise KeyError(model)
        return Encoding()

    monkeypatch.setitem(sys.modules, "tiktoken", types.SimpleNamespace(
        encoding_for_model=encoding_for_model))
    how, count = teacher.token_counter({"backend": "openai", "model": "gpt-4o"})
    # 3 priming the reply, 3 a message, its role ("user": 1) and content (3)
    assert (how, count([{"role": "user", "content": "a b c"}])) == ("tiktoken", 10)
    for model in ("my-vllm-model", "offline-model"):
        assert teacher.token_counter({"backend": "openai", "model": model})[0] == "approx"


def test_each_target_model_is_counted_apart(tmp_path):
    """Two targets' minimum_change sets: each target's drafts go to its own server and each
    correction to the teacher (the drafts differ, so the corrections do too); per-target totals
    sum each one's stages. Nothing is sent (the endpoints do not exist)."""
    from restyle.io import write_jsonl
    from restyle.records import MathItem

    items = tmp_path / "train.jsonl"
    write_jsonl(items, [MathItem(id=f"g/{i}", question=f"{i} + 1?", answer=f"#### {i + 1}",
                                 final=str(i + 1)) for i in range(3)])
    cfg = {"tasks": ["gsm8k"], "items": None, "filter_correct": True,
           "instructions": {"gsm8k": "Solve."}, "generation": {"max_tokens": 10,
                                                               "temperature": 0.0, "seed": 0}}
    server = {"backend": "openai", "base_url": "http://127.0.0.1:9/v1"}
    backends = {f"minimum_change@{m}": {"teacher": {**server, "model": "gpt", "name": "gpt"},
                                        "target": {**server, "model": m, "name": f"{m}-self"}}
                for m in ("a", "b")}
    names = {label: {role: b["name"] for role, b in roles.items()}
             for label, roles in backends.items()}
    planned = estimate.study_b(cfg, backends, names, {"gsm8k": items}, tmp_path / "cache.db")
    rows = {r["stage"]: r for r in estimate.table(planned, tmp_path / "cache.db", None)}
    for m in ("a", "b"):
        assert rows[f"studyB-gsm8k-minimum_change@{m}:correct"]["to_send"] == 3
        assert rows[f"TOTAL {m}-self"]["requests"] == 3
        assert rows[f"TOTAL for {m}"]["requests"] == rows[f"TOTAL for {m}"]["to_send"] == 6
    assert rows["TOTAL gpt"]["to_send"] == 6 and rows["TOTAL"]["requests"] == 12
