"""Teacher LLM calls: one `generate` for every call, whatever the backend; a stage asks through
one `Session`, which keeps the stage's failures file and accounting CSV.

Every call gets a persistent response cache (`restyle.cache`, keyed on backend, model, rendered
messages, generation parameters and schema; never the API key or the endpoint URL), JSON-schema
checks with bounded re-asking, token and cost accounting, and provenance on every result.

Backend config (one dict per call site; defaults in brackets):

    backend: "openai" | "local"
    model: str               # openai: the model name sent to the API (required);
                             # local: a label for cache and provenance [the manifest's `source`]
    name: str                # the teacher's key in config `teachers`, for messages [model]
    schema_retries: int      # re-asks after a reply that is not JSON or breaks the schema [2]
    max_failed_share: float  # failure budget: a call whose failed items (after every retry)
                             # exceed this share of its items raises FailureBudgetExceeded [0.05]
    # backend "openai" (OpenAI, vLLM, llama.cpp server: anything speaking chat completions)
    base_url: str            # endpoint, e.g. http://localhost:8000/v1 [the SDK's, OpenAI's own]
    api_key_env: str         # NAME of the environment variable holding the key; without it a
                             # placeholder key is sent (local servers need none) [none]
    timeout_s: float         # per HTTP request [120]
    max_in_flight: int       # concurrent requests [16]
    requests_per_minute: int # sliding 60 s window; 0 or absent = unlimited [unlimited]
    tokens_per_minute: int   # counts prompt (chars/4) + max_tokens per request [unlimited]
    max_retries: int         # retries after 429, 408/409, 5xx, timeouts, dropped connections,
                             # malformed bodies [6]
    backoff_s: float         # first backoff; doubles each retry, with jitter [1.0]
    backoff_max_s: float     # backoff cap (a longer Retry-After is still honoured) [60]
    batch: bool              # use the Batch API (half price, results within 24 h) [false]
    batch_wait_s: float      # how long one run polls for batch results before raising
                             # BatchPending (rerun later to collect) [0]
    batch_poll_s: float      # polling interval while waiting [30]
    batch_resubmits: int     # times requests that failed inside a batch are resubmitted [2]
    # backend "local" (transformers, in process)
    manifest: str            # manifest.json written by restyle.models.prepare (required)
    batch_size: int | "auto" # prompts per generate() call; auto: 8 off CUDA, on CUDA 512
                             # halved until a batch fits (restyle.batching) [8]
    device: str              # "cpu", "cuda", ... [cuda if available]

A stage that cannot work at all stops at once with one TeacherError naming the teacher, its
endpoint and the HTTP status: a wrong key or model (401/403/404), an endpoint nobody answers
(connection refused, unknown host) before any reply came, or the same 4xx rejecting the first
requests of a call with none accepted. Other failures are retried, then counted against the
failure budget; answered items are cached either way, so a rerun asks only for the failed ones.

Request `params` are the generation parameters: `max_tokens` [512 locally and for estimates],
`temperature` [0 = greedy locally], `top_p`, `seed` [0 locally]; the openai backend passes them
to `chat.completions.create` as they are. Prices are per million tokens:
`{model: {"input": float, "output": float}}`; Batch API answers cost half.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import hashlib
import json
import logging
import os
import random
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
from tqdm import tqdm

from restyle.cache import Cache
from restyle.io import write_csv, write_jsonl

log = logging.getLogger(__name__)

DEFAULT_MAX_TOKENS = 512
WINDOW_S = 60  # the "minute" of requests_per_minute and tokens_per_minute
BATCH_DISCOUNT = 0.5
# Worth another try: rate limited, request timeout, conflict, server errors.
RETRY_STATUS = {408, 409, 429}
# Wrong key, no access, no such model or endpoint: every item would fail the same way.
FATAL_STATUS = {401, 403, 404}
# The same other 4xx on this many requests (or all of a smaller call), none accepted: the server
# rejects the request itself (a parameter it does not know), so the rest would fail alike.
REJECTIONS_TO_STOP = 3
DEFAULT_MAX_FAILED_SHARE = 0.05
LOCAL_BATCH_SIZE = 8  # the local backend's batch_size, and what `auto` is off CUDA
ACCOUNTING_FIELDS = ["stage", "backend", "model", "requests", "cached", "sent", "failed",
                     "attempts", "prompt_tokens", "completion_tokens", "cost",
                     "run_prompt_tokens", "run_completion_tokens", "run_cost", "batch_size"]


class TeacherError(RuntimeError):
    """A failure that dooms the whole stage (bad key, unknown model, bad config)."""


class BatchPending(TeacherError):
    """Batch API results are not ready yet; what is collected is cached, rerun later."""


class FailureBudgetExceeded(TeacherError):
    """More items failed after every retry than the teacher's `max_failed_share` allows."""


