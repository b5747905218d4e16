"""Model names to providers (`openrouter/<vendor>/<model>`, `zai/<model>`,
`openai/`, `anthropic/`, `gemini/`, `groq/`, `ollama/<model>`) and aliases.

An alias names a fallback chain: one or more targets tried in order, moving on
only for the failure reasons the alias falls back on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

import grpc

from llmgateway.server.config import AliasConfig, ConfigError
from llmgateway.server.errors import FieldViolation, GatewayError, reason_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmgateway.server.routing.decide import RouteDecision


Reason: TypeAlias = pb.ErrorReason.ValueType
# Each provider's prefix in gateway model names.
PREFIXES: dict[common.Provider.ValueType, str] = {
    common.PROVIDER_OPENROUTER: "openrouter/",
    common.PROVIDER_ZAI: "zai/",
    common.PROVIDER_OPENAI: "openai/",
    common.PROVIDER_ANTHROPIC: "anthropic/",
    common.PROVIDER_GEMINI: "gemini/",
    common.PROVIDER_GROQ: "groq/",
    common.PROVIDER_OLLAMA: "ollama/",
}
# `route/<name>` names a configured route (routing/routes.py), not a provider.
ROUTE_PREFIX = "route/"
OPENROUTER_PREFIX = PREFIXES[common.PROVIDER_OPENROUTER]
ZAI_PREFIX = PREFIXES[common.PROVIDER_ZAI]
# Providers whose model ids are one segment (no `/`), and those whose ids may
# hold any number (Groq serves `openai/gpt-oss-120b`, Ollama pulls
# `hf.co/user/repo:Q4_K_M`).
_ONE_SEGMENT = (
    common.PROVIDER_ZAI,
    common.PROVIDER_OPENAI,
    common.PROVIDER_ANTHROPIC,
    common.PROVIDER_GEMINI,
)
_ANY_SEGMENTS = (common.PROVIDER_GROQ, common.PROVIDER_OLLAMA)
NAMING_HELP = (
    "name models 'openrouter/<vendor>/<model>' (e.g. openrouter/openai/gpt-4o), "
    "'zai/<model>' (zai/glm-4.7), 'openai/<model>' (openai/gpt-4o-mini), "
    "'anthropic/<model>' (anthropic/claude-sonnet-4-5), 'gemini/<model>' "
    "(gemini/gemini-2.5-flash), 'groq/<model>' (groq/llama-3.3-70b-versatile) "
    "or 'ollama/<model>' (ollama/llama3.2)"
)

# What a fallback chain moves on from unless its alias says otherwise: failures
# of this target (its provider, account, endpoint or model) that another target
# may not share. Not the request's own faults (invalid, flagged, duplicate), and
# not malformed answers, which the upstream may already have billed.
DEFAULT_FALLBACK_ON: frozenset[Reason] = frozenset(
    {
        pb.ERROR_REASON_PROVIDER_NOT_CONFIGURED,
        pb.ERROR_REASON_UPSTREAM_AUTH_FAILED,
        pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS,
        pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED,
        pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND,
        pb.ERROR_REASON_UPSTREAM_RATE_LIMITED,
        pb.ERROR_REASON_UPSTREAM_QUOTA_EXCEEDED,
        pb.ERROR_REASON_UPSTREAM_OVERLOADED,
        pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
        pb.ERROR_REASON_UPSTREAM_UNREACHABLE,
        pb.ERROR_REASON_UPSTREAM_TIMEOUT,
        pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED,
        pb.ERROR_REASON_GATEWAY_BUSY,
        pb.ERROR_REASON_UPSTREAM_CIRCUIT_OPEN,
        pb.ERROR_REASON_UPSTREAM_INVALID_TOOL_CALL,
    }
)
_ENDPOINTS = {"general": common.ZAI_ENDPOINT_GENERAL, "coding": common.ZAI_ENDPOINT_CODING}
_REASONS = {reason_name(value): value for value in pb.ErrorReason.values()}


@dataclass(frozen=True, slots=True)
class Route:
    """Where one attempt goes."""

    provider: common.Provider.ValueType
    # The model id the provider knows ("openai/gpt-4o", "glm-4.7").
    upstream_model: str
    # The model the caller asked for, as written (an alias stays an alias).
    requested: str
    # A Z.AI endpoint pinned by the alias target; unspecified leaves the choice
    # to the request and the configured coding models.
    zai_endpoint: common.ZaiEndpoint.ValueType = common.ZAI_ENDPOINT_UNSPECIFIED

    @property
    def target(self) -> str:
        """This route in gateway naming, with a pinned Z.AI endpoint: `zai/glm-4.7@coding`."""
        name = gateway_model_name(self.provider, self.upstream_model)
        if self.zai_endpoint == common.ZAI_ENDPOINT_CODING:
            return name + "@coding"
        if self.zai_endpoint == common.ZAI_ENDPOINT_GENERAL:
            return name + "@general"
        return name


@dataclass(frozen=True, slots=True)
class Plan:
    """Every route one call may take, in order, and when to move to the next."""

    routes: tuple[Route, ...]
    fallback_on: frozenset[Reason] = DEFAULT_FALLBACK_ON
    # Set only for `route/<name>` calls: why these targets, in this order.
    decision: RouteDecision | None = None

    @property
    def requested(self) -> str:
        """The model the caller asked for."""
        return self.routes[0].requested


def is_route_name(name: str) -> bool:
    """Whether a request's `model` names a route (`route/default`)."""
    return name.startswith(ROUTE_PREFIX)


