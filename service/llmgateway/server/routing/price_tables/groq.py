"""Groq's models: context windows and USD per million tokens (see __init__.py).

Groq's /models gives context windows (which ListModels prefers to these) but
no prices, so this table prices the ledger and budgets. Standard on-demand
rates; `cached` is the prompt-cache-hit rate where Groq offers caching, else
None (billed as ordinary input). Rows match exact ids only: Groq serves no
dated snapshots. Groq's pricing page (https://groq.com/pricing) is not in the
project's reference store; each row names where its price was read (through
the documentation search, on 2026-12-01). Re-check when Groq reprices, and
override with `[prices]`.

Sources:
[tokenmix] tokenmix.ai "Groq API Access 2026", data "verified 2026-06-04"
           against Groq's pricing page.
[recall]   not found in a stored copy; Groq's published rate as the author
           remembers it: verify before relying on it.
"""

from __future__ import annotations

from llmgateway.server.routing.price_tables import BuiltinModel

MODELS: tuple[BuiltinModel, ...] = (
    BuiltinModel("openai/gpt-oss-120b", 131_072, 0.15, 0.075, 0.60),  # [tokenmix]
    BuiltinModel("openai/gpt-oss-20b", 131_072, 0.075, 0.0375, 0.30),  # [recall]
    BuiltinModel("llama-3.3-70b-versatile", 131_072, 0.59, None, 0.79),  # [recall]
    BuiltinModel("llama-3.1-8b-instant", 131_072, 0.05, None, 0.08),  # [recall]
    BuiltinModel("moonshotai/kimi-k2-instruct-0905", 262_144, 1.00, 0.50, 3.00),  # [recall]
    BuiltinModel("qwen/qwen3-32b", 131_072, 0.29, None, 0.59),  # [recall]
    BuiltinModel(
        "meta-llama/llama-4-scout-17b-16e-instruct", 131_072, 0.11, None, 0.34
    ),  # [recall]
    BuiltinModel(
        "meta-llama/llama-4-maverick-17b-128e-instruct", 131_072, 0.20, None, 0.60
    ),  # [recall]
)
