"""The estimate command (`snakemake -f estimate`, restyle.estimate): what the configured run will
ask its teachers, counted before anything is sent, and the same count after the run."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from chat_server import ChatServer  # noqa: E402
from conftest import REPO  # noqa: E402
from test_teacher import closed_port  # noqa: E402
from test_workflow import DATA_TARGETS, SNAKEMAKE, snakemake  # noqa: E402

from restyle import estimate, report, teacher  # noqa: E402
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
    assert not (workdir / "results/sft").exists() and not (workdir / "results/study_a/rules").exists()

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
    paths = [workdir / "results/study_a/mmlu" / s.removeprefix("studyA-") / "accounting.csv"
             for s in SETS[:3]] + [workdir / f"results/study_b/gsm8k/{v}/accounting.csv"
                                   for v in ("teacher", "minimum_change@tiny")]
    bill = report.teacher_bill(pd.read_csv(workdir / "results/estimate.csv"),
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


@pytest.mark.parametrize("model, encoding", [
    *((m, "o200k_base") for m in ("gpt-4o", "gpt-4o-mini", "gpt-4o-2024-08-06", "gpt-4.1",
                                  "gpt-4.1-mini", "gpt-5", "o1", "o3", "o3-mini", "o4-mini")),
    *((m, "cl100k_base") for m in ("gpt-4", "gpt-4-turbo", "gpt-3.5-turbo")),
    ("Qwen/Qwen2.5-7B-Instruct", None), ("m", None)])
def test_openai_models_map_to_their_encoding_offline(monkeypatch, model, encoding):
    """The encodings ship with restyle: nothing is fetched (tiktoken's download is cut off)."""
    import tiktoken.load

    def no_network(url):
        raise AssertionError(f"tiktoken tried to fetch {url}")

    monkeypatch.setattr(tiktoken.load, "read_file", no_network)
    found = teacher.tiktoken_encoding(model)
    assert (found.name if found else None) == encoding
    how = teacher.token_counter({"backend": "openai", "model": model})[0]
    assert how == ("tiktoken" if encoding else "approx")


def test_chinese_prompts_are_counted_with_the_models_tokenizer_and_the_schema_billed():
    """Study A's extraction prompt over the bundled Ruozhiba questions: 4 characters a token
    undercounts Chinese text several times over; the JSON schema sent as response_format is
    billed as input too."""
    from restyle.data import ruozhiba
    from restyle.study_a import rules

    rcfg = {"perspectives": ["education"], "questions_per_batch": 1000, "max_batches": 1,
            "extract": {"max_tokens": 48, "temperature": 0.0}}
    [(request, _)] = rules.extraction_requests(ruozhiba.bundled_sample(), rcfg, True)
    assert request.schema is not None
    how, count = teacher.token_counter({"backend": "openai", "model": "gpt-4o"})
    encoding = teacher.tiktoken_encoding("gpt-4o")
    messages = sum(3 + len(encoding.encode(m["role"])) + len(encoding.encode(m["content"]))
                   for m in request.messages)
    schema = len(encoding.encode(json.dumps({"type": "json_schema", "json_schema": {
        "name": "reply", "schema": request.schema}})))
    assert how == "tiktoken" and count(request) == 3 + messages + schema
    assert schema > 20
    assert messages > 2 * teacher.approx_tokens(request.messages)


def test_schema_requests_are_estimated_at_their_retry_bound_and_the_run_bills_within_it(
        tmp_path):
    """A reply that breaks the schema is asked again, up to schema_retries times, and each
    answer is billed: the estimate counts that bound. The test server bills a gpt-4o-mini
    request as OpenAI does (its own count, tests/chat_server.py): one request answered at once
    is billed its estimate's first try, one answered at its last try the whole bound."""
    schema = {"type": "object", "properties": {"answer": {"type": "string"}},
              "required": ["answer"]}
    reqs = [teacher.Request(f"id-{n}", [{"role": "user", "content": n}], "t",
                            teacher.template_hash("{q}"), {"max_tokens": 16}, schema)
            for n in ("alpha", "beta")]
    with ChatServer(faults={"beta": ["badschema", "badschema"]}) as server:
        cfg = {"backend": "openai", "model": "gpt-4o-mini", "base_url": server.url,
               "schema_retries": 2}
        how, once = teacher.token_counter(cfg)
        est = teacher.estimate(reqs, cfg, tmp_path / "c.db", PRICES)
        assert how == "tiktoken"
        assert est["prompt_tokens"] == 3 * (once(reqs[0]) + once(reqs[1]))
        assert est["completion_tokens"] == 3 * 2 * 16
        session = teacher.Session(tmp_path / "c.db", "s")
        assert all(r.ok for r in session.ask(reqs, cfg))
    [bill] = session.accounting
    assert bill["attempts"] == 1 + 3
    assert bill["run_prompt_tokens"] == once(reqs[0]) + 3 * once(reqs[1]) < est["prompt_tokens"]


def test_the_paper_config_plans_and_prices_its_five_tasks_beside_a_finished_run(tiny):
    """`make estimate` with the paper's config (GSM8K, MATH, ECQA and MBPP from local mirrors in
    the hub layout: no hub here) in the folder of a finished run (a tiny one): the plan has every
    study B set of the five tasks and both targets, the estimate prices each at the paper's
    sizes, and it prepares the paper-scale data in a scratch folder of its own, so the run stays
    up to date. A second estimate of the same config reuses that folder's data."""
    import yaml

    workdir, config = tiny
    assert snakemake(workdir, *DATA_TARGETS, config=config).returncode == 0
    run_files = {p: p.stat().st_mtime_ns for p in (workdir / "resources").rglob("*.jsonl")}
    from test_sizing import LLAMA2_13B, MISTRAL_7B, write_config

    paper = yaml.safe_load((REPO / "config/paper.yaml").read_text())
    # the targets' architectures (config.json alone, no weights): the compute is sized offline
    models = {name: {"source": str(write_config(workdir.parent / name, arch))} for name, arch
              in zip(paper["target_models"], [LLAMA2_13B, MISTRAL_7B])}
    mirrors = workdir.parent / "mirrors.yaml"
    mirrors.write_text(json.dumps({"data": paper_mirrors(workdir.parent / "mirrors"),
                                   "models": models}))
    plan = subprocess.run([SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(workdir), "-n",
                           "--configfile", str(REPO / "config/paper.yaml"), str(mirrors)],
                          capture_output=True, text=True, timeout=600)
    assert plan.returncode == 0, plan.stderr[-3000:]
    # 6 tasks (HumanEval's two folds) x (5 shared variants + 5 made by or for each of 2 targets)
    assert re.search(r"^study_b_variant\s+90$", plan.stdout, re.M), plan.stdout[-2000:]

    for _ in range(2):
        made = subprocess.run(
            ["make", "-s", "-C", str(REPO), "-o", f"{sys.prefix}/.installed", "estimate",
             f"VENV={sys.prefix}",
             f"SNAKEMAKE_ARGS=-d {workdir} --configfile {REPO / 'config/paper.yaml'} {mirrors}"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
        assert made.returncode == 0, made.stderr[-3000:]
        [scratch] = (workdir / ".estimate").iterdir()
        assert "TOTAL" in made.stdout and f"estimating in {scratch}" in made.stdout
    # the second time, only the estimate itself ran
    assert "prepare_mmlu" not in made.stderr and "rule estimate" in made.stderr
    rows = read_estimate(scratch)
    sizes = {"gsm8k": 1000, "math": 1000, "ecqa": 1000, "mbpp": 374, "humaneval": 82,
             "humaneval2": 82}
    for task, n in sizes.items():  # the paper's sizes, not the tiny run's
        assert rows[f"studyB-{task}-teacher:teacher"]["requests"] == str(n), task
        for target in paper["target_models"]:
            assert rows[f"studyB-{task}-best_of_n@{target}:samples"]["requests"] == str(2 * n)
    # GPT-4o's bill is priced; the self-hosted targets' is unknown, so the total is too
    assert float(rows["TOTAL gpt4o"]["cost"]) > 0 and rows["TOTAL"]["cost"] == ""

    # the compute: each target's train jobs (3 seeds each) and evaluation jobs, on an H100
    compute = list(csv.DictReader((scratch / "results/compute.csv").open()))
    assert "GPU-h" in made.stdout and "expected_mfu 0.35 x H100 peak 989 TFLOP/s" in made.stdout
    for target, other in zip(paper["target_models"], paper["target_models"][::-1]):
        train = {r["name"]: r for r in compute if r["model"] == target and r["job"] == "train"}
        # study A's 10 sets, 30 shared and 30 own study B sets, 14 controls (7 tasks x 2)
        assert len(train) == 10 + 30 + 30 + 14 and not any(other in n for n in train)
        assert all(r["jobs"] == "3" and float(r["gpu_hours"]) > 0 and int(r["runtime_auto"]) > 5
                   for r in train.values())
        # 1,000 GSM8K answers of up to 512 tokens, 32 a step: 32 steps, at most 1,000 x 1,024
        gsm8k = train["studyB-gsm8k-teacher"]
        assert gsm8k["rows"] == "1000" and gsm8k["steps"] == "32"
        assert 200_000 < int(gsm8k["tokens"]) <= 1_024_000
        evaluate = [r for r in compute if r["model"] == target and r["job"] == "evaluate"]
        assert [r["name"] for r in evaluate] == paper["eval"]["tasks"]
        # the base model, 3 seeds of the 70 study arms and of the task's 2 controls; on a
        # HumanEval fold, not the other fold's 10 sets (its test questions are theirs to train)
        jobs = {r["name"]: int(r["jobs"]) for r in evaluate}
        assert jobs["gsm8k"] == 1 + 3 * (70 + 2)
        assert jobs["humaneval"] == jobs["humaneval2"] == 1 + 3 * (70 - 10 + 2)
        [total] = [r for r in compute if r["job"] == f"TOTAL {target}"]
        assert float(total["total_gpu_hours"]) == pytest.approx(sum(
            float(r["total_gpu_hours"]) for r in [*train.values(), *evaluate]))
    # Llama-2-13B costs more per token than Mistral-7B on the same sets
    hours = {r["job"]: float(r["total_gpu_hours"]) for r in compute if r["job"].startswith("TOTAL")}
    assert hours["TOTAL llama2-13b-chat"] > hours["TOTAL mistral-7b-instruct"]
    assert hours["TOTAL"] == pytest.approx(sum(hours[f"TOTAL {t}"] for t in paper["target_models"]))
    assert {p: p.stat().st_mtime_ns for p in (workdir / "resources").rglob("*.jsonl")} == run_files
    assert not (workdir / "results").exists()
    assert "Nothing to be done" in snakemake(workdir, "-n", *DATA_TARGETS, config=config).stdout


def paper_mirrors(root: Path) -> dict:
    """Local folders in the hub layout for the paper's four tasks no PyPI package ships, at the
    paper's training sizes (GSM8K, MATH Algebra and ECQA 1,000, MBPP full 374 / 500): the `data`
    section that points paper.yaml at them."""
    from conftest import write_hf_dataset

    def gsm8k(i):
        return {"question": f"A shelf holds {i + 3} rows of {i + 2} books. How many books?",
                "answer": f"{i + 3} rows of {i + 2} is {i + 3}*{i + 2} = "
                          f"<<{i + 3}*{i + 2}={(i + 3) * (i + 2)}>>{(i + 3) * (i + 2)} books.\n"
                          f"#### {(i + 3) * (i + 2)}"}

    def math(i):
        return {"problem": f"Solve for $x$: ${i + 2}x - {i} = {3 * i}$. Show the algebra.",
                "solution": f"Adding {i} to both sides, ${i + 2}x = {4 * i}$, so "
                            f"$x = \\boxed{{\\frac{{{4 * i}}}{{{i + 2}}}}}$."}

    def ecqa(i):
        return {"q_no": f"q{i}", "q_text": f"Where would you most likely keep item number {i}?",
                **{f"q_op{j}": f"place {j}" for j in range(1, 6)}, "q_ans": f"place {1 + i % 5}",
                "taskB": f"Items like that are usually kept in place {1 + i % 5}, since it is dry."}

    def mbpp(i):
        return {"task_id": i, "text": f"Write a function to add {i} to a number.",
                "code": f"def add_{i}(x):\n    return x + {i}\n", "test_setup_code": "",
                "test_list": [f"assert add_{i}(1) == {i + 1}"], "challenge_test_list": []}

    return {
        "gsm8k": {"hf_id": str(write_hf_dataset(root / "gsm8k", "main", {
            "train": [gsm8k(i) for i in range(1000)], "test": [gsm8k(i) for i in range(5)]}))},
        "math": {"hf_id": str(write_hf_dataset(root / "math", "algebra", {
            "train": [math(i) for i in range(1000)], "test": [math(i) for i in range(5)]}))},
        "ecqa": {"hf_id": str(write_hf_dataset(root / "ecqa", "default", {
            "train": [ecqa(i) for i in range(1000)], "test": [ecqa(i) for i in range(5)]})),
            "hf_config": "default"},
        "mbpp": {"hf_id": str(write_hf_dataset(root / "mbpp", "full", {
            "train": [mbpp(i) for i in range(374)], "test": [mbpp(i) for i in range(500)]}))},
    }


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