def gateway_model_name(provider: common.Provider.ValueType, upstream_model: str) -> str:
    """The gateway's name for a provider's model id."""
    return PREFIXES[provider] + upstream_model


def parse_model_name(name: str) -> tuple[common.Provider.ValueType, str] | None:
    """(provider, upstream model) for a well-formed name, else None.

    Segment syntax (no empty segments, allowed characters) is checked earlier,
    by names.py; this only decides the provider and how many segments its
    model ids may have."""
    if name.startswith(OPENROUTER_PREFIX):
        vendor, slash, model = name[len(OPENROUTER_PREFIX) :].partition("/")
        if vendor and slash and model and not model.startswith("/"):
            return common.PROVIDER_OPENROUTER, f"{vendor}/{model}"
        return None
    for provider in _ONE_SEGMENT:
        prefix = PREFIXES[provider]
        if name.startswith(prefix):
            model = name[len(prefix) :]
            # Gemini's model goes into the URL path before `:generateContent`.
            if provider == common.PROVIDER_GEMINI and ":" in model:
                return None
            if model and "/" not in model:
                return provider, model
            return None
    for provider in _ANY_SEGMENTS:
        prefix = PREFIXES[provider]
        if name.startswith(prefix):
            model = name[len(prefix) :]
            if model and not model.startswith("/") and not model.endswith("/"):
                return provider, model
            return None
    return None


class Router:
    """Resolves the `model` field of a request to a plan."""

    def __init__(self, aliases: Mapping[str, str | AliasConfig]) -> None:
        self.aliases = {
            alias: _alias_plan(alias, AliasConfig.of(config)) for alias, config in aliases.items()
        }

    def resolve(self, name: str) -> Plan:
        """The plan for `name`, or INVALID_ARGUMENT saying how models are named."""
        plan = self.aliases.get(name)
        if plan is not None:
            return plan
        parsed = parse_model_name(name)
        if parsed is None:
            hint = NAMING_HELP
            if self.aliases:
                hint += "; configured aliases: " + ", ".join(sorted(self.aliases)[:10])
            raise GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT,
                pb.ERROR_REASON_UNKNOWN_MODEL,
                f"unknown model {name[:256]!r}: {hint}",
                metadata={"model": name[:256]},
                field_violations=(FieldViolation("model", hint),),
            )
        return Plan((Route(provider=parsed[0], upstream_model=parsed[1], requested=name),))


def _alias_plan(alias: str, config: AliasConfig, *, where: str | None = None) -> Plan:
    """The plan of an alias named `alias` (each Route's `requested`); `where`
    names it in errors (routes say "[routes.default] code")."""
    where = where if where is not None else f"alias {alias!r}"
    if not config.targets:
        raise ConfigError(f"{where} has no targets")
    routes = []
    for target in config.targets:
        parsed = parse_model_name(target.model)
        if parsed is None:
            raise ConfigError(f"{where} points at {target.model!r}; {NAMING_HELP}")
        endpoint = common.ZAI_ENDPOINT_UNSPECIFIED
        if target.zai_endpoint is not None:
            if parsed[0] != common.PROVIDER_ZAI:
                raise ConfigError(
                    f"{where}: zai_endpoint applies to zai/ targets, not {target.model!r}"
                )
            if target.zai_endpoint not in _ENDPOINTS:
                raise ConfigError(
                    f"{where}: zai_endpoint must be 'general' or 'coding', "
                    f"got {target.zai_endpoint!r}"
                )
            endpoint = _ENDPOINTS[target.zai_endpoint]
        routes.append(Route(parsed[0], parsed[1], alias, endpoint))
    if config.fallback_on is None:
        return Plan(tuple(routes))
    return Plan(tuple(routes), fallback_reasons(where, config.fallback_on))


def fallback_reasons(where: str, names: Sequence[str]) -> frozenset[Reason]:
    """`fallback_on` names (ErrorReason without the prefix) as reasons."""
    unknown = [name for name in names if name not in _REASONS]
    if unknown:
        raise ConfigError(
            f"{where}: unknown fallback_on reasons {unknown}; use ErrorReason names "
            "without the prefix, e.g. UPSTREAM_RATE_LIMITED"
        )
    return frozenset(_REASONS[name] for name in names)
