"""ListModels' catalogue (routing/catalog.py): every provider's list, cached,
fetched concurrently, and a provider whose list cannot be had reported as
incomplete instead of failing the call."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, ClassVar

import httpx
import pytest

from llmgateway.server.config import (
    AliasConfig,
    AliasTarget,
    RouteConfig,
    RouteEntryConfig,
    Secret,
    Timeouts,
)
from llmgateway.server.providers.core import UpstreamProvider
from llmgateway.server.routing import catalog as catalog_module
from llmgateway.server.routing.catalog import Catalog
from llmgateway.server.routing.router import Plan, Route, Router
from llmgateway.server.routing.routes import RouteTable
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class ListingProvider(UpstreamProvider):
    """A provider whose catalogue is scripted: its models, a failure, or a wait."""

    kind: ClassVar[common.Provider.ValueType] = common.PROVIDER_OPENAI
    provider_id: ClassVar[str] = "openai"
    display_name: ClassVar[str] = "OpenAI"
    key_env: ClassVar[str] = "OPENAI_API_KEY"
    base_url_env: ClassVar[str] = "OPENAI_BASE_URL"

    def __init__(self, *names: str, configured: bool = True) -> None:
        super().__init__(
            Secret("k") if configured else None,
            Timeouts(),
            # Nothing here goes over HTTP: catalogue() is scripted.
            transport=httpx.MockTransport(lambda _: httpx.Response(599)),
        )
        self.names = list(names)
        self.fetches = 0
        self.failure: Exception | None = None
        # When set, a fetch waits for it (a slow or hanging list endpoint).
        self.gate: asyncio.Event | None = None
        # Set when a fetch has begun.
        self.began = asyncio.Event()

    async def catalogue(self, within: float) -> list[pb.ModelInfo]:
        del within
        self.fetches += 1
        self.began.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.failure is not None:
            raise self.failure
        return [
            pb.ModelInfo(
                name=f"{self.provider_id}/{name}",
                provider=self.kind,
                upstream_model=name,
                available=self.configured,
                pricing=pb.ModelPricing(prompt_per_million=1.0, completion_per_million=2.0),
            )
            for name in self.names
        ]


class AnthropicListing(ListingProvider):
    kind = common.PROVIDER_ANTHROPIC
    provider_id = "anthropic"
    display_name = "Anthropic"


class OllamaListing(ListingProvider):
    kind = common.PROVIDER_OLLAMA
    provider_id = "ollama"
    display_name = "Ollama"


Providers = dict[common.Provider.ValueType, ListingProvider]


@pytest.fixture
async def providers() -> AsyncIterator[Providers]:
    made: Providers = {
        common.PROVIDER_OPENAI: ListingProvider("gpt-4o", "gpt-4o-mini"),
        common.PROVIDER_ANTHROPIC: AnthropicListing("claude-sonnet-4-5", configured=False),
        common.PROVIDER_OLLAMA: OllamaListing("llama3.2"),
    }
    yield made
    for provider in made.values():
        await provider.aclose()


def route(provider: common.Provider.ValueType, model: str, alias: str) -> Route:
    return Route(provider, model, alias)


def names(response: pb.ListModelsResponse) -> list[str]:
    return [m.name for m in response.models]


async def test_aliases_come_first_then_every_providers_list(providers: Providers) -> None:
    aliases = {"smart": Plan((route(common.PROVIDER_ANTHROPIC, "claude-sonnet-4-5", "smart"),))}
    listed = await Catalog(aliases, providers).list_models(common.PROVIDER_UNSPECIFIED)
    assert names(listed) == [
        "smart",
        "openai/gpt-4o",
        "openai/gpt-4o-mini",
        "anthropic/claude-sonnet-4-5",
        "ollama/llama3.2",
    ]
    assert list(listed.incomplete_providers) == []
    smart = listed.models[0]
    assert (smart.provider, smart.upstream_model, smart.alias_of) == (
        common.PROVIDER_ANTHROPIC,
        "claude-sonnet-4-5",
        "anthropic/claude-sonnet-4-5",
    )


async def test_a_provider_whose_list_fails_is_reported_incomplete_and_the_rest_listed(
    providers: Providers,
) -> None:
    providers[common.PROVIDER_OPENAI].failure = httpx.ConnectError("refused")
    listed = await Catalog({}, providers).list_models(common.PROVIDER_UNSPECIFIED)
    assert list(listed.incomplete_providers) == [common.PROVIDER_OPENAI]
    assert names(listed) == ["anthropic/claude-sonnet-4-5", "ollama/llama3.2"]


async def test_a_list_is_cached_for_its_ttl(
    providers: Providers, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = Catalog({}, providers)
    openai = providers[common.PROVIDER_OPENAI]
    first = await catalog.list_models(common.PROVIDER_UNSPECIFIED)
    openai.names.append("gpt-5")
    again = await catalog.list_models(common.PROVIDER_UNSPECIFIED)
    assert openai.fetches == 1
    assert names(again) == names(first)
    # Once stale, the next call fetches it again.
    monkeypatch.setattr(catalog_module, "_TTL", 0.0)
    fresh = await catalog.list_models(common.PROVIDER_OPENAI)
    assert openai.fetches == 2
    assert "openai/gpt-5" in names(fresh)


async def test_after_a_failure_the_gap_is_reported_at_once_for_a_while(
    providers: Providers, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = Catalog({}, providers)
    openai = providers[common.PROVIDER_OPENAI]
    openai.failure = RuntimeError("list endpoint down")
    await catalog.list_models(common.PROVIDER_OPENAI)
    listed = await catalog.list_models(common.PROVIDER_OPENAI)
    # No second fetch within the failure TTL: callers are not each held by one.
    assert openai.fetches == 1
    assert list(listed.incomplete_providers) == [common.PROVIDER_OPENAI]
    monkeypatch.setattr(catalog_module, "_FAILURE_TTL", 0.0)
    openai.failure = None
    recovered = await catalog.list_models(common.PROVIDER_OPENAI)
    assert openai.fetches == 2
    assert list(recovered.incomplete_providers) == []
    assert names(recovered) == ["openai/gpt-4o", "openai/gpt-4o-mini"]


async def test_a_failed_refresh_keeps_serving_the_last_list(
    providers: Providers, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = Catalog({}, providers)
    await catalog.list_models(common.PROVIDER_OPENAI)
    monkeypatch.setattr(catalog_module, "_TTL", 0.0)
    providers[common.PROVIDER_OPENAI].failure = RuntimeError("down")
    listed = await catalog.list_models(common.PROVIDER_OPENAI)
    assert names(listed) == ["openai/gpt-4o", "openai/gpt-4o-mini"]
    assert list(listed.incomplete_providers) == []


async def test_providers_are_fetched_concurrently(providers: Providers) -> None:
    openai = providers[common.PROVIDER_OPENAI]
    ollama = providers[common.PROVIDER_OLLAMA]
    openai.gate = asyncio.Event()
    ollama.gate = asyncio.Event()
    listing = asyncio.create_task(Catalog({}, providers).list_models(common.PROVIDER_UNSPECIFIED))
    # Both fetches are under way while neither has finished (one after the
    # other, the second would never begin: the first waits for it).
    await openai.began.wait()
    await ollama.began.wait()
    assert not listing.done()
    openai.gate.set()
    ollama.gate.set()
    listed = await listing
    assert list(listed.incomplete_providers) == []
    assert len(listed.models) == 4


async def test_callers_arriving_together_share_one_fetch(providers: Providers) -> None:
    openai = providers[common.PROVIDER_OPENAI]
    openai.gate = asyncio.Event()
    catalog = Catalog({}, providers)
    calls = [asyncio.create_task(catalog.list_models(common.PROVIDER_OPENAI)) for _ in range(5)]
    await openai.began.wait()
    openai.gate.set()
    for listed in await asyncio.gather(*calls):
        assert names(listed) == ["openai/gpt-4o", "openai/gpt-4o-mini"]
    assert openai.fetches == 1


async def test_a_list_not_had_within_the_callers_time_is_incomplete(providers: Providers) -> None:
    # A list endpoint that never answers holds nobody past `within`.
    providers[common.PROVIDER_OLLAMA].gate = asyncio.Event()
    listed = await Catalog({}, providers).list_models(common.PROVIDER_UNSPECIFIED, within=0.05)
    assert list(listed.incomplete_providers) == [common.PROVIDER_OLLAMA]
    assert "openai/gpt-4o" in names(listed)


async def test_the_provider_filter_lists_and_fetches_only_that_provider(
    providers: Providers,
) -> None:
    aliases = {
        "local": Plan((route(common.PROVIDER_OLLAMA, "llama3.2", "local"),)),
        "smart": Plan((route(common.PROVIDER_ANTHROPIC, "claude-sonnet-4-5", "smart"),)),
    }
    listed = await Catalog(aliases, providers).list_models(common.PROVIDER_OLLAMA)
    assert names(listed) == ["local", "ollama/llama3.2"]
    assert providers[common.PROVIDER_OPENAI].fetches == 0
    assert providers[common.PROVIDER_ANTHROPIC].fetches == 0


async def test_an_alias_is_available_when_any_of_its_targets_provider_is_configured(
    providers: Providers,
) -> None:
    aliases = {
        # Anthropic has no key; the chain falls back to OpenAI, which has one.
        "chain": Plan(
            (
                route(common.PROVIDER_ANTHROPIC, "claude-sonnet-4-5", "chain"),
                route(common.PROVIDER_OPENAI, "gpt-4o", "chain"),
            )
        ),
        "keyless": Plan((route(common.PROVIDER_ANTHROPIC, "claude-sonnet-4-5", "keyless"),)),
        # A provider the gateway does not run at all.
        "elsewhere": Plan((route(common.PROVIDER_GEMINI, "gemini-2.5-flash", "elsewhere"),)),
    }
    listed = await Catalog(aliases, providers).list_models(common.PROVIDER_UNSPECIFIED)
    by_name = {m.name: m for m in listed.models}
    assert by_name["chain"].available
    assert list(by_name["chain"].fallbacks) == ["openai/gpt-4o"]
    assert not by_name["keyless"].available
    assert not by_name["elsewhere"].available


async def test_pricing_reads_the_cached_lists_and_never_fetches(providers: Providers) -> None:
    catalog = Catalog({}, providers)
    assert catalog.pricing("openai/gpt-4o") is None  # nothing fetched yet
    assert providers[common.PROVIDER_OPENAI].fetches == 0
    await catalog.list_models(common.PROVIDER_UNSPECIFIED)
    pricing = catalog.pricing("ollama/llama3.2")
    assert pricing is not None
    assert pricing.prompt_per_million == 1.0
    assert catalog.pricing("openai/unlisted") is None


class OpenRouterListing(ListingProvider):
    kind = common.PROVIDER_OPENROUTER
    provider_id = "openrouter"
    display_name = "OpenRouter"


@pytest.mark.parametrize("configured", [True, False])
async def test_prefetch_warms_only_openrouter_whose_prices_size_reservations(
    providers: Providers, configured: bool
) -> None:
    openrouter = OpenRouterListing("openai/gpt-4o", configured=configured)
    catalog = Catalog({}, {**providers, common.PROVIDER_OPENROUTER: openrouter})
    catalog.prefetch()
    assert catalog._prefetch is not None
    await catalog._prefetch
    assert openrouter.fetches == (1 if configured else 0)
    # The others are priced from built-in tables: no fetch (and no failed
    # fetch logged at every start for a machine without a local Ollama).
    assert [p.fetches for p in providers.values()] == [0, 0, 0]
    await catalog.aclose()
    await openrouter.aclose()


async def test_model_info_reads_the_cached_lists_by_name_and_never_fetches(
    providers: Providers,
) -> None:
    """What routing decisions read for context windows, once per target."""
    catalog = Catalog({}, providers)
    assert catalog.model_info("openai/gpt-4o") is None  # nothing fetched yet
    assert providers[common.PROVIDER_OPENAI].fetches == 0
    await catalog.list_models(common.PROVIDER_UNSPECIFIED)
    info = catalog.model_info("openai/gpt-4o-mini")
    assert info is not None
    assert (info.name, info.upstream_model) == ("openai/gpt-4o-mini", "gpt-4o-mini")
    assert catalog.model_info("ollama/llama3.2") is not None
    assert catalog.model_info("openai/unlisted") is None
    assert [p.fetches for p in providers.values()] == [1, 1, 1]


async def test_the_index_follows_a_refreshed_list(
    providers: Providers, monkeypatch: pytest.MonkeyPatch
) -> None:
    catalog = Catalog({}, providers)
    await catalog.list_models(common.PROVIDER_OPENAI)
    assert catalog.model_info("openai/gpt-4o") is not None
    providers[common.PROVIDER_OPENAI].names = ["gpt-5"]
    monkeypatch.setattr(catalog_module, "_TTL", 0.0)
    await catalog.list_models(common.PROVIDER_OPENAI)
    assert catalog.model_info("openai/gpt-4o") is None
    assert catalog.model_info("openai/gpt-5") is not None
    assert catalog.pricing("openai/gpt-5") is not None


def _routes(routes: dict[str, RouteConfig], aliases: dict[str, str] | None = None) -> RouteTable:
    return RouteTable(routes, Router(aliases or {}))


def _entry(*models: str) -> RouteEntryConfig:
    return RouteEntryConfig(AliasConfig(tuple(AliasTarget(m) for m in models)))


async def test_routes_are_listed_after_aliases_by_their_default_entry(
    providers: Providers,
) -> None:
    aliases = {"smart": Plan((route(common.PROVIDER_ANTHROPIC, "claude-sonnet-4-5", "smart"),))}
    routes = _routes(
        {
            "default": RouteConfig(
                {
                    "default": _entry("anthropic/claude-sonnet-4-5", "openai/gpt-4o"),
                    "code": _entry("ollama/llama3.2"),
                }
            ),
            "local": RouteConfig({"default": _entry("ollama/llama3.2")}),
        }
    )
    listed = await Catalog(aliases, providers, routes).list_models(common.PROVIDER_UNSPECIFIED)
    assert names(listed)[:3] == ["smart", "route/default", "route/local"]
    assert names(listed)[3] == "openai/gpt-4o"
    default = listed.models[1]
    assert (default.provider, default.upstream_model, default.alias_of) == (
        common.PROVIDER_ANTHROPIC,
        "claude-sonnet-4-5",
        "anthropic/claude-sonnet-4-5",
    )
    assert list(default.fallbacks) == ["openai/gpt-4o"]
    # Anthropic has no key here, OpenAI has one.
    assert default.available
    # The provider filter takes a route by its default entry's first target.
    local = await Catalog(aliases, providers, routes).list_models(common.PROVIDER_OLLAMA)
    assert names(local) == ["route/local", "ollama/llama3.2"]


async def test_a_route_whose_default_providers_have_no_key_is_unavailable(
    providers: Providers,
) -> None:
    routes = _routes({"default": RouteConfig({"default": _entry("anthropic/claude-sonnet-4-5")})})
    listed = await Catalog({}, providers, routes).list_models(common.PROVIDER_ANTHROPIC)
    assert [(m.name, m.available) for m in listed.models] == [
        ("route/default", False),
        ("anthropic/claude-sonnet-4-5", False),
    ]
