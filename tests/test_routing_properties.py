"""Properties of routing decisions (plan §8.2), over random requests, route
tables drawn from a pool of targets across the seven providers, capability
overrides, caller keys, open breakers, providers without keys, tier ceilings
and sessions:

1. nothing in a decision's plan violates a hard constraint (recomputed here,
   independently of skip_reason), and an open breaker is in it only alone;
2. every target of the serving entry is in the plan or passed over, each
   skip's reason is the first failing check, and no target is both;
3. a request naming a model or alias is never re-routed, whatever its hints;
4. the same state decides the same (ExplainRoute and the call agree);
5. decide() raises only its two documented errors;
6. a search of the route for very long input plans the largest windows first;
7. an entry whose targets are all behind open breakers stays only when the
   default entry has no closed target that can serve.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from llmgateway.server.call_path.servicer import Planner
from llmgateway.server.call_path.validation import validate
from llmgateway.server.config import (
    AliasConfig,
    AliasTarget,
    RouteConfig,
    RouteEntryConfig,
    RoutingSettings,
)
from llmgateway.server.errors import GatewayError
from llmgateway.server.routing.capabilities import needs_of
from llmgateway.server.routing.decide import RouteDecision, decide
from llmgateway.server.routing.router import Router
from llmgateway.server.routing.routes import COST_TIERS, ENTRY_NAMES, TIER_NAMES, RouteTable
from llmgateway.server.routing.sticky import StickySessions, sticky_key
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import routing_pb2 as rpb
from tests.routing_fixtures import FakeView, caller_key, make_request, model_name

if TYPE_CHECKING:
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest
    from llmgateway.server.routing.capabilities import RequestNeeds
    from llmgateway.server.routing.router import Route
    from llmgateway.server.state.keys import CallerKey

POOL = (
    "openrouter/openai/gpt-4o-mini",
    "openrouter/anthropic/claude-sonnet-4.5",
    "openrouter/x/unknown",
    "zai/glm-4.7",
    "zai/glm-4.7@coding",
    "zai/glm-4.5-flash",
    "zai/glm-4.6v",
    "openai/gpt-4o",
    "openai/o1-mini",
    "anthropic/claude-sonnet-4-5",
    "gemini/gemini-2.5-flash",
    "groq/llama-3.3-70b-versatile",
    "ollama/llama3.2",
    "ollama/llava",
)
MODELS = sorted({target.partition("@")[0] for target in POOL})
ALIASES: dict[str, str | AliasConfig] = {
    "fast": "zai/glm-4.5-flash",
    "pair": AliasConfig((AliasTarget("openai/gpt-4o"), AliasTarget("zai/glm-4.7", "coding"))),
}
PROVIDERS = sorted(set(common.Provider.values()) - {common.PROVIDER_UNSPECIFIED})
MAX_REQUEST_BYTES = 8 * 1024 * 1024


def _target(text: str) -> AliasTarget:
    model, _, endpoint = text.partition("@")
    return AliasTarget(model, endpoint or None)


_targets = st.lists(st.sampled_from((*POOL, "fast", "pair")), min_size=1, max_size=3)


@st.composite
def _entries(draw: st.DrawFn) -> RouteEntryConfig:
    tiers = draw(st.dictionaries(st.sampled_from(sorted(COST_TIERS)), _targets, max_size=2))
    return RouteEntryConfig(
        AliasConfig(tuple(_target(t) for t in draw(_targets))),
        {tier: AliasConfig(tuple(_target(t) for t in names)) for tier, names in tiers.items()},
    )


@st.composite
def _tables(draw: st.DrawFn) -> RouteTable:
    others = draw(
        st.dictionaries(
            st.sampled_from([e for e in ENTRY_NAMES if e != "default"]), _entries(), max_size=5
        )
    )
    return RouteTable(
        {"default": RouteConfig({"default": draw(_entries()), **others})}, Router(ALIASES)
    )


_override = st.fixed_dictionaries(
    {},
    optional={
        "context_window": st.integers(1, 300_000),
        "tools": st.booleans(),
        "json_schema": st.booleans(),
        "json_object": st.booleans(),
        "vision": st.booleans(),
        "image_urls": st.booleans(),
        "forced_tool_choice": st.booleans(),
    },
)


@st.composite
def _views(draw: st.DrawFn) -> FakeView:
    return FakeView(
        unconfigured=draw(st.frozensets(st.sampled_from(PROVIDERS), max_size=3)),
        open_breakers=draw(st.frozensets(st.sampled_from(POOL), max_size=4)),
        overrides=draw(st.dictionaries(st.sampled_from(MODELS), _override, max_size=3)),
    )


_ALPHABET = "abcdefgh XYZ 0123456789 ()[]{};:=+-*/_\n`\t翻译中文总结今日はとても안녕하세요"
_WORDS = ("summarize", "translate", "python", "function", "prove", "how many", "```", "def f():")


@st.composite
def _requests(draw: st.DrawFn, *, long: bool = False) -> AnyCompletionRequest:
    """Requests by feature; `long`: always over the rules' 128 KiB (long input)."""
    text = draw(st.text(alphabet=_ALPHABET, min_size=100 if long else 1, max_size=200))
    text += " ".join(draw(st.lists(st.sampled_from(_WORDS), max_size=3)))
    text *= 1500 if long else draw(st.sampled_from((1, 1, 1, 40, 1500)))
    tools = draw(st.integers(0, 3))
    response = draw(st.sampled_from(("", "schema", "object")))
    request = make_request(
        text,
        task=draw(st.sampled_from(list(rpb.Task.values()))),
        cost_tier=draw(st.sampled_from(list(rpb.CostTier.values()))),
        session_id=draw(st.sampled_from(("", "s1"))),
        system=draw(st.sampled_from((None, "You translate everything into German."))),
        tools=tools,
        tool_choice=draw(st.sampled_from((None, "required", "tool_0"))) if tools else None,
        json_schema=response == "schema",
        json_object=response == "object",
        images=draw(st.integers(0, 2)),
        image_url=draw(st.booleans()),
        max_tokens=draw(st.one_of(st.none(), st.integers(1, 300_000))),
        stop=tuple(draw(st.lists(st.sampled_from(("END", "\n\n")), max_size=2, unique=True))),
        thinking=draw(st.booleans()),
        stream=draw(st.booleans()),
    )
    assume(not validate(request, MAX_REQUEST_BYTES))
    return request