@dataclass(frozen=True)
class Request:
    id: str
    messages: list[dict]
    template: str  # prompt template name
    template_hash: str  # `template_hash(template text)`
    params: dict = field(default_factory=dict)
    schema: dict | None = None  # JSON schema the reply must satisfy


@dataclass
class Result:
    id: str
    text: str | None
    parsed: Any  # the reply as JSON when the request had a schema
    ok: bool
    error: str | None
    provenance: dict
    cached: bool

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Answer:
    text: str
    parsed: Any
    prompt_tokens: int
    completion_tokens: int
    batch: bool = False


def template_hash(template_text: str) -> str:
    return hashlib.sha256(template_text.encode()).hexdigest()[:16]


def json_hash(obj) -> str:
    """`template_hash` of an object's canonical JSON (rendered prompts, rule wordings)."""
    return template_hash(json.dumps(obj, sort_keys=True, ensure_ascii=False))


def cache_key(request: Request, backend: str, model: str) -> str:
    blob = json.dumps({"backend": backend, "model": model, "messages": request.messages,
                       "params": request.params, "schema": request.schema},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def model_name(cfg: dict) -> str:
    if cfg.get("model"):
        return cfg["model"]
    if cfg["backend"] == "local":
        from restyle import models

        return models.read_manifest(cfg["manifest"])["source"]
    raise TeacherError("teacher config: 'model' is required for the openai backend")


def check_reply(text: str, schema: dict | None) -> tuple[Any, str | None]:
    """(parsed JSON, None) for an acceptable reply, (None, reason) otherwise."""
    if schema is None:
        return None, None
    body = text.strip()
    if body.startswith("```"):  # models often fence JSON even when asked not to
        body = body.strip("`").removeprefix("json").strip()
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError as e:
        return None, f"reply is not JSON ({e.msg} at char {e.pos})"
    try:
        jsonschema.validate(parsed, schema)
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        return None, f"reply breaks the schema at {where}: {e.message}"
    return parsed, None


def schema_tries(cfg: dict) -> int:
    """The most replies one request with a schema may take: the first and `schema_retries`."""
    return 1 + cfg.get("schema_retries", 2)


def approx_tokens(messages: list[dict]) -> int:
    """~4 characters a token, plus a few per message for the role markup."""
    return sum(len(str(m.get("content", ""))) // 4 + 4 for m in messages)


def _cost(prices: dict | None, model: str, prompt: int, completion: int,
          batch: bool) -> float | None:
    if not prices or model not in prices:
        return None
    p = prices[model]
    cost = (prompt * p["input"] + completion * p["output"]) / 1e6
    return cost * BATCH_DISCOUNT if batch else cost


def _redactor(secret: str | None) -> Callable[[str], str]:
    return (lambda s: s.replace(secret, "***")) if secret else (lambda s: s)


class _Run:
    """What one `generate` call shares: config, cache, the secret to redact, this run's bill."""

    def __init__(self, cfg: dict, cache: Cache, prices: dict | None, total: int):
        self.cfg, self.cache, self.prices = cfg, cache, prices
        self.backend, self.model = cfg["backend"], model_name(cfg)
        self.schema_tries = schema_tries(cfg)
        self.secret = os.environ.get(cfg["api_key_env"]) if cfg.get("api_key_env") else None
        self.redact = _redactor(self.secret)
        self.attempts = self.prompt_tokens = self.completion_tokens = 0
        self.cost: float | None = 0.0
        self.total = total
        self.replies = 0  # HTTP replies with a completion in them
        self.rejections: dict[int, int] = {}  # non-retryable 4xx status -> count
        self.batch_size: int | None = None  # local: prompts per generate() call, as it ended
        self.progress = tqdm(total=total, desc=f"teacher {self.model}", unit="req",
                             disable=not sys.stderr.isatty())

    def describe(self) -> str:
        """Which teacher this is, for a message that must say where to look."""
        where = self.cfg.get("base_url") or "OpenAI's default endpoint"
        return f"teacher '{self.cfg.get('name', self.model)}' (model {self.model} at {where})"

    def stop(self, reason: str) -> TeacherError:
        return TeacherError(self.redact(f"{self.describe()}: {reason}; stopping the stage"))

    def bill(self, prompt: int, completion: int, batch: bool = False) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        cost = _cost(self.prices, self.model, prompt, completion, batch)
        self.cost = None if cost is None or self.cost is None else self.cost + cost

    def accept(self, key: str, req: Request, text: str, prompt: int, completion: int,
               batch: bool = False) -> _Answer | str:
        """Bill a reply; cache and return it if acceptable, else return why it is not."""
        self.bill(prompt, completion, batch)
        parsed, reason = check_reply(text, req.schema)
        if reason is not None:
            return reason
        self.cache.put(key, self.backend, self.model, text, prompt, completion, batch)
        return _Answer(text, parsed, prompt, completion, batch)


# ---------------------------------------------------------------- openai backend (HTTP)

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
    def __init__(self, cfg: dict):
        self.in_flight = asyncio.Semaphore(cfg.get("max_in_flight", 16))
        rpm, tpm = cfg.get("requests_per_minute"), cfg.get("tokens_per_minute")
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


def _api_body(run: _Run, req: Request) -> dict:
    body = {"model": run.model, "messages": req.messages, **req.params}
    if req.schema is not None:
        body["response_format"] = _response_format(req.schema)
    return body


def _response_format(schema: dict) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema}}


