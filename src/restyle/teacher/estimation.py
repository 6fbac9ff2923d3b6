"""What a teacher call would ask, before anything is sent (restyle.estimate adds up the stages)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from restyle.cache import Cache
from restyle.teacher import backends, cached
from restyle.teacher.base import DEFAULT_MAX_TOKENS, Request, TeacherConfig, cost


def estimate(requests: Sequence[Request], backend_cfg: dict | TeacherConfig,
             cache_path: str | Path, prices: dict | None = None,
             asked: set[str] | None = None) -> dict:
    """What `generate` would ask, before anything is sent, in the accounting CSV's terms:
    `prompt_tokens`, `completion_tokens`, `cost` over every request (cached or not, as the
    accounting counts the answers a stage uses), `run_*` over the requests a run would send now.

    Prompts are counted as `token_counter` says (`counter` names how); completion tokens are the
    `max_tokens` bound. A request with a schema to a billed teacher (an OpenAI-compatible one)
    counts `TeacherConfig.schema_tries` times, prompt and completion, as a reply that breaks
    the schema is asked again and billed: the cost is an upper bound. `cost` is at list price,
    `batch_cost` at the Batch API's (BATCH_DISCOUNT); None where the model has no price.
    `asked` holds the cache keys earlier estimates of the same run send: they count as cached,
    as the run finds them cached (the same model asked the same by two stages); this call's
    keys to send are added to it.
    """
    cfg = TeacherConfig.of(backend_cfg)
    backend = backends.get(cfg.backend)
    model = backend.model_name(cfg)
    keys = [cached.cache_key(r, backend.name, model) for r in requests]
    cache = Cache(cache_path)
    try:
        found = cache.get_many(keys)
    finally:
        cache.close()
    found = {**found, **dict.fromkeys(set(keys) & (asked or set()))}
    todo = cached.dedupe(requests, keys, found)
    if asked is not None:
        asked |= set(todo)
    counter, count = token_counter(cfg)
    prompts = {k: count(r) for k, r in dict(zip(keys, requests)).items()}
    retried = cfg.schema_tries if backend.billed else 1  # an unbilled one costs nothing
    tries = {k: retried if r.schema is not None else 1 for k, r in zip(keys, requests)}
    out = {"counter": counter, "requests": len(requests),
           "cached": sum(k in found for k in keys), "to_send": len(todo)}
    for prefix, pairs in (("", list(zip(keys, requests))), ("run_", list(todo.items()))):
        prompt = sum(prompts[k] * tries[k] for k, _ in pairs)
        completion = sum(r.params.get("max_tokens", DEFAULT_MAX_TOKENS) * tries[k]
                         for k, r in pairs)
        out |= {f"{prefix}prompt_tokens": prompt, f"{prefix}completion_tokens": completion,
                f"{prefix}cost": cost(prices, model, prompt, completion, False),
                f"{prefix}batch_cost": cost(prices, model, prompt, completion, True)}
    return out


def token_counter(cfg: dict | TeacherConfig) -> tuple[str, Callable[[Request], int]]:
    """(how, count) for the prompt tokens a request to teacher `cfg` is billed: "tokenizer", the
    local model's own chat template and tokenizer; "tiktoken", OpenAI's tokenizer for the model
    over the messages and the JSON schema sent as `response_format`; else "approx", ~4
    characters a token of the same (each backend's `token_counter`)."""
    cfg = TeacherConfig.of(cfg)
    return backends.get(cfg.backend).token_counter(cfg)
