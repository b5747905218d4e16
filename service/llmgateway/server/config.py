"""Gateway settings, read from the environment and an optional TOML file.

The environment wins over the file, so one file can serve several deployments.
API keys come from the environment only: they never sit in a config file, and
`Secret` keeps them out of reprs, logs and error messages.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmgateway.server.resilience.retry import RetryPolicy
from llmgateway.server.routing.names import model_name_problem
from llmgateway.server.routing.task_rules import Task
from llmgateway.server.state import redis_url as redis_urls
from llmgateway.v1 import completion_pb2 as common

if TYPE_CHECKING:
    from collections.abc import ItemsView, Iterable, Iterator

DEFAULT_ADDRESS = "0.0.0.0:50051"
DEFAULT_OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
DEFAULT_ZAI_BASE_URL = "https://api.z.ai/api/paas/v4"
DEFAULT_ZAI_CODING_BASE_URL = "https://api.z.ai/api/coding/paas/v4"
DEFAULT_OPENAI_BASE_URL = "https://api.openai.com/v1"
DEFAULT_ANTHROPIC_BASE_URL = "https://api.anthropic.com"
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
# Anthropic requires max_tokens on every request; this fills it when the caller sets none.
DEFAULT_ANTHROPIC_MAX_TOKENS = 4096
DEFAULT_GEMINI_BASE_URL = "https://generativelanguage.googleapis.com"
DEFAULT_GROQ_BASE_URL = "https://api.groq.com/openai/v1"
DEFAULT_OLLAMA_BASE_URL = "http://localhost:11434"
# Ollama's own default context (2048 or 4096 tokens, by version) silently cuts
# longer prompts; the gateway always sends num_ctx, this one unless configured.
DEFAULT_OLLAMA_NUM_CTX = 8192


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which setting to fix."""


@dataclass(frozen=True, slots=True)
class Secret:
    """A credential whose value never appears in repr() or str()."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Upstream time limits in seconds; each is further bounded by the caller's deadline."""

    connect: float = 10.0
    # Whole unary call. Reasoning models can think for minutes.
    request: float = 600.0
    # From sending a streamed request to its first body bytes (headers, then
    # an event or keep-alive comment). Streaming upstreams answer at once, so a
    # silent one is stuck; a fallback target can take over while the caller waits.
    first_byte: float = 60.0
    # Longest silence between two reads of a stream (SSE keep-alive comments count).
    stream_idle: float = 300.0
    # Whole streamed call. Keep-alive comments reset the idle timer, so a
    # stream needs a bound of its own.
    stream_total: float = 1800.0


_DEFAULT_TIMEOUTS = Timeouts()


@dataclass(frozen=True, slots=True)
class OpenRouterSettings:
    """How to reach OpenRouter."""

    api_key: Secret | None = None
    base_url: str = DEFAULT_OPENROUTER_BASE_URL
    http_referer: str | None = None
    app_title: str | None = None


@dataclass(frozen=True, slots=True)
class ZaiSettings:
    """How to reach Z.AI."""

    api_key: Secret | None = None
    base_url: str = DEFAULT_ZAI_BASE_URL
    coding_base_url: str = DEFAULT_ZAI_CODING_BASE_URL
    accept_language: str = "en-US,en"
    # Z.AI models (without the `zai/` prefix) served from the coding endpoint by default.
    coding_models: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class OpenAISettings:
    """How to reach OpenAI."""

    api_key: Secret | None = None
    base_url: str = DEFAULT_OPENAI_BASE_URL
    # Sent as OpenAI-Organization and OpenAI-Project when set.
    organization: str | None = None
    project: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AnthropicSettings:
    """How to reach Anthropic."""

    api_key: Secret | None = None
    base_url: str = DEFAULT_ANTHROPIC_BASE_URL
    version: str = DEFAULT_ANTHROPIC_VERSION
    # Sent comma-joined as anthropic-beta when not empty.
    beta: tuple[str, ...] = ()
    default_max_tokens: int = DEFAULT_ANTHROPIC_MAX_TOKENS
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GeminiSettings:
    """How to reach Google Gemini (the Gemini API, not Vertex AI)."""

    api_key: Secret | None = None
    base_url: str = DEFAULT_GEMINI_BASE_URL
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GroqSettings:
    """How to reach Groq."""

    api_key: Secret | None = None
    base_url: str = DEFAULT_GROQ_BASE_URL
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OllamaSettings:
    """How to reach Ollama: no key locally; a Bearer key for hosted Ollama."""

    api_key: Secret | None = None
    base_url: str = DEFAULT_OLLAMA_BASE_URL
    num_ctx: int = DEFAULT_OLLAMA_NUM_CTX
    # Sent as keep_alive (how long Ollama keeps the model loaded) when set.
    keep_alive: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AliasTarget:
    """One target of an alias's fallback chain, as configured."""

    model: str
    # "general" or "coding" pins a Z.AI endpoint for this target.
    zai_endpoint: str | None = None


@dataclass(frozen=True, slots=True)
class AliasConfig:
    """An alias: targets tried in order, and the ErrorReason names (without
    the prefix) that move a call to the next target; None means the default set."""

    targets: tuple[AliasTarget, ...]
    fallback_on: tuple[str, ...] | None = None

    @classmethod
    def of(cls, value: str | AliasConfig) -> AliasConfig:
        """A plain model name is a one-target alias."""
        return value if isinstance(value, AliasConfig) else cls((AliasTarget(value),))


@dataclass(frozen=True, slots=True)
class RouteEntryConfig:
    """One entry of a route (`code = ...`): its targets as an alias's, and
    optional variants that replace them for a cost tier ("low", "medium", "high")."""

    alias: AliasConfig
    cost_tiers: Mapping[str, AliasConfig] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RouteConfig:
    """A `[routes.<name>]` table: entry name ("default", a task, "chinese") -> entry."""

    entries: Mapping[str, RouteEntryConfig]


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """`[routing]`: how routed calls are decided (docs/routing.md)."""

    # How long a session stays on the target that served its last turn, in seconds.
    sticky_ttl: float = 3600.0
    # Sessions remembered per worker; the least recently used go.
    sticky_max_sessions: int = 10_000
    # Below this confidence an inferred task is not trusted: the route's default serves.
    min_confidence: float = 0.6
    # Cost tier ("low", "medium", "high") -> the most a call's estimated cost may be, in USD.
    max_call_usd: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CapabilityOverride:
    """`[capabilities."MODEL"]`: what the operator knows better than the
    built-in table; None keeps the table's answer."""

    context_window: int | None = None
    tools: bool | None = None
    json_schema: bool | None = None
    json_object: bool | None = None
    vision: bool | None = None
    image_urls: bool | None = None
    forced_tool_choice: bool | None = None


