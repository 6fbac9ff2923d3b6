"""The openai backend: anything speaking OpenAI's chat completions over HTTP (OpenAI, vLLM, a
llama.cpp server), with retries, rate limits and the loud stops restyle.teacher describes; the
Batch API is restyle.teacher.batch_api. Settings are config `teachers.{name}`
(config/schema.yaml): base_url, api_key_env, timeout_s, max_in_flight, requests_per_minute,
tokens_per_minute, max_retries, backoff_s, backoff_max_s, batch and the batch_* keys."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import os
import random
import socket
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path

from restyle.teacher.base import (DEFAULT_MAX_TOKENS, Answer, Backend, Request, Run,
                                  TeacherConfig, TeacherError, approx_tokens)

log = logging.getLogger(__name__)

WINDOW_S = 60  # the "minute" of requests_per_minute and tokens_per_minute
# Worth another try: rate limited, request timeout, conflict, server errors.
RETRY_STATUS = {408, 409, 429}
# Wrong key, no access, no such model or endpoint: every item would fail the same way.
FATAL_STATUS = {401, 403, 404}
# The same other 4xx on this many requests (or all of a smaller call), none accepted: the server
# rejects the request itself (a parameter it does not know), so the rest would fail alike.
REJECTIONS_TO_STOP = 3
# OpenAI's encoding files for its chat models (o200k_base, cl100k_base) ship with restyle, in
# tiktoken's cache layout: each is named by the SHA-1 of the address tiktoken would fetch it
# from, and tiktoken checks its SHA-256 before use. Counting needs no network, on a cluster node
# neither.
ENCODINGS = Path(__file__).resolve().parents[1] / "encodings"


class _Window:
    """At most `limit` units in any WINDOW_S; a single request above the limit goes alone."""

    def __init__(self, limit: int):
        self.limit, self.events = limit, deque()
        self.used = 0  # sum of the amounts in `events`: no re-summing thousands per request

    async def take(self, amount: int) -> None:
        amount = min(amount, self.limit)
        while True:
            now = time.monotonic()
            while self.events and self.events[0][0] <= now - WINDOW_S:
                self.used -= self.events.popleft()[1]
            if self.used + amount <= self.limit:
                self.events.append((now, amount))
                self.used += amount
                return
            await asyncio.sleep(self.events[0][0] + WINDOW_S - now)


class _Limits:
    def __init__(self, cfg: TeacherConfig):
        self.in_flight = asyncio.Semaphore(cfg.max_in_flight)
        rpm, tpm = cfg.requests_per_minute, cfg.tokens_per_minute
        self.rpm, self.tpm = _Window(rpm) if rpm else None, _Window(tpm) if tpm else None

    @contextlib.asynccontextmanager
    async def slot(self, tokens: int):
        async with self.in_flight:
            if self.rpm:
                await self.rpm.take(1)
            if self.tpm:
                await self.tpm.take(tokens)
            yield


class _GaveUp(Exception):
    pass


def retry_after(headers) -> float | None:
    """Seconds the server asked us to wait (Retry-After-Ms, Retry-After seconds or HTTP date)."""
    for name, scale in (("retry-after-ms", 1000), ("retry-after", 1)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return max(0.0, email.utils.mktime_tz(parsed) - time.time())
    return None


def api_body(run: Run, req: Request) -> dict:
    body = {"model": run.model, "messages": req.messages, **req.params}
    if req.schema is not None:
        body["response_format"] = response_format(req.schema)
    return body


def response_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}


def parse_completion(completion) -> tuple[str, int | None, int | None] | None:
    """(text, prompt tokens, completion tokens) from a chat completion, None if it has no text."""
    try:
        text = completion.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return None
    if not isinstance(text, str):
        return None
    usage = getattr(completion, "usage", None)
    return text, getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)


async def _call(run: Run, client, limits: _Limits, req: Request) -> tuple[str, int, int]:
    """One reply for `req`, retrying transient failures; raises _GaveUp after the last."""
    import openai

    cfg = run.cfg
    tries = 1 + cfg.max_retries
    base, cap = cfg.backoff_s, cfg.backoff_max_s
    tokens = approx_tokens(req.messages) + req.params.get("max_tokens", DEFAULT_MAX_TOKENS)
    reason = ""
    for attempt in range(tries):
        wait = None
        async with limits.slot(tokens):
            run.attempts += 1
            try:
                completion = await client.chat.completions.create(**api_body(run, req))
            except openai.APIStatusError as e:
                reason = e.message  # "Error code: 429 - <the server's message>"
                if e.status_code in FATAL_STATUS:
                    raise run.stop(f"HTTP {e.status_code} on item {req.id}: {reason}") from None
                if e.status_code not in RETRY_STATUS and e.status_code < 500:
                    _rejected(run, e.status_code, req, reason)
                    raise _GaveUp(reason) from None
                wait = retry_after(e.response.headers)
            except openai.APITimeoutError:
                reason = f"timed out after {cfg.timeout_s} s"
            except openai.APIConnectionError as e:
                reason = f"connection error ({e.__cause__ or e})"
                if run.replies == 0 and (cause := _unreachable(e)):
                    raise run.stop(f"cannot connect ({cause})") from None
            except json.JSONDecodeError as e:
                reason = f"malformed JSON response body ({e.msg})"
            else:
                reply = parse_completion(completion)
                if reply is not None:
                    run.replies += 1
                    text, prompt, completion_tokens = reply
                    return (text, approx_tokens(req.messages) if prompt is None else prompt,
                            len(text) // 4 if completion_tokens is None else completion_tokens)
                reason = "response has no choices[0].message.content"
        if attempt + 1 < tries:
            backoff = min(cap, base * 2 ** attempt) * random.uniform(0.5, 1.0)
            log.info("item %s: %s; retry %d/%d", req.id, run.redact(reason), attempt + 1, tries - 1)
            await asyncio.sleep(backoff if wait is None else max(wait, backoff))
    raise _GaveUp(f"gave up after {tries} attempts, last: {reason}")


def _unreachable(error: BaseException) -> BaseException | None:
    """The root cause when no connection could be made at all (refused, unknown host), as
    opposed to one dropped or timed out mid-request, which a retry may fix."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, (ConnectionRefusedError, socket.gaierror)):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


