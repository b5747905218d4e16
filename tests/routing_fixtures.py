"""What the routing tests share: requests built by feature, a TargetView over
a fixed catalogue snapshot, caller keys, and routes loaded from TOML.

The view answers as the gateway's would (call_path/routing_view.py) but from
fixed facts: the built-in tables plus the fake upstream's three OpenRouter
models, each provider's real check(), providers configured or not and
breakers open by target name, all chosen by the test.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from google.protobuf import struct_pb2

from llmgateway.server.config import (
    AnthropicSettings,
    GeminiSettings,
    GroqSettings,
    OllamaSettings,
    OpenAISettings,
    OpenRouterSettings,
    Secret,
    Settings,
    Timeouts,
    ZaiSettings,
)
from llmgateway.server.providers.anthropic import AnthropicProvider
from llmgateway.server.providers.gemini import GeminiProvider
from llmgateway.server.providers.groq import GroqProvider
from llmgateway.server.providers.ollama import OllamaProvider
from llmgateway.server.providers.openai import OpenAIProvider
from llmgateway.server.providers.openrouter import OpenRouterProvider
from llmgateway.server.providers.zai import ZaiProvider
from llmgateway.server.routing.capabilities import Capabilities, FactSource, capabilities_for
from llmgateway.server.routing.pricing import Price, PriceBook
from llmgateway.server.routing.router import Route, Router, gateway_model_name
from llmgateway.server.routing.routes import RouteTable
from llmgateway.server.state.keys import CallerKey
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import routing_pb2 as rpb

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from llmgateway.server.errors import FieldViolation
    from llmgateway.server.providers.core import UpstreamProvider
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest

FAKE_KEY = Secret("sk-test-routing-0000000000000000")
PNG = "data:image/png;base64,iVBORw0KGgo="
IMAGE_URL = "https://example.test/cat.png"
# The fake upstream's OpenRouter catalogue (testing/fake_upstream/app.py), as
# the gateway caches it: windows and USD per million tokens.
OPENROUTER_SNAPSHOT: dict[str, pb.ModelInfo] = {
    f"openrouter/{model}": pb.ModelInfo(
        name=f"openrouter/{model}",
        provider=common.PROVIDER_OPENROUTER,
        upstream_model=model,
        context_length=window,
        pricing=pb.ModelPricing(prompt_per_million=prompt, completion_per_million=completion),
    )
    for model, window, prompt, completion in (
        ("openai/gpt-4o-mini", 128_000, 0.15, 0.6),
        ("anthropic/claude-sonnet-4.5", 1_000_000, 3.0, 15.0),
        ("z-ai/glm-4.7", 202_752, 0.4, 1.5),
    )
}


def snapshot_pricing(model: str) -> pb.ModelPricing | None:
    """The snapshot's prices, as Catalog.pricing gives PriceBook a catalogue's."""
    info = OPENROUTER_SNAPSHOT.get(model)
    return info.pricing if info is not None else None


OLLAMA_NUM_CTX = 32_768


@functools.cache
def providers() -> dict[common.Provider.ValueType, UpstreamProvider]:
    """One of each provider, configured with a fake key: their check() only."""
    t = Timeouts()
    return {
        common.PROVIDER_OPENROUTER: OpenRouterProvider(OpenRouterSettings(api_key=FAKE_KEY), t),
        common.PROVIDER_ZAI: ZaiProvider(ZaiSettings(api_key=FAKE_KEY), t),
        common.PROVIDER_OPENAI: OpenAIProvider(OpenAISettings(api_key=FAKE_KEY), t),
        common.PROVIDER_ANTHROPIC: AnthropicProvider(AnthropicSettings(api_key=FAKE_KEY), t),
        common.PROVIDER_GEMINI: GeminiProvider(GeminiSettings(api_key=FAKE_KEY), t),
        common.PROVIDER_GROQ: GroqProvider(GroqSettings(api_key=FAKE_KEY), t),
        common.PROVIDER_OLLAMA: OllamaProvider(OllamaSettings(), t),
    }


@dataclass
class FakeView:
    """A TargetView from fixed facts; counts what it was asked."""

    unconfigured: frozenset[common.Provider.ValueType] = frozenset()
    # Targets (gateway naming, `zai/glm-4.7@coding` as listed) whose breaker is open.
    open_breakers: frozenset[str] = frozenset()
    # Model name -> Capabilities fields to replace (as [capabilities."M"] does).
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    catalog: Mapping[str, pb.ModelInfo] = field(default_factory=lambda: OPENROUTER_SNAPSHOT)
    prices: PriceBook = field(default_factory=lambda: PriceBook({}, snapshot_pricing))
    # Model name -> its price, over `prices` (None: unknown).
    price_overrides: Mapping[str, Price | None] = field(default_factory=dict)
    ollama_num_ctx: int | None = OLLAMA_NUM_CTX
    asked: list[str] = field(default_factory=list)

    def configured(self, provider: common.Provider.ValueType) -> bool:
        return provider not in self.unconfigured

    def check(self, request: AnyCompletionRequest, route: Route) -> list[FieldViolation]:
        return providers()[route.provider].check(request)

    def breaker_open(self, route: Route, request: AnyCompletionRequest | None = None) -> bool:
        self.asked.append(route.target)
        return route.target in self.open_breakers

    def capabilities(self, model_name: str) -> Capabilities:
        caps = capabilities_for(
            model_name, self.catalog.get(model_name), ollama_num_ctx=self.ollama_num_ctx
        )
        override = self.overrides.get(model_name)
        if override:
            caps = dataclasses.replace(
                caps,
                **override,
                context_source=FactSource.CONFIG,
                features_source=FactSource.CONFIG,
                matched="config",
            )
        return caps

    def price(self, model_name: str) -> Price | None:
        if model_name in self.price_overrides:
            return self.price_overrides[model_name]
        return self.prices.price(model_name)


def model_name(route: Route) -> str:
    """A route's model in gateway naming, without a pinned endpoint."""
    return gateway_model_name(route.provider, route.upstream_model)