@dataclass(frozen=True, slots=True)
class CircuitSettings:
    """When a model (per provider and Z.AI endpoint) is skipped after failing;
    see service/llmgateway/server/resilience/circuit.py."""

    # Health failures (5xx, overload, unreachable, timeouts) within the window
    # that open it, when they are also at least `failure_rate` of its calls.
    failure_threshold: int = 5
    # How long its first opening lasts; each further one lasts that much longer
    # (up to `max_cool_down`), before one probe call may try the model again.
    cool_down: float = 30.0
    failure_rate: float = 0.5
    # The sliding window the failures and calls are counted over, in seconds.
    window: float = 30.0
    max_cool_down: float = 300.0
    # A call with no fallback target still goes through an open circuit while
    # the model's success rate over the window is above this (the panic rule).
    panic_success_rate: float = 0.1
    # Breakers kept per worker (one per model in use); the least recently used go.
    max_models: int = 1000


_DEFAULT_CIRCUIT = CircuitSettings()


@dataclass(frozen=True, slots=True)
class PriceOverride:
    """USD per million tokens for one model, from `[prices."<model>"]`."""

    prompt: float
    completion: float
    cached_prompt: float | None = None
    # Prompt tokens written to the provider's cache (Anthropic); None bills
    # them at the prompt rate.
    cache_write: float | None = None


