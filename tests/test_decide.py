"""decide() (routing/decide.py) step by step, against a FakeView: the task
(caller, rule, default; a caller's translation of Han text), the entry and the
fall to the default entry, the hard filter's order, the soft breaker and the
fall to the default's closed targets, long-input order and the search of the
route, stickiness, and the two errors."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import grpc
import pytest

from llmgateway.server.config import (
    AliasConfig,
    AliasTarget,
    RouteConfig,
    RouteEntryConfig,
    RoutingSettings,
)
from llmgateway.server.errors import GatewayError
from llmgateway.server.routing.capabilities import SkipId
from llmgateway.server.routing.decide import (
    _FIELDS,
    PROTO_TASKS,
    SKIP_IDS,
    TASKS_BY_PROTO,
    RouteDecision,
    decide,
)
from llmgateway.server.routing.router import Router
from llmgateway.server.routing.routes import CompiledRoute, RouteTable
from llmgateway.server.routing.sticky import StickySessions, sticky_key
from llmgateway.server.routing.task_rules import Task
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import routing_pb2 as rpb
from tests.routing_fixtures import FakeView, caller_key, make_request

if TYPE_CHECKING:
    from llmgateway.server.state.keys import CallerKey

CODE_FENCE = "fix this:\n```python\nprint(1\n```"
SETTINGS = RoutingSettings()


def _entry(*targets: str, **tiers: tuple[str, ...]) -> RouteEntryConfig:
    return RouteEntryConfig(
        AliasConfig(tuple(_target(t) for t in targets)),
        {tier: AliasConfig(tuple(_target(t) for t in names)) for tier, names in tiers.items()},
    )


def _target(text: str) -> AliasTarget:
    model, _, endpoint = text.partition("@")
    return AliasTarget(model, endpoint or None)


def route(**entries: RouteEntryConfig) -> CompiledRoute:
    entries.setdefault("default", _entry("zai/glm-4.5-flash"))
    return RouteTable({"default": RouteConfig(entries)}, Router({})).resolve("route/default")


ROUTE = route(
    default=_entry("zai/glm-4.5-flash", "openai/gpt-4o-mini"),
    code=_entry("zai/glm-4.7@coding", "openrouter/anthropic/claude-sonnet-4.5"),
    vision=_entry("zai/glm-4.7", "gemini/gemini-2.5-flash", "openai/gpt-4o"),
    extraction=_entry(
        "zai/glm-4.7", "openai/gpt-4o-mini", low=("zai/glm-4.5-flash", "openai/gpt-4o-mini")
    ),
    translation=_entry("openai/gpt-4o"),
    chinese=_entry("zai/glm-4.7"),
    agent=_entry("anthropic/claude-sonnet-4-5", "zai/glm-4.7"),
    summarization=_entry("ollama/llama3.2", "openai/gpt-4o", "gemini/gemini-2.5-flash"),
)


def run(
    request: pb.CompleteRequest | pb.StreamCompleteRequest,
    *,
    on: CompiledRoute = ROUTE,
    view: FakeView | None = None,
    key: CallerKey | None = None,
    sticky: StickySessions | None = None,
    settings: RoutingSettings = SETTINGS,
) -> RouteDecision:
    return decide(
        request,
        on,
        key=key,
        view=view or FakeView(),
        sticky=sticky,
        settings=settings,
    )


def plan(decision: RouteDecision) -> list[str]:
    return [r.target for r in decision.plan.routes]


def skipped(decision: RouteDecision) -> list[tuple[str, str]]:
    return [(s.target, s.id) for s in decision.passed_over]


def refused(request: pb.CompleteRequest | pb.StreamCompleteRequest, **kw: object) -> GatewayError:
    with pytest.raises(GatewayError) as caught:
        run(request, **kw)  # type: ignore[arg-type]
    return caught.value


# -- the vocabularies ---------------------------------------------------------------


def test_every_skip_id_maps_to_its_own_proto_reason() -> None:
    assert set(SKIP_IDS) == set(SkipId)
    assert len(set(SKIP_IDS.values())) == len(SkipId)
    assert SKIP_IDS[SkipId.BREAKER] == rpb.SKIP_REASON_CIRCUIT_OPEN
    # Same names, but for the breaker's.
    for skip_id, reason in SKIP_IDS.items():
        if skip_id != SkipId.BREAKER:
            assert rpb.SkipReason.Name(reason) == "SKIP_REASON_" + skip_id.name
    assert set(_FIELDS) == set(SkipId)


def test_every_proto_task_but_unspecified_and_auto_is_a_task() -> None:
    assert set(PROTO_TASKS) == set(Task)
    named = {v for v in rpb.Task.values() if v not in (rpb.TASK_UNSPECIFIED, rpb.TASK_AUTO)}
    assert set(TASKS_BY_PROTO) == named
    for task, value in PROTO_TASKS.items():
        assert rpb.Task.Name(value) == "TASK_" + task.name


# -- 2. the task ------------------------------------------------------------------


def test_a_callers_task_is_trusted_without_inference() -> None:
    decision = run(make_request(CODE_FENCE, task=rpb.TASK_SUMMARIZATION))
    assert decision.task == Task.SUMMARIZATION
    assert decision.source == rpb.TASK_SOURCE_CALLER
    assert (decision.rule, decision.confidence, decision.below_threshold) == ("", 1.0, False)
    assert decision.entry == "summarization"
    assert "scanned_chars" not in decision.signals
    assert decision.task_source_label == "caller"


def test_a_callers_task_without_an_entry_uses_the_default_and_stays_the_callers() -> None:
    decision = run(make_request("think", task=rpb.TASK_REASONING))
    assert (decision.task, decision.entry) == (Task.REASONING, "default")
    assert decision.source == rpb.TASK_SOURCE_CALLER


def test_a_callers_task_still_goes_through_the_capability_filter() -> None:
    """D13: `chat` with an image still skips the targets that cannot read it."""
    decision = run(make_request("what is it?", task=rpb.TASK_CHAT, images=1))
    assert decision.entry == "default"
    assert plan(decision) == ["openai/gpt-4o-mini"]
    assert skipped(decision) == [("zai/glm-4.5-flash", "no-vision")]


@pytest.mark.parametrize("task", [rpb.TASK_UNSPECIFIED, rpb.TASK_AUTO])
def test_auto_and_unset_infer(task: rpb.Task.ValueType) -> None:
    decision = run(make_request(CODE_FENCE, task=task))
    assert (decision.task, decision.source, decision.rule) == (
        Task.CODE,
        rpb.TASK_SOURCE_RULE,
        "code-fences",
    )
    assert decision.entry == "code"
    assert decision.confidence == pytest.approx(0.95)
    assert decision.task_source_label == "rule:code-fences"
    assert decision.signals["scanned_chars"] == str(len(CODE_FENCE))


def test_a_rule_below_min_confidence_falls_to_the_default_and_is_still_named() -> None:
    # code-terms fires at 0.7: trusted at the default 0.6, not at 0.8.
    request = make_request("how do I write a python function that reads a json file")
    assert run(request).entry == "code"
    decision = run(request, settings=RoutingSettings(min_confidence=0.8))
    assert decision.entry == "default"
    assert decision.source == rpb.TASK_SOURCE_ROUTE_DEFAULT
    assert (decision.task, decision.rule, decision.below_threshold) == (
        Task.CODE,
        "code-terms",
        True,
    )
    assert decision.task_source_label == "default"


def test_no_signal_is_the_default_entry() -> None:
    decision = run(make_request("hello, how are you?"))
    assert (decision.entry, decision.rule, decision.source) == (
        "default",
        "no-signal",
        rpb.TASK_SOURCE_ROUTE_DEFAULT,
    )


def test_an_inferred_task_the_route_has_no_entry_for_goes_to_the_default() -> None:
    decision = run(make_request("x", json_object=True), on=route())
    assert (decision.task, decision.entry) == (Task.EXTRACTION, "default")
    assert (decision.source, decision.below_threshold) == (rpb.TASK_SOURCE_ROUTE_DEFAULT, False)


def test_han_text_prefers_chinese_then_translation() -> None:
    text = "今天天气很好，我们一起去公园散步，然后吃晚饭吧。"
    decision = run(make_request(text))
    assert (decision.rule, decision.entry) == ("cjk-text", "chinese")
    assert decision.signals["chinese"] == "true"
    without = route(translation=_entry("openai/gpt-4o"))
    assert run(make_request(text), on=without).entry == "translation"


def test_a_callers_translation_of_han_text_prefers_the_chinese_entry() -> None:
    text = "请把这段话翻译成英文：今天天气很好，我们一起去公园散步吧。"
    decision = run(make_request(text, task=rpb.TASK_TRANSLATION))
    assert (decision.task, decision.source, decision.entry) == (
        Task.TRANSLATION,
        rpb.TASK_SOURCE_CALLER,
        "chinese",
    )
    assert (decision.rule, decision.confidence) == ("", 1.0)
    assert decision.signals["chinese"] == "true"
    assert plan(decision) == ["zai/glm-4.7"]


@pytest.mark.parametrize(
    "text",
    [
        "Translate into French: good morning, my friends",
        "今日はとても良い天気ですね。公園に散歩に行きましょう。",  # Japanese: kana beside kanji
    ],
)
def test_a_callers_translation_of_other_text_is_the_translation_entry(text: str) -> None:
    decision = run(make_request(text, task=rpb.TASK_TRANSLATION))
    assert decision.entry == "translation"
    assert "chinese" not in decision.signals


def test_only_a_callers_translation_task_looks_for_han_text() -> None:
    text = "今天天气很好，我们一起去公园散步，然后吃晚饭吧。"
    for task in (rpb.TASK_CHAT, rpb.TASK_SUMMARIZATION):
        decision = run(make_request(text, task=task))
        assert decision.entry != "chinese"
        assert "chinese" not in decision.signals
    # A route without a chinese entry: the translation entry, no scan made.
    without = route(translation=_entry("openai/gpt-4o"))
    decision = run(make_request(text, task=rpb.TASK_TRANSLATION), on=without)
    assert decision.entry == "translation"
    assert "chinese" not in decision.signals


def test_the_prompt_size_is_given_to_the_rules_in_utf8_bytes() -> None:
    """60,000 CJK characters are 180,000 bytes, over the rules' 128 KiB."""
    decision = run(make_request("翻译" * 30_000), view=FakeView())
    assert decision.signals["long_input"] == "true"


