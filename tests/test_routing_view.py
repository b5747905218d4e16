"""The routing view: what a decision reads about targets from a running gateway's
providers, breakers, catalogue, prices and `[capabilities."MODEL"]` overrides."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmgateway.server.call_path import routing_view
from llmgateway.server.call_path.routing_view import RoutingView, apply_override
from llmgateway.server.config import (
    AnthropicSettings,
    CapabilityOverride,
    CircuitSettings,
    OpenAISettings,
    PriceOverride,
    Secret,
    Timeouts,
    ZaiSettings,
)
from llmgateway.server.providers.anthropic import AnthropicProvider
from llmgateway.server.providers.openai import OpenAIProvider
from llmgateway.server.providers.zai import ZaiProvider
from llmgateway.server.resilience.circuit import Circuits, CircuitState
from llmgateway.server.routing.capabilities import FactSource, capabilities_for
from llmgateway.server.routing.pricing import Price, PriceBook
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import user

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from llmgateway.server.providers.core import UpstreamProvider

UNAVAILABLE = pb.ERROR_REASON_UPSTREAM_UNAVAILABLE
BREAKERS = CircuitSettings(failure_threshold=2, failure_rate=0.5, cool_down=30.0, window=30.0)
GLM = Route(common.PROVIDER_ZAI, "glm-4.7", "route/default")
GLM_CODING = Route(common.PROVIDER_ZAI, "glm-4.7", "route/default", common.ZAI_ENDPOINT_CODING)
SONNET = Route(common.PROVIDER_ANTHROPIC, "claude-sonnet-4-5", "route/default")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def providers() -> AsyncIterator[dict[common.Provider.ValueType, UpstreamProvider]]:
    made: dict[common.Provider.ValueType, UpstreamProvider] = {
        common.PROVIDER_ZAI: ZaiProvider(
            ZaiSettings(api_key=Secret("zai-test-not-a-key"), coding_models=frozenset({"glm-4.6"})),
            Timeouts(),
        ),
        common.PROVIDER_ANTHROPIC: AnthropicProvider(
            AnthropicSettings(api_key=Secret("sk-ant-test-not-a-key")), Timeouts()
        ),
        # No key: not configured.
        common.PROVIDER_OPENAI: OpenAIProvider(OpenAISettings(), Timeouts()),
    }
    yield made
    for provider in made.values():
        await provider.aclose()


def view_of(
    providers: dict[common.Provider.ValueType, UpstreamProvider],
    circuits: Circuits | None = None,
    *,
    catalogue: dict[str, pb.ModelInfo] | None = None,
    overrides: dict[str, CapabilityOverride] | None = None,
    prices: PriceBook | None = None,
) -> RoutingView:
    return RoutingView(
        providers,
        # (`Circuits` with no breakers yet is falsy: it has a length.)
        circuits_of(providers) if circuits is None else circuits,
        prices or PriceBook({}),
        model_info=(catalogue or {}).get,
        overrides=overrides or {},
        ollama_num_ctx=None,
    )


def circuits_of(
    providers: dict[common.Provider.ValueType, UpstreamProvider], clock: Clock | None = None
) -> Circuits:
    groups = [name for provider in providers.values() for name in provider.circuit_names]
    return Circuits(BREAKERS, groups, clock=clock or Clock())


def trip(circuits: Circuits, group: str, model: str) -> None:
    breaker = circuits.breaker(group, model)
    for _ in range(BREAKERS.failure_threshold):
        admission = breaker.admit(has_fallback=True)
        assert not isinstance(admission, float)
        breaker.record(admission, UNAVAILABLE)
    assert breaker.state is CircuitState.OPEN


def test_configured_and_check_are_the_providers_own(providers):
    view = view_of(providers)
    assert view.configured(common.PROVIDER_ZAI)
    assert not view.configured(common.PROVIDER_OPENAI)
    # A provider the gateway does not run is not configured either.
    assert not view.configured(common.PROVIDER_GROQ)
    request = pb.CompleteRequest(model="route/default", messages=[user("hi")])
    request.sampling.stop.extend(["a", "b"])
    assert [v.field for v in view.check(request, GLM)] == ["sampling.stop"]
    assert view.check(request, SONNET) == []


def test_breakers_are_read_never_made_and_never_probed(providers):
    clock = Clock()
    circuits = circuits_of(providers, clock)
    view = view_of(providers, circuits)
    # A model never tried has no breaker: nothing speaks against it, and asking
    # makes none (a caller naming many models must not grow the table).
    assert not view.breaker_open(SONNET)
    assert len(circuits) == 0
    trip(circuits, "zai", "glm-4.7")
    assert view.breaker_open(GLM)
    # The coding endpoint has its own breaker, still closed.
    assert not view.breaker_open(GLM_CODING)
    coding = pb.CompleteRequest(model="route/default", messages=[user("hi")])
    coding.zai.endpoint = common.ZAI_ENDPOINT_CODING
    assert not view.breaker_open(GLM, coding)
    # Half-open: asking again and again leaves the one probe to a real call.
    clock.now += 30
    for _ in range(3):
        assert not view.breaker_open(GLM)
    breaker = circuits.existing("zai", "glm-4.7")
    assert breaker is not None
    probe = breaker.admit(has_fallback=True)
    assert not isinstance(probe, float)
    assert probe.probe
    # With the probe out, a call that can go elsewhere would be refused.
    assert view.breaker_open(GLM)


def test_capabilities_are_the_tables_until_the_operator_overrides_them(providers):
    view = view_of(providers)
    for name in ("zai/glm-4.7", "anthropic/claude-sonnet-4-5", "openai/gpt-4o"):
        assert view.capabilities(name) == capabilities_for(name, None)


def test_the_cached_catalogue_gives_the_window(providers):
    info = pb.ModelInfo(name="openrouter/x/my-finetune", context_length=65_536)
    view = view_of(providers, catalogue={info.name: info})
    caps = view.capabilities("openrouter/x/my-finetune")
    assert (caps.context_window, caps.context_source) == (65_536, FactSource.CATALOG)


def test_an_override_replaces_the_window_and_the_features(providers):
    name = "openrouter/x/fault-context-length"
    override = CapabilityOverride(context_window=8192, vision=False, tools=True)
    view = view_of(providers, overrides={name: override})
    caps = view.capabilities(name)
    assert (caps.context_window, caps.context_source) == (8192, FactSource.CONFIG)
    assert caps.tools
    assert not caps.vision
    assert caps.features_source is FactSource.CONFIG
    assert caps.matched == f'[capabilities."{name}"]'
    # Other models are untouched.
    assert view.capabilities("zai/glm-4.7") == capabilities_for("zai/glm-4.7", None)


def test_a_window_only_override_keeps_the_tables_features():
    table = capabilities_for("zai/glm-4.7", None)
    caps = apply_override("zai/glm-4.7", table, CapabilityOverride(context_window=4096))
    assert caps == dataclasses.replace(table, context_window=4096, context_source=FactSource.CONFIG)
    assert apply_override("zai/glm-4.7", table, CapabilityOverride()) == table


def test_an_override_cannot_turn_on_what_the_adapter_cannot_carry():
    # Claude reads JSON schemas, but the gateway's Anthropic adapter refuses
    # response_format: an override saying json_schema = true changes nothing.
    table = capabilities_for("anthropic/claude-sonnet-4-5", None)
    assert "json_schema" in table.gateway_refuses
    caps = apply_override(
        "anthropic/claude-sonnet-4-5",
        table,
        CapabilityOverride(json_schema=True, forced_tool_choice=True),
    )
    assert not caps.json_schema
    assert caps.forced_tool_choice
    # Forcing a tool while thinking stays refused on Anthropic's wire.
    assert not caps.forced_tool_choice_while_thinking


def test_an_override_cannot_turn_on_a_wire_refusal_the_table_row_did_not_need():
    # A Z.AI model whose row has no tools: gateway_refuses is empty for it,
    # but Z.AI's adapter always sends tool_choice "auto", so an override
    # giving it tools may not also claim it can force a call.
    table = capabilities_for("zai/glm-4.5v", None)
    caps = apply_override(
        "zai/glm-4.5v",
        table,
        CapabilityOverride(tools=True, forced_tool_choice=True, json_schema=True),
    )
    assert caps.tools
    assert not caps.forced_tool_choice
    assert not caps.forced_tool_choice_while_thinking
    assert not caps.json_schema


def test_an_override_can_turn_a_feature_off():
    table = capabilities_for("openai/gpt-4o", None)
    assert table.vision
    assert table.forced_tool_choice
    caps = apply_override(
        "openai/gpt-4o", table, CapabilityOverride(vision=False, forced_tool_choice=False)
    )
    assert not caps.vision
    assert not caps.forced_tool_choice
    assert not caps.forced_tool_choice_while_thinking


def test_prices_are_the_price_books(providers):
    prices = PriceBook({"zai/glm-4.7": PriceOverride(prompt=1.0, completion=2.0)})
    view = view_of(providers, prices=prices)
    assert view.price("zai/glm-4.7") == Price(1.0, 2.0, None, None)
    assert view.price("openrouter/x/unknown-model") is None


# ---- capabilities are kept per model name while its catalogue entry stays ----

_NAMES = (
    "openrouter/x/my-finetune",
    "openrouter/openai/gpt-4o-mini",
    "zai/glm-4.7",
    "anthropic/claude-sonnet-4-5",
    "ollama/llama3.2:3b",
)
_OVERRIDDEN = {"zai/glm-4.7": CapabilityOverride(context_window=4096, vision=True)}


def uncached(name: str, catalogue: dict[str, pb.ModelInfo]) -> object:
    caps = capabilities_for(name, catalogue.get(name))
    override = _OVERRIDDEN.get(name)
    return caps if override is None else apply_override(name, caps, override)


@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(_NAMES),
            # None: ask; a number: the catalogue refreshes this entry with that window;
            # 0: the entry leaves the catalogue.
            st.one_of(st.none(), st.integers(0, 2_000_000)),
        ),
        max_size=40,
    ),
    kept=st.integers(1, 4),
)
def test_kept_capabilities_always_answer_as_working_them_out_would(steps, kept):
    catalogue: dict[str, pb.ModelInfo] = {}
    view = RoutingView(
        {},
        Circuits(BREAKERS, []),
        PriceBook({}),
        model_info=catalogue.get,
        overrides=_OVERRIDDEN,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(routing_view, "CAPABILITIES_KEPT", kept)
        for name, refresh in steps:
            if refresh is None:
                assert view.capabilities(name) == uncached(name, catalogue)
            elif refresh == 0:
                catalogue.pop(name, None)
            else:  # a refresh brings new entry objects, as the catalogue's fetch does
                catalogue[name] = pb.ModelInfo(name=name, context_length=refresh)
            assert len(view._capabilities) <= kept


def test_capabilities_are_worked_out_once_until_the_catalogue_refreshes(providers, monkeypatch):
    worked_out: list[str] = []

    def counting(name: str, info: pb.ModelInfo | None, **options: int | None) -> object:
        worked_out.append(name)
        return capabilities_for(name, info, **options)

    monkeypatch.setattr(routing_view, "capabilities_for", counting)
    name = "openrouter/x/my-finetune"
    catalogue = {name: pb.ModelInfo(name=name, context_length=65_536)}
    view = view_of(providers, catalogue=catalogue)
    for _ in range(3):
        assert view.capabilities(name).context_window == 65_536
    assert worked_out == [name]
    catalogue[name] = pb.ModelInfo(name=name, context_length=32_768)  # refreshed
    assert view.capabilities(name).context_window == 32_768
    assert worked_out == [name, name]