def default_db_path(environ: Mapping[str, str]) -> str:
    """Where the state database lives unless configured: the user's data directory."""
    base = environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return str(Path(base) / "llmgateway" / "llmgateway.db")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """TLS on the gRPC listener: PEM paths, checked when the settings are loaded
    (the key itself is read only to bind, and never kept here or logged).
    With `client_ca_file` it is mutual TLS: clients must present a certificate
    signed by that CA, or the handshake fails."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None

    @property
    def mutual(self) -> bool:
        """Whether client certificates are required."""
        return self.client_ca_file is not None


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway needs to start."""

    address: str = DEFAULT_ADDRESS
    openrouter: OpenRouterSettings = OpenRouterSettings()
    zai: ZaiSettings = ZaiSettings()
    openai: OpenAISettings = OpenAISettings()
    anthropic: AnthropicSettings = AnthropicSettings()
    gemini: GeminiSettings = GeminiSettings()
    groq: GroqSettings = GroqSettings()
    ollama: OllamaSettings = OllamaSettings()
    timeouts: Timeouts = Timeouts()
    # Provider id ("ollama") -> its own timeouts, from `[<provider>.timeouts]`;
    # a provider not in it uses `timeouts`.
    provider_timeouts: Mapping[str, Timeouts] = field(default_factory=dict)
    # alias -> model name, e.g. {"coding": "zai/glm-4.7"}, or a fallback chain
    aliases: Mapping[str, str | AliasConfig] = field(default_factory=dict)
    # Route name without "route/" ("default") -> its table; empty: no routes.
    routes: Mapping[str, RouteConfig] = field(default_factory=dict)
    routing: RoutingSettings = RoutingSettings()
    # Gateway model name -> what the operator says it can do.
    capabilities: Mapping[str, CapabilityOverride] = field(default_factory=dict)
    shutdown_grace: float = 30.0
    # Seconds between reporting NOT_SERVING and refusing new calls, so load
    # balancers that poll health stop sending before the listener closes.
    shutdown_delay: float = 0.0
    # With several workers: more than this many worker deaths within the
    # window is a crash loop, and the parent stops instead of restarting them.
    worker_crash_limit: int = 5
    worker_crash_window: float = 60.0
    max_request_bytes: int = 8 * 1024 * 1024
    # The largest upstream answer (unary body, or one stream event) accepted.
    max_response_bytes: int = 4 * 1024 * 1024
    max_connections_per_provider: int = 1000
    # Calls in flight per provider (and worker) before new ones are refused.
    max_concurrent_upstream: int = 1000
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    circuit: CircuitSettings = CircuitSettings()
    # The state database: a SQLite path, or a postgresql:// URL. Empty: none
    # (no keys, no ledger), which only tests and benchmarks choose.
    db: str = ""
    # Seconds a call may wait on the state database (a free database thread,
    # connecting, a lock, a statement) before it gets UNAVAILABLE.
    db_timeout: float = 5.0
    # Seconds a gateway process's lease lasts (renewed every third of it): a
    # process that died is known dead, and its calls in flight marked LOST,
    # this long after its last renewal (at once on its own host).
    instance_lease: float = 15.0
    # Shared limits (rpm, tpm, USD budgets) in Redis instead of the state
    # database: a redis://, rediss:// or unix:// URL; empty: the database holds them.
    redis_url: str = ""
    # A Redis that cannot answer: "closed" refuses limited calls with UNAVAILABLE,
    # "open" admits them unlimited (logged once per outage).
    redis_failure_mode: str = "closed"
    # Seconds a call may wait on Redis before the failure mode applies.
    redis_timeout: float = 0.5
    # Seconds a client connection may live before the server asks it to
    # reconnect (GOAWAY), so clients re-resolve and spread after a scale-out; 0: never.
    max_connection_age: float = 300.0
    # Seconds a connection that aged out keeps for its calls in flight; None:
    # the longest stream any provider allows (so an age-out never cuts a stream).
    max_connection_age_grace: float | None = None
    # Model (gateway naming) -> price, overriding the built-in Z.AI table.
    prices: Mapping[str, PriceOverride] = field(default_factory=dict)
    # None: the listener is plaintext.
    tls: TlsSettings | None = None
    # HOST:PORT serving Prometheus metrics at /metrics; None: no metrics.
    metrics_address: str | None = None
    # OpenTelemetry tracing: "off", "otlp" (OTEL_EXPORTER_OTLP_* configure it) or "console".
    tracing: str = "off"
    # Log lines: "text" or "json" (one object per line).
    log_format: str = "text"
    # LLMGATEWAY_* variables set that no setting reads (typos, most likely),
    # for `serve` to warn about; not refused, as the environment is shared.
    environment_warnings: tuple[str, ...] = field(default=(), compare=False)

    def timeouts_for(self, provider_id: str) -> Timeouts:
        """The timeouts of one provider: its `[<provider>.timeouts]`, else `[timeouts]`."""
        return self.provider_timeouts.get(provider_id, self.timeouts)

    @classmethod
    def load(cls, environ: Mapping[str, str], config_file: Path | None = None) -> Settings:
        """Settings from a TOML file (optional) overlaid with the environment.
        A key or table of the file that no setting reads is refused, naming the
        closest one; LLMGATEWAY_* variables no setting reads are warned about."""
        read_environ = _ReadEnvironment(environ)
        documents: list[_ReadTable] = []
        try:
            settings = cls._load(read_environ, config_file, documents)
        except ConfigError:
            # A typo often causes the error (a misspelt [tls] key_file leaves the
            # certificate alone): name it first. Not every key may have been read
            # before the error, so what the defaults read counts as known too.
            defaults: list[_ReadTable] = []
            cls._load({}, None, defaults)
            _refuse_unknown_keys(documents[0] if documents else {}, defaults[0])
            raise
        _refuse_unknown_keys(documents[0] if documents else {})
        return dataclasses.replace(
            settings, environment_warnings=read_environ.unread_variable_warnings()
        )

    @classmethod
    def _load(
        cls, environ: Mapping[str, str], config_file: Path | None, documents: list[_ReadTable]
    ) -> Settings:
        """Settings.load, which gets the file's tables in `documents`, as read.

        Read every file key through its table even when the environment wins
        (file first, then `or`): a key never read is refused as unknown."""
        from_env = environ.get("LLMGATEWAY_CONFIG")
        path = config_file or _path_or_none(from_env)
        doc = _read_toml(path) if path else _ReadTable("defaults", {})
        documents.append(doc)
        server = _table(doc, "server")
        timeouts = _table(doc, "timeouts")
        openrouter = _table(doc, "openrouter")
        zai = _table(doc, "zai")
        openai = _table(doc, "openai")
        anthropic = _table(doc, "anthropic")
        gemini = _table(doc, "gemini")
        groq = _table(doc, "groq")
        ollama = _table(doc, "ollama")
        aliases = _table(doc, "aliases")
        routes = _table(doc, "routes")
        routing = _table(doc, "routing")
        capabilities = _table(doc, "capabilities")
        retries = _table(doc, "retries")
        circuit = _table(doc, "circuit_breaker")
        state = _table(doc, "state")
        prices = _table(doc, "prices")
        tls = _table(doc, "tls")

        def pick(env_name: str, table: dict[str, Any], key: str, default: str) -> str:
            in_file = table.get(key)
            value = environ.get(env_name) or in_file or default
            if not isinstance(value, str):
                section = next(n for n, t in sections.items() if t is table)
                raise ConfigError(f"[{section}] {key} must be a string")
            return value

        sections = {
            "server": server,
            "timeouts": timeouts,
            "openrouter": openrouter,
            "zai": zai,
            "openai": openai,
            "anthropic": anthropic,
            "gemini": gemini,
            "groq": groq,
            "ollama": ollama,
            "tls": tls,
            "state": state,
        }

        def tls_path(env_name: str, key: str) -> Path | None:
            """A TLS file setting; a relative path in the file is relative to the file."""
            value = pick(env_name, tls, key, "")
            if environ.get(env_name):
                return Path(environ[env_name])
            if not value:
                return None
            return path.parent / value if path is not None else Path(value)

        built = cls(
            address=pick("LLMGATEWAY_ADDRESS", server, "address", DEFAULT_ADDRESS),
            openrouter=OpenRouterSettings(
                api_key=_secret(environ.get("OPENROUTER_API_KEY")),
                base_url=_url(
                    pick(
                        "OPENROUTER_BASE_URL", openrouter, "base_url", DEFAULT_OPENROUTER_BASE_URL
                    ),
                    "OPENROUTER_BASE_URL",
                ),
                http_referer=pick("OPENROUTER_HTTP_REFERER", openrouter, "http_referer", "")
                or None,
                app_title=pick("OPENROUTER_APP_TITLE", openrouter, "app_title", "") or None,
            ),
            zai=ZaiSettings(
                api_key=_secret(environ.get("ZAI_API_KEY")),
                base_url=_url(
                    pick("ZAI_BASE_URL", zai, "base_url", DEFAULT_ZAI_BASE_URL), "ZAI_BASE_URL"
                ),
                coding_base_url=_url(
                    pick(
                        "ZAI_CODING_BASE_URL", zai, "coding_base_url", DEFAULT_ZAI_CODING_BASE_URL
                    ),
                    "ZAI_CODING_BASE_URL",
                ),
                accept_language=pick("ZAI_ACCEPT_LANGUAGE", zai, "accept_language", "en-US,en"),
                coding_models=frozenset(
                    _string_list(zai.get("coding_models", []), "[zai] coding_models")
                ),
            ),
            openai=OpenAISettings(
                api_key=_secret(environ.get("OPENAI_API_KEY")),
                base_url=_url(
                    pick("OPENAI_BASE_URL", openai, "base_url", DEFAULT_OPENAI_BASE_URL),
                    "OPENAI_BASE_URL",
                ),
                organization=pick("OPENAI_ORGANIZATION", openai, "organization", "") or None,
                project=pick("OPENAI_PROJECT", openai, "project", "") or None,
                headers=_headers(openai.get("headers", {}), "[openai] headers"),
            ),
            anthropic=AnthropicSettings(
                api_key=_secret(environ.get("ANTHROPIC_API_KEY")),
                base_url=_url(
                    pick("ANTHROPIC_BASE_URL", anthropic, "base_url", DEFAULT_ANTHROPIC_BASE_URL),
                    "ANTHROPIC_BASE_URL",
                ),
                version=pick("ANTHROPIC_VERSION", anthropic, "version", DEFAULT_ANTHROPIC_VERSION),
                beta=_beta(environ.get("ANTHROPIC_BETA"), anthropic.get("beta", [])),
                default_max_tokens=_whole_number(
                    environ,
                    "ANTHROPIC_DEFAULT_MAX_TOKENS",
                    anthropic,
                    "default_max_tokens",
                    DEFAULT_ANTHROPIC_MAX_TOKENS,
                ),
                headers=_headers(anthropic.get("headers", {}), "[anthropic] headers"),
            ),
            gemini=GeminiSettings(
                api_key=_secret(environ.get("GEMINI_API_KEY") or environ.get("GOOGLE_API_KEY")),
                base_url=_url(
                    pick("GEMINI_BASE_URL", gemini, "base_url", DEFAULT_GEMINI_BASE_URL),
                    "GEMINI_BASE_URL",
                ),
                headers=_headers(gemini.get("headers", {}), "[gemini] headers"),
            ),
            groq=GroqSettings(
                api_key=_secret(environ.get("GROQ_API_KEY")),
                base_url=_url(
                    pick("GROQ_BASE_URL", groq, "base_url", DEFAULT_GROQ_BASE_URL),
                    "GROQ_BASE_URL",
                ),
                headers=_headers(groq.get("headers", {}), "[groq] headers"),
            ),
            ollama=OllamaSettings(
                api_key=_secret(environ.get("OLLAMA_API_KEY")),
                base_url=_url(
                    pick("OLLAMA_BASE_URL", ollama, "base_url", DEFAULT_OLLAMA_BASE_URL),
                    "OLLAMA_BASE_URL",
                ),
                num_ctx=_whole_number(
                    environ, "OLLAMA_NUM_CTX", ollama, "num_ctx", DEFAULT_OLLAMA_NUM_CTX
                ),
                keep_alive=pick("OLLAMA_KEEP_ALIVE", ollama, "keep_alive", "") or None,
                headers=_headers(ollama.get("headers", {}), "[ollama] headers"),
            ),
            timeouts=Timeouts(
                connect=_positive_number(
                    environ,
                    "LLMGATEWAY_CONNECT_TIMEOUT",
                    timeouts,
                    "connect_seconds",
                    _DEFAULT_TIMEOUTS.connect,
                ),
                request=_positive_number(
                    environ,
                    "LLMGATEWAY_REQUEST_TIMEOUT",
                    timeouts,
                    "request_seconds",
                    _DEFAULT_TIMEOUTS.request,
                ),
                first_byte=_positive_number(
                    environ,
                    "LLMGATEWAY_FIRST_BYTE_TIMEOUT",
                    timeouts,
                    "first_byte_seconds",
                    _DEFAULT_TIMEOUTS.first_byte,
                ),
                stream_idle=_positive_number(
                    environ,
                    "LLMGATEWAY_STREAM_IDLE_TIMEOUT",
                    timeouts,
                    "stream_idle_seconds",
                    _DEFAULT_TIMEOUTS.stream_idle,
                ),
                stream_total=_positive_number(
                    environ,
                    "LLMGATEWAY_MAX_STREAM_DURATION",
                    timeouts,
                    "stream_total_seconds",
                    _DEFAULT_TIMEOUTS.stream_total,
                ),
            ),
            aliases={name: _alias(name, value) for name, value in aliases.items()},
            routes=_routes(routes),
            routing=_routing(routing),
            capabilities={name: _capability(name, value) for name, value in capabilities.items()},
            db=_db_location(_env_over_file(environ.get("LLMGATEWAY_DB"), state.get("db")), environ),
            db_timeout=_positive_number(
                environ, "LLMGATEWAY_DB_TIMEOUT", state, "timeout_seconds", 5.0
            ),
            instance_lease=_positive_number(
                environ, "LLMGATEWAY_INSTANCE_LEASE", state, "instance_lease_seconds", 15.0
            ),
            redis_url=check_redis_url(pick("LLMGATEWAY_REDIS_URL", state, "redis_url", "")),
            redis_failure_mode=_choice(
                pick("LLMGATEWAY_REDIS_FAILURE_MODE", state, "redis_failure_mode", "closed"),
                "LLMGATEWAY_REDIS_FAILURE_MODE ([state] redis_failure_mode)",
                ("closed", "open"),
            ),
            redis_timeout=_positive_number(
                environ, "LLMGATEWAY_REDIS_TIMEOUT", state, "redis_timeout_seconds", 0.5
            ),
            max_connection_age=_positive_number(
                environ,
                "LLMGATEWAY_MAX_CONNECTION_AGE",
                server,
                "max_connection_age_seconds",
                300.0,
                allow_zero=True,
            ),
            max_connection_age_grace=_optional_positive_number(
                environ,
                "LLMGATEWAY_MAX_CONNECTION_AGE_GRACE",
                server,
                "max_connection_age_grace_seconds",
            ),
            prices={name: _price(name, value) for name, value in prices.items()},
            circuit=CircuitSettings(
                failure_threshold=_whole_number(
                    environ,
                    "LLMGATEWAY_CIRCUIT_FAILURES",
                    circuit,
                    "failure_threshold",
                    _DEFAULT_CIRCUIT.failure_threshold,
                ),
                cool_down=_positive_number(
                    environ,
                    "LLMGATEWAY_CIRCUIT_COOL_DOWN",
                    circuit,
                    "cool_down_seconds",
                    _DEFAULT_CIRCUIT.cool_down,
                ),
                failure_rate=_fraction(
                    environ,
                    "LLMGATEWAY_CIRCUIT_FAILURE_RATE",
                    circuit,
                    "failure_rate",
                    _DEFAULT_CIRCUIT.failure_rate,
                ),
                window=_positive_number(
                    environ,
                    "LLMGATEWAY_CIRCUIT_WINDOW",
                    circuit,
                    "window_seconds",
                    _DEFAULT_CIRCUIT.window,
                ),
                max_cool_down=_positive_number(
                    environ,
                    "LLMGATEWAY_CIRCUIT_MAX_COOL_DOWN",
                    circuit,
                    "max_cool_down_seconds",
                    _DEFAULT_CIRCUIT.max_cool_down,
                ),
                panic_success_rate=_fraction(
                    environ,
                    "LLMGATEWAY_CIRCUIT_PANIC_SUCCESS_RATE",
                    circuit,
                    "panic_success_rate",
                    _DEFAULT_CIRCUIT.panic_success_rate,
                ),
                max_models=_whole_number(
                    environ,
                    "LLMGATEWAY_CIRCUIT_MAX_MODELS",
                    circuit,
                    "max_models",
                    _DEFAULT_CIRCUIT.max_models,
                ),
            ),
            shutdown_grace=_positive_number(
                environ, "LLMGATEWAY_SHUTDOWN_GRACE", server, "shutdown_grace_seconds", 30.0
            ),
            shutdown_delay=_positive_number(
                environ,
                "LLMGATEWAY_SHUTDOWN_DELAY",
                server,
                "shutdown_delay_seconds",
                0.0,
                allow_zero=True,
            ),
            worker_crash_limit=_whole_number(
                environ, "LLMGATEWAY_WORKER_CRASH_LIMIT", server, "worker_crash_limit", 5
            ),
            worker_crash_window=_positive_number(
                environ,
                "LLMGATEWAY_WORKER_CRASH_WINDOW",
                server,
                "worker_crash_window_seconds",
                60.0,
            ),
            max_request_bytes=_whole_number(
                environ,
                "LLMGATEWAY_MAX_REQUEST_BYTES",
                server,
                "max_request_bytes",
                8 * 1024 * 1024,
            ),
            max_response_bytes=_whole_number(
                environ,
                "LLMGATEWAY_MAX_RESPONSE_BYTES",
                server,
                "max_response_bytes",
                4 * 1024 * 1024,
            ),
            retries=RetryPolicy(
                max_attempts=_whole_number(
                    environ, "LLMGATEWAY_MAX_ATTEMPTS", retries, "max_attempts", 3
                ),
                initial_backoff=_positive_number(
                    environ,
                    "LLMGATEWAY_RETRY_INITIAL_BACKOFF",
                    retries,
                    "initial_backoff_seconds",
                    0.25,
                ),
                max_backoff=_positive_number(
                    environ, "LLMGATEWAY_RETRY_MAX_BACKOFF", retries, "max_backoff_seconds", 4.0
                ),
                max_retry_after=_positive_number(
                    environ,
                    "LLMGATEWAY_MAX_RETRY_AFTER",
                    retries,
                    "max_retry_after_seconds",
                    10.0,
                    allow_zero=True,
                ),
            ),
            max_concurrent_upstream=_whole_number(
                environ,
                "LLMGATEWAY_MAX_CONCURRENT_UPSTREAM",
                server,
                "max_concurrent_upstream",
                1000,
            ),
            max_connections_per_provider=_whole_number(
                environ,
                "LLMGATEWAY_MAX_UPSTREAM_CONNECTIONS",
                server,
                "max_upstream_connections",
                1000,
            ),
            tls=_tls(
                tls_path("LLMGATEWAY_TLS_CERT", "cert_file"),
                tls_path("LLMGATEWAY_TLS_KEY", "key_file"),
                tls_path("LLMGATEWAY_TLS_CLIENT_CA", "client_ca_file"),
            ),
            metrics_address=metrics_address(
                pick("LLMGATEWAY_METRICS_ADDRESS", server, "metrics_address", "")
            ),
            tracing=_choice(
                pick("LLMGATEWAY_TRACING", server, "tracing", "off"),
                "LLMGATEWAY_TRACING ([server] tracing)",
                ("off", "otlp", "console"),
                aliases={"": "off", "none": "off", "false": "off", "0": "off"},
            ),
            log_format=_choice(
                pick("LLMGATEWAY_LOG_FORMAT", server, "log_format", "text"),
                "LLMGATEWAY_LOG_FORMAT ([server] log_format)",
                ("text", "json"),
            ),
        )
        per_provider = {
            name: _provider_timeouts(f"[{name}.timeouts]", table.get("timeouts"), built.timeouts)
            for name, table in (
                ("openrouter", openrouter),
                ("zai", zai),
                ("openai", openai),
                ("anthropic", anthropic),
                ("gemini", gemini),
                ("groq", groq),
                ("ollama", ollama),
            )
        }
        return dataclasses.replace(
            built,
            provider_timeouts={n: t for n, t in per_provider.items() if t is not None},
        )