# -- 3-4. candidates and the hard filter --------------------------------------------------


def test_every_target_of_the_entry_excluded_falls_to_the_default_entry() -> None:
    # JSON schema: zai refuses it (wire), the extraction entry's zai target
    # is skipped, gpt-4o-mini serves; with it unconfigured the entry is empty.
    view = FakeView(unconfigured=frozenset({common.PROVIDER_OPENAI}))
    request = make_request("x", json_schema=True)
    on = route(
        default=_entry("gemini/gemini-2.5-flash"),
        extraction=_entry("zai/glm-4.7", "openai/gpt-4o-mini"),
    )
    decision = run(request, on=on, view=view)
    assert decision.entry == "default"
    assert decision.source == rpb.TASK_SOURCE_ROUTE_DEFAULT
    assert decision.rule == "json-schema"
    assert plan(decision) == ["gemini/gemini-2.5-flash"]
    assert skipped(decision) == [
        ("zai/glm-4.7", "no-json-schema"),
        ("openai/gpt-4o-mini", "not-configured"),
    ]


def test_a_target_is_considered_once() -> None:
    on = route(
        default=_entry("openai/gpt-4o-mini", "gemini/gemini-2.5-flash"),
        vision=_entry("zai/glm-4.7", "openai/gpt-4o-mini", "zai/glm-4.7"),
    )
    view = FakeView(unconfigured=frozenset({common.PROVIDER_OPENAI}))
    decision = run(make_request("what is it?", images=1), on=on, view=view)
    assert plan(decision) == ["gemini/gemini-2.5-flash"]
    assert skipped(decision) == [
        ("zai/glm-4.7", "no-vision"),
        ("openai/gpt-4o-mini", "not-configured"),
    ]


