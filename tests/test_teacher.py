"""The teacher client against a real HTTP server on 127.0.0.1 (tests/chat_server.py) and a real
local model (the bundled SmolLM2)."""

from __future__ import annotations

import csv
import json
import logging
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from chat_server import ChatServer  # noqa: E402

from restyle import teacher  # noqa: E402
from restyle.teacher import openai_backend  # noqa: E402
from restyle.teacher import (BatchPending, FailureBudgetExceeded, Request,  # noqa: E402
                             TeacherError, estimate, template_hash)



def generate(reqs, cfg, cache, *, stage="s", **kw):
    """One teacher call as a stage of its own makes it (its Session's files are `kw`)."""
    return teacher.Session(cache, stage, **kw).ask(reqs, cfg)


SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
PRICES = {"m": {"input": 1.0, "output": 2.0}}


def requests(names, schema=None, params=None):
    return [Request(id=f"id-{n}", messages=[{"role": "user", "content": n}], template="t",
                    template_hash=template_hash("{q}"), params=params or {"max_tokens": 16},
                    schema=schema) for n in names]


def config(server, **extra):
    return {"backend": "openai", "model": "m", "base_url": server.url, "timeout_s": 0.5,
            "backoff_s": 0.02, "max_in_flight": 8, **extra}


def test_faults_end_answered_or_failed_with_reason_and_rerun_sends_nothing(tmp_path):
    faults = {"rate": ["429@0.3", "429"], "err": ["500", "500"], "drop": ["drop"],
              "slow": ["slow"], "malformed": ["malformed"], "bad400": ["400"],
              "hopeless": ["500"] * 10}
    names = [*faults, "plain-1", "plain-2"]
    with ChatServer(faults, slow_s=1.5) as server:
        cfg = config(server, max_retries=3, max_failed_share=0.25)
        start = time.monotonic()
        results = generate(requests(names), cfg, tmp_path / "cache.db", stage="s",
                           failures_path=tmp_path / "failed.jsonl",
                           accounting_path=tmp_path / "acct.csv", prices=PRICES)
        assert time.monotonic() - start >= 0.3  # Retry-After was honoured
        by_id = {r.id: r for r in results}
        assert [r.id for r in results] == [f"id-{n}" for n in names]
        for n in ["rate", "err", "drop", "slow", "malformed", "plain-1", "plain-2"]:
            assert by_id[f"id-{n}"].ok and by_id[f"id-{n}"].text == f"echo: {n}"
        assert "id-bad400" in by_id["id-bad400"].error and "400" in by_id["id-bad400"].error
        assert server.count("bad400") == 1  # a 400 is not worth retrying
        assert "gave up after 4 attempts" in by_id["id-hopeless"].error
        assert "id-hopeless" in by_id["id-hopeless"].error
        failed = [json.loads(line) for line in (tmp_path / "failed.jsonl").read_text().splitlines()]
        assert {f["id"] for f in failed} == {"id-bad400", "id-hopeless"}
        assert all(f["error"] for f in failed)
        [row] = csv.DictReader((tmp_path / "acct.csv").open())
        assert (row["requests"], row["cached"], row["sent"], row["failed"]) == ("9", "0", "9", "2")
        # attempts count requests that never reached the server too (a stale pooled connection)
        assert int(row["attempts"]) >= len(server.requests) and float(row["cost"]) > 0

        sent_before = len(server.requests)
        again = generate(requests(names), cfg, tmp_path / "cache.db", stage="s",
                         accounting_path=tmp_path / "acct.csv", prices=PRICES)
        resent = server.requests[sent_before:]
        assert set(resent) == {"bad400", "hopeless"}  # only the failed ones again
        assert [r.id for r in again if not r.cached] == ["id-bad400", "id-hopeless"]
        assert again[names.index("bad400")].ok  # the 400 was a one-off
        [row] = csv.DictReader((tmp_path / "acct.csv").open())
        assert (row["cached"], row["sent"]) == ("7", "2")
        assert float(row["run_cost"]) < float(row["cost"])  # cached answers cost nothing now