def _parse_completion(completion) -> tuple[str, int | None, int | None] | None:
    """(text, prompt tokens, completion tokens) from a chat completion, None if it has no text."""
    try:
        text = completion.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        return None
    if not isinstance(text, str):
        return None
    usage = getattr(completion, "usage", None)
    return text, getattr(usage, "prompt_tokens", None), getattr(usage, "completion_tokens", None)


async def _call(run: _Run, client, limits: _Limits, req: Request) -> tuple[str, int, int]:
    """One reply for `req`, retrying transient failures; raises _GaveUp after the last."""
    import openai

    cfg = run.cfg
    tries = 1 + cfg.get("max_retries", 6)
    base, cap = cfg.get("backoff_s", 1.0), cfg.get("backoff_max_s", 60)
    tokens = approx_tokens(req.messages) + req.params.get("max_tokens", DEFAULT_MAX_TOKENS)
    reason = ""
    for attempt in range(tries):
        wait = None
        async with limits.slot(tokens):
            run.attempts += 1
            try:
                completion = await client.chat.completions.create(**_api_body(run, req))
            except openai.APIStatusError as e:
                reason = e.message  # "Error code: 429 - <the server's message>"
                if e.status_code in FATAL_STATUS:
                    raise run.stop(f"HTTP {e.status_code} on item {req.id}: {reason}") from None
                if e.status_code not in RETRY_STATUS and e.status_code < 500:
                    _rejected(run, e.status_code, req, reason)
                    raise _GaveUp(reason) from None
                wait = retry_after(e.response.headers)
            except openai.APITimeoutError:
                reason = f"timed out after {cfg.get('timeout_s', 120)} s"
            except openai.APIConnectionError as e:
                reason = f"connection error ({e.__cause__ or e})"
                if run.replies == 0 and (cause := _unreachable(e)):
                    raise run.stop(f"cannot connect ({cause})") from None
            except json.JSONDecodeError as e:
                reason = f"malformed JSON response body ({e.msg})"
            else:
                reply = _parse_completion(completion)
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


def _rejected(run: _Run, status: int, req: Request, reason: str) -> None:
    """Count a non-retryable 4xx; stop the stage when the server rejects every request alike."""
    run.rejections[status] = run.rejections.get(status, 0) + 1
    if run.replies == 0 and run.rejections[status] >= min(REJECTIONS_TO_STOP, run.total):
        raise run.stop(f"HTTP {status} on the first {run.rejections[status]} requests, none "
                       f"accepted (last, item {req.id}: {reason})")