def test_not_configured_comes_first() -> None:
    view = FakeView(unconfigured=frozenset({common.PROVIDER_ZAI}))
    decision = run(make_request("what is it?", images=1), view=view, key=caller_key("openai/*"))
    first = decision.passed_over[0]
    assert (first.target, first.reason, first.id) == (
        "zai/glm-4.7",
        rpb.SKIP_REASON_NOT_CONFIGURED,
        "not-configured",
    )
    assert "zai provider is not configured" in first.detail


def test_key_patterns_apply_unless_the_key_allows_the_route() -> None:
    request = make_request(CODE_FENCE)
    limited = run(request, key=caller_key("openrouter/*"))
    assert plan(limited) == ["openrouter/anthropic/claude-sonnet-4.5"]
    (skip,) = limited.passed_over
    assert (skip.target, skip.reason) == ("zai/glm-4.7@coding", rpb.SKIP_REASON_KEY_MODEL_PATTERNS)
    # The pattern is matched against the model name, without the pinned endpoint.
    assert "may not use zai/glm-4.7 " in skip.detail
    # A key granted the route trusts its choices (D6); no key, no patterns.
    for key in (caller_key("openrouter/*", "route/*"), caller_key(), None):
        assert plan(run(request, key=key)) == [
            "zai/glm-4.7@coding",
            "openrouter/anthropic/claude-sonnet-4.5",
        ]


def test_a_provider_refusal_names_its_field() -> None:
    """Z.AI takes one stop sequence: the capability table cannot know that."""
    decision = run(make_request(CODE_FENCE, stop=("a", "b")))
    (skip,) = decision.passed_over
    assert (skip.target, skip.reason, skip.id) == (
        "zai/glm-4.7@coding",
        rpb.SKIP_REASON_PROVIDER_REFUSES,
        "provider-refuses",
    )
    assert skip.detail.startswith("sampling.stop: ")
    assert skip.fields == ("sampling.stop",)