def _provider_timeouts(where: str, table: object, defaults: Timeouts) -> Timeouts | None:
    """`[<provider>.timeouts]`: any of the [timeouts] keys, for that provider only
    (a local Ollama loading a model may need minutes before its first byte)."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{where} must be a table of timeouts in seconds")
    _only_keys(where, table, tuple(_TIMEOUT_KEYS))
    overrides: dict[str, float] = {}
    for key, field_name in _TIMEOUT_KEYS.items():
        if key in table:
            value = table[key]
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not 0 < value < float("inf")
            ):
                raise ConfigError(f"{where} {key} must be a finite number greater than 0")
            overrides[field_name] = float(value)
    return dataclasses.replace(defaults, **overrides)


# [timeouts] keys (and their `[<provider>.timeouts]` overrides) -> Timeouts fields.
_TIMEOUT_KEYS = {
    "connect_seconds": "connect",
    "request_seconds": "request",
    "first_byte_seconds": "first_byte",
    "stream_idle_seconds": "stream_idle",
    "stream_total_seconds": "stream_total",
}


_TLS_CERT = "LLMGATEWAY_TLS_CERT ([tls] cert_file)"
_TLS_KEY = "LLMGATEWAY_TLS_KEY ([tls] key_file)"
_TLS_CLIENT_CA = "LLMGATEWAY_TLS_CLIENT_CA ([tls] client_ca_file)"
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN (?:TRUSTED |X509 )?CERTIFICATE-----")
_PEM_PRIVATE_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
_PEM_ENCRYPTED = re.compile(rb"-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: *4, *ENCRYPTED")


class _EncryptedKeyError(Exception):
    """OpenSSL asked for a passphrase; gRPC cannot supply one."""


def _tls(cert: Path | None, key: Path | None, client_ca: Path | None) -> TlsSettings | None:
    """The listener's TLS settings, or None for plaintext; every file is read and
    checked now, so a mistake stops the gateway before it binds its port."""
    if cert is None and key is None:
        if client_ca is not None:
            raise ConfigError(
                f"{_TLS_CLIENT_CA} turns on mutual TLS, which needs the server's own "
                f"certificate and key too: set {_TLS_CERT} and {_TLS_KEY}"
            )
        return None
    if cert is None or key is None:
        given, missing = (_TLS_CERT, _TLS_KEY) if key is None else (_TLS_KEY, _TLS_CERT)
        raise ConfigError(
            f"{given} is set but {missing} is not: TLS needs both the certificate "
            "and its private key"
        )
    cert_pem = _read_pem(cert, _TLS_CERT)
    if not _PEM_CERTIFICATE.search(cert_pem):
        hint = (
            f"it holds a private key: are {_TLS_CERT} and {_TLS_KEY} swapped?"
            if _PEM_PRIVATE_KEY.search(cert_pem)
            else f"a DER file converts with `openssl x509 -inform der -in {cert} -out cert.pem`"
        )
        raise ConfigError(
            f"{_TLS_CERT}: {cert} holds no PEM certificate (-----BEGIN CERTIFICATE-----); {hint}"
        )
    key_pem = _read_pem(key, _TLS_KEY)
    if not _PEM_PRIVATE_KEY.search(key_pem):
        hint = (
            f"it holds a certificate: are {_TLS_CERT} and {_TLS_KEY} swapped?"
            if _PEM_CERTIFICATE.search(key_pem)
            else f"a DER file converts with `openssl pkey -inform der -in {key} -out key.pem`"
        )
        raise ConfigError(
            f"{_TLS_KEY}: {key} holds no PEM private key (-----BEGIN PRIVATE KEY-----); {hint}"
        )
    if _PEM_ENCRYPTED.search(key_pem):
        raise _encrypted_key(key)
    try:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except _EncryptedKeyError as exc:
        raise _encrypted_key(key) from exc
    except ssl.SSLError as exc:
        # The reason, never the key: OpenSSL's messages do not quote the file.
        raise ConfigError(
            f"{_TLS_KEY} and {_TLS_CERT} do not make a pair ({exc.reason or exc}): "
            f"{key} must be the private key of the first certificate in {cert}"
        ) from exc
    if client_ca is not None:
        if not _PEM_CERTIFICATE.search(_read_pem(client_ca, _TLS_CLIENT_CA)):
            raise ConfigError(
                f"{_TLS_CLIENT_CA}: {client_ca} holds no PEM certificate "
                "(-----BEGIN CERTIFICATE-----); it must be the CA certificate(s) that "
                "sign client certificates"
            )
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(client_ca)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{_TLS_CLIENT_CA}: {client_ca} is not a usable CA certificate file "
                f"({exc.reason or exc})"
            ) from exc
    return TlsSettings(cert_file=cert, key_file=key, client_ca_file=client_ca)


def _read_pem(file: Path, setting: str) -> bytes:
    try:
        return file.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{setting}: cannot read {file}: {exc.strerror or exc}; check the path "
            "and that the gateway's user may read it"
        ) from exc


def _no_passphrase() -> bytes:
    raise _EncryptedKeyError


def _encrypted_key(key: Path) -> ConfigError:
    return ConfigError(
        f"{_TLS_KEY}: {key} is encrypted, and gRPC cannot take a passphrase; store it "
        f"unencrypted (`openssl pkey -in {key} -out key.pem`), readable only by the gateway"
    )


def metrics_address(value: str) -> str | None:
    """A metrics listen address (HOST:PORT, [V6]:PORT or :PORT), or None when empty."""
    value = value.strip()
    if not value:
        return None
    _, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"LLMGATEWAY_METRICS_ADDRESS ([server] metrics_address, --metrics-address) must be "
            f"HOST:PORT, got {value!r}"
        )
    return value


def _choice(
    value: str, setting: str, choices: tuple[str, ...], aliases: Mapping[str, str] | None = None
) -> str:
    value = value.strip().lower()
    value = (aliases or {}).get(value, value)
    if value not in choices:
        raise ConfigError(f"{setting} must be one of {', '.join(choices)}, got {value!r}")
    return value


def check_redis_url(value: str) -> str:
    """A Redis URL the client library reads as written, or empty for none; a
    ConfigError that never quotes the password otherwise."""
    value = value.strip()
    if not value:
        return ""
    if not value.startswith(redis_urls.SCHEMES):
        raise ConfigError(
            "LLMGATEWAY_REDIS_URL ([state] redis_url) must start with redis://, rediss:// "
            "or unix:// (e.g. redis://127.0.0.1:6379/0)"
        )
    problem = redis_urls.url_problem(value)
    if problem is not None:
        raise ConfigError(
            f"LLMGATEWAY_REDIS_URL ([state] redis_url) {redis_urls.display_url(value)} {problem}"
        )
    return value


def _optional_positive_number(
    environ: Mapping[str, str], env_name: str, table: dict[str, Any], key: str
) -> float | None:
    """A number greater than 0, or None when neither the environment nor the file sets it."""
    if not environ.get(env_name) and table.get(key) is None:
        return None
    return _positive_number(environ, env_name, table, key, 1.0)


def _db_location(value: object, environ: Mapping[str, str]) -> str:
    if value is None or value == "":
        return default_db_path(environ)
    if not isinstance(value, str):
        raise ConfigError("[state] db must be a path or a postgresql:// URL")
    return value


def _price(name: str, value: object) -> PriceOverride:
    where = f'[prices."{name}"]'
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table")
    keys = (
        "prompt_per_million",
        "completion_per_million",
        "cached_per_million",
        "cache_write_per_million",
    )
    _only_keys(where, value, keys)
    numbers: dict[str, float] = {}
    for key in keys:
        raw = value.get(key)
        if raw is None:
            continue
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
            raise ConfigError(f"{where} {key} must be a number, 0 or more")
        numbers[key] = float(raw)
    if "prompt_per_million" not in numbers or "completion_per_million" not in numbers:
        raise ConfigError(f"{where} needs prompt_per_million and completion_per_million")
    return PriceOverride(
        numbers["prompt_per_million"],
        numbers["completion_per_million"],
        numbers.get("cached_per_million"),
        numbers.get("cache_write_per_million"),
    )


def _alias(name: str, value: object) -> AliasConfig:
    """`name = "zai/glm-4.7"`, `name = [target, ...]` or
    `name = { targets = [target, ...], fallback_on = ["UPSTREAM_RATE_LIMITED", ...] }`,
    where a target is a model name or `{ model = "...", zai_endpoint = "coding" }`."""
    # Callers send an alias as their model name, which must pass the same rule.
    problem = model_name_problem(name)
    if problem is not None:
        raise ConfigError(f"[aliases] {name!r} cannot be an alias name: {problem}")
    if name.startswith(ROUTE_PREFIX):
        raise ConfigError(
            f"[aliases] {name!r} cannot be an alias name: {ROUTE_PREFIX} is reserved for "
            "[routes] (a route is configured as [routes.NAME] and called as route/NAME)"
        )
    return _alias_value(f"[aliases] {name}", value)


def _alias_value(where: str, value: object) -> AliasConfig:
    """An alias's value (see `_alias`), wherever it appears; `where` names it in
    errors ("[aliases] coding", "[routes.default] code")."""
    fallback_on = None
    if isinstance(value, dict):
        _only_keys(where, value, ("targets", "fallback_on"))
        if "fallback_on" in value:
            fallback_on = tuple(_string_list(value["fallback_on"], f"{where}.fallback_on"))
        value = value.get("targets")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{where} must be a model name, a non-empty list of targets, or a table with `targets`"
        )
    return AliasConfig(tuple(_alias_target(where, item) for item in value), fallback_on)


# Mirrors routing/router.py ROUTE_PREFIX: the router imports this module, so
# this module cannot import it (tests/test_config.py checks they agree).
ROUTE_PREFIX = "route/"
# The entries a route may have: its default, one per task, and `chinese`
# (preferred to `translation` for Han-dominant text; docs/routing.md).
ROUTE_ENTRIES: tuple[str, ...] = ("default", *(task.value for task in Task), "chinese")
COST_TIERS = ("low", "medium", "high")
# Each provider's prefix in gateway model names, from the contract's Provider
# enum (routing/router.py PREFIXES holds the same; the test checks it).
PROVIDER_PREFIXES: tuple[str, ...] = tuple(
    name.removeprefix("PROVIDER_").lower() + "/"
    for name, number in common.Provider.items()
    if number != common.PROVIDER_UNSPECIFIED
)
_TASK_LIST = ", ".join(task.value for task in Task) + ", plus default and chinese"
# A TOML bare key; other route names are quoted in messages, as in the file.
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _routes(table: dict[str, Any]) -> dict[str, RouteConfig]:
    """`[routes.<name>]` tables, called as `route/<name>`. Structure only: what
    each target names (a model, an alias) is checked by routing/routes.py."""
    routes = {name: _route(name, value) for name, value in table.items()}
    if routes and "default" not in routes:
        raise ConfigError(
            "[routes] needs a default route: add [routes.default] with `default = ...` "
            f"(configured: {', '.join(sorted(routes))}); route/default is what callers "
            "that name no route use"
        )
    return routes


def _route(name: str, value: object) -> RouteConfig:
    where = f"[routes.{name}]" if _BARE_KEY.fullmatch(name) else f'[routes."{name}"]'
    problem = model_name_problem(ROUTE_PREFIX + name)
    if problem is None and "/" in name:
        problem = "one name, without '/'"
    if problem is not None:
        raise ConfigError(f"{where}: {name!r} cannot be a route name: {problem}")
    if not isinstance(value, dict):
        raise ConfigError(
            f"[routes] {name} must be a table: [routes.{name}] with `default = ...` "
            "and an entry per task"
        )
    for key in dict.keys(value):
        if key == "auto":
            raise ConfigError(
                f"{where} auto: auto is how a caller asks the gateway to infer the task; "
                f"it is not a route entry. Entries: {_TASK_LIST}"
            )
        if key not in ROUTE_ENTRIES:
            close = difflib.get_close_matches(key, ROUTE_ENTRIES, n=1)
            hint = f"; did you mean {close[0]}?" if close else "."
            raise ConfigError(f"{where} {key} is not a task{hint} Tasks: {_TASK_LIST}")
    if "default" not in value:
        raise ConfigError(
            f"{where} needs `default = ...`: the targets of calls whose task has no "
            "entry here, or whose task is not inferred with confidence"
        )
    return RouteConfig(
        {key: _route_entry(f"{where} {key}", value[key]) for key in ROUTE_ENTRIES if key in value}
    )


def _route_entry(where: str, value: object) -> RouteEntryConfig:
    """An entry's targets as an alias's value; the table form may add
    `cost_tier = { low = ..., medium = ..., high = ... }`, each an alias value
    that replaces the entry's targets for calls asking for that tier."""
    tiers: dict[str, AliasConfig] = {}
    if isinstance(value, dict):
        _only_keys(where, value, ("targets", "fallback_on", "cost_tier"))
        if "cost_tier" in value:
            variants = value["cost_tier"]
            tier_where = f"{where} cost_tier"
            if not isinstance(variants, dict) or not variants:
                raise ConfigError(
                    f'{tier_where} must be a table of tiers, e.g. {{ low = "zai/glm-4.5-flash" }}'
                )
            _only_keys(tier_where, variants, COST_TIERS)
            tiers = {
                tier: _alias_value(f"{tier_where} {tier}", variants[tier])
                for tier in COST_TIERS
                if tier in variants
            }
            value = {key: item for key, item in value.items() if key != "cost_tier"}
    return RouteEntryConfig(_alias_value(where, value), tiers)