def caller_key(*patterns: str, name: str = "team") -> CallerKey:
    """A caller key limited to `patterns` (none: every model)."""
    return CallerKey(
        id=f"key-{name}",
        name=name,
        prefix="llmgw_test",
        models=tuple(patterns),
        rpm=None,
        tpm=None,
        budget_usd=None,
        budget_period=None,
        usage_reader=False,
        created_at=0.0,
        revoked_at=None,
    )


def schema() -> struct_pb2.Struct:
    value = struct_pb2.Struct()
    value.update({"type": "object", "properties": {"city": {"type": "string"}}})
    return value


def make_request(
    text: str = "hello there",
    *,
    model: str = "route/default",
    task: rpb.Task.ValueType = rpb.TASK_UNSPECIFIED,
    cost_tier: rpb.CostTier.ValueType = rpb.COST_TIER_UNSPECIFIED,
    session_id: str = "",
    system: str | None = None,
    tools: int = 0,
    tool_choice: str | None = None,
    json_schema: bool = False,
    json_object: bool = False,
    images: int = 0,
    image_url: bool = False,
    max_tokens: int | None = None,
    stop: tuple[str, ...] = (),
    thinking: bool = False,
    stream: bool = False,
) -> AnyCompletionRequest:
    """A request with the named features. `tool_choice` is "required" or a
    tool's name (forcing a call); images are data URLs unless `image_url`."""
    request: AnyCompletionRequest = pb.StreamCompleteRequest() if stream else pb.CompleteRequest()
    request.model = model
    request.routing.task = task
    request.routing.cost_tier = cost_tier
    request.routing.session_id = session_id
    if system is not None:
        request.messages.add(role=common.ROLE_SYSTEM, content=system)
    if images:
        message = request.messages.add(role=common.ROLE_USER)
        message.parts.add(text=text)
        for _ in range(images):
            message.parts.add(image=common.ImagePart(url=IMAGE_URL if image_url else PNG))
    else:
        request.messages.add(role=common.ROLE_USER, content=text)
    for index in range(tools):
        tool = request.tools.add(name=f"tool_{index}", description="looks something up")
        tool.parameters.CopyFrom(schema())
    if tool_choice == "required":
        request.tool_choice.mode = common.TOOL_CHOICE_MODE_REQUIRED
    elif tool_choice is not None:
        request.tool_choice.function_name = tool_choice
    if json_schema:
        request.response_format.type = common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
        request.response_format.json_schema.name = "answer"
        request.response_format.json_schema.schema.CopyFrom(schema())
    elif json_object:
        request.response_format.type = common.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    if max_tokens is not None:
        request.sampling.max_tokens = max_tokens
    request.sampling.stop.extend(stop)
    if thinking:
        request.reasoning.enabled = True
        request.reasoning.max_tokens = 2_048
    return request


def load_settings(tmp_path: Path, toml: str) -> Settings:
    """Settings from a config file holding `toml`, no environment."""
    path = tmp_path / "llmgateway.toml"
    path.write_text(toml, encoding="utf-8")
    return Settings.load({}, path)


def route_table(settings: Settings) -> RouteTable:
    """The compiled routes of `settings`, as the gateway builds them."""
    return RouteTable(settings.routes, Router(settings.aliases))