def test_capabilities_come_before_the_providers_check() -> None:
    # Both an image (zai/glm-4.7 reads none) and two stop sequences (zai refuses).
    decision = run(make_request("what is it?", images=1, stop=("a", "b")))
    assert skipped(decision)[0] == ("zai/glm-4.7", "no-vision")


def test_a_tiers_ceiling_passes_over_dear_targets_and_unknown_prices_pass() -> None:
    settings = RoutingSettings(max_call_usd={"low": 0.001})
    on = route(
        default=_entry("openai/gpt-4o", "openrouter/x/unknown", "openai/gpt-4o-mini"),
    )
    decision = run(make_request("hi", cost_tier=rpb.COST_TIER_LOW), on=on, settings=settings)
    assert plan(decision) == ["openrouter/x/unknown", "openai/gpt-4o-mini"]
    (skip,) = decision.passed_over
    assert (skip.target, skip.reason, skip.id) == (
        "openai/gpt-4o",
        rpb.SKIP_REASON_BUDGET,
        "budget",
    )
    assert "above the low tier's ceiling of $0.001 a call" in skip.detail
    assert decision.signals["price_unknown"] == "openrouter/x/unknown"
    # No ceiling for the tier asked (or none asked): nothing is priced.
    for tier in (rpb.COST_TIER_MEDIUM, rpb.COST_TIER_UNSPECIFIED):
        other = run(make_request("hi", cost_tier=tier), on=on, settings=settings)
        assert len(other.plan.routes) == 3
        assert "price_unknown" not in other.signals


def test_a_tier_variant_replaces_the_entrys_targets() -> None:
    request = make_request("x", json_object=True, cost_tier=rpb.COST_TIER_LOW)
    decision = run(request)
    assert (decision.entry, decision.cost_tier) == ("extraction", rpb.COST_TIER_LOW)
    assert plan(decision) == ["zai/glm-4.5-flash", "openai/gpt-4o-mini"]


def test_the_plan_keeps_the_entrys_fallback_on() -> None:
    on = RouteTable(
        {
            "default": RouteConfig(
                {
                    "default": RouteEntryConfig(
                        AliasConfig((AliasTarget("openai/gpt-4o"),), ("UPSTREAM_TIMEOUT",))
                    )
                }
            )
        },
        Router({}),
    ).resolve("route/default")
    decision = run(make_request("hi"), on=on)
    assert decision.plan.fallback_on == {pb.ERROR_REASON_UPSTREAM_TIMEOUT}
    assert decision.plan.decision is None
    assert decision.dispatch_plan().decision is decision
    assert decision.dispatch_plan().routes == decision.plan.routes


# -- the soft breaker -----------------------------------------------------------------


def test_an_open_breaker_is_passed_over_while_another_target_remains() -> None:
    view = FakeView(open_breakers=frozenset({"zai/glm-4.7@coding"}))
    decision = run(make_request(CODE_FENCE), view=view)
    assert plan(decision) == ["openrouter/anthropic/claude-sonnet-4.5"]
    (skip,) = decision.passed_over
    assert (skip.reason, skip.id) == (rpb.SKIP_REASON_CIRCUIT_OPEN, "breaker")
    assert "circuit breaker is open" in skip.detail


def test_the_last_eligible_target_stays_whatever_its_breaker() -> None:
    both = frozenset({"zai/glm-4.7@coding", "openrouter/anthropic/claude-sonnet-4.5"})
    defaults = frozenset({"zai/glm-4.5-flash", "openai/gpt-4o-mini"})
    decision = run(make_request(CODE_FENCE), view=FakeView(open_breakers=both | defaults))
    # No closed target in the entry nor in the default: the entry's first
    # stays, for the dispatcher's panic rule; the other is passed over, and
    # the default entry, which changed nothing, is not listed.
    assert (decision.entry, plan(decision)) == ("code", ["zai/glm-4.7@coding"])
    assert skipped(decision) == [("openrouter/anthropic/claude-sonnet-4.5", "breaker")]
    alone = run(
        make_request("hi"), on=route(), view=FakeView(open_breakers=both | {"zai/glm-4.5-flash"})
    )
    assert plan(alone) == ["zai/glm-4.5-flash"]
    assert alone.passed_over == ()


