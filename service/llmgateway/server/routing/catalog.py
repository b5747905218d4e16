"""What ListModels returns: aliases, then routes, then every provider's catalogue.

Each provider lists its own models (`UpstreamProvider.catalogue`: a fetch from
its list endpoint, or a built-in table); this caches each list for ten
minutes, fetches the providers concurrently, and reports a provider whose
list cannot be had just now in `incomplete_providers` instead of failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmgateway.server.providers.core import UpstreamProvider
    from llmgateway.server.routing.router import Plan
    from llmgateway.server.routing.routes import RouteTable

logger = logging.getLogger(__name__)

_TTL = 600.0
_TIMEOUT = 10.0
_FAILURE_TTL = 30.0
# The catalogues whose prices budget reservations need before any ListModels.
_PREFETCHED = frozenset({common.PROVIDER_OPENROUTER})


class _CachedList:
    """One provider's catalogue, refreshed when stale; one fetch at a time."""

    def __init__(self, provider: UpstreamProvider) -> None:
        self.provider = provider
        self.models: list[pb.ModelInfo] = []
        # The same models by name, rebuilt with each list: routing decisions
        # and reservations look a model up per target, and OpenRouter lists
        # some 400.
        self.by_name: dict[str, pb.ModelInfo] = {}
        self._fetched_at: float | None = None
        # After a failed fetch, callers get the gap reported at once for a while
        # instead of each waiting out another fetch.
        self._failed_at: float | None = None
        self._lock = asyncio.Lock()

    async def get(self, within: float) -> list[pb.ModelInfo] | None:
        """The cached list, refreshed when stale; None when it cannot be had."""
        loop = asyncio.get_running_loop()
        try:
            # Callers queue behind one fetch, but never past their deadline.
            async with asyncio.timeout(within):
                async with self._lock:
                    now = loop.time()
                    if self._fetched_at is not None and now - self._fetched_at < _TTL:
                        return self.models
                    if self._failed_at is not None and now - self._failed_at < _FAILURE_TTL:
                        return self.models or None
                    return await self._fetch(now)
        except TimeoutError:
            return self.models or None

    async def _fetch(self, now: float) -> list[pb.ModelInfo] | None:
        try:
            models = await self.provider.catalogue(_TIMEOUT)
        except Exception as exc:  # noqa: BLE001  # any failure: report the gap, keep serving
            logger.warning(
                "could not fetch the %s model catalogue: %s",
                self.provider.display_name,
                type(exc).__name__,
            )
            self._failed_at = now
            return self.models or None
        self.models = models
        by_name: dict[str, pb.ModelInfo] = {}
        for info in models:
            by_name.setdefault(info.name, info)  # the first of a name, as a scan finds it
        self.by_name = by_name
        self._fetched_at = now
        self._failed_at = None
        return models


class Catalog:
    """Builds ListModels responses from every provider's cached catalogue."""

    def __init__(
        self,
        aliases: Mapping[str, Plan],
        providers: Mapping[common.Provider.ValueType, UpstreamProvider],
        routes: RouteTable | None = None,
    ) -> None:
        self._aliases = aliases
        # By name, as RouteTable.names are sorted.
        self._routes = tuple(routes.resolve(name) for name in routes.names) if routes else ()
        self._providers = providers
        self._lists = {kind: _CachedList(provider) for kind, provider in providers.items()}
        self._prefetch: asyncio.Task[object] | None = None

    async def list_models(
        self, provider: common.Provider.ValueType, within: float = _TIMEOUT
    ) -> pb.ListModelsResponse:
        """Every routable model, optionally of one provider, within `within` seconds."""
        response = pb.ListModelsResponse()
        # Aliases, then routes by their default entry (what a call with no
        # task the route has an entry for is served by).
        named = [*sorted(self._aliases.items())]
        named += [(compiled.name, compiled.default.plan) for compiled in self._routes]
        for name, plan in named:
            first = plan.routes[0]
            if provider in (common.PROVIDER_UNSPECIFIED, first.provider):
                response.models.add(
                    name=name,
                    provider=first.provider,
                    upstream_model=first.upstream_model,
                    alias_of=first.target,
                    fallbacks=[route.target for route in plan.routes[1:]],
                    available=any(self._available(route.provider) for route in plan.routes),
                )
        wanted = [kind for kind in self._lists if provider in (common.PROVIDER_UNSPECIFIED, kind)]
        lists = await asyncio.gather(*(self._lists[kind].get(within) for kind in wanted))
        for kind, models in zip(wanted, lists, strict=True):
            if models is None:
                response.incomplete_providers.append(kind)
            else:
                response.models.extend(models)
        return response

    def prefetch(self) -> None:
        """Fetch OpenRouter's catalogue in the background now: its prices size
        budget reservations from the first call on. The other providers are
        priced from built-in tables, so their lists wait for the first
        ListModels (a gateway without a local Ollama should not log a failed
        fetch at every start)."""
        if self._prefetch is None:
            self._prefetch = asyncio.get_running_loop().create_task(self._fetch_configured())

    async def _fetch_configured(self) -> object:
        wanted = [
            cached
            for kind, cached in self._lists.items()
            if kind in _PREFETCHED and cached.provider.configured
        ]
        return await asyncio.gather(*(cached.get(_TIMEOUT) for cached in wanted))

    async def aclose(self) -> None:
        """Stop a prefetch still running."""
        if self._prefetch is not None and not self._prefetch.done():
            self._prefetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prefetch

    def model_info(self, model: str) -> pb.ModelInfo | None:
        """A model's entry (gateway naming) in the cached catalogues, if one
        was fetched: never a fetch on a call's path. Until a provider's list
        is first fetched (OpenRouter's at start, the others at the first
        ListModels) its models are not found here."""
        for cached in self._lists.values():
            info = cached.by_name.get(model)
            if info is not None:
                return info
        return None

    def pricing(self, model: str) -> pb.ModelPricing | None:
        """A catalogue's prices for a model (gateway naming), from the cached
        lists only: never a fetch on a call's path."""
        for cached in self._lists.values():
            info = cached.by_name.get(model)
            if info is not None and info.HasField("pricing"):
                return info.pricing
        return None

    # The name PriceBook has always been given.
    openrouter_pricing = pricing

    def _available(self, provider: common.Provider.ValueType) -> bool:
        found = self._providers.get(provider)
        return found is not None and found.configured
