"""What ListModels returns: aliases, Z.AI's models, and OpenRouter's catalogue."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from llmgateway.server.routing.pricing import ZAI_MODELS
from llmgateway.server.routing.router import gateway_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from llmgateway.server.providers.openrouter import OpenRouterProvider
    from llmgateway.server.providers.zai import ZaiProvider
    from llmgateway.server.routing.router import Plan

logger = logging.getLogger(__name__)


_OPENROUTER_TTL = 600.0
_OPENROUTER_TIMEOUT = 10.0
_FAILURE_TTL = 30.0
_PER_MILLION = 1_000_000


class Catalog:
    """Builds ListModels responses; caches OpenRouter's catalogue for ten minutes."""

    def __init__(
        self, aliases: Mapping[str, Plan], openrouter: OpenRouterProvider, zai: ZaiProvider
    ) -> None:
        self._aliases = aliases
        self._openrouter = openrouter
        self._zai = zai
        self._openrouter_models: list[pb.ModelInfo] = []
        self._fetched_at: float | None = None
        # After a failed fetch, callers get the gap reported at once for a while
        # instead of each waiting out another fetch.
        self._failed_at: float | None = None
        self._lock = asyncio.Lock()
        self._prefetch: asyncio.Task[list[pb.ModelInfo] | None] | None = None

    async def list_models(
        self, provider: common.Provider.ValueType, within: float = _OPENROUTER_TIMEOUT
    ) -> pb.ListModelsResponse:
        """Every routable model, optionally of one provider, within `within` seconds."""
        response = pb.ListModelsResponse()
        for alias, plan in sorted(self._aliases.items()):
            first = plan.routes[0]
            if provider in (common.PROVIDER_UNSPECIFIED, first.provider):
                response.models.add(
                    name=alias,
                    provider=first.provider,
                    upstream_model=first.upstream_model,
                    alias_of=first.target,
                    fallbacks=[route.target for route in plan.routes[1:]],
                    available=any(self._available(route.provider) for route in plan.routes),
                )
        if provider in (common.PROVIDER_UNSPECIFIED, common.PROVIDER_ZAI):
            response.models.extend(self._zai_models())
        if provider in (common.PROVIDER_UNSPECIFIED, common.PROVIDER_OPENROUTER):
            models = await self._openrouter_catalogue(within)
            if models is None:
                response.incomplete_providers.append(common.PROVIDER_OPENROUTER)
            else:
                response.models.extend(models)
        return response

    def prefetch(self) -> None:
        """Fetch OpenRouter's catalogue in the background now, so its prices
        size budget reservations from the first call on."""
        if self._openrouter.configured and self._prefetch is None:
            self._prefetch = asyncio.get_running_loop().create_task(
                self._openrouter_catalogue(_OPENROUTER_TIMEOUT)
            )

    async def aclose(self) -> None:
        """Stop a prefetch still running."""
        if self._prefetch is not None and not self._prefetch.done():
            self._prefetch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._prefetch

    def openrouter_pricing(self, model: str) -> pb.ModelPricing | None:
        """The catalogue's prices for an OpenRouter model (gateway naming), from
        the cached catalogue only: never a fetch on a call's path."""
        for info in self._openrouter_models:
            if info.name == model and info.HasField("pricing"):
                return info.pricing
        return None

    def _available(self, provider: common.Provider.ValueType) -> bool:
        return (
            self._openrouter if provider == common.PROVIDER_OPENROUTER else self._zai
        ).configured

    def _zai_models(self) -> list[pb.ModelInfo]:
        available = self._zai.configured
        out = []
        for model in ZAI_MODELS:
            pricing = pb.ModelPricing(
                prompt_per_million=model.prompt, completion_per_million=model.completion
            )
            if model.cached is not None:
                pricing.cached_prompt_per_million = model.cached
            out.append(
                pb.ModelInfo(
                    name=gateway_model_name(common.PROVIDER_ZAI, model.name),
                    provider=common.PROVIDER_ZAI,
                    upstream_model=model.name,
                    display_name=model.name.upper(),
                    context_length=model.context,
                    pricing=pricing,
                    available=available,
                )
            )
        return out

    async def _openrouter_catalogue(self, within: float) -> list[pb.ModelInfo] | None:
        """The cached catalogue, refreshed when stale; None when it cannot be had."""
        loop = asyncio.get_running_loop()
        try:
            # One fetch at a time; callers queue behind it but never past their deadline.
            async with asyncio.timeout(within):
                async with self._lock:
                    now = loop.time()
                    if self._fetched_at is not None and now - self._fetched_at < _OPENROUTER_TTL:
                        return self._openrouter_models
                    if self._failed_at is not None and now - self._failed_at < _FAILURE_TTL:
                        return self._openrouter_models or None
                    return await self._fetch_openrouter(now)
        except TimeoutError:
            return self._openrouter_models or None

    async def _fetch_openrouter(self, now: float) -> list[pb.ModelInfo] | None:
        try:
            document = await self._openrouter.get_json(
                "/models", self._openrouter.settings.base_url, _OPENROUTER_TIMEOUT
            )
            # The document is not redacted as fetched (see get_json): only
            # the strings copied into a ModelInfo are.
            models = _openrouter_models(
                document, self._openrouter.configured, self._openrouter.redactor.text
            )
        except Exception as exc:  # noqa: BLE001  # any failure: report the gap, keep serving
            logger.warning("could not fetch the OpenRouter model catalogue: %s", type(exc).__name__)
            self._failed_at = now
            return self._openrouter_models or None
        self._openrouter_models = models
        self._fetched_at = now
        self._failed_at = None
        return models


def _openrouter_models(
    document: object, available: bool, redact: Callable[[str], str]
) -> list[pb.ModelInfo]:
    """ModelInfos from OpenRouter's /models document; `redact` scrubs each
    string copied out of it (numbers are parsed, never copied)."""
    data = document.get("data") if isinstance(document, dict) else None
    out = []
    for entry in data if isinstance(data, list) else ():
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            continue
        upstream_model = redact(entry["id"])
        info = pb.ModelInfo(
            name=gateway_model_name(common.PROVIDER_OPENROUTER, upstream_model),
            provider=common.PROVIDER_OPENROUTER,
            upstream_model=upstream_model,
            display_name=redact(str(entry.get("name") or "")),
            available=available,
        )
        context = entry.get("context_length")
        if isinstance(context, int) and context > 0:
            info.context_length = context
        pricing = entry.get("pricing")
        if isinstance(pricing, dict):
            # OpenRouter quotes USD per token as decimal strings.
            for source, target in (
                ("prompt", "prompt_per_million"),
                ("completion", "completion_per_million"),
                ("input_cache_read", "cached_prompt_per_million"),
            ):
                per_token = _decimal(pricing.get(source))
                if per_token is not None and per_token >= 0:
                    setattr(info.pricing, target, per_token * _PER_MILLION)
        out.append(info)
    return out


def _decimal(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]  # strings and numbers both occur
    except (TypeError, ValueError):
        return None
