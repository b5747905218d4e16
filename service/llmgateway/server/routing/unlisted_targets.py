"""Start-up warnings for alias and route targets no built-in table knows.

Start-up refuses a target that is neither an alias nor a provider's model
name (`fsat`), but a well-formed, misspelt model name (`zai/glm4.7`) passes:
new models appear before the gateway's tables know them, so refusing would
block them. Such a name is only worth a warning, once, where the gateway has
a table to look in: the price tables of Z.AI, OpenAI, Anthropic, Gemini and
Groq (routing/pricing.py's BUILTIN_TABLES, a dated snapshot counting as its
base model, as prices and windows do). OpenRouter's and Ollama's models are
known only from their catalogues, which start-up does not fetch, so their
names are not judged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmgateway.server.routing.capabilities import snapshot_bases
from llmgateway.server.routing.pricing import BUILTIN_TABLES
from llmgateway.server.routing.router import gateway_model_name
from llmgateway.server.routing.routes import TIER_NAMES

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from llmgateway.server.routing.router import Plan, Route
    from llmgateway.server.routing.routes import RouteTable
    from llmgateway.v1 import completion_pb2 as common

# Gateway names of every model in a built-in table.
_TABLED: frozenset[str] = frozenset(
    gateway_model_name(provider, model.name)
    for provider, models in BUILTIN_TABLES.items()
    for model in models
)
# The providers the gateway has a table of models for, by their name prefix
# ("zai" for `zai/...`): only their targets are judged.
_PROVIDER_IDS: dict[common.Provider.ValueType, str] = {
    provider: gateway_model_name(provider, "x").removesuffix("/x") for provider in BUILTIN_TABLES
}


def in_a_table(route: Route) -> bool | None:
    """Whether a target's model is in its provider's built-in table (a dated
    snapshot by its base); None for a provider without one (OpenRouter, Ollama)."""
    if route.provider not in BUILTIN_TABLES:
        return None
    name = gateway_model_name(route.provider, route.upstream_model)
    return any(base in _TABLED for base in snapshot_bases(name))


def unlisted_target_warnings(aliases: Mapping[str, Plan], routes: RouteTable | None) -> list[str]:
    """One line per model name that an alias or route names and that its
    provider's built-in table does not know, with every place it is named, in
    config order: "route/default code: zai/glm4.7 is in no built-in table of
    zai models; if it is a typo the calls will fail with
    UPSTREAM_MODEL_NOT_FOUND"."""
    places: dict[str, list[str]] = {}
    provider_of: dict[str, common.Provider.ValueType] = {}
    for where, plan in _plans(aliases, routes):
        for route in plan.routes:
            if in_a_table(route) is False:
                name = gateway_model_name(route.provider, route.upstream_model)
                named_at = places.setdefault(name, [])
                if where not in named_at:
                    named_at.append(where)
                provider_of[name] = route.provider
    return [
        f"{', '.join(where)}: {name} is in no built-in table of "
        f"{_PROVIDER_IDS[provider_of[name]]} models; if it is a typo the calls will fail "
        "with UPSTREAM_MODEL_NOT_FOUND"
        for name, where in places.items()
    ]


def _plans(aliases: Mapping[str, Plan], routes: RouteTable | None) -> Iterator[tuple[str, Plan]]:
    """Every alias's and route entry's (and cost tier variant's) plan, with
    where the config says it: "alias fast", "route/default code",
    "route/default reasoning (cost_tier low)"."""
    for name, plan in aliases.items():
        yield f"alias {name}", plan
    if routes is None:
        return
    for route_name in routes.names:
        compiled = routes.resolve(route_name)
        for entry in compiled.entries.values():
            yield f"{compiled.name} {entry.name}", entry.plan
            for tier, variant in entry.tiers.items():
                yield f"{compiled.name} {entry.name} (cost_tier {TIER_NAMES[tier]})", variant
