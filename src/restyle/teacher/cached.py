"""The teacher's side of the response cache (restyle.cache holds the SQLite file): the key of a
request, which requests a call still has to send, and an answer read back from the cache.

The key covers backend, model, rendered messages, generation parameters and schema; never the
API key or the endpoint URL."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from restyle.teacher.base import Answer, Request, check_reply


def cache_key(request: Request, backend: str, model: str) -> str:
    blob = json.dumps({"backend": backend, "model": model, "messages": request.messages,
                       "params": request.params, "schema": request.schema},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


def dedupe(requests: Sequence[Request], keys: list[str], cached) -> dict[str, Request]:
    """The requests to send, by cache key: those not `cached`, each identical one once."""
    todo: dict[str, Request] = {}
    for key, req in zip(keys, requests):
        if key not in cached:
            todo.setdefault(key, req)  # identical requests are sent once
    return todo


def answer(row, req: Request) -> Answer:
    """A cached reply (a restyle.cache row) to `req`, as a backend would have returned it."""
    return Answer(row.text, check_reply(row.text, req.schema)[0], row.prompt_tokens,
                  row.completion_tokens, row.batch)