def test_schema_retries_then_records_failure(tmp_path):
    faults = {"fixable": ["badschema", "notjson"], "never": ["notjson"] * 5}
    with ChatServer(faults) as server:
        results = generate(requests(["fixable", "never", "ok"], schema=SCHEMA),
                           config(server, schema_retries=2, max_failed_share=0.5),
                           tmp_path / "c.db", stage="s",
                           failures_path=tmp_path / "failed.jsonl")
        fixable, never, ok = results
        assert fixable.ok and fixable.parsed == {"answer": "fixable"}
        assert server.count("fixable") == 3 and server.count("never") == 3
        assert not never.ok and "id-never" in never.error and "not JSON" in never.error
        assert ok.parsed == {"answer": "ok"}
        assert [json.loads(x)["id"] for x in (tmp_path / "failed.jsonl").read_text().splitlines()] \
            == ["id-never"]


def test_provenance_estimate_and_duplicates(tmp_path):
    with ChatServer() as server:
        cfg = config(server)
        reqs = requests(["a", "b", "a"])  # the same request twice is sent once
        est = estimate(reqs, cfg, tmp_path / "c.db", PRICES)
        assert (est["requests"], est["to_send"], est["counter"]) == (3, 2, "approx")
        # every request, as the accounting counts them, and the two a run would send
        assert (est["completion_tokens"], est["run_completion_tokens"]) == (48, 32)
        assert est["run_prompt_tokens"] == 2 * teacher.approx_tokens(reqs[0].messages)
        assert est["run_batch_cost"] == est["run_cost"] / 2 > 0
        results = generate(reqs, cfg, tmp_path / "c.db", stage="s")
        assert server.requests == ["a", "b"] or server.requests == ["b", "a"]
        prov = results[0].provenance
        assert prov["backend"] == "openai" and prov["model"] == "m" and prov["template"] == "t"
        assert prov["template_hash"] == template_hash("{q}") and prov["params"] == {"max_tokens": 16}
        assert prov["prompt_tokens"] > 0 and prov["completion_tokens"] > 0
        assert prov["cache_key"] == results[2].provenance["cache_key"]
        assert estimate(reqs, cfg, tmp_path / "c.db", PRICES)["to_send"] == 0
        # a different model, parameter or schema is a different request
        assert estimate(requests(["a"], params={"max_tokens": 17}), cfg, tmp_path / "c.db")[
            "to_send"] == 1
        assert estimate(requests(["a"], schema=SCHEMA), cfg, tmp_path / "c.db")["to_send"] == 1


def test_rate_limits_space_requests(tmp_path, monkeypatch):
    monkeypatch.setattr(openai_backend, "WINDOW_S", 0.4)  # a short "minute"
    with ChatServer() as server:
        start = time.monotonic()
        generate(requests(["a", "b", "c", "d", "e"]), config(server, requests_per_minute=2),
                 tmp_path / "c.db", stage="s")
        assert time.monotonic() - start >= 0.8  # 2 + 2 + 1 requests: three windows
        start = time.monotonic()
        # ~4 prompt tokens + 16 max_tokens each: two requests fit in 45 tokens, not three
        generate(requests(["f", "g", "h"]), config(server, tokens_per_minute=45),
                 tmp_path / "c.db", stage="s")
        assert time.monotonic() - start >= 0.4


CLIENT = """
import sys
from restyle.teacher import Request, Session
url, cache = sys.argv[1], sys.argv[2]
reqs = [Request(f"id-{i}", [{"role": "user", "content": f"k{i}"}], "t", "h", {"max_tokens": 8})
        for i in range(40)]
Session(cache, "s").ask(reqs, {"backend": "openai", "model": "m", "base_url": url,
                               "max_in_flight": 2})
"""