async def _ask(run: _Run, client, limits: _Limits, key: str, req: Request) -> _Answer | str:
    try:
        for _ in range(run.schema_tries):
            outcome = run.accept(key, req, *await _call(run, client, limits, req))
            if isinstance(outcome, _Answer):
                return outcome
            log.info("item %s: %s; asking again", req.id, outcome)
        return f"no acceptable reply in {run.schema_tries} tries, last: {outcome}"
    except _GaveUp as e:
        return str(e)
    finally:
        run.progress.update()


def _client(run: _Run):
    import openai

    cfg = run.cfg
    if cfg.get("api_key_env") and not run.secret:
        raise TeacherError(f"{run.describe()}: config api_key_env: environment variable "
                           f"{cfg['api_key_env']} is not set")
    # the SDK's own retries are off: ours honour the config and count attempts
    return openai.AsyncOpenAI(api_key=run.secret or "not-needed", base_url=cfg.get("base_url"),
                              timeout=cfg.get("timeout_s", 120), max_retries=0)


async def _openai(run: _Run, todo: dict[str, Request]) -> dict[str, _Answer | str]:
    import openai

    async with _client(run) as client:
        if run.cfg.get("batch"):
            try:
                return await _batch(run, client, todo)
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


# ---------------------------------------------------------------- OpenAI Batch API

async def _collect(run: _Run, client, batch, todo: dict[str, Request],
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
                reply = _parse_completion(ChatCompletion.construct(**body))
            if reply is None:
                error = row.get("error") or body.get("error") or {}
                reason = f"failed in batch {batch.id}: {error.get('message', 'no reply')}"
            else:
                text, prompt, completion = reply
                outcome = run.accept(key, req, text, prompt or 0, completion or 0, batch=True)
                if isinstance(outcome, _Answer):
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


async def _submit(run: _Run, client, todo: dict[str, Request]) -> str:
    lines = [json.dumps({"custom_id": k, "method": "POST", "url": "/v1/chat/completions",
                         "body": _api_body(run, r)}, ensure_ascii=False) for k, r in todo.items()]
    upload = await client.files.create(file=("batch.jsonl", "\n".join(lines).encode()),
                                       purpose="batch")
    batch = await client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                        completion_window="24h")
    run.cache.add_batch(batch.id, list(todo))
    log.info("submitted batch %s with %d requests", batch.id, len(todo))
    return batch.id


async def _batch(run: _Run, client, todo: dict[str, Request]) -> dict[str, _Answer | str]:
    cfg = run.cfg
    deadline = time.monotonic() + cfg.get("batch_wait_s", 0)
    max_submissions = 1 + cfg.get("batch_resubmits", 2)
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
        await asyncio.sleep(cfg.get("batch_poll_s", 30))
    run.progress.update(len(todo))
    answered = run.cache.get_many(list(todo))
    return {k: failed[k] if k in failed else
            _Answer(answered[k].text, check_reply(answered[k].text, todo[k].schema)[0],
                    answered[k].prompt_tokens, answered[k].completion_tokens, answered[k].batch)
            for k in todo}


# ---------------------------------------------------------------- local backend (transformers)

def _local_batch(model, tokenizer, seqs: list[list[int]], prefix, params: dict,
                 seed: int) -> list[tuple[str, int, int]]:
    """(text, prompt tokens, completion tokens) for each prompt, generated together; `seqs` are
    the rendered prompts' tokens after the `prefix` (a batching.PrefixCache) they all share."""
    import torch

    from restyle.batching import left_pad

    ids, mask, _ = left_pad(seqs, tokenizer.pad_token_id)
    inputs = prefix.generation_inputs(ids.to(model.device), mask.to(model.device))
    temperature = params.get("temperature", 0.0)
    sampling = ({"do_sample": True, "temperature": temperature, "top_p": params.get("top_p", 1.0)}
                if temperature > 0 else {"do_sample": False, "temperature": None, "top_p": None,
                                         "top_k": None})
    torch.manual_seed(seed)
    with torch.no_grad():
        out = model.generate(**inputs,
                             max_new_tokens=params.get("max_tokens", DEFAULT_MAX_TOKENS),
                             pad_token_id=tokenizer.pad_token_id, **sampling)
    new = out[:, inputs["input_ids"].shape[1]:]
    eos = model.generation_config.eos_token_id
    eos = torch.tensor(eos if isinstance(eos, list) else [eos if eos is not None
                                                           else tokenizer.eos_token_id])
    replies = []
    for row, seq in zip(new.cpu(), seqs):
        ends = torch.isin(row, eos).nonzero()
        n = int(ends[0]) + 1 if len(ends) else len(row)  # count the EOS, not the padding after it
        replies.append((tokenizer.decode(row[:n], skip_special_tokens=True).strip(),
                        len(prefix.ids) + len(seq), n))
    return replies


