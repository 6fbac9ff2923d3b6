"""OpenAI's Batch API for the openai backend (config `batch: true`): half price, results within
24 h. Submitted batch ids are kept in the response cache, so a run that stops waiting
(`batch_wait_s`, BatchPending) or fails is picked up by the next; requests that failed inside a
batch are resubmitted up to `batch_resubmits` times."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from restyle.teacher import cached
from restyle.teacher.base import Answer, BatchPending, Request, Run
from restyle.teacher.openai_backend import api_body, parse_completion

log = logging.getLogger(__name__)


async def _collect(run: Run, client, batch, todo: dict[str, Request],
                   keys: list[str]) -> None:
    """Cache the accepted answers of a finished batch (`keys` were submitted in it); note why
    the others failed."""
    from openai.types.chat import ChatCompletion

    seen = set()
    for file_id in (batch.output_file_id, batch.error_file_id):
        if not file_id:
            continue
        content = await client.files.content(file_id)
        for line in content.text.splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            key, response = row.get("custom_id"), row.get("response") or {}
            body = response.get("body") or {}
            req = todo.get(key)
            if req is None:  # a request this stage no longer makes
                continue
            seen.add(key)
            reply = None
            if response.get("status_code") == 200:
                reply = parse_completion(ChatCompletion.construct(**body))
            if reply is None:
                error = row.get("error") or body.get("error") or {}
                reason = f"failed in batch {batch.id}: {error.get('message', 'no reply')}"
            else:
                text, prompt, completion = reply
                outcome = run.accept(key, req, text, prompt or 0, completion or 0, batch=True)
                if isinstance(outcome, Answer):
                    continue
                reason = f"batch {batch.id}: {outcome}"
            run.cache.set_batch_error(key, batch.id, run.redact(reason))
    if batch.status != "completed":
        errors = getattr(batch.errors, "data", None) or []
        why = "; ".join(f"{e.code}: {e.message}" for e in errors) or "no reason given"
        for key in set(keys) - seen:  # a failed batch answers nothing and lists no lines
            run.cache.set_batch_error(key, batch.id,
                                      run.redact(f"batch {batch.id} ended {batch.status} ({why})"))
        log.warning("batch %s ended %s (%s); its unanswered requests will be resubmitted",
                    batch.id, batch.status, why)


async def _submit(run: Run, client, todo: dict[str, Request]) -> str:
    lines = [json.dumps({"custom_id": k, "method": "POST", "url": "/v1/chat/completions",
                         "body": api_body(run, r)}, ensure_ascii=False) for k, r in todo.items()]
    upload = await client.files.create(file=("batch.jsonl", "\n".join(lines).encode()),
                                       purpose="batch")
    batch = await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
    run.cache.add_batch(batch.id, list(todo))
    log.info("submitted batch %s with %d requests", batch.id, len(todo))
    return batch.id


async def answer(run: Run, client, todo: dict[str, Request]) -> dict[str, Answer | str]:
    """An Answer, or why there is none, for each request of `todo`: collects the batches the
    cache lists as open, submits what is neither answered nor in one, and polls until none is
    left or `batch_wait_s` is over (BatchPending)."""
    cfg = run.cfg
    deadline = time.monotonic() + cfg.batch_wait_s
    max_submissions = 1 + cfg.batch_resubmits
    failed: dict[str, str] = {}
    while True:
        waiting: dict[str, list[str]] = {}
        for batch_id, keys in run.cache.open_batches().items():
            batch = await client.batches.retrieve(batch_id)
            if batch.status in ("completed", "failed", "expired", "cancelled"):
                await _collect(run, client, batch, todo, keys)
                run.cache.mark_collected(batch_id)
            else:
                waiting[batch_id] = keys
        in_batch = {k for keys in waiting.values() for k in keys}
        answered = run.cache.get_many(list(todo))
        resubmit = {}
        for key, req in todo.items():
            if key in answered or key in in_batch or key in failed:
                continue
            if run.cache.submissions(key) >= max_submissions:
                failed[key] = (f"{run.cache.last_batch_error(key)} "
                               f"(submitted {max_submissions} times)")
            else:
                resubmit[key] = req
        if resubmit:
            waiting[await _submit(run, client, resubmit)] = list(resubmit)
        if not waiting:
            break
        if time.monotonic() >= deadline:
            raise BatchPending(f"batch(es) {', '.join(waiting)} still running; "
                               "rerun later to collect the results")
        await asyncio.sleep(cfg.batch_poll_s)
    run.progress.update(len(todo))
    answered = run.cache.get_many(list(todo))
    return {k: failed[k] if k in failed else cached.answer(answered[k], todo[k]) for k in todo}
