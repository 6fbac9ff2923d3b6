"""What every backend of restyle.teacher shares: requests and results, the errors, reply checks,
prices, the per-call `Run` a backend answers through, and the `Backend` interface itself.

Teacher settings are config `teachers.{name}` (config/schema.yaml describes each key and holds
its default); `settings` fills in the schema's defaults where a dict was never validated, and
`TeacherConfig.of` makes the typed record of them that the package passes around."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from tqdm import tqdm

from restyle.cache import Cache

DEFAULT_MAX_TOKENS = 512
BATCH_DISCOUNT = 0.5
# the schema whose `teachers` entries hold every teacher setting's default
SCHEMA = Path(__file__).resolve().parents[3] / "config" / "schema.yaml"


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
class Answer:
    """An accepted reply, as a backend returns it (a str in its place says why none came)."""

    text: str
    parsed: Any
    prompt_tokens: int
    completion_tokens: int
    batch: bool = False


# Module-level prompt text is annotated `Prompt` (`X: Prompt = "..."`, `dict[str, Prompt]`):
# restyle.versions leaves such an assignment out of a module's code version, and each job carries
# the hashes of just the templates it sends, so editing one template reruns only its jobs.
Prompt = str


def template_hash(template_text: str) -> str:
    return hashlib.sha256(template_text.encode()).hexdigest()[:16]


def json_hash(obj) -> str:
    """`template_hash` of an object's canonical JSON (rendered prompts, rule wordings)."""
    return template_hash(json.dumps(obj, sort_keys=True, ensure_ascii=False))


@functools.lru_cache(maxsize=None)
def schema_defaults(schema_path: str | Path = SCHEMA) -> dict:
    """Every teacher setting's default, as config/schema.yaml states it."""
    schema = yaml.safe_load(Path(schema_path).read_text(encoding="utf-8"))
    keys = schema["properties"]["teachers"]["additionalProperties"]["properties"]
    return {key: spec["default"] for key, spec in keys.items() if "default" in spec}


def settings(cfg: dict) -> dict:
    """Teacher config `cfg` over the schema's defaults: what a validated config holds anyway,
    and what a dict that never went through validation (tests, benchmarks) gets."""
    return {**schema_defaults(), **cfg}


@dataclass(frozen=True)
class TeacherConfig:
    """One teacher's settings: config `teachers.{name}` over config/schema.yaml's defaults.
    The fields are the schema's keys, which hold the defaults (`of` fills them in; none is
    restated here), and the two the rules add (rules/common.smk teacher_backend): `name`, the
    teacher's key, for messages, and `manifest`, the manifest.json of a local teacher's model.
    Built once where a call enters restyle.teacher; callers and rule params keep plain dicts."""

    backend: str
    model: str | None
    model_key: str | None
    max_failed_share: float
    schema_retries: int
    base_url: str | None
    api_key_env: str | None
    timeout_s: float
    max_in_flight: int
    requests_per_minute: int
    tokens_per_minute: int
    max_retries: int
    backoff_s: float
    backoff_max_s: float
    batch: bool
    batch_wait_s: float
    batch_poll_s: float
    batch_resubmits: int
    batch_size: int | str
    device: str | None
    name: str | None = None
    manifest: str | None = None

    @classmethod
    def of(cls, cfg: dict | TeacherConfig) -> TeacherConfig:
        """The record of teacher config `cfg` (a record is returned as it is)."""
        if isinstance(cfg, TeacherConfig):
            return cfg
        unknown = set(cfg) - {f.name for f in fields(cls)}
        if unknown:  # a validated config has none: the schema allows no other key
            raise TeacherError(f"teacher config: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**settings(cfg))

    @property
    def schema_tries(self) -> int:
        """The most replies one request with a schema may take: the first and `schema_retries`."""
        return 1 + self.schema_retries


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


def approx_tokens(messages: list[dict]) -> int:
    """~4 characters a token, plus a few per message for the role markup."""
    return sum(len(str(m.get("content", ""))) // 4 + 4 for m in messages)


def cost(prices: dict | None, model: str, prompt: int, completion: int,
         batch: bool) -> float | None:
    if not prices or model not in prices:
        return None
    p = prices[model]
    total = (prompt * p["input"] + completion * p["output"]) / 1e6
    return total * BATCH_DISCOUNT if batch else total


def _redactor(secret: str | None) -> Callable[[str], str]:
    return (lambda s: s.replace(secret, "***")) if secret else (lambda s: s)


class Backend:
    """One way of asking a teacher: `generate` answers a call's uncached requests through its
    `Run`, which bills and caches each reply. The class attributes say what the rest of the
    pipeline must know of a backend, so that nothing outside restyle.teacher compares names."""

    name: str
    needs_model: bool = False  # runs a model of config `models` (teachers.{name}.model_key)
    requires_model: bool = False  # config `model` must name the model
    structured_output: bool = False  # config structured_output `auto` asks it for JSON replies
    billed: bool = False  # each reply costs: an estimate counts a schema's re-asks too

    def model_name(self, cfg: TeacherConfig) -> str:
        """The model's name in cache keys, provenance and prices."""
        if cfg.model:
            return cfg.model
        raise TeacherError(f"teacher config: 'model' is required for the {self.name} backend")

    def use_threads(self, threads: int) -> None:
        """Give the job's `threads` cores to the backend (in-process backends use them)."""

    def generate(self, run: Run, todo: dict[str, Request]) -> dict[str, Answer | str]:
        """An Answer, or why there is none, for each cache key of `todo`."""
        raise NotImplementedError

    def token_counter(self, cfg: TeacherConfig) -> tuple[str, Callable[[Request], int]]:
        """(how, count) for the prompt tokens a request is billed (restyle.teacher.estimate)."""
        raise NotImplementedError


class Run:
    """What one `generate` call shares: settings, cache, the secret to redact, this run's bill."""

    def __init__(self, backend: Backend, cfg: TeacherConfig, cache: Cache, prices: dict | None,
                 total: int):
        self.cfg, self.cache, self.prices = cfg, cache, prices
        self.backend, self.model = backend.name, backend.model_name(cfg)
        self.secret = os.environ.get(cfg.api_key_env) if cfg.api_key_env else None
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
        where = self.cfg.base_url or "OpenAI's default endpoint"
        return f"teacher '{self.cfg.name or self.model}' (model {self.model} at {where})"

    def stop(self, reason: str) -> TeacherError:
        return TeacherError(self.redact(f"{self.describe()}: {reason}; stopping the stage"))

    def bill(self, prompt: int, completion: int, batch: bool = False) -> None:
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        price = cost(self.prices, self.model, prompt, completion, batch)
        self.cost = None if price is None or self.cost is None else self.cost + price

    def accept(self, key: str, req: Request, text: str, prompt: int, completion: int,
               batch: bool = False) -> Answer | str:
        """Bill a reply; cache and return it if acceptable, else return why it is not."""
        self.bill(prompt, completion, batch)
        parsed, reason = check_reply(text, req.schema)
        if reason is not None:
            return reason
        self.cache.put(key, self.backend, self.model, text, prompt, completion, batch)
        return Answer(text, parsed, prompt, completion, batch)