def test_every_target_of_the_entry_open_falls_to_the_defaults_closed_ones() -> None:
    view = FakeView(open_breakers=frozenset({"zai/glm-4.7"}))
    decision = run(make_request("今天天气很好，我们一起去公园散步吧。"), view=view)
    assert (decision.entry, decision.source, decision.rule) == (
        "default",
        rpb.TASK_SOURCE_ROUTE_DEFAULT,
        "cjk-text",
    )
    assert plan(decision) == ["zai/glm-4.5-flash", "openai/gpt-4o-mini"]
    (skip,) = decision.passed_over
    assert (skip.target, skip.reason, skip.id) == (
        "zai/glm-4.7",
        rpb.SKIP_REASON_CIRCUIT_OPEN,
        "breaker",
    )


def test_a_callers_task_falling_to_the_default_for_breakers_stays_the_callers() -> None:
    both = frozenset({"zai/glm-4.7@coding", "openrouter/anthropic/claude-sonnet-4.5"})
    decision = run(make_request("hi", task=rpb.TASK_CODE), view=FakeView(open_breakers=both))
    assert (decision.entry, decision.source) == ("default", rpb.TASK_SOURCE_CALLER)
    assert plan(decision) == ["zai/glm-4.5-flash", "openai/gpt-4o-mini"]
    assert skipped(decision) == [
        ("zai/glm-4.7@coding", "breaker"),
        ("openrouter/anthropic/claude-sonnet-4.5", "breaker"),
    ]


def test_falling_to_the_default_for_breakers_lists_the_entrys_skips_then_the_defaults() -> None:
    # The vision entry: glm-4.7 reads no image, gemini and gpt-4o are open;
    # the default: glm-4.5-flash reads no image, gpt-4o-mini serves.
    view = FakeView(open_breakers=frozenset({"gemini/gemini-2.5-flash", "openai/gpt-4o"}))
    decision = run(make_request("what is it?", images=1), view=view)
    assert (decision.entry, plan(decision)) == ("default", ["openai/gpt-4o-mini"])
    assert skipped(decision) == [
        ("zai/glm-4.7", "no-vision"),
        ("gemini/gemini-2.5-flash", "breaker"),
        ("openai/gpt-4o", "breaker"),
        ("zai/glm-4.5-flash", "no-vision"),
    ]


def test_the_defaults_open_targets_are_passed_over_after_the_entrys() -> None:
    view = FakeView(open_breakers=frozenset({"zai/glm-4.7", "zai/glm-4.5-flash"}))
    decision = run(make_request("今天天气很好，我们一起去公园散步吧。"), view=view)
    assert (decision.entry, plan(decision)) == ("default", ["openai/gpt-4o-mini"])
    assert skipped(decision) == [("zai/glm-4.7", "breaker"), ("zai/glm-4.5-flash", "breaker")]


def test_one_closed_target_in_the_entry_keeps_the_entry() -> None:
    view = FakeView(open_breakers=frozenset({"zai/glm-4.7@coding"}))
    decision = run(make_request(CODE_FENCE), view=view)
    assert (decision.entry, plan(decision)) == ("code", ["openrouter/anthropic/claude-sonnet-4.5"])


# -- 5. order ------------------------------------------------------------------------


def test_long_input_puts_the_longest_window_first_and_unknown_last() -> None:
    on = route(
        default=_entry(
            "openrouter/x/unknown",
            "openai/gpt-4o",  # 128,000
            "gemini/gemini-2.5-flash",  # 1,048,576
            "openai/gpt-4o-mini",  # 128,000
            "zai/glm-4.7",  # 204,800
        )
    )
    decision = run(make_request("lorem ipsum " * 20_000), on=on)
    assert decision.signals["long_input"] == "true"
    assert decision.rule == "long-input"
    assert plan(decision) == [
        "gemini/gemini-2.5-flash",
        "zai/glm-4.7",
        "openai/gpt-4o",
        "openai/gpt-4o-mini",
        "openrouter/x/unknown",
    ]
    assert decision.windows == (1_048_576, 204_800, 128_000, 128_000, None)
    short = run(make_request("lorem ipsum"), on=on)
    assert plan(short)[0] == "openrouter/x/unknown"
    assert "long_input" not in short.signals


def test_a_callers_task_on_long_input_is_ordered_by_window_too() -> None:
    decision = run(make_request("lorem ipsum " * 20_000, task=rpb.TASK_SUMMARIZATION))
    assert plan(decision) == ["gemini/gemini-2.5-flash", "openai/gpt-4o"]
    assert skipped(decision) == [("ollama/llama3.2", "context-window")]
    assert "long_input_search" not in decision.signals


# 600 KB: about 150,000 tokens, more than the default entry's 131,072 and
# 128,000 windows, less than 204,800 (glm-4.7) and 1M (gemini, sonnet via OpenRouter).
LONG_PASTE = "lorem ipsum " * 50_000


