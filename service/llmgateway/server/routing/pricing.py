"""Prices per model: the cost of calls whose provider reports none, and
budget reservations.

OpenRouter reports its own cost (and its generation record has it when an
answer did not). Every other provider reports none, so the gateway computes
it from a built-in table: ZAI_MODELS below (also Z.AI's model list) and the
direct providers' tables in routing/price_tables/ (OpenAI, Anthropic, Gemini,
Groq). Ollama runs locally and costs 0. Config `[prices."<model>"]` entries
override any of them; a catalogue's prices (OpenRouter's, once fetched for
ListModels) fill in the rest.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmgateway.server.routing.price_tables import BuiltinModel, anthropic, gemini, groq, openai
from llmgateway.server.routing.router import PREFIXES, gateway_model_name
from llmgateway.v1 import completion_pb2 as common

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from llmgateway.server.config import PriceOverride
    from llmgateway.v1 import completion_service_pb2 as pb

_PER_MILLION = 1_000_000.0


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
ZAI_MODELS: tuple[BuiltinModel, ...] = (
    BuiltinModel("glm-5.3", 1_048_576, 1.40, 0.26, 4.40),  # [page] 2026-09-23, 2026-08-19
    BuiltinModel("glm-5.2", 1_048_576, 1.40, 0.26, 4.40),  # [page] 2026-09-23, wolffi.sh
    BuiltinModel("glm-5.1", 200_000, 1.40, 0.26, 4.40),  # [page] 2026-09-23, wolffi.sh
    BuiltinModel("glm-5-turbo", 200_000, 1.20, 0.24, 4.00),  # wolffi.sh, openclaw catalogue
    BuiltinModel("glm-5", 200_000, 1.00, 0.20, 3.20),  # [page] 2026-09-23, wolffi.sh, openclaw
    BuiltinModel("glm-4.7", 204_800, 0.60, 0.11, 2.20),  # [ref]
    BuiltinModel("glm-4.7-flashx", 200_000, 0.07, 0.01, 0.40),  # [ref]
    BuiltinModel("glm-4.7-flash", 200_000, 0.0, 0.0, 0.0),  # [page] 2026-09-23, [ref] (see above)
    BuiltinModel("glm-4.6", 200_000, 0.60, 0.11, 2.20),  # [ref]
    BuiltinModel("glm-4.6v", 128_000, 0.30, 0.05, 0.90),  # [page] 2026-09-23
    BuiltinModel("glm-4.6v-flash", 128_000, 0.0, 0.0, 0.0),  # [page] 2026-09-23
    BuiltinModel("glm-4.5", 131_072, 0.60, 0.11, 2.20),  # [ref]
    BuiltinModel("glm-4.5-air", 131_072, 0.20, 0.03, 1.10),  # [ref]
    BuiltinModel("glm-4.5-x", 131_072, 2.20, 0.45, 8.90),  # [ref]
    BuiltinModel("glm-4.5-airx", 131_072, 1.10, 0.22, 4.50),  # [ref]
    BuiltinModel("glm-4.5v", 64_000, 0.60, 0.11, 1.80),  # [ref]
    BuiltinModel("glm-4.5-flash", 131_072, 0.0, 0.0, 0.0),  # [ref]
    BuiltinModel("glm-4-32b-0414-128k", 131_072, 0.10, None, 0.10),  # [ref]
)


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    prompt: float
    completion: float
    # Prompt tokens read from cache; None bills them as ordinary prompt tokens.
    cached_prompt: float | None = None
    # Prompt tokens written to cache; None bills them as ordinary prompt tokens.
    cache_write: float | None = None

    def cost(self, prompt: int, completion: int, cached: int = 0, cache_write: int = 0) -> float:
        """USD for these token counts. `cached` and `cache_write` are part of
        `prompt` (as the contract's Usage counts them); a count larger than
        what is left of `prompt` is cut to it, so no token is billed twice."""
        cached = min(max(cached, 0), prompt) if self.cached_prompt is not None else 0
        written = min(max(cache_write, 0), prompt - cached) if self.cache_write is not None else 0
        total = (prompt - cached - written) * self.prompt + completion * self.completion
        if self.cached_prompt is not None:
            total += cached * self.cached_prompt
        if self.cache_write is not None:
            total += written * self.cache_write
        return total / _PER_MILLION


# The built-in tables, by provider. Each is read when a PriceBook is made.
BUILTIN_TABLES: dict[common.Provider.ValueType, tuple[BuiltinModel, ...]] = {
    common.PROVIDER_ZAI: ZAI_MODELS,
    common.PROVIDER_OPENAI: openai.MODELS,
    common.PROVIDER_ANTHROPIC: anthropic.MODELS,
    common.PROVIDER_GEMINI: gemini.MODELS,
    common.PROVIDER_GROQ: groq.MODELS,
}
# Ollama runs the model on the operator's own machine: no per-token price.
_LOCAL = Price(0.0, 0.0)
_OLLAMA_PREFIX = PREFIXES[common.PROVIDER_OLLAMA]
# What follows a table name in a snapshot id the provider serves under it:
# a date or version number (`gpt-4o-2024-08-06`, `claude-sonnet-4-5-20250929`,
# `gpt-4-0613`, `gemini-1.5-flash-002`), `latest` or a `preview` tag. Not
# another word (`gpt-4o-mini`, `gemini-2.5-flash-lite`, `gpt-4o-audio-preview`):
# that is another model, with a price of its own or none known.
_SNAPSHOT_TAG = re.compile(r"(?:\d|latest\b|preview\b)")


def _builtin_prices(
    tables: Mapping[common.Provider.ValueType, Iterable[BuiltinModel]],
) -> dict[str, Price]:
    return {
        gateway_model_name(provider, m.name): Price(m.prompt, m.completion, m.cached, m.cache_write)
        for provider, models in tables.items()
        for m in models
    }


class PriceBook:
    """Looks prices up by model name (gateway naming).

    In order: `[prices]` overrides, then the built-in tables, each by exact
    name and then as a snapshot of a listed name (an override of
    `openai/gpt-4o` prices the `openai/gpt-4o-2024-08-06` an answer names);
    Ollama's models at 0; then a catalogue's prices (OpenRouter's)."""

    def __init__(
        self,
        overrides: Mapping[str, PriceOverride],
        catalogue_pricing: Callable[[str], pb.ModelPricing | None] | None = None,
        tables: Mapping[common.Provider.ValueType, Iterable[BuiltinModel]] = BUILTIN_TABLES,
    ) -> None:
        self._known = _builtin_prices(tables)
        self._known.update(
            (name, Price(o.prompt, o.completion, o.cached_prompt, o.cache_write))
            for name, o in overrides.items()
        )
        self._catalogue = catalogue_pricing

    def price(self, model: str) -> Price | None:
        """The price of a model (gateway naming), if the gateway knows it."""
        known = self._known.get(model)
        if known is None:
            known = self._snapshot_of(model)
        if known is not None:
            return known
        if model.startswith(_OLLAMA_PREFIX):
            return _LOCAL
        return self._from_catalogue(model)

    def _snapshot_of(self, model: str) -> Price | None:
        """The price of the longest known name that `model` extends with a
        snapshot tag (`openai/gpt-4o-2024-08-06` -> `openai/gpt-4o`)."""
        # Each `-` from the right: the longest candidate first, a few look-ups.
        end = len(model)
        while (dash := model.rfind("-", 0, end)) > 0:
            if _SNAPSHOT_TAG.match(model, dash + 1):
                known = self._known.get(model[:dash])
                if known is not None:
                    return known
            end = dash
        return None

    def _from_catalogue(self, model: str) -> Price | None:
        if self._catalogue is None:
            return None
        pricing = self._catalogue(model)
        if (
            pricing is None
            or not pricing.HasField("prompt_per_million")
            or not pricing.HasField("completion_per_million")
        ):
            return None
        cached = (
            pricing.cached_prompt_per_million
            if pricing.HasField("cached_prompt_per_million")
            else None
        )
        return Price(pricing.prompt_per_million, pricing.completion_per_million, cached)