_DEFAULT_ROUTING = RoutingSettings()


def _routing(table: dict[str, Any]) -> RoutingSettings:
    """`[routing]`: every key optional. No environment variables (like aliases,
    routes live in the file)."""
    ceilings = table.get("max_call_usd", {})
    if not isinstance(ceilings, dict):
        raise ConfigError(
            "[routing] max_call_usd must be a table of cost tiers, e.g. "
            "{ low = 0.002, medium = 0.02 } (USD per call)"
        )
    _only_keys("[routing] max_call_usd", ceilings, COST_TIERS)
    return RoutingSettings(
        sticky_ttl=_file_number(
            "[routing]", table, "sticky_ttl_seconds", _DEFAULT_ROUTING.sticky_ttl
        ),
        sticky_max_sessions=int(
            _file_number(
                "[routing]",
                table,
                "sticky_max_sessions",
                _DEFAULT_ROUTING.sticky_max_sessions,
                whole=True,
            )
        ),
        min_confidence=_file_number(
            "[routing]",
            table,
            "min_confidence",
            _DEFAULT_ROUTING.min_confidence,
            allow_zero=True,
            at_most=1.0,
        ),
        max_call_usd={
            tier: _file_number("[routing] max_call_usd", ceilings, tier, 0.0, allow_zero=True)
            for tier in COST_TIERS
            if tier in ceilings
        },
    )