_keys = st.one_of(
    st.none(),
    st.lists(
        st.sampled_from(("openai/*", "zai/*", "openrouter/*", "route/*", "gemini/*", "*llama*")),
        max_size=3,
    ).map(lambda patterns: caller_key(*patterns)),
)
_routing = st.builds(
    RoutingSettings,
    min_confidence=st.floats(0, 1),
    max_call_usd=st.dictionaries(
        st.sampled_from(sorted(COST_TIERS)), st.floats(0, 0.05), max_size=3
    ),
)


@dataclasses.dataclass(frozen=True)
class World:
    """Everything a decision reads."""

    routes: RouteTable
    view: FakeView
    key: CallerKey | None
    routing: RoutingSettings
    stored: str | None

    def sticky(self) -> StickySessions:
        table = StickySessions(ttl=60, max_sessions=10, clock=lambda: 0.0)
        if self.stored is not None:
            table.served(
                sticky_key(self.key.id if self.key else None, "route/default", "s1"), self.stored
            )
        return table

    def outcome(self, request: AnyCompletionRequest) -> RouteDecision | GatewayError:
        """The decision, or the GatewayError it raised (anything else propagates)."""
        try:
            return self.decide(request)
        except GatewayError as error:
            return error

    def decide(self, request: AnyCompletionRequest) -> RouteDecision:
        return decide(
            request,
            self.routes.resolve("route/default"),
            key=self.key,
            view=self.view,
            sticky=self.sticky(),
            settings=self.routing,
        )