def test_long_input_nothing_in_the_entry_or_default_fits_takes_the_routes_longest_window() -> None:
    decision = run(make_request(LONG_PASTE))
    # gemini is first listed in summarization: entries are in ENTRY_NAMES
    # order (default, code, extraction, summarization, ...), not the table's.
    assert (decision.rule, decision.entry) == ("long-input", "summarization")
    assert decision.source == rpb.TASK_SOURCE_ROUTE_DEFAULT
    # Every target of the route with a window for it, longest first; the
    # same window keeps route order (code's glm-4.7@coding, then extraction's glm-4.7).
    assert plan(decision) == [
        "gemini/gemini-2.5-flash",
        "openrouter/anthropic/claude-sonnet-4.5",
        "zai/glm-4.7@coding",
        "zai/glm-4.7",
        "anthropic/claude-sonnet-4-5",
    ]
    assert decision.windows == (1_048_576, 1_000_000, 204_800, 204_800, 200_000)
    # The default entry's skips first, then the route's, in route order.
    assert skipped(decision) == [
        ("zai/glm-4.5-flash", "context-window"),
        ("openai/gpt-4o-mini", "context-window"),
        ("ollama/llama3.2", "context-window"),
        ("openai/gpt-4o", "context-window"),
    ]
    assert decision.signals["long_input"] == "true"
    assert decision.signals["long_input_search"] == "route"


def test_long_input_keeps_the_entry_when_one_of_its_targets_fits() -> None:
    decision = run(make_request(LONG_PASTE, task=rpb.TASK_CODE))
    assert decision.entry == "code"
    assert plan(decision) == ["openrouter/anthropic/claude-sonnet-4.5", "zai/glm-4.7@coding"]
    assert decision.passed_over == ()
    assert "long_input_search" not in decision.signals


def test_long_input_searching_the_route_keeps_a_callers_task_the_callers() -> None:
    # translation (gpt-4o, 128,000) and default are too small for it.
    decision = run(make_request(LONG_PASTE, task=rpb.TASK_TRANSLATION))
    assert (decision.task, decision.source) == (Task.TRANSLATION, rpb.TASK_SOURCE_CALLER)
    assert decision.entry == "summarization"
    assert plan(decision)[0] == "gemini/gemini-2.5-flash"
    assert skipped(decision)[:3] == [
        ("openai/gpt-4o", "context-window"),
        ("zai/glm-4.5-flash", "context-window"),
        ("openai/gpt-4o-mini", "context-window"),
    ]


def test_the_route_search_takes_the_calls_tier_and_the_chosen_entrys_fallback_on() -> None:
    on = RouteTable(
        {
            "default": RouteConfig(
                {
                    "default": _entry("openai/gpt-4o-mini"),
                    "code": RouteEntryConfig(
                        AliasConfig((AliasTarget("zai/glm-4.7"),), ("UPSTREAM_TIMEOUT",)),
                        {"low": AliasConfig((AliasTarget("gemini/gemini-2.5-flash"),))},
                    ),
                }
            )
        },
        Router({}),
    ).resolve("route/default")
    decision = run(make_request(LONG_PASTE), on=on)
    assert (decision.entry, plan(decision)) == ("code", ["zai/glm-4.7"])
    assert decision.plan.fallback_on == {pb.ERROR_REASON_UPSTREAM_TIMEOUT}
    # A low-tier call: the code entry's low variant stands for its targets.
    low = run(make_request(LONG_PASTE, cost_tier=rpb.COST_TIER_LOW), on=on)
    assert (low.entry, plan(low)) == ("code", ["gemini/gemini-2.5-flash"])


def test_the_entry_of_a_route_search_is_the_first_target_that_is_not_passed_over() -> None:
    view = FakeView(open_breakers=frozenset({"gemini/gemini-2.5-flash"}))
    decision = run(make_request(LONG_PASTE), view=view)
    assert decision.entry == "code"
    assert plan(decision)[0] == "openrouter/anthropic/claude-sonnet-4.5"
    assert skipped(decision)[-1] == ("gemini/gemini-2.5-flash", "breaker")


def test_no_target_of_the_route_fits_long_input_lists_them_all() -> None:
    on = route(default=_entry("ollama/llama3.2"), code=_entry("openai/gpt-4o"))
    error = refused(make_request(LONG_PASTE), on=on)
    assert error.reason == pb.ERROR_REASON_NO_ELIGIBLE_TARGET
    assert "ollama/llama3.2 (context-window: " in error.message
    assert "openai/gpt-4o (context-window: " in error.message
    assert error.metadata["entry"] == "default"


def test_without_long_input_the_route_is_not_searched() -> None:
    """A short prompt asking for a long answer is not long input: the other
    entries are not the caller's to get by asking for more tokens."""
    error = refused(make_request("hello there", max_tokens=150_000))
    assert error.reason == pb.ERROR_REASON_NO_ELIGIBLE_TARGET
    assert error.metadata["entry"] == "default"