def _local(run: _Run, todo: dict[str, Request]) -> dict[str, _Answer | str]:
    from restyle import batching, models

    model, tokenizer = models.load(run.cfg["manifest"], device=run.cfg.get("device"))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    limits = batching.resolve(model.device, rows=run.cfg.get("batch_size", LOCAL_BATCH_SIZE),
                              cpu_rows=LOCAL_BATCH_SIZE)
    out: dict[str, _Answer | str] = {}
    groups: dict[str, list[str]] = {}  # one generate() call takes one set of parameters
    for key, req in todo.items():
        groups.setdefault(json.dumps(req.params, sort_keys=True), []).append(key)
    for keys in groups.values():
        params = todo[keys[0]].params
        # the rendered template already holds any BOS token; adding it again would double it
        rendered = [tokenizer.apply_chat_template(todo[k].messages, add_generation_prompt=True,
                                                  tokenize=False) for k in keys]
        tokens = dict(zip(keys, tokenizer(rendered, add_special_tokens=False)["input_ids"]))
        # a stage's prompts share their opening (system turn, the stage's instructions): once
        start = batching.shared_prefix(list(tokens.values()))
        prefix = batching.PrefixCache(model, tokens[keys[0]][:start])
        # greedy decoding gives the same reply again: re-ask only when sampling
        tries = run.schema_tries if params.get("temperature", 0.0) > 0 else 1
        pending = keys
        for attempt in range(tries):
            def answer(batch: list[int]) -> None:
                chunk = [pending[i] for i in batch]
                replies = _local_batch(model, tokenizer, [tokens[k][start:] for k in chunk],
                                       prefix, params, params.get("seed", 0) + attempt)
                for key, reply in zip(chunk, replies):
                    out[key] = run.accept(key, todo[key], *reply)
                    run.attempts += 1
                    if isinstance(out[key], _Answer) or attempt + 1 == tries:
                        run.progress.update()

            # sorted by length for less padding, shortest first as before `auto` existed
            limits = batching.run_batches([len(tokens[k]) - start for k in pending], answer,
                                          limits, f"teacher {run.model}", shortest_first=True)
            run.batch_size = limits.rows
            pending = [k for k in pending if isinstance(out[k], str)]
            if not pending:
                break
        for key in pending:
            out[key] = f"no acceptable reply in {tries} tries, last: {out[key]}"
    return out


# ---------------------------------------------------------------- stage API

def _dedupe(requests: Sequence[Request], keys: list[str], cached) -> dict[str, Request]:
    todo: dict[str, Request] = {}
    for key, req in zip(keys, requests):
        if key not in cached:
            todo.setdefault(key, req)  # identical requests are sent once
    return todo


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

    def ask(self, requests: Sequence[Request], backend_cfg: dict, step: str | None = None
            ) -> list[Result]:
        """Answer every request (from the cache where possible), in order.

        Failed items come back with ok=False and the reason. Raises TeacherError when the
        stage cannot work at all, FailureBudgetExceeded when more items failed than the
        teacher's `max_failed_share` allows, and BatchPending in Batch API mode.
        """
        if not requests:
            return []
        stage = f"{self.stage}:{step}" if step else self.stage
        results, row = generate(requests, backend_cfg, self.cache_path, stage=stage,
                                prices=self.prices)
        failed = [r for r in results if not r.ok]
        self.failures += [{"step": step, **r.to_dict()} if step else r.to_dict() for r in failed]
        self.accounting.append(row)
        self.write()
        _check_budget(stage, results, failed, backend_cfg, self.failures_path)
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