_CAPABILITY_FLAGS = (
    "tools",
    "json_schema",
    "json_object",
    "vision",
    "image_urls",
    "forced_tool_choice",
)


def _capability(name: str, value: object) -> CapabilityOverride:
    """`[capabilities."MODEL"]`: the operator's word on one model, over the
    built-in table (applied by the call path; routing/capabilities.py)."""
    where = f'[capabilities."{name}"]'
    problem = model_name_problem(name)
    if problem is None and not name.startswith(PROVIDER_PREFIXES):
        problem = "it must be a model in gateway naming, starting with a provider: " + ", ".join(
            PROVIDER_PREFIXES
        )
    if problem is not None:
        raise ConfigError(f"{where}: {name!r} cannot be a model name: {problem}")
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table, e.g. context_window = 32768, vision = false")
    _only_keys(where, value, ("context_window", *_CAPABILITY_FLAGS))
    flags: dict[str, bool] = {}
    for key in _CAPABILITY_FLAGS:
        if key in value:
            if not isinstance(value[key], bool):
                raise ConfigError(f"{where} {key} must be true or false, got {value[key]!r}")
            flags[key] = value[key]
    window = None
    if "context_window" in value:
        window = int(_file_number(where, value, "context_window", 0, whole=True))
    return CapabilityOverride(context_window=window, **flags)


