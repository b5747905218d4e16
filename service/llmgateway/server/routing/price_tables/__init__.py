"""Built-in model tables of the direct providers: context windows and USD prices.

One module per provider (openai.py, anthropic.py, gemini.py, groq.py), each a
tuple of BuiltinModel rows with the date and source of every price in a
comment. They fill what a provider's own model list does not publish
(OpenAI, Anthropic and Groq list no prices; some list no context window),
price calls for the ledger and budgets (routing/pricing.py), and are
overridden by `[prices."<model>"]` in the configuration. Ollama runs locally
and costs 0. Z.AI's table is in routing/pricing.py (it doubles as Z.AI's
model list).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BuiltinModel:
    """A model's context window and USD per million tokens."""

    # The provider's model id, without the gateway prefix ("gpt-4o-mini").
    # Dated snapshots the provider serves under it ("gpt-4o-mini-2024-07-18")
    # take its row too: see routing/pricing.py.
    name: str
    context: int
    prompt: float
    # Prompt tokens read from cache; None bills them as ordinary prompt tokens.
    cached: float | None
    completion: float
    # Prompt tokens written to cache (Anthropic); None bills them as prompt tokens.
    cache_write: float | None = None