_worlds = st.builds(
    World,
    routes=_tables(),
    view=_views(),
    key=_keys,
    routing=_routing,
    stored=st.one_of(st.none(), st.sampled_from(POOL)),
)


def _first_violation(
    request: AnyCompletionRequest, needs: RequestNeeds, route: Route, world: World
) -> rpb.SkipReason.ValueType | None:
    """The first hard constraint `route` violates, stated here on its own
    terms: the filter's order, not its code."""
    name = model_name(route)
    view, key = world.view, world.key
    if route.provider in view.unconfigured:
        return rpb.SKIP_REASON_NOT_CONFIGURED
    if key is not None and not key.allows_model("route/default") and not key.allows_model(name):
        return rpb.SKIP_REASON_KEY_MODEL_PATTERNS
    caps = view.capabilities(name)
    if (
        caps.context_window is not None
        and caps.context_window < needs.estimated_prompt_tokens + needs.max_tokens
    ):
        return rpb.SKIP_REASON_CONTEXT_WINDOW
    if needs.tools and not caps.tools:
        return rpb.SKIP_REASON_NO_TOOLS
    if needs.forced_tool is not None:
        can = caps.forced_tool_choice
        if needs.thinking and can:
            can = caps.forced_tool_choice_while_thinking
        if not can:
            return rpb.SKIP_REASON_CANNOT_FORCE_TOOL
    if needs.json_schema and not caps.json_schema:
        return rpb.SKIP_REASON_NO_JSON_SCHEMA
    if needs.json_object and not caps.json_object:
        return rpb.SKIP_REASON_NO_JSON_OBJECT
    if needs.images and not caps.vision:
        return rpb.SKIP_REASON_NO_VISION
    if needs.image_urls and not caps.image_urls:
        return rpb.SKIP_REASON_NO_IMAGE_URLS
    if view.check(request, route):
        return rpb.SKIP_REASON_PROVIDER_REFUSES
    tier = TIER_NAMES.get(request.routing.cost_tier)
    ceiling = world.routing.max_call_usd.get(tier) if tier is not None else None
    price = view.price(name)
    dear = price is not None and price.cost(needs.estimated_prompt_tokens, needs.max_tokens)
    if ceiling is not None and dear is not False and dear > ceiling:
        return rpb.SKIP_REASON_BUDGET
    return None


PROPERTIES = settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@PROPERTIES
@given(request=_requests(), world=_worlds)
def test_the_plan_holds_only_targets_that_can_serve(
    request: AnyCompletionRequest, world: World
) -> None:
    """Property 1; and property 5 (only the two documented errors)."""
    decision = world.outcome(request)
    event("refused" if isinstance(decision, GatewayError) else "decided")
    if isinstance(decision, GatewayError):
        assert decision.reason in (
            pb.ERROR_REASON_NO_ELIGIBLE_TARGET,
            pb.ERROR_REASON_MODEL_NOT_ALLOWED,
        )
        if decision.reason == pb.ERROR_REASON_MODEL_NOT_ALLOWED:
            assert world.key is not None
            assert not world.key.allows_model("route/default")
        return
    needs = needs_of(request)
    routes = decision.plan.routes
    assert routes
    for route in routes:
        assert _first_violation(request, needs, route, world) is None, route.target
    if any(route.target in world.view.open_breakers for route in routes):
        assert len(routes) == 1
    assert len({r.target for r in routes}) == len(routes)
    assert len(decision.windows) == len(routes)


@PROPERTIES
@given(request=_requests(), world=_worlds)
def test_nothing_is_silently_lost(request: AnyCompletionRequest, world: World) -> None:
    """Property 2."""
    decision = world.outcome(request)
    if isinstance(decision, GatewayError):
        return
    needs = needs_of(request)
    planned = {r.target for r in decision.plan.routes}
    passed = [s.target for s in decision.passed_over]
    assert len(passed) == len(set(passed))
    assert not planned & set(passed)
    entry = world.routes.resolve("route/default").entries[decision.entry]
    for route in entry.plan_for(request.routing.cost_tier).routes:
        assert route.target in planned | set(passed), route.target
    by_target = {r.target: r for r in world.routes.resolve("route/default").routes}
    for skip in decision.passed_over:
        first = _first_violation(request, needs, by_target[skip.target], world)
        if skip.reason == rpb.SKIP_REASON_CIRCUIT_OPEN:
            assert first is None
            assert skip.target in world.view.open_breakers
        else:
            assert skip.reason == first, (skip.target, skip.id)