def _rejected(run: Run, status: int, req: Request, reason: str) -> None:
    """Count a non-retryable 4xx; stop the stage when the server rejects every request alike."""
    run.rejections[status] = run.rejections.get(status, 0) + 1
    if run.replies == 0 and run.rejections[status] >= min(REJECTIONS_TO_STOP, run.total):
        raise run.stop(f"HTTP {status} on the first {run.rejections[status]} requests, none "
                       f"accepted (last, item {req.id}: {reason})")


async def _ask(run: Run, client, limits: _Limits, key: str, req: Request) -> Answer | str:
    try:
        for _ in range(run.cfg.schema_tries):
            outcome = run.accept(key, req, *await _call(run, client, limits, req))
            if isinstance(outcome, Answer):
                return outcome
            log.info("item %s: %s; asking again", req.id, outcome)
        return f"no acceptable reply in {run.cfg.schema_tries} tries, last: {outcome}"
    except _GaveUp as e:
        return str(e)
    finally:
        run.progress.update()


def _client(run: Run):
    import openai

    cfg = run.cfg
    if cfg.api_key_env and not run.secret:
        raise TeacherError(f"{run.describe()}: config api_key_env: environment variable "
                           f"{cfg.api_key_env} is not set")
    # the SDK's own retries are off: ours honour the config and count attempts
    return openai.AsyncOpenAI(api_key=run.secret or "not-needed", base_url=cfg.base_url,
                              timeout=cfg.timeout_s, max_retries=0)


async def _openai(run: Run, todo: dict[str, Request]) -> dict[str, Answer | str]:
    import openai

    from restyle.teacher import batch_api

    async with _client(run) as client:
        if run.cfg.batch:
            try:
                return await batch_api.answer(run, client, todo)
            except openai.APIError as e:  # batch ids are in the cache: a rerun picks up from here
                raise run.stop(f"Batch API: {e}") from None
        limits = _Limits(run.cfg)
        try:
            async with asyncio.TaskGroup() as group:  # a fatal error cancels the rest
                tasks = {k: group.create_task(_ask(run, client, limits, k, r))
                         for k, r in todo.items()}
        except ExceptionGroup as eg:
            raise eg.exceptions[0] from None
    return {k: t.result() for k, t in tasks.items()}


class OpenAI(Backend):
    name = "openai"
    requires_model = True
    structured_output = True  # JSON schema replies through `response_format`
    billed = True

    def generate(self, run: Run, todo: dict[str, Request]) -> dict[str, Answer | str]:
        return asyncio.run(_openai(run, todo))

    def token_counter(self, cfg: TeacherConfig) -> tuple[str, Callable[[Request], int]]:
        """"tiktoken", OpenAI's tokenizer for the model (`tiktoken_encoding`) over the messages
        and the JSON schema sent as `response_format`, which is billed as input too; else
        "approx", ~4 characters a token of the same."""
        encoding = tiktoken_encoding(self.model_name(cfg))
        if encoding is None:
            return "approx", lambda request: (approx_tokens(request.messages)
                                              + len(_schema_text(request)) // 4)

        def tokens(text: str) -> int:
            return len(encoding.encode(text, disallowed_special=()))  # "<|endoftext|>" is text

        # OpenAI's published count for chat models: 3 tokens of markup a message, 3 priming the
        # reply
        return "tiktoken", lambda request: 3 + tokens(_schema_text(request)) + sum(
            3 + tokens(m["role"]) + tokens(str(m.get("content", ""))) for m in request.messages)


def _schema_text(request: Request) -> str:
    return json.dumps(response_format(request.schema)) if request.schema is not None else ""


def tiktoken_encoding(model: str):
    """tiktoken's encoding for an OpenAI model name (gpt-4o, gpt-4o-mini, gpt-4.1, gpt-5, o1, o3,
    o4-mini: o200k_base; gpt-4, gpt-3.5-turbo: cl100k_base); None for another name (a vLLM
    server's model) or when the encoding cannot be had (TIKTOKEN_CACHE_DIR set elsewhere,
    without the file, and no network)."""
    import tiktoken

    try:
        name = tiktoken.encoding_name_for_model(model)
    except KeyError:
        return None
    os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(ENCODINGS))  # a cache the user set wins
    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # noqa: BLE001 - requests' or tiktoken's own error, offline
        log.warning("tiktoken's %s for %s is not at hand (%s); counting ~4 characters a token",
                    name, model, e)
        return None


BACKEND = OpenAI()
