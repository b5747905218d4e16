"""What a routing decision may ask about targets, read from the running gateway.

`decide()` (routing/decide.py) is pure and reads targets through a
`TargetView`; this is the view over one worker's providers (configured,
`check()`), circuit breakers (read-only: `existing()` and `refuses_now()`,
never `breaker()`, which would make one per name a caller sends, nor
`admit()`, which would take a half-open circuit's probe), the cached
catalogue (never fetched on a call's path), the price book, and the
operator's `[capabilities."MODEL"]` overrides.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from llmgateway.server.routing.capabilities import (
    Capabilities,
    FactSource,
    adapter_refuses,
    capabilities_for,
)
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from llmgateway.server.config import CapabilityOverride
    from llmgateway.server.errors import FieldViolation
    from llmgateway.server.providers.core import UpstreamProvider
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest
    from llmgateway.server.resilience.circuit import Circuits
    from llmgateway.server.routing.pricing import Price, PriceBook
    from llmgateway.server.routing.router import Route
    from llmgateway.v1 import completion_pb2 as common

# A request that asks for nothing: a Z.AI route's breaker is then the one its
# pinned endpoint or the configured coding models choose.
_NO_REQUEST = pb.CompleteRequest()
# The override's feature fields, as Capabilities names them.
_FEATURES = ("tools", "json_schema", "json_object", "vision", "image_urls", "forced_tool_choice")
# Model names whose capabilities a view keeps. Configured targets are far fewer;
# a bound all the same, as a call may name a model of its own.
CAPABILITIES_KEPT = 1024


def apply_override(
    model_name: str, caps: Capabilities, override: CapabilityOverride
) -> Capabilities:
    """`caps` with the operator's `[capabilities."MODEL"]` facts in place of
    the built-in table's. A fact the gateway's adapter for the provider cannot
    carry (`caps.gateway_refuses`) stays false whatever the override says: an
    override describes the model, not the wire (and the provider's own
    check() is consulted by the decision as well)."""
    window, window_source = caps.context_window, caps.context_source
    # Every refusal of the adapter, not only those the table row needed
    # (`gateway_refuses` lists a refusal only where the model could do it):
    # an override turning on tools and forcing for a Z.AI model must not
    # let a forced call through to an adapter that sends it as "auto".
    refuses = caps.gateway_refuses | adapter_refuses(model_name)
    if override.context_window is not None:
        window, window_source = override.context_window, FactSource.CONFIG
    if all(getattr(override, name) is None for name in _FEATURES):
        return dataclasses.replace(caps, context_window=window, context_source=window_source)

    def fact(name: str) -> bool:
        given: bool | None = getattr(override, name)
        if given is None:
            return bool(getattr(caps, name))
        return given and name not in refuses

    forced = fact("forced_tool_choice")
    return dataclasses.replace(
        caps,
        context_window=window,
        context_source=window_source,
        tools=fact("tools"),
        json_schema=fact("json_schema"),
        json_object=fact("json_object"),
        vision=fact("vision"),
        image_urls=fact("image_urls"),
        forced_tool_choice=forced,
        # Forcing while thinking: never more than forcing at all, and not
        # where the adapter refuses it (Anthropic).
        forced_tool_choice_while_thinking=(
            forced and "forced_tool_choice_while_thinking" not in refuses
        ),
        features_source=FactSource.CONFIG,
        matched=f'[capabilities."{model_name}"]',
        # A fact the override gives is the config's, not the catalog's.
        catalog_facts=frozenset(
            name
            for name in caps.catalog_facts
            if getattr(override, name.removesuffix("_while_thinking"), None) is None
        ),
    )


class RoutingView:
    """A `TargetView` over one worker's providers, breakers, catalogue and prices."""

    def __init__(
        self,
        providers: Mapping[common.Provider.ValueType, UpstreamProvider],
        circuits: Circuits,
        prices: PriceBook,
        *,
        model_info: Callable[[str], pb.ModelInfo | None],
        overrides: Mapping[str, CapabilityOverride],
        ollama_num_ctx: int | None = None,
    ) -> None:
        self._providers = providers
        self._circuits = circuits
        self._prices = prices
        # The cached catalogue's entry for a model (gateway naming): never a fetch.
        self._model_info = model_info
        self._overrides = overrides
        self._ollama_num_ctx = ollama_num_ctx
        # Model name -> (the catalogue entry it was worked out from, the answer).
        # A decision asks for every candidate target on every routed call; the
        # answer changes only with the entry (the overrides, the tables and
        # num_ctx are fixed for the process), and a catalogue refresh brings new
        # entry objects, so an answer is reused while the entry is the same
        # object. Held here, an old entry cannot be freed and its id reused.
        self._capabilities: dict[str, tuple[pb.ModelInfo | None, Capabilities]] = {}

    def configured(self, provider: common.Provider.ValueType) -> bool:
        """Whether the gateway has an API key for `provider` (Ollama needs none)."""
        found = self._providers.get(provider)
        return found is not None and found.configured

    def check(self, request: AnyCompletionRequest, route: Route) -> list[FieldViolation]:
        """What the target's provider cannot accept in this request (its check())."""
        return self._providers[route.provider].check(request)

    def breaker_open(self, route: Route, request: AnyCompletionRequest | None = None) -> bool:
        """Whether the target's breaker would refuse a call that has somewhere
        else to go (open, or half-open with its probe out). A model never tried
        has no breaker, and nothing speaks against it. Read-only."""
        provider = self._providers[route.provider]
        group = provider.circuit_name(request or _NO_REQUEST, route)
        breaker = self._circuits.existing(group, route.upstream_model)
        return breaker is not None and breaker.refuses_now()

    def capabilities(self, model_name: str) -> Capabilities:
        """What `model_name` (gateway naming, no `@endpoint`) can serve: the
        built-in table and cached catalogue, then the operator's override."""
        info = self._model_info(model_name)
        kept = self._capabilities.get(model_name)
        if kept is not None and kept[0] is info:
            return kept[1]
        caps = capabilities_for(model_name, info, ollama_num_ctx=self._ollama_num_ctx)
        override = self._overrides.get(model_name)
        if override is not None:
            caps = apply_override(model_name, caps, override)
        if kept is None and len(self._capabilities) >= CAPABILITIES_KEPT:
            del self._capabilities[next(iter(self._capabilities))]  # the oldest name
        self._capabilities[model_name] = (info, caps)
        return caps

    def price(self, model_name: str) -> Price | None:
        """The model's price, as reservations and answers are priced."""
        return self._prices.price(model_name)