@PROPERTIES
@given(request=_requests(), world=_worlds)
def test_the_same_state_decides_the_same(request: AnyCompletionRequest, world: World) -> None:
    """Property 4: ExplainRoute and the call run this on the same state."""
    first, second = world.outcome(request), world.outcome(request)
    assert first == second
    if isinstance(first, GatewayError):
        return
    assert isinstance(second, RouteDecision)
    chosen = first.plan.routes[0].target
    assert first.to_proto(chosen=chosen, explain=True) == second.to_proto(
        chosen=chosen, explain=True
    )


@PROPERTIES
@given(request=_requests(long=True), world=_worlds)
def test_a_route_search_plans_the_largest_windows_first_from_the_entry_it_names(
    request: AnyCompletionRequest, world: World
) -> None:
    """Very long input no target of the entry or the default can take: the
    plan (after a session's target) is in order of known window, largest
    first, and `entry` lists its first target."""
    decision = world.outcome(request)
    searched = isinstance(decision, RouteDecision) and "long_input_search" in decision.signals
    event("route searched" if searched else "route not searched")
    if not isinstance(decision, RouteDecision) or not searched:
        return
    assert decision.signals["long_input"] == "true"
    routes, windows = decision.plan.routes, decision.windows
    if decision.sticky:
        routes, windows = routes[1:], windows[1:]
    keys = [-(window or -1) for window in windows]
    assert keys == sorted(keys)
    if routes:
        entry = world.routes.resolve("route/default").entries[decision.entry]
        assert routes[0] in entry.plan_for(request.routing.cost_tier).routes


@PROPERTIES
@given(request=_requests(), world=_worlds)
def test_an_entry_behind_open_breakers_stays_only_when_the_default_has_no_closed_target(
    request: AnyCompletionRequest, world: World
) -> None:
    """A plan of one open target from an entry other than the default means
    the default entry had no target that passes the filter with its breaker
    closed (else it would have served)."""
    decision = world.outcome(request)
    if not isinstance(decision, RouteDecision) or decision.entry == "default":
        return
    (first, *others) = decision.plan.routes
    if others or first.target not in world.view.open_breakers or decision.sticky:
        return
    event("entry kept behind open breakers")
    needs = needs_of(request)
    default = world.routes.resolve("route/default").default
    passed = {s.target for s in decision.passed_over}
    for route in default.plan_for(request.routing.cost_tier).routes:
        if route.target in passed or route.target == first.target:
            continue  # also in the entry: judged there
        serves = _first_violation(request, needs, route, world) is None
        assert not serves or route.target in world.view.open_breakers, route.target


_named = st.sampled_from((*MODELS, *ALIASES))


@PROPERTIES
@given(model=_named, request=_requests(), world=_worlds)
def test_a_named_model_or_alias_is_never_rerouted(
    model: str, request: AnyCompletionRequest, world: World
) -> None:
    """Property 3, through the servicer's own planner: any hints, no decision."""
    request.model = model
    router = Router(ALIASES)
    planner = Planner(router, world.routes, world.view, world.sticky(), world.routing)
    plan = planner.plan_for(request, world.key)
    assert plan == router.resolve(model)
    assert plan.decision is None


def _tier_names_are_the_routes_cost_tiers() -> Any:
    return {TIER_NAMES[value] for value in COST_TIERS.values()}


def test_tier_names_round_trip() -> None:
    assert _tier_names_are_the_routes_cost_tiers() == set(COST_TIERS)
    assert set(TIER_NAMES) == set(rpb.CostTier.values()) - {rpb.COST_TIER_UNSPECIFIED}