def _check_budget(stage: str, results: list[Result], failed: list[Result], cfg: dict,
                  failures_path) -> None:
    share = cfg.get("max_failed_share", DEFAULT_MAX_FAILED_SHARE)
    if not failed or len(failed) <= share * len(results):
        return
    name = cfg.get("name", model_name(cfg))
    raise FailureBudgetExceeded(
        f"{stage}: {len(failed)} of {len(results)} items failed after every retry "
        f"({len(failed) / len(results):.0%}), over the failure budget of {share:.0%} "
        f"(config teachers.{name}.max_failed_share); first: {failed[0].error}. The "
        f"{len(results) - len(failed)} answers are cached: a rerun asks only for the failed items"
        + (f"; every failure is listed in {failures_path}" if failures_path else ""))


def generate(requests: Sequence[Request], cfg: dict, cache_path: str | Path, *, stage: str,
             prices: dict | None = None) -> tuple[list[Result], dict]:
    """(results in request order, the call's accounting row); writes no file and checks no
    failure budget (`Session.ask` does both)."""
    if cfg.get("backend") not in ("openai", "local"):
        raise TeacherError(f"teacher config backend: '{cfg.get('backend')}' is not openai or local")
    cache = Cache(cache_path)
    try:
        model = model_name(cfg)
        keys = [cache_key(r, cfg["backend"], model) for r in requests]
        cached = cache.get_many(keys)
        todo = _dedupe(requests, keys, cached)
        log.info("%s: %d requests, %d cached, %d to send to %s %s", stage, len(requests),
                 len(requests) - sum(k not in cached for k in keys), len(todo), cfg["backend"],
                 model)
        run = _Run(cfg, cache, prices, len(todo))
        try:
            if not todo:
                answers = {}
            elif cfg["backend"] == "local":
                answers = _local(run, todo)
            else:
                answers = asyncio.run(_openai(run, todo))
        finally:
            run.progress.close()
        results = [_result(run, req, key, cached.get(key), answers.get(key))
                   for req, key in zip(requests, keys)]
    finally:
        cache.close()
    failures = [r for r in results if not r.ok]
    for r in failures:
        log.warning("%s", r.error)
    if failures:
        log.warning("%s: %d of %d items failed", stage, len(failures), len(results))
    return results, _accounting_row(stage, run, results, todo)


def _result(run: _Run, req: Request, key: str, cached, answer: _Answer | str | None) -> Result:
    if cached is not None:
        answer = _Answer(cached.text, check_reply(cached.text, req.schema)[0],
                         cached.prompt_tokens, cached.completion_tokens, cached.batch)
    prov = {"backend": run.backend, "model": run.model, "template": req.template,
            "template_hash": req.template_hash, "params": req.params, "cache_key": key}
    if isinstance(answer, _Answer):
        prov |= {"prompt_tokens": answer.prompt_tokens,
                 "completion_tokens": answer.completion_tokens, "batch": answer.batch}
        return Result(req.id, answer.text, answer.parsed, True, None, prov, cached is not None)
    error = run.redact(f"item {req.id}: {answer}")
    return Result(req.id, None, None, False, error, prov, False)


def _accounting_row(stage: str, run: _Run, results: list[Result], todo: dict) -> dict:
    ok = [r for r in results if r.ok]
    prompt = sum(r.provenance["prompt_tokens"] for r in ok)
    completion = sum(r.provenance["completion_tokens"] for r in ok)
    costs = [_cost(run.prices, run.model, r.provenance["prompt_tokens"],
                   r.provenance["completion_tokens"], r.provenance["batch"]) for r in ok]
    return {"stage": stage, "backend": run.backend, "model": run.model, "requests": len(results),
            "cached": sum(r.cached for r in results), "sent": len(todo),
            "failed": len(results) - len(ok), "attempts": run.attempts,
            "prompt_tokens": prompt, "completion_tokens": completion,
            "cost": None if None in costs else round(sum(costs), 6),
            "run_prompt_tokens": run.prompt_tokens, "run_completion_tokens": run.completion_tokens,
            "run_cost": None if run.cost is None else round(run.cost, 6),
            "batch_size": run.batch_size}