def _file_number(
    where: str,
    table: dict[str, Any],
    key: str,
    default: float,
    *,
    allow_zero: bool = False,
    at_most: float | None = None,
    whole: bool = False,
) -> float:
    """A number only the config file sets (no environment variable)."""
    raw = table.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ConfigError(f"{where} {key} must be a number, got {raw!r}")
    value = float(raw)
    if whole:
        if not value.is_integer() or value < 1:
            raise ConfigError(f"{where} {key} must be a whole number, 1 or more, got {raw!r}")
    elif not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        bound = "0 or more" if allow_zero else "greater than 0"
        raise ConfigError(f"{where} {key} must be a finite number {bound}, got {raw!r}")
    if at_most is not None and value > at_most:
        raise ConfigError(f"{where} {key} must be a number from 0 to {at_most:g}, got {raw!r}")
    return value


def _alias_target(where: str, item: object) -> AliasTarget:
    if isinstance(item, str) and item:
        return AliasTarget(item)
    if isinstance(item, dict) and isinstance(item.get("model"), str) and item["model"]:
        _only_keys(f'{where} target "{item["model"]}"', item, ("model", "zai_endpoint"))
        endpoint = item.get("zai_endpoint")
        if not (endpoint is None or isinstance(endpoint, str)):
            raise ConfigError(f'{where}: a target\'s zai_endpoint must be "general" or "coding"')
        return AliasTarget(item["model"], endpoint)
    raise ConfigError(
        f"{where}: each target must be a model name string or "
        '{ model = "...", zai_endpoint = "general" | "coding" }'
    )


def _path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None


def _read_toml(path: Path) -> _ReadTable:
    try:
        with path.open("rb") as handle:
            return _ReadTable(f"config file {path}", tomllib.load(handle))
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except IsADirectoryError as exc:
        raise ConfigError(f"config file {path} is a directory; name the TOML file itself") from exc
    except OSError as exc:
        # Unreadable (permissions, a dangling mount): what the OS said, not a traceback.
        raise ConfigError(f"cannot read config file {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text, as TOML must be") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] in the config file must be a table")
    if not isinstance(doc, _ReadTable):
        return table
    # Replaced in the document, so the check for unknown keys finds it.
    read = doc[name] = _ReadTable(f"[{name}]", table)
    return read


class _ReadTable(dict[str, Any]):
    """A table of the config file that remembers which keys the settings asked
    for, present or not. After Settings.load, a key never asked for is a typo
    (`_refuse_unknown_keys`): a setting added to Settings.load is known by
    being read, without a list of valid keys to keep in step."""

    def __init__(self, where: str, items: dict[str, Any]) -> None:
        super().__init__(items)
        self.where = where
        self.asked: set[str] = set()

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.asked.add(key)
        return super().__contains__(key)

    def __iter__(self) -> Iterator[str]:
        # Iterating a table (aliases, prices) reads every key in it: their
        # names are free, and the code that reads them checks their values.
        self.asked.update(super().keys())
        return super().__iter__()

    def items(self) -> ItemsView[str, Any]:  # type: ignore[override]  # dict's own view
        self.asked.update(super().keys())
        return super().items()


def _refuse_unknown_keys(doc: dict[str, Any], also_known: _ReadTable | None = None) -> None:
    """Refuse what the file holds and no setting read (nor, when given, a read
    of the defaults, `also_known`): a misspelt key is otherwise silently ignored
    (`[zai] coding_model` would leave every model on the general endpoint)."""
    if not isinstance(doc, _ReadTable):
        return
    if also_known is not None:
        doc.asked |= also_known.asked
        for name, table in dict.items(doc):
            known = dict.get(also_known, name)
            if isinstance(table, _ReadTable) and isinstance(known, _ReadTable):
                table.asked |= known.asked
    tables = [t for t in doc.values() if isinstance(t, _ReadTable)]
    problems = [_unknown(doc, name, tables, top=True) for name in _unread(doc)]
    for table in tables:
        problems.extend(_unknown(table, key, tables, top=False) for key in _unread(table))
    if len(problems) == 1:
        raise ConfigError(f"{doc.where}: {problems[0]}")
    if problems:
        raise ConfigError(
            f"{doc.where}: {len(problems)} unknown settings:\n  " + "\n  ".join(problems)
        )


