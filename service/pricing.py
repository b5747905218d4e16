"""Prices per model, for the cost of Z.AI calls and for budget reservations.

Z.AI reports no cost, so the gateway computes it from the table in
service/catalog.py, which config `[prices."zai/<model>"]` entries override.
OpenRouter reports its own cost; its catalogue prices (once fetched for
ListModels) only size reservations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from service.catalog import ZAI_MODELS
from service.routing import OPENROUTER_PREFIX, ZAI_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from llmgateway.v1 import completion_service_pb2 as pb

    from service.config import PriceOverride

_PER_MILLION = 1_000_000.0


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    prompt: float
    completion: float
    # Cached prompt tokens; None bills them as ordinary prompt tokens.
    cached_prompt: float | None = None

    def cost(self, prompt: int, completion: int, cached: int = 0) -> float:
        """USD for these token counts (`cached` is part of `prompt`)."""
        cached = min(cached, prompt) if self.cached_prompt is not None else 0
        total = (prompt - cached) * self.prompt + completion * self.completion
        if self.cached_prompt is not None:
            total += cached * self.cached_prompt
        return total / _PER_MILLION


class PriceBook:
    """Looks prices up by route."""

    def __init__(
        self,
        overrides: Mapping[str, PriceOverride],
        openrouter_pricing: Callable[[str], pb.ModelPricing | None] | None = None,
    ) -> None:
        self._zai = {f"zai/{m.name}": Price(m.prompt, m.completion, m.cached) for m in ZAI_MODELS}
        self._overrides = {
            name: Price(o.prompt, o.completion, o.cached_prompt) for name, o in overrides.items()
        }
        self._openrouter = openrouter_pricing

    def price(self, model: str) -> Price | None:
        """The price of a model (gateway naming), if the gateway knows it."""
        if model in self._overrides:
            return self._overrides[model]
        if model.startswith(ZAI_PREFIX):
            return self._zai.get(model)
        if model.startswith(OPENROUTER_PREFIX) and self._openrouter is not None:
            pricing = self._openrouter(model)
            if (
                pricing is not None
                and pricing.HasField("prompt_per_million")
                and pricing.HasField("completion_per_million")
            ):
                cached = (
                    pricing.cached_prompt_per_million
                    if pricing.HasField("cached_prompt_per_million")
                    else None
                )
                return Price(pricing.prompt_per_million, pricing.completion_per_million, cached)
        return None
