"""Gateway settings, read from the environment and an optional TOML file.

The environment wins over the file, so one file can serve several deployments.
API keys come from the environment only: they never sit in a config file, and
`Secret` keeps them out of reprs, logs and error messages.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service.retry import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Mapping

DEFAULT_ADDRESS = "0.0.0.0:50051"
DEFAULT_OPENROUTER_BASE_URL = "https://openrouter.ai/api/v1"
DEFAULT_ZAI_BASE_URL = "https://api.z.ai/api/paas/v4"
DEFAULT_ZAI_CODING_BASE_URL = "https://api.z.ai/api/coding/paas/v4"


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
class CircuitSettings:
    """When a provider (or Z.AI endpoint) is skipped after failing."""

    # Consecutive failures (5xx, overload, unreachable, timeouts) that open it.
    failure_threshold: int = 5
    # How long it stays open before one probe call may try the provider again.
    cool_down: float = 30.0


_DEFAULT_CIRCUIT = CircuitSettings()


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the gateway needs to start."""

    address: str = DEFAULT_ADDRESS
    openrouter: OpenRouterSettings = OpenRouterSettings()
    zai: ZaiSettings = ZaiSettings()
    timeouts: Timeouts = Timeouts()
    # alias -> model name, e.g. {"coding": "zai/glm-4.7"}, or a fallback chain
    aliases: Mapping[str, str | AliasConfig] = field(default_factory=dict)
    shutdown_grace: float = 30.0
    # Seconds between reporting NOT_SERVING and refusing new calls, so load
    # balancers that poll health stop sending before the listener closes.
    shutdown_delay: float = 0.0
    max_request_bytes: int = 8 * 1024 * 1024
    max_connections_per_provider: int = 1000
    # Calls in flight per provider (and worker) before new ones are refused.
    max_concurrent_upstream: int = 1000
    retries: RetryPolicy = field(default_factory=RetryPolicy)
    circuit: CircuitSettings = CircuitSettings()

    @classmethod
    def load(cls, environ: Mapping[str, str], config_file: Path | None = None) -> Settings:
        """Settings from a TOML file (optional) overlaid with the environment."""
        path = config_file or _path_or_none(environ.get("LLMGATEWAY_CONFIG"))
        doc = _read_toml(path) if path else {}
        server = _table(doc, "server")
        timeouts = _table(doc, "timeouts")
        openrouter = _table(doc, "openrouter")
        zai = _table(doc, "zai")
        aliases = _table(doc, "aliases")
        retries = _table(doc, "retries")
        circuit = _table(doc, "circuit_breaker")

        def pick(env_name: str, table: dict[str, Any], key: str, default: str) -> str:
            value = environ.get(env_name) or table.get(key) or default
            if not isinstance(value, str):
                section = next(n for n, t in sections.items() if t is table)
                raise ConfigError(f"[{section}] {key} must be a string")
            return value

        sections = {"server": server, "timeouts": timeouts, "openrouter": openrouter, "zai": zai}

        return cls(
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
            max_request_bytes=_whole_number(
                environ,
                "LLMGATEWAY_MAX_REQUEST_BYTES",
                server,
                "max_request_bytes",
                8 * 1024 * 1024,
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
        )


def _alias(name: str, value: object) -> AliasConfig:
    """`name = "zai/glm-4.7"`, `name = [target, ...]` or
    `name = { targets = [target, ...], fallback_on = ["UPSTREAM_RATE_LIMITED", ...] }`,
    where a target is a model name or `{ model = "...", zai_endpoint = "coding" }`."""
    where = f"[aliases] {name}"
    fallback_on = None
    if isinstance(value, dict):
        unknown = set(value) - {"targets", "fallback_on"}
        if unknown:
            raise ConfigError(f"{where} has unknown keys {sorted(unknown)}")
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


def _alias_target(where: str, item: object) -> AliasTarget:
    if isinstance(item, str) and item:
        return AliasTarget(item)
    if isinstance(item, dict) and isinstance(item.get("model"), str) and item["model"]:
        unknown = set(item) - {"model", "zai_endpoint"}
        endpoint = item.get("zai_endpoint")
        if unknown or not (endpoint is None or isinstance(endpoint, str)):
            raise ConfigError(f"{where}: a target takes `model` and `zai_endpoint` only")
        return AliasTarget(item["model"], endpoint)
    raise ConfigError(
        f"{where}: each target must be a model name string or "
        '{ model = "...", zai_endpoint = "general" | "coding" }'
    )


def _path_or_none(value: str | None) -> Path | None:
    return Path(value) if value else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] in the config file must be a table")
    return table


def _secret(value: str | None) -> Secret | None:
    value = (value or "").strip()
    return Secret(value) if value else None


def _url(value: str, name: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


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
    raw: object = environ.get(env_name) or table.get(key, default)
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


def _whole_number(
    environ: Mapping[str, str], env_name: str, table: dict[str, Any], key: str, default: int
) -> int:
    """A count: a whole number, 1 or more."""
    value = _positive_number(environ, env_name, table, key, default)
    if not value.is_integer() or value < 1:
        raise ConfigError(f"{env_name} ({key}) must be a whole number, 1 or more")
    return int(value)
