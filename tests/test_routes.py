"""The compiled route table (routing/routes.py): each [routes.NAME] entry as a
Plan, aliases expanded in place, tier variants, and start-up refusals that
say what to fix."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc
import pytest

from llmgateway.server.config import (
    AliasConfig,
    AliasTarget,
    ConfigError,
    RouteConfig,
    RouteEntryConfig,
)
from llmgateway.server.errors import GatewayError
from llmgateway.server.routing.router import DEFAULT_FALLBACK_ON, Router
from llmgateway.server.routing.routes import RouteTable
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import routing_pb2 as rpb
from tests.readme import readme_example_toml
from tests.routing_fixtures import load_settings, route_table

if TYPE_CHECKING:
    from pathlib import Path

ROUTER = Router(
    {
        "fast": "zai/glm-4.5-flash",
        "coding": AliasConfig(
            (AliasTarget("zai/glm-4.7", "coding"), AliasTarget("openrouter/z-ai/glm-4.7")),
            ("UPSTREAM_RATE_LIMITED",),
        ),
    }
)


def entry(
    *targets: str | AliasTarget, fallback_on: tuple[str, ...] | None = None, **tiers: AliasConfig
) -> RouteEntryConfig:
    return RouteEntryConfig(
        AliasConfig(
            tuple(t if isinstance(t, AliasTarget) else AliasTarget(t) for t in targets),
            fallback_on,
        ),
        tiers,
    )


def alias(*targets: str, fallback_on: tuple[str, ...] | None = None) -> AliasConfig:
    return AliasConfig(tuple(AliasTarget(t) for t in targets), fallback_on)


def table(**entries: RouteEntryConfig) -> RouteTable:
    return RouteTable({"default": RouteConfig(entries)}, ROUTER)


def targets(plan: object) -> list[str]:
    return [route.target for route in plan.routes]  # type: ignore[attr-defined]


def test_the_readme_example_compiles(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, readme_example_toml())
    routes = route_table(settings)
    assert routes.names == ("route/cheap", "route/default")
    default = routes.resolve("route/default")
    assert default.name == "route/default"
    # Every entry of every route asks in the route's name, aliases included.
    for name in routes.names:
        route = routes.resolve(name)
        assert "default" in route.entries
        for compiled in route.entries.values():
            for plan in (compiled.plan, *compiled.tiers.values()):
                assert plan.routes
                assert {r.requested for r in plan.routes} == {name}
                assert plan.decision is None
    # `code = "coding"`: the alias's targets, its pinned endpoint kept.
    code = default.entries["code"].plan
    assert targets(code)[0] == "zai/glm-4.7@coding"
    assert code.routes[0].zai_endpoint == common.ZAI_ENDPOINT_CODING
    # ... and not its fallback_on: the entry's (here the default) governs.
    assert code.fallback_on == DEFAULT_FALLBACK_ON
    extraction = default.entries["extraction"]
    assert targets(extraction.plan_for(rpb.COST_TIER_HIGH)) == ["openai/gpt-4o"]
    assert extraction.plan_for(rpb.COST_TIER_LOW) is extraction.plan
    assert extraction.plan_for(rpb.COST_TIER_UNSPECIFIED) is extraction.plan


def test_an_alias_is_expanded_in_place_and_models_around_it_kept() -> None:
    route = table(default=entry("openai/gpt-4o", "coding", "fast")).resolve("route/default")
    plan = route.default.plan
    assert targets(plan) == [
        "openai/gpt-4o",
        "zai/glm-4.7@coding",
        "openrouter/z-ai/glm-4.7",
        "zai/glm-4.5-flash",
    ]
    # The alias's own fallback_on (UPSTREAM_RATE_LIMITED only) is ignored.
    assert plan.fallback_on == DEFAULT_FALLBACK_ON
    assert route.routes == plan.routes


def test_the_entrys_fallback_on_governs_and_tier_variants_inherit_it() -> None:
    routes = table(
        default=entry(
            "openai/gpt-4o",
            fallback_on=("UPSTREAM_OVERLOADED",),
            low=alias("zai/glm-4.5-flash"),
            high=alias("openai/gpt-4o", fallback_on=("UPSTREAM_TIMEOUT",)),
        )
    )
    default = routes.resolve("route/default").default
    assert default.plan.fallback_on == {pb.ERROR_REASON_UPSTREAM_OVERLOADED}
    assert default.tiers[rpb.COST_TIER_LOW].fallback_on == {pb.ERROR_REASON_UPSTREAM_OVERLOADED}
    assert default.tiers[rpb.COST_TIER_HIGH].fallback_on == {pb.ERROR_REASON_UPSTREAM_TIMEOUT}
    assert rpb.COST_TIER_MEDIUM not in default.tiers


def test_routes_every_target_once_in_table_order() -> None:
    route = table(
        default=entry("fast"),
        code=entry("coding", "zai/glm-4.5-flash", low=alias("groq/llama-3.3-70b-versatile")),
    ).resolve("route/default")
    assert [r.target for r in route.routes] == [
        "zai/glm-4.5-flash",
        "zai/glm-4.7@coding",
        "openrouter/z-ai/glm-4.7",
        "groq/llama-3.3-70b-versatile",
    ]


def test_get_and_resolve() -> None:
    routes = RouteTable(
        {
            "default": RouteConfig({"default": entry("fast")}),
            "cheap": RouteConfig({"default": entry("ollama/llama3.2")}),
        },
        ROUTER,
    )
    assert routes.get("route/cheap") is routes.resolve("route/cheap")
    assert routes.get("route/nope") is None
    assert routes.get("cheap") is None  # the name callers send has the prefix
    assert len(routes) == 2
    with pytest.raises(GatewayError) as caught:
        routes.resolve("route/nope")
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == pb.ERROR_REASON_UNKNOWN_MODEL
    assert "configured routes: route/cheap, route/default" in error.message
    assert error.field_violations[0].field == "model"
    assert error.metadata == {"model": "route/nope"}


def test_resolve_without_routes_says_how_to_add_one() -> None:
    routes = RouteTable({}, ROUTER)
    assert routes.names == ()
    with pytest.raises(GatewayError) as caught:
        routes.resolve("route/default")
    assert "no routes are configured" in caught.value.message
    assert "[routes.default]" in caught.value.message


def _zai(endpoint: str) -> AliasTarget:
    return AliasTarget("zai/glm-4.7", endpoint)


@pytest.mark.parametrize(
    ("routes", "message"),
    [
        (
            {"cheap": RouteConfig({"default": entry("fast")})},
            "[routes] needs a default route: add [routes.default] with `default = ...`",
        ),
        (
            {"default": RouteConfig({"code": entry("fast")})},
            "[routes.default] needs a default entry: add `default = ...`",
        ),
        (
            {"default": RouteConfig({"default": entry("fast"), "cod": entry("fast")})},
            "[routes.default] cod is not a task; did you mean code? Tasks: chat, code, reasoning",
        ),
        (
            {"default": RouteConfig({"default": entry("fast"), "auto": entry("fast")})},
            "[routes.default] auto is how a caller asks for inference; it is not a route entry",
        ),
        (
            {
                "default": RouteConfig({"default": entry("fast")}),
                "a/b": RouteConfig({"default": entry("fast")}),
            },
            "[routes] 'a/b' cannot be a route name: a route name is one segment",
        ),
        (
            {
                "default": RouteConfig({"default": entry("fast")}),
                "b d": RouteConfig({"default": entry("fast")}),
            },
            "[routes] 'b d' cannot be a route name: must not contain",
        ),
        (
            {"default": RouteConfig({"default": entry("route/cheap")})},
            "[routes.default] default points at 'route/cheap': a route cannot point at a route",
        ),
        (
            {"default": RouteConfig({"default": entry("fast"), "code": entry("zai/glm4.7/x")})},
            "[routes.default] code points at 'zai/glm4.7/x': name models 'openrouter/<vendor>/<model>'",
        ),
        (
            {"default": RouteConfig({"default": entry("nonsense")})},
            "; configured aliases: coding, fast",
        ),
        (
            {"default": RouteConfig({"default": entry("openai/gpt 4o")})},
            "[routes.default] default points at 'openai/gpt 4o': must not contain",
        ),
        (
            {"default": RouteConfig({"default": entry(AliasTarget("openai/gpt-4o", "coding"))})},
            "[routes.default] default: zai_endpoint applies to zai/ targets, not 'openai/gpt-4o'",
        ),
        (
            {"default": RouteConfig({"default": entry(AliasTarget("fast", "coding"))})},
            "[routes.default] default: zai_endpoint applies to zai/ targets, not the alias 'fast'",
        ),
        (
            {"default": RouteConfig({"default": entry(_zai("turbo"))})},
            "[routes.default] default: zai_endpoint must be 'general' or 'coding', got 'turbo'",
        ),
        (
            {"default": RouteConfig({"default": entry("fast", fallback_on=("RATE_LIMITED",))})},
            "[routes.default] default: unknown fallback_on reasons ['RATE_LIMITED']",
        ),
        (
            {"default": RouteConfig({"default": entry()})},
            "[routes.default] default has no targets",
        ),
        (
            {"default": RouteConfig({"default": entry("fast", cheapest=alias("fast"))})},
            "[routes.default] default cost_tier 'cheapest' is not a cost tier; use low, medium or high",
        ),
        (
            {"default": RouteConfig({"default": entry("fast", low=alias("route/x"))})},
            "[routes.default] default cost_tier low points at 'route/x'",
        ),
        (
            {
                "default": RouteConfig(
                    {"default": entry("fast", low=alias("fast", fallback_on=("NOPE",)))}
                )
            },
            "[routes.default] default cost_tier low: unknown fallback_on reasons ['NOPE']",
        ),
        (
            {
                "default": RouteConfig({"default": entry("fast")}),
                "v1.2": RouteConfig({"default": entry("x")}),
            },
            "[routes.\"v1.2\"] default points at 'x'",
        ),
    ],
)
def test_refusals_say_what_to_fix(routes: dict[str, RouteConfig], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        RouteTable(routes, ROUTER)
    assert message in str(caught.value)


def test_alias_messages_are_unchanged() -> None:
    """router._alias_plan's `where` defaults to the alias's own wording."""
    with pytest.raises(ConfigError, match=r"^alias 'x' points at 'nope'; name models"):
        Router({"x": "nope"})
    with pytest.raises(ConfigError, match=r"^alias 'x': unknown fallback_on reasons \['NOPE'\]"):
        Router({"x": AliasConfig((AliasTarget("zai/glm-4.7"),), ("NOPE",))})