def estimate(requests: Sequence[Request], backend_cfg: dict, cache_path: str | Path,
             prices: dict | None = None, asked: set[str] | None = None) -> dict:
    """What `generate` would ask, before anything is sent, in the accounting CSV's terms:
    `prompt_tokens`, `completion_tokens`, `cost` over every request (cached or not, as the
    accounting counts the answers a stage uses), `run_*` over the requests a run would send now.

    Prompts are counted as `token_counter` says (`counter` names how); completion tokens are the
    `max_tokens` bound. A request with a schema to an OpenAI-compatible teacher counts
    `schema_tries` times, prompt and completion, as a reply that breaks the schema is asked again
    and billed: the cost is an upper bound. `cost` is at list price,
    `batch_cost` at the Batch API's (BATCH_DISCOUNT); None where the model has no price.
    `asked` holds the cache keys earlier estimates of the same run send: they count as cached,
    as the run finds them cached (the same model asked the same by two stages); this call's
    keys to send are added to it.
    """
    cfg = backend_cfg
    model = model_name(cfg)
    keys = [cache_key(r, cfg["backend"], model) for r in requests]
    cache = Cache(cache_path)
    try:
        cached = cache.get_many(keys)
    finally:
        cache.close()
    cached = {**cached, **dict.fromkeys(set(keys) & (asked or set()))}
    todo = _dedupe(requests, keys, cached)
    if asked is not None:
        asked |= set(todo)
    counter, count = token_counter(cfg)
    prompts = {k: count(r) for k, r in dict(zip(keys, requests)).items()}
    retried = schema_tries(cfg) if cfg["backend"] == "openai" else 1  # a local one costs nothing
    tries = {k: retried if r.schema is not None else 1 for k, r in zip(keys, requests)}
    out = {"counter": counter, "requests": len(requests),
           "cached": sum(k in cached for k in keys), "to_send": len(todo)}
    for prefix, pairs in (("", list(zip(keys, requests))), ("run_", list(todo.items()))):
        prompt = sum(prompts[k] * tries[k] for k, _ in pairs)
        completion = sum(r.params.get("max_tokens", DEFAULT_MAX_TOKENS) * tries[k]
                         for k, r in pairs)
        out |= {f"{prefix}prompt_tokens": prompt, f"{prefix}completion_tokens": completion,
                f"{prefix}cost": _cost(prices, model, prompt, completion, False),
                f"{prefix}batch_cost": _cost(prices, model, prompt, completion, True)}
    return out


def token_counter(cfg: dict) -> tuple[str, Callable[[Request], int]]:
    """(how, count) for the prompt tokens a request to teacher `cfg` is billed: "tokenizer", the
    local model's own chat template and tokenizer; "tiktoken", OpenAI's tokenizer for the model
    (`tiktoken_encoding`) over the messages and the JSON schema sent as `response_format`, which
    is billed as input too; else "approx", ~4 characters a token of the same."""
    if cfg["backend"] == "local":
        count_messages = _local_token_counter(cfg["manifest"])
        return "tokenizer", lambda request: count_messages(request.messages)
    encoding = tiktoken_encoding(model_name(cfg))
    if encoding is None:
        return "approx", lambda request: (approx_tokens(request.messages)
                                          + len(_schema_text(request)) // 4)

    def tokens(text: str) -> int:
        return len(encoding.encode(text, disallowed_special=()))  # "<|endoftext|>" is text here

    # OpenAI's published count for chat models: 3 tokens of markup a message, 3 priming the reply
    return "tiktoken", lambda request: 3 + tokens(_schema_text(request)) + sum(
        3 + tokens(m["role"]) + tokens(str(m.get("content", ""))) for m in request.messages)


def _schema_text(request: Request) -> str:
    return json.dumps(_response_format(request.schema)) if request.schema is not None else ""


# OpenAI's encoding files for its chat models (o200k_base, cl100k_base) ship with restyle, in
# tiktoken's cache layout: each is named by the SHA-1 of the address tiktoken would fetch it
# from, and tiktoken checks its SHA-256 before use. Counting needs no network, on a cluster node
# neither.
ENCODINGS = Path(__file__).parent / "encodings"


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


@functools.lru_cache(maxsize=None)  # one tokenizer load for every stage of an estimate
def _local_token_counter(manifest: str | Path) -> Callable[[list[dict]], int]:
    from transformers import AutoTokenizer

    from restyle import models

    tokenizer = AutoTokenizer.from_pretrained(models.read_manifest(manifest)["path"])
    return lambda messages: len(tokenizer(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False),
        add_special_tokens=False)["input_ids"])