def _unread(table: _ReadTable) -> list[str]:
    # dict.keys, not iteration: iterating a _ReadTable counts as reading it.
    return [key for key in dict.keys(table) if key not in table.asked]


def _unknown(table: _ReadTable, key: str, tables: list[_ReadTable], *, top: bool) -> str:
    """`key` of `table` named as the file has it, with the closest setting."""
    if top:
        what = (
            f"[{key}] is not a known table"
            if isinstance(dict.get(table, key), dict)
            else f"{key} at the top of the file is not a known setting"
        )
    else:
        what = f"{table.where} {key} is not a known setting"
        if key == "api_key":
            variable = f"{table.where.strip('[]').upper()}_API_KEY"
            if variable == "GEMINI_API_KEY":
                variable += " or GOOGLE_API_KEY"
            return f"{what}: API keys are read from the environment only ({variable})"
    elsewhere = [t.where for t in tables if t is not table and key in t.asked]
    if elsewhere:
        return f"{what}; did you mean {elsewhere[0]} {key}?"
    return what + _closest(key, table.asked, as_table=top)


def _closest(key: str, valid: Iterable[str], *, as_table: bool = False) -> str:
    """ "; did you mean X?" with the valid name closest to `key`, else the valid names."""
    names = sorted(valid)
    close = difflib.get_close_matches(key, names, n=1)
    shown = [f"[{name}]" if as_table else name for name in close or names]
    return f"; did you mean {shown[0]}?" if close else f" (known: {', '.join(shown)})"


def _only_keys(where: str, table: dict[str, Any], known: tuple[str, ...]) -> None:
    """Refuse keys of a fixed-shape table (a price, an alias) other than `known`."""
    unknown = [key for key in dict.keys(table) if key not in known]
    if unknown:
        raise ConfigError(
            "; ".join(
                f"{where} {key} is not a known setting{_closest(key, known)}" for key in unknown
            )
        )


def _env_over_file(from_env: str | None, in_file: object) -> object:
    """The environment's value, else the file's; both read (see Settings.load)."""
    return from_env or in_file


# LLMGATEWAY_* variables read outside Settings.load, not to be warned about:
# the worker count (process/cli.py), what a worker's parent passes it
# (process/workers.py, process/startup_summary.py), and the client commands'
# caller key and target (clients/python/llmgateway/client/cli.py, also read by
# `llmgateway health`), often set in the same shell.
_READ_ELSEWHERE = frozenset(
    {
        "LLMGATEWAY_WORKERS",
        "LLMGATEWAY_WORKER_PARENT_PID",
        "LLMGATEWAY_WORKER_SUMMARY_FD",
        "LLMGATEWAY_API_KEY",
        "LLMGATEWAY_TARGET",
        # scripts/cluster.py: the local cluster's run directory.
        "LLMGATEWAY_CLUSTER_DIR",
        # tests/test_cluster_proofs.py: how long the scale-out proofs run (ci or full).
        "LLMGATEWAY_PROOF_SCALE",
    }
)


class _ReadEnvironment(Mapping[str, str]):
    """The environment, remembering which variables the settings asked for."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        self.asked: set[str] = set()

    def __getitem__(self, name: str) -> str:
        self.asked.add(name)
        return self._environ[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._environ)

    def __len__(self) -> int:
        return len(self._environ)

    def unread_variable_warnings(self) -> tuple[str, ...]:
        """One warning per LLMGATEWAY_* variable that is set and read by nothing.
        Only our prefix: the environment holds everyone's variables."""
        known = self.asked | _READ_ELSEWHERE
        # Compared without the prefix, which every name shares: LLMGATEWAY_ZAI_API_KEY
        # is closest to ZAI_API_KEY, and LLMGATEWAY_FOO close to nothing.
        stems = {name.removeprefix("LLMGATEWAY_"): name for name in sorted(known)}
        warnings = []
        for name in sorted(self._environ):
            if not name.startswith("LLMGATEWAY_") or name in known:
                continue
            close = difflib.get_close_matches(name.removeprefix("LLMGATEWAY_"), stems, n=1)
            hint = (
                f"did you mean {stems[close[0]]}?"
                if close
                else "the README's Configuration table lists the variables"
            )
            warnings.append(f"environment variable {name} is set but no setting reads it; {hint}")
        return tuple(warnings)


def _secret(value: str | None) -> Secret | None:
    value = (value or "").strip()
    return Secret(value) if value else None


def _url(value: str, name: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def _headers(value: object, name: str) -> dict[str, str]:
    """`[<provider>] headers`: extra HTTP headers for every request to that provider."""
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ConfigError(f'{name} must be a table of strings, e.g. {{ "X-Team" = "search" }}')
    for header, text in value.items():
        if not header or any(c in header for c in " :\r\n") or any(c in text for c in "\r\n"):
            raise ConfigError(f"{name}: {header!r} is not a valid header name and value")
    return dict(value)


def _beta(from_env: str | None, in_file: object) -> tuple[str, ...]:
    """anthropic-beta flags: ANTHROPIC_BETA (comma-separated) or `[anthropic] beta` (a list)."""
    if from_env:
        return tuple(flag.strip() for flag in from_env.split(",") if flag.strip())
    return tuple(_string_list(in_file, "[anthropic] beta"))


def _string_list(value: object, name: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{name} must be a list of strings")
    return list(value)


def _positive_number(
    environ: Mapping[str, str],
    env_name: str,
    table: dict[str, Any],
    key: str,
    default: float,
    *,
    allow_zero: bool = False,
) -> float:
    in_file = table.get(key, default)  # read first: see Settings.load
    raw: object = environ.get(env_name) or in_file
    if isinstance(raw, bool):
        raise ConfigError(f"{env_name} ({key}) must be a number, got {raw!r}")
    try:
        value = float(raw)  # type: ignore[arg-type]  # validated just below
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{env_name} ({key}) must be a number, got {raw!r}") from exc
    if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        bound = "0 or more" if allow_zero else "greater than 0"
        raise ConfigError(f"{env_name} ({key}) must be a finite number {bound}, got {raw!r}")
    return value


def _fraction(
    environ: Mapping[str, str], env_name: str, table: dict[str, Any], key: str, default: float
) -> float:
    """A share: a number from 0 to 1."""
    value = _positive_number(environ, env_name, table, key, default, allow_zero=True)
    if value > 1:
        raise ConfigError(f"{env_name} ({key}) must be a number from 0 to 1, got {value:g}")
    return value


def _whole_number(
    environ: Mapping[str, str], env_name: str, table: dict[str, Any], key: str, default: int
) -> int:
    """A count: a whole number, 1 or more."""
    value = _positive_number(environ, env_name, table, key, default)
    if not value.is_integer() or value < 1:
        raise ConfigError(f"{env_name} ({key}) must be a whole number, 1 or more")
    return int(value)