# -- stickiness ----------------------------------------------------------------------------


def _sticky(target: str, key_id: str | None = None, session: str = "s1") -> StickySessions:
    table = StickySessions(ttl=60, max_sessions=10, clock=lambda: 0.0)
    table.served(sticky_key(key_id, "route/default", session), target)
    return table


def test_a_sessions_target_goes_first_even_from_another_entry() -> None:
    sticky = _sticky("openai/gpt-4o-mini")
    decision = run(make_request(CODE_FENCE, session_id="s1"), sticky=sticky)
    assert decision.sticky
    assert decision.entry == "code"
    assert plan(decision) == [
        "openai/gpt-4o-mini",
        "zai/glm-4.7@coding",
        "openrouter/anthropic/claude-sonnet-4.5",
    ]
    assert decision.windows[0] == 128_000
    # Another session, or the same one under another key, decides afresh.
    for request, key in (
        (make_request(CODE_FENCE, session_id="s2"), None),
        (make_request(CODE_FENCE, session_id="s1"), caller_key()),
    ):
        other = run(request, sticky=sticky, key=key)
        assert not other.sticky
        assert plan(other)[0] == "zai/glm-4.7@coding"


def test_a_sessions_target_already_in_the_plan_moves_to_the_front() -> None:
    sticky = _sticky("openrouter/anthropic/claude-sonnet-4.5", key_id="key-team")
    decision = run(make_request(CODE_FENCE, session_id="s1"), sticky=sticky, key=caller_key())
    assert decision.sticky
    assert plan(decision) == ["openrouter/anthropic/claude-sonnet-4.5", "zai/glm-4.7@coding"]


@pytest.mark.parametrize(
    ("stored", "view", "why"),
    [
        ("zai/glm-4.5-flash", FakeView(), "no-vision"),
        ("openai/gpt-9", FakeView(), "not-in-route"),
        (
            "openai/gpt-4o-mini",
            FakeView(open_breakers=frozenset({"openai/gpt-4o-mini"})),
            "breaker",
        ),
        (
            "openai/gpt-4o-mini",
            FakeView(unconfigured=frozenset({common.PROVIDER_OPENAI})),
            "not-configured",
        ),
    ],
)
def test_stickiness_broken_says_why(stored: str, view: FakeView, why: str) -> None:
    decision = run(
        make_request("what is it?", images=1, session_id="s1"), sticky=_sticky(stored), view=view
    )
    assert not decision.sticky
    assert decision.signals["sticky_broken"] == why
    assert decision.entry == "vision"


def test_deciding_never_writes_the_sticky_table() -> None:
    sticky = _sticky("openai/gpt-4o-mini")
    before = dict(sticky._sessions)  # the table's whole state
    run(make_request(CODE_FENCE, session_id="s1"), sticky=sticky)
    run(make_request(CODE_FENCE, session_id="new"), sticky=sticky)
    assert sticky._sessions == before


# -- 6. errors ---------------------------------------------------------------------------


def test_nothing_eligible_lists_every_target_and_the_fields_behind_them() -> None:
    on = route(default=_entry("zai/glm-4.5-flash", "ollama/llama3.2"))
    error = refused(make_request("what is it?", images=1, tools=1, tool_choice="required"), on=on)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == pb.ERROR_REASON_NO_ELIGIBLE_TARGET
    assert error.message.startswith("no target of route/default can serve this request (agent")
    assert "zai/glm-4.5-flash (cannot-force-tool: " in error.message
    assert "ollama/llama3.2 (cannot-force-tool: " in error.message
    assert [v.field for v in error.field_violations] == ["tool_choice"]
    assert "zai/glm-4.5-flash: " in error.field_violations[0].description
    assert error.metadata == {"route": "route/default", "entry": "default", "task": "agent"}


def test_nothing_eligible_for_size_names_messages_and_max_tokens() -> None:
    on = route(default=_entry("ollama/llama3.2"))
    error = refused(make_request("hi", max_tokens=40_000), on=on)
    assert error.reason == pb.ERROR_REASON_NO_ELIGIBLE_TARGET
    assert [v.field for v in error.field_violations] == ["messages", "sampling.max_tokens"]
    assert "32,768 tokens < " in error.message


def test_only_key_patterns_excluding_is_model_not_allowed() -> None:
    key = caller_key("anthropic/*", "groq/*")
    error = refused(make_request(CODE_FENCE), key=key)
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == pb.ERROR_REASON_MODEL_NOT_ALLOWED
    # The wording and metadata of access.check_model.
    assert error.message.startswith("key 'team' may not use model 'route/default'")
    assert error.message.endswith("; it may use: anthropic/*, groq/*")
    assert "zai/glm-4.7@coding" in error.message
    assert error.metadata == {"keyId": "key-team", "model": "route/default"}


