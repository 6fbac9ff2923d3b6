"""One stage's teacher calls: `generate` answers a call's requests from the cache and the
backend, `Session` keeps the stage's failures file and accounting CSV and checks the failure
budget (`max_failed_share`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from restyle.cache import Cache
from restyle.io import write_csv, write_jsonl
from restyle.teacher import backends, cached
from restyle.teacher.base import (Answer, FailureBudgetExceeded, Request, Result, Run,
                                  TeacherConfig, cost)

log = logging.getLogger(__name__)

ACCOUNTING_FIELDS = ["stage", "backend", "model", "requests", "cached", "sent", "failed",
                     "attempts", "prompt_tokens", "completion_tokens", "cost",
                     "run_prompt_tokens", "run_completion_tokens", "run_cost", "batch_size"]


class Session:
    """One stage's teacher calls: one cache, one price table, one failures file and one
    accounting CSV for every call the stage makes. Both files are rewritten after each call, so
    what a failing call leaves behind is on disk before its error is raised."""

    def __init__(self, cache_path: str | Path, stage: str, *, prices: dict | None = None,
                 failures_path: str | Path | None = None,
                 accounting_path: str | Path | None = None):
        self.cache_path, self.stage, self.prices = cache_path, stage, prices
        self.failures_path, self.accounting_path = failures_path, accounting_path
        self.failures: list[dict] = []
        self.accounting: list[dict] = []

    def ask(self, requests: Sequence[Request], backend_cfg: dict | TeacherConfig,
            step: str | None = None) -> list[Result]:
        """Answer every request (from the cache where possible), in order.

        Failed items come back with ok=False and the reason. Raises TeacherError when the
        stage cannot work at all, FailureBudgetExceeded when more items failed than the
        teacher's `max_failed_share` allows, and BatchPending in Batch API mode.
        """
        if not requests:
            return []
        stage = f"{self.stage}:{step}" if step else self.stage
        cfg = TeacherConfig.of(backend_cfg)
        results, row = generate(requests, cfg, self.cache_path, stage=stage, prices=self.prices)
        failed = [r for r in results if not r.ok]
        self.failures += [{"step": step, **r.to_dict()} if step else r.to_dict() for r in failed]
        self.accounting.append(row)
        self.write()
        _check_budget(stage, results, failed, cfg, self.failures_path)
        return results

    def write(self) -> None:
        if self.failures_path:
            write_jsonl(self.failures_path, self.failures)
        if self.accounting_path:
            write_csv(self.accounting_path, self.accounting, ACCOUNTING_FIELDS)

    def totals(self) -> dict:
        """Tokens and cost of the answers this stage used (cost None when a price is unknown)."""
        costs = [r["cost"] for r in self.accounting]
        return {"prompt_tokens": sum(r["prompt_tokens"] for r in self.accounting),
                "completion_tokens": sum(r["completion_tokens"] for r in self.accounting),
                "cost": None if None in costs else round(float(sum(costs)), 6)}


def _check_budget(stage: str, results: list[Result], failed: list[Result], cfg: TeacherConfig,
                  failures_path) -> None:
    share = cfg.max_failed_share
    if not failed or len(failed) <= share * len(results):
        return
    name = cfg.name or backends.model_name(cfg)
    raise FailureBudgetExceeded(
        f"{stage}: {len(failed)} of {len(results)} items failed after every retry "
        f"({len(failed) / len(results):.0%}), over the failure budget of {share:.0%} "
        f"(config teachers.{name}.max_failed_share); first: {failed[0].error}. The "
        f"{len(results) - len(failed)} answers are cached: a rerun asks only for the failed items"
        + (f"; every failure is listed in {failures_path}" if failures_path else ""))


def generate(requests: Sequence[Request], cfg: dict | TeacherConfig, cache_path: str | Path, *,
             stage: str, prices: dict | None = None) -> tuple[list[Result], dict]:
    """(results in request order, the call's accounting row); writes no file and checks no
    failure budget (`Session.ask` does both)."""
    cfg = TeacherConfig.of(cfg)
    backend = backends.get(cfg.backend)
    cache = Cache(cache_path)
    try:
        model = backend.model_name(cfg)
        keys = [cached.cache_key(r, backend.name, model) for r in requests]
        found = cache.get_many(keys)
        todo = cached.dedupe(requests, keys, found)
        log.info("%s: %d requests, %d cached, %d to send to %s %s", stage, len(requests),
                 len(requests) - sum(k not in found for k in keys), len(todo), backend.name,
                 model)
        run = Run(backend, cfg, cache, prices, len(todo))
        try:
            answers = backend.generate(run, todo) if todo else {}
        finally:
            run.progress.close()
        results = [_result(run, req, key, found.get(key), answers.get(key))
                   for req, key in zip(requests, keys)]
    finally:
        cache.close()
    failures = [r for r in results if not r.ok]
    for r in failures:
        log.warning("%s", r.error)
    if failures:
        log.warning("%s: %d of %d items failed", stage, len(failures), len(results))
    return results, _accounting_row(stage, run, results, todo)


def _result(run: Run, req: Request, key: str, row, answer: Answer | str | None) -> Result:
    if row is not None:
        answer = cached.answer(row, req)
    prov = {"backend": run.backend, "model": run.model, "template": req.template,
            "template_hash": req.template_hash, "params": req.params, "cache_key": key}
    if isinstance(answer, Answer):
        prov |= {"prompt_tokens": answer.prompt_tokens,
                 "completion_tokens": answer.completion_tokens, "batch": answer.batch}
        return Result(req.id, answer.text, answer.parsed, True, None, prov, row is not None)
    error = run.redact(f"item {req.id}: {answer}")
    return Result(req.id, None, None, False, error, prov, False)


def _accounting_row(stage: str, run: Run, results: list[Result], todo: dict) -> dict:
    ok = [r for r in results if r.ok]
    prompt = sum(r.provenance["prompt_tokens"] for r in ok)
    completion = sum(r.provenance["completion_tokens"] for r in ok)
    costs = [cost(run.prices, run.model, r.provenance["prompt_tokens"],
                  r.provenance["completion_tokens"], r.provenance["batch"]) for r in ok]
    return {"stage": stage, "backend": run.backend, "model": run.model, "requests": len(results),
            "cached": sum(r.cached for r in results), "sent": len(todo),
            "failed": len(results) - len(ok), "attempts": run.attempts,
            "prompt_tokens": prompt, "completion_tokens": completion,
            "cost": None if None in costs else round(sum(costs), 6),
            "run_prompt_tokens": run.prompt_tokens, "run_completion_tokens": run.completion_tokens,
            "run_cost": None if run.cost is None else round(run.cost, 6),
            "batch_size": run.batch_size}