def test_kill_mid_run_loses_only_in_flight(tmp_path):
    cache = tmp_path / "c.db"
    with ChatServer(latency=0.05) as server:
        proc = subprocess.Popen([sys.executable, "-c", CLIENT, server.url, str(cache)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:  # the file exists a moment before the client has created its tables
                with sqlite3.connect(cache, timeout=10) as db:
                    if db.execute("SELECT COUNT(*) FROM responses").fetchone()[0] >= 10:
                        break
            except sqlite3.OperationalError:
                pass
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with sqlite3.connect(cache, timeout=10) as db:
            committed = db.execute("SELECT COUNT(*) FROM responses").fetchone()[0]
        assert 10 <= committed < 40
        answered = set(server.requests)
        sent_before = len(server.requests)
        results = generate([Request(f"id-{i}", [{"role": "user", "content": f"k{i}"}], "t", "h",
                                    {"max_tokens": 8}) for i in range(40)],
                           config(server), cache, stage="s")
        assert all(r.ok for r in results)
        resent = server.requests[sent_before:]
        assert len(resent) == 40 - committed
        # only requests in flight at the kill (answered by the server, never committed) repeat
        assert len(set(resent) & answered) <= 2


def test_batch_api_submit_collect_resubmit(tmp_path):
    faults = {"flaky": ["batchfail"], "broken": ["batchfail"] * 5}
    reqs = requests(["a", "flaky", "broken"])
    with ChatServer(faults, batch_pending_polls=1) as server:
        cfg = config(server, batch=True, batch_resubmits=1, max_failed_share=0.5)
        with pytest.raises(BatchPending, match="rerun later"):
            generate(reqs, cfg, tmp_path / "c.db", stage="s")  # submitted, still running
        # a later run collects, resubmits what failed inside the batch, waits for that too
        waiting = {**cfg, "batch_wait_s": 5, "batch_poll_s": 0.05}
        a, flaky, broken = generate(reqs, waiting, tmp_path / "c.db", stage="s",
                                    accounting_path=tmp_path / "a.csv", prices=PRICES)
        assert a.ok and a.provenance["batch"] and flaky.ok and flaky.text == "echo: flaky"
        assert not broken.ok and "id-broken" in broken.error and "server had an error" in broken.error
        assert sorted(server.requests) == ["a", "broken", "broken", "flaky", "flaky"]
        [row] = csv.DictReader((tmp_path / "a.csv").open())
        full = sum(PRICES["m"]["input"] * r.provenance["prompt_tokens"]
                   + PRICES["m"]["output"] * r.provenance["completion_tokens"]
                   for r in (a, flaky)) / 1e6
        assert float(row["cost"]) == pytest.approx(full / 2, abs=1e-6)  # half price
        # a rerun sends nothing: answers are cached, `broken` has used its resubmissions
        again = generate(reqs, waiting, tmp_path / "c.db", stage="s")
        assert [r.cached for r in again] == [True, True, False] and len(server.requests) == 5


def test_api_key_never_written_logged_or_raised(tmp_path, monkeypatch, caplog):
    secret = "sk-test-PLANTED-0123456789abcdef"
    monkeypatch.setenv("RESTYLE_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    faults = {"echoed": ["auth"], "fails": ["500"] * 5, "bad": ["notjson"] * 5}
    with ChatServer(faults) as server:
        cfg = config(server, api_key_env="RESTYLE_TEST_KEY", max_retries=1, max_failed_share=1)
        results = generate(requests(["fails", "ok"]) + requests(["bad"], schema=SCHEMA), cfg,
                           tmp_path / "c.db", stage="s", failures_path=tmp_path / "f.jsonl",
                           accounting_path=tmp_path / "a.csv", prices=PRICES)
        assert [r.ok for r in results] == [False, True, False]
        estimate(requests(["x"]), cfg, tmp_path / "c.db", PRICES)
        with pytest.raises(TeacherError) as raised:  # the server echoes the key in its 401
            generate(requests(["echoed"]), cfg, tmp_path / "c.db", stage="s")
    texts = [str(raised.value), repr(raised.value), caplog.text,
             *(json.dumps(r.to_dict()) for r in results)]
    assert "401" in texts[0] and "***" in texts[0]
    assert not [t for t in texts if secret in t]
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and not [p for p in written if secret.encode() in p.read_bytes()]


def test_missing_key_variable_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("RESTYLE_NO_SUCH_KEY", raising=False)
    with ChatServer() as server, pytest.raises(TeacherError) as err:
        generate(requests(["a"]), config(server, api_key_env="RESTYLE_NO_SUCH_KEY", name="api"),
                 tmp_path / "c.db", stage="s")
    # which teacher, as every other teacher error says, then which variable
    assert str(err.value) == (f"teacher 'api' (model m at {server.url}): config api_key_env: "
                              "environment variable RESTYLE_NO_SUCH_KEY is not set")


def test_local_backend_generates_batched_and_caches(tmp_path, smollm2_manifest):
    prompts = ["What is 2+2?", "Name a colour.", "What is the capital of France?"]
    reqs = [Request(f"p{i}", [{"role": "user", "content": p}], "t", "h", {"max_tokens": 12})
            for i, p in enumerate(prompts)]
    cfg = {"backend": "local", "manifest": str(smollm2_manifest), "batch_size": 2}
    est = estimate(reqs, cfg, tmp_path / "c.db")
    assert est["to_send"] == 3 and est["prompt_tokens"] > 30 and est["completion_tokens"] == 36
    results = generate(reqs, cfg, tmp_path / "c.db", stage="s", accounting_path=tmp_path / "a.csv")
    assert all(r.ok and r.text.strip() for r in results)
    assert all(0 < r.provenance["completion_tokens"] <= 12 for r in results)
    assert sum(r.provenance["prompt_tokens"] for r in results) == est["prompt_tokens"]
    assert results[0].provenance["model"] == "bundled:smollm2-135m-instruct"
    # left padding: batched greedy replies equal one-at-a-time ones
    alone = generate(reqs, {**cfg, "batch_size": 1}, tmp_path / "c1.db", stage="s")
    assert [r.text for r in alone] == [r.text for r in results]
    again = generate(reqs, cfg, tmp_path / "c.db", stage="s")
    assert all(r.cached for r in again) and [r.text for r in again] == [r.text for r in results]


def test_local_backend_runs_the_shared_prompt_opening_once(tmp_path, smollm2_manifest):
    """Requests that open alike (a stage's system turn and instructions) compute that opening
    once: every reply is the one plain greedy generation gives each whole prompt alone."""
    from restyle import models

    system = "You rewrite questions. Keep every fact and number; change only the wording."
    prompts = ["What is 2+2?", "Name a colour that the sky can have.", "Is 17 prime?"]
    messages = [[{"role": "system", "content": system}, {"role": "user", "content": p}]
                for p in prompts]
    reqs = [Request(f"p{i}", m, "t", "h", {"max_tokens": 10}) for i, m in enumerate(messages)]
    cfg = {"backend": "local", "manifest": str(smollm2_manifest), "batch_size": 2}
    results = generate(reqs, cfg, tmp_path / "c.db", stage="s")
    model, tok = models.load(smollm2_manifest)
    for r, m in zip(results, messages):
        ids = tok.apply_chat_template(m, add_generation_prompt=True, return_tensors="pt",
                                      return_dict=True)["input_ids"]
        out = model.generate(input_ids=ids, max_new_tokens=10, do_sample=False, temperature=None,
                             top_p=None, top_k=None, pad_token_id=tok.pad_token_id)
        assert r.text == tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        assert r.provenance["prompt_tokens"] == ids.shape[1]


def closed_port() -> int:
    import socket

    with socket.socket() as s:  # bound, never listening: connecting is refused
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_endpoint_stops_the_stage_at_once_naming_teacher_and_url(tmp_path):
    url = f"http://127.0.0.1:{closed_port()}/v1"
    cfg = {"backend": "openai", "model": "m", "name": "gpt", "base_url": url}  # default retries
    start = time.monotonic()
    with pytest.raises(TeacherError) as raised:
        generate(requests([f"q{i}" for i in range(32)]), cfg, tmp_path / "c.db", stage="s",
                 failures_path=tmp_path / "f.jsonl")
    assert time.monotonic() - start < 5  # not 32 items x the retry schedule
    assert "teacher 'gpt' (model m at " + url + "): cannot connect" in str(raised.value)
    assert not isinstance(raised.value, FailureBudgetExceeded)


def test_the_same_4xx_on_every_request_stops_the_stage(tmp_path):
    names = [f"q{i}" for i in range(40)]
    with ChatServer({n: ["400"] for n in names}) as server:
        cfg = config(server, name="gpt", max_in_flight=2)
        with pytest.raises(TeacherError, match=r"teacher 'gpt' \(model m at http://127\.0\.0\.1:"
                                               r"\d+/v1\): HTTP 400 on the first 3 requests"):
            generate(requests(names), cfg, tmp_path / "c.db", stage="s")
        assert len(server.requests) <= 4  # three rejections, perhaps one more in flight


def test_a_4xx_after_accepted_replies_is_one_failed_item(tmp_path):
    with ChatServer({"bad": ["400"]}) as server:
        names = ["a", "b", "bad", "c"]
        results = generate(requests(names), config(server, max_in_flight=1, max_failed_share=0.25),
                           tmp_path / "c.db", stage="s")
    assert [r.ok for r in results] == [True, True, False, True]


def test_failure_budget_fails_the_stage_keeps_failures_and_answers(tmp_path):
    names = [f"q{i:02d}" for i in range(40)]
    transient = {n: ["500"] for n in names[:12]}  # 30 % meet a fault that a retry fixes
    with ChatServer(transient) as server:
        results = generate(requests(names), config(server, max_retries=2), tmp_path / "c.db",
                           stage="s")  # default budget 5 %
        assert all(r.ok for r in results) and len(server.requests) == 52

    hopeless = {n: ["500"] * 3 for n in names[:3]}  # 3 of 40 = 7.5 % fail for good
    cache, failures = tmp_path / "c2.db", tmp_path / "failures.jsonl"
    with ChatServer(hopeless) as server:
        cfg = config(server, name="gpt", max_retries=2)
        with pytest.raises(FailureBudgetExceeded) as raised:
            generate(requests(names), cfg, cache, stage="s", failures_path=failures,
                     accounting_path=tmp_path / "a.csv")
        message = str(raised.value)
        assert "3 of 40 items failed after every retry (8%), over the failure budget of 5%" in message
        assert "teachers.gpt.max_failed_share" in message and str(failures) in message
        assert sorted(json.loads(x)["id"] for x in failures.open()) == ["id-q00", "id-q01", "id-q02"]
        [row] = csv.DictReader((tmp_path / "a.csv").open())
        assert (row["failed"], row["sent"]) == ("3", "40")

        sent = len(server.requests)  # the faults are used up: the rerun succeeds
        assert all(r.ok for r in generate(requests(names), cfg, cache, stage="s"))
        assert sorted(server.requests[sent:]) == ["q00", "q01", "q02"]  # only the failed ones

    with ChatServer(hopeless) as server:  # within a larger budget the stage goes on
        results = generate(requests(names), config(server, max_retries=2, max_failed_share=0.1),
                           tmp_path / "c3.db", stage="s")
        assert sum(not r.ok for r in results) == 3


def test_zero_budget_fails_on_one_failure(tmp_path):
    with ChatServer({"q1": ["500"] * 2}) as server:
        with pytest.raises(FailureBudgetExceeded, match="1 of 3 items failed"):
            generate(requests(["q0", "q1", "q2"]), config(server, max_retries=1,
                                                          max_failed_share=0),
                     tmp_path / "c.db", stage="s")


@pytest.mark.parametrize("ending", ["failed", "expired"])
def test_failed_and_expired_batches_are_resubmitted_then_obey_the_budget(tmp_path, ending):
    names = ["a", "b", "c", "d"]
    with ChatServer(batch_endings=[ending]) as server:  # the second submission completes
        cfg = config(server, batch=True, batch_wait_s=10, batch_poll_s=0.05, batch_resubmits=1)
        results = generate(requests(names), cfg, tmp_path / "c.db", stage="s")
        assert all(r.ok and r.provenance["batch"] for r in results)
        answered_first = 0 if ending == "failed" else 2
        assert len(server.requests) == answered_first + (4 - answered_first)
        assert len(server.batches) == 2

    failures = tmp_path / "f.jsonl"
    with ChatServer(batch_endings=[ending] * 2) as server:  # every submission ends badly
        cfg = config(server, batch=True, batch_wait_s=10, batch_poll_s=0.05, batch_resubmits=1)
        with pytest.raises(FailureBudgetExceeded) as raised:
            generate(requests(names), cfg, tmp_path / "c2.db", stage="s",
                     failures_path=failures)
        failed = [json.loads(x) for x in failures.open()]
        expect = 4 if ending == "failed" else 1  # expired: half of 4, then half of the other 2
        assert len(failed) == expect and f"{expect} of 4 items failed" in str(raised.value)
        why = "scripted batch failure" if ending == "failed" else "This request expired"
        assert all(why in f["error"] and "(submitted 2 times)" in f["error"] for f in failed)


def test_a_dict_never_validated_gets_the_schema_defaults():
    """The teacher restates no default: config/schema.yaml's are the ones a bare dict gets."""
    import yaml

    schema = yaml.safe_load((Path(__file__).parents[1] / "config/schema.yaml").read_text())
    keys = schema["properties"]["teachers"]["additionalProperties"]["properties"]
    defaults = {k: v["default"] for k, v in keys.items()}
    got = teacher.settings({"backend": "openai", "model": "m", "timeout_s": 3})
    assert got == {**defaults, "backend": "openai", "model": "m", "timeout_s": 3}
    # the typed record holds the schema's keys and the two the rules add (teacher_backend)
    record = teacher.TeacherConfig.of({"backend": "local", "manifest": "m.json"})
    assert asdict(record) == {**defaults, "backend": "local", "name": None, "manifest": "m.json"}
    assert record.schema_tries == 1 + keys["schema_retries"]["default"]
    assert teacher.TeacherConfig.of(record) is record
    with pytest.raises(TeacherError, match="unknown key.s. api_key"):
        teacher.TeacherConfig.of({"backend": "openai", "model": "m", "api_key": "sk-1"})


def test_cache_keys_never_change(tmp_path, smollm2_manifest):
    """The teacher cache is where paid answers live: a key computed differently for the same
    request and config asks, and pays, again. Both keys were computed at main 4876afe, before
    TeacherConfig; they must never change."""
    schema_request = Request(
        "q1", [{"role": "system", "content": "Rewrite: keep the facts."},
               {"role": "user", "content": "Combien font 2+2 ? 答案"}], "rewrite",
        template_hash("{q}"), {"max_tokens": 4, "temperature": 0.0, "seed": 0}, SCHEMA)
    with ChatServer() as server:
        cfg = {"backend": "openai", "model": "gpt-4o", "base_url": server.url, "name": "gpt",
               "max_failed_share": 1}
        [result] = generate([schema_request], cfg, tmp_path / "c.db")
    assert result.provenance["cache_key"] == (
        "99ea996c1adf015392f4f7f54a4102f848013b0273b87e9c1e2c9b3f33d30643")
    plain = Request("q2", [{"role": "user", "content": "What is 2+2?"}], "t",
                    template_hash("{q}"), {"max_tokens": 4})
    cfg = {"backend": "local", "manifest": str(smollm2_manifest), "name": "local"}
    [result] = generate([plain], cfg, tmp_path / "c2.db")
    assert result.provenance["cache_key"] == (
        "2edf407a047d49720e3fa8415e78abb0d566662ac3b9dbbfe156464b803b2446")
