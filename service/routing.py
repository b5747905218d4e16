"""Model names to providers: `openrouter/<vendor>/<model>`, `zai/<model>`, aliases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

from service.config import ConfigError
from service.errors import FieldViolation, GatewayError

if TYPE_CHECKING:
    from collections.abc import Mapping

OPENROUTER_PREFIX = "openrouter/"
ZAI_PREFIX = "zai/"
NAMING_HELP = (
    "name models 'openrouter/<vendor>/<model>' (e.g. openrouter/openai/gpt-4o) "
    "or 'zai/<model>' (e.g. zai/glm-4.7)"
)


@dataclass(frozen=True, slots=True)
class Route:
    """Where one request goes."""

    provider: common.Provider.ValueType
    # The model id the provider knows ("openai/gpt-4o", "glm-4.7").
    upstream_model: str
    # The model the caller asked for, as written (an alias stays an alias).
    requested: str


def gateway_model_name(provider: common.Provider.ValueType, upstream_model: str) -> str:
    """The gateway's name for a provider's model id."""
    prefix = OPENROUTER_PREFIX if provider == common.PROVIDER_OPENROUTER else ZAI_PREFIX
    return prefix + upstream_model


def parse_model_name(name: str) -> tuple[common.Provider.ValueType, str] | None:
    """(provider, upstream model) for a well-formed name, else None."""
    if name.startswith(OPENROUTER_PREFIX):
        vendor, slash, model = name[len(OPENROUTER_PREFIX) :].partition("/")
        if vendor and slash and model and not model.startswith("/"):
            return common.PROVIDER_OPENROUTER, f"{vendor}/{model}"
        return None
    if name.startswith(ZAI_PREFIX):
        model = name[len(ZAI_PREFIX) :]
        if model and "/" not in model:
            return common.PROVIDER_ZAI, model
    return None


class Router:
    """Resolves the `model` field of a request."""

    def __init__(self, aliases: Mapping[str, str]) -> None:
        self._aliases: dict[str, tuple[common.Provider.ValueType, str]] = {}
        for alias, target in aliases.items():
            parsed = parse_model_name(target)
            if parsed is None:
                raise ConfigError(f"alias {alias!r} points at {target!r}; {NAMING_HELP}")
            self._aliases[alias] = parsed
        self.alias_targets = dict(aliases)

    def resolve(self, name: str) -> Route:
        """The route for `name`, or INVALID_ARGUMENT saying how models are named."""
        parsed = self._aliases.get(name) or parse_model_name(name)
        if parsed is None:
            hint = NAMING_HELP
            if self._aliases:
                hint += "; configured aliases: " + ", ".join(sorted(self._aliases)[:10])
            raise GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT,
                pb.ERROR_REASON_UNKNOWN_MODEL,
                f"unknown model {name[:256]!r}: {hint}",
                metadata={"model": name[:256]},
                field_violations=(FieldViolation("model", hint),),
            )
        return Route(provider=parsed[0], upstream_model=parsed[1], requested=name)
