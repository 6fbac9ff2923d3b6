"""Teacher LLM calls: one `generate` for every call, whatever the backend; a stage asks through
one `Session`, which keeps the stage's failures file and accounting CSV.

Every call gets a persistent response cache (`restyle.cache`, keyed on backend, model, rendered
messages, generation parameters and schema; never the API key or the endpoint URL), JSON-schema
checks with bounded re-asking, token and cost accounting, and provenance on every result.

A teacher's config is one dict per call site: config `teachers.{name}` (config/schema.yaml lists
every key and holds its default) with `name`, the teacher's key, for messages; the rules turn a
local teacher's `model_key` into `manifest`, the manifest.json restyle.models.prepare wrote.
Where a call enters the package (`Session.ask`, `generate`, `estimate`, `token_counter`,
`model_name`) the dict becomes a `TeacherConfig`, the typed record passed whole inside it.
`backend` picks the module that asks (`backends.REGISTRY`): `local` (transformers, in process,
restyle.teacher.local) or `openai` (OpenAI, vLLM, llama.cpp server: anything speaking chat
completions, restyle.teacher.openai_backend, with the Batch API in restyle.teacher.batch_api).

The package: `base` (requests, results, errors, the `Backend` interface and the `Run` a backend
answers through), `cached` (cache keys and lookups), `session` (`Session`, `generate`),
`estimation` (`estimate`), `backends` (the registry) and one module per backend.

A stage that cannot work at all stops at once with one TeacherError naming the teacher, its
endpoint and the HTTP status: a wrong key or model (401/403/404), an endpoint nobody answers
(connection refused, unknown host) before any reply came, or the same 4xx rejecting the first
requests of a call with none accepted. Other failures are retried, then counted against the
failure budget (`max_failed_share`); answered items are cached either way, so a rerun asks only
for the failed ones.

Request `params` are the generation parameters: `max_tokens` [DEFAULT_MAX_TOKENS locally and for
estimates], `temperature` [0 = greedy locally], `top_p`, `seed` [0 locally]; the openai backend
passes them to `chat.completions.create` as they are. Prices are per million tokens:
`{model: {"input": float, "output": float}}`; Batch API answers cost half.
"""

from restyle.teacher.backends import NAMES, REGISTRY, model_name
from restyle.teacher.base import (BATCH_DISCOUNT, DEFAULT_MAX_TOKENS, Backend, BatchPending,
                                  FailureBudgetExceeded, Prompt, Request, Result,
                                  TeacherConfig, TeacherError, approx_tokens, check_reply,
                                  json_hash, settings, template_hash)
from restyle.teacher.cached import cache_key
from restyle.teacher.estimation import estimate, token_counter
from restyle.teacher.local import LOCAL_BATCH_SIZE
from restyle.teacher.openai_backend import tiktoken_encoding
from restyle.teacher.session import ACCOUNTING_FIELDS, Session, generate

__all__ = ["ACCOUNTING_FIELDS", "BATCH_DISCOUNT", "DEFAULT_MAX_TOKENS", "LOCAL_BATCH_SIZE",
           "NAMES", "REGISTRY", "Backend", "BatchPending", "FailureBudgetExceeded", "Prompt",
           "Request", "Result", "Session", "TeacherConfig", "TeacherError", "approx_tokens",
           "cache_key", "check_reply", "estimate", "generate", "json_hash", "model_name", "settings",
           "template_hash", "tiktoken_encoding", "token_counter"]
