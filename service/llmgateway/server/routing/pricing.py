"""Prices per model, for the cost of Z.AI calls and for budget reservations.

Z.AI reports no cost, so the gateway computes it from ZAI_MODELS below (also
what ListModels lists for Z.AI), which config `[prices."zai/<model>"]` entries
override.
OpenRouter reports its own cost; its catalogue prices (once fetched for
ListModels) only size reservations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmgateway.server.routing.router import OPENROUTER_PREFIX, ZAI_PREFIX

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from llmgateway.server.config import PriceOverride
    from llmgateway.v1 import completion_service_pb2 as pb

_PER_MILLION = 1_000_000.0


@dataclass(frozen=True, slots=True)
class ZaiModel:
    """A Z.AI model: its context window and USD per million tokens."""

    name: str
    context: int
    prompt: float
    # Cached prompt tokens; None bills them as ordinary prompt tokens.
    cached: float | None
    completion: float


# Z.AI has no model-listing endpoint and reports no cost, so this table is both
# its model list and its price list. USD per million tokens, standard
# pay-as-you-go rates of the general endpoint (Coding Plan use is flat-fee);
# free models cost 0. Re-check these against https://docs.z.ai/guides/overview/pricing
# when Z.AI ships a model.
#
# Sources, per row:
# [ref] ../shared/reference/zai-api.md §6 (compiled mid-2026 from several
#       third-party catalogues that agree with each other and with the Z.AI FAQ's
#       "cache hits at 1/5 of the input price").
# [page] Z.AI's pricing page (docs.z.ai/guides/overview/pricing) as transcribed
#       by third parties; the page itself is not in the reference store:
#       a public model catalogue that read it on 2026-09-23 (GLM-5.3, 5.2, 5.1, 5,
#       4.7-Flash, 4.6V, 4.6V-Flash), the "GLM 5.3 API: pricing" article on dev.to
#       (snapshot 2026-08-19: GLM-5.3 at 1.40 / 0.26 cached / 4.40, "the same as
#       GLM-5.2 and GLM-5.1 line for line") and docs.wolffi.sh/configuration/zai
#       (GLM-5.2, 5.1, 5-Turbo, 5 with their cached rates).
# Disagreements, and which side was taken:
# - glm-4.7-flash: free per [page] and most sources in [ref]; one source in [ref]
#   (and the openclaw plugin catalogue) says 0.07 / 0.40. Free was taken.
# - glm-5.1: 1.40 / 0.26 / 4.40 per [page] and wolffi.sh; the openclaw plugin
#   catalogue says 1.20 / 0.24 / 4.00 (apparently an older rate). [page] was taken.
# - glm-5-turbo is on wolffi.sh and the openclaw catalogue at 1.20 / 0.24 / 4.00,
#   but not on the 2026-09-23 transcription of the page (withdrawn, or omitted).
# Context windows: [ref] where it has them; else the same sources (200K for the
# GLM-5 line, 1M for GLM-5.2 and 5.3, 128K for the GLM-4.6V line).
ZAI_MODELS: tuple[ZaiModel, ...] = (
    ZaiModel("glm-5.3", 1_048_576, 1.40, 0.26, 4.40),  # [page] 2026-09-23, 2026-08-19
    ZaiModel("glm-5.2", 1_048_576, 1.40, 0.26, 4.40),  # [page] 2026-09-23, wolffi.sh
    ZaiModel("glm-5.1", 200_000, 1.40, 0.26, 4.40),  # [page] 2026-09-23, wolffi.sh
    ZaiModel("glm-5-turbo", 200_000, 1.20, 0.24, 4.00),  # wolffi.sh, openclaw catalogue
    ZaiModel("glm-5", 200_000, 1.00, 0.20, 3.20),  # [page] 2026-09-23, wolffi.sh, openclaw
    ZaiModel("glm-4.7", 204_800, 0.60, 0.11, 2.20),  # [ref]
    ZaiModel("glm-4.7-flashx", 200_000, 0.07, 0.01, 0.40),  # [ref]
    ZaiModel("glm-4.7-flash", 200_000, 0.0, 0.0, 0.0),  # [page] 2026-09-23, [ref] (see above)
    ZaiModel("glm-4.6", 200_000, 0.60, 0.11, 2.20),  # [ref]
    ZaiModel("glm-4.6v", 128_000, 0.30, 0.05, 0.90),  # [page] 2026-09-23
    ZaiModel("glm-4.6v-flash", 128_000, 0.0, 0.0, 0.0),  # [page] 2026-09-23
    ZaiModel("glm-4.5", 131_072, 0.60, 0.11, 2.20),  # [ref]
    ZaiModel("glm-4.5-air", 131_072, 0.20, 0.03, 1.10),  # [ref]
    ZaiModel("glm-4.5-x", 131_072, 2.20, 0.45, 8.90),  # [ref]
    ZaiModel("glm-4.5-airx", 131_072, 1.10, 0.22, 4.50),  # [ref]
    ZaiModel("glm-4.5v", 64_000, 0.60, 0.11, 1.80),  # [ref]
    ZaiModel("glm-4.5-flash", 131_072, 0.0, 0.0, 0.0),  # [ref]
    ZaiModel("glm-4-32b-0414-128k", 131_072, 0.10, None, 0.10),  # [ref]
)


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
