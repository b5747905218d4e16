"""Groq's models: context windows and USD per million tokens (see __init__.py).

Groq's /models gives context windows (which ListModels prefers to these) but
no prices, so this table prices the ledger and budgets. Standard on-demand
rates; `cached` is the prompt-cache-hit rate where Groq offers caching, else
None (billed as ordinary input). Rows match exact ids only: Groq serves no
dated snapshots. Groq's pricing page (https://groq.com/pricing) is not in the
project's reference store; each row names where its price was read (through
the documentation and code search, on 2026-12-01). Re-check when Groq
reprices, and override with `[prices]`.

Sources:
[tokenmix] tokenmix.ai "Groq API Access 2026", data "verified 2026-06-04"
           against Groq's pricing page.
[litellm]  BerriAI/litellm model_prices_and_context_window.json at commit 00035b69,
           groq/ rows (read through the code search on 2026-12-01; the index gives
           no commit date, and its newest rows are dated 2026-04).
[lobehub]  @lobehub/chat 1.143.3 src/config/modelProviders/groq.ts (unpkg; undated):
           context windows only.
"""

from __future__ import annotations

from llmgateway.server.routing.price_tables import BuiltinModel

MODELS: tuple[BuiltinModel, ...] = (
    BuiltinModel("openai/gpt-oss-120b", 131_072, 0.15, 0.075, 0.60),  # [tokenmix]
    BuiltinModel("openai/gpt-oss-20b", 131_072, 0.075, 0.0375, 0.30),  # [litellm]
    # Llama 3.x: prices [litellm]; context [lobehub] ([litellm] says 128,000 input).
    BuiltinModel("llama-3.3-70b-versatile", 131_072, 0.59, None, 0.79),
    BuiltinModel("llama-3.1-8b-instant", 131_072, 0.05, None, 0.08),
    BuiltinModel("moonshotai/kimi-k2-instruct-0905", 262_144, 1.00, 0.50, 3.00),  # [litellm]
    BuiltinModel("qwen/qwen3-32b", 131_000, 0.29, None, 0.59),  # [litellm], its context too
    BuiltinModel(
        "meta-llama/llama-4-scout-17b-16e-instruct", 131_072, 0.11, None, 0.34
    ),  # [litellm]
    BuiltinModel(
        "meta-llama/llama-4-maverick-17b-128e-instruct", 131_072, 0.20, None, 0.60
    ),  # [litellm]
)