def test_key_patterns_and_another_reason_is_no_eligible_target() -> None:
    view = FakeView(unconfigured=frozenset({common.PROVIDER_ZAI}))
    error = refused(make_request("hi"), key=caller_key("anthropic/*"), view=view)
    assert error.reason == pb.ERROR_REASON_NO_ELIGIBLE_TARGET


# -- the decision as callers see it ------------------------------------------------------


def test_to_proto() -> None:
    view = FakeView(open_breakers=frozenset({"zai/glm-4.7@coding"}))
    decision = run(make_request(CODE_FENCE), view=view)
    brief = decision.to_proto(chosen="openrouter/anthropic/claude-sonnet-4.5")
    assert brief.route == "route/default"
    assert (brief.task, brief.task_source, brief.rule, brief.entry) == (
        rpb.TASK_CODE,
        rpb.TASK_SOURCE_RULE,
        "code-fences",
        "code",
    )
    assert [(p.target, p.reason, p.id) for p in brief.passed_over] == [
        ("zai/glm-4.7@coding", rpb.SKIP_REASON_CIRCUIT_OPEN, "breaker")
    ]
    assert brief.estimated_prompt_tokens == decision.estimated_prompt_tokens > 0
    assert not brief.plan
    assert not brief.signals
    full = decision.to_proto(chosen=plan(decision)[0], explain=True)
    assert list(full.plan) == plan(decision)
    assert dict(full.signals) == dict(decision.signals)


def test_a_stream_request_is_decided_the_same() -> None:
    unary = run(make_request(CODE_FENCE, images=1))
    stream = run(make_request(CODE_FENCE, images=1, stream=True))
    assert dataclasses.replace(stream) == unary


def test_a_sessions_target_counts_as_the_target_that_remains_beside_open_breakers() -> None:
    both = frozenset({"zai/glm-4.7@coding", "openrouter/anthropic/claude-sonnet-4.5"})
    # The session's target is in no entry this call reaches (an OpenRouter
    # model of another tier's variant, say): it alone serves.
    on = route(
        default=_entry("zai/glm-4.5-flash"),
        code=_entry("zai/glm-4.7@coding", "openrouter/anthropic/claude-sonnet-4.5"),
        summarization=_entry("openai/gpt-4o-mini"),
    )
    sticky = _sticky("openai/gpt-4o-mini")
    opened = FakeView(open_breakers=both | {"zai/glm-4.5-flash"})
    decision = run(make_request(CODE_FENCE, session_id="s1"), on=on, sticky=sticky, view=opened)
    assert decision.sticky
    assert (decision.entry, plan(decision)) == ("code", ["openai/gpt-4o-mini"])
    assert skipped(decision) == [
        ("zai/glm-4.7@coding", "breaker"),
        ("openrouter/anthropic/claude-sonnet-4.5", "breaker"),
    ]


def test_a_session_goes_first_in_the_default_its_entrys_breakers_fell_to() -> None:
    both = frozenset({"zai/glm-4.7@coding", "openrouter/anthropic/claude-sonnet-4.5"})
    sticky = _sticky("openai/gpt-4o-mini")
    decision = run(
        make_request(CODE_FENCE, session_id="s1"), sticky=sticky, view=FakeView(open_breakers=both)
    )
    assert decision.sticky
    assert (decision.entry, plan(decision)) == (
        "default",
        ["openai/gpt-4o-mini", "zai/glm-4.5-flash"],
    )
    assert skipped(decision) == [
        ("zai/glm-4.7@coding", "breaker"),
        ("openrouter/anthropic/claude-sonnet-4.5", "breaker"),
    ]


def test_a_sessions_target_with_an_open_breaker_is_broken_and_the_default_serves() -> None:
    both = frozenset({"zai/glm-4.7@coding", "openrouter/anthropic/claude-sonnet-4.5"})
    sticky = _sticky("zai/glm-4.7@coding")
    decision = run(
        make_request(CODE_FENCE, session_id="s1"), sticky=sticky, view=FakeView(open_breakers=both)
    )
    assert not decision.sticky
    assert decision.signals["sticky_broken"] == "breaker"
    assert (decision.entry, plan(decision)) == (
        "default",
        ["zai/glm-4.5-flash", "openai/gpt-4o-mini"],
    )
    assert skipped(decision) == [
        ("zai/glm-4.7@coding", "breaker"),
        ("openrouter/anthropic/claude-sonnet-4.5", "breaker"),
    ]
