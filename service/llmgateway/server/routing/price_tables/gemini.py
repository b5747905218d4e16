"""Gemini's models: context windows and USD per million tokens (see __init__.py).

Gemini 2.5 Pro, 3 Pro and 3.1 Pro charge more for prompts over 200k tokens
($2.50 / $15 and $4 / $18); every row here is the <=200k rate, so a longer
prompt is under-billed (set `[prices."gemini/<model>"]` to bill it higher).
Cached is the context-cache read rate (10% of input on 2.5 and later).
"""

from __future__ import annotations

from llmgateway.server.routing.price_tables import BuiltinModel

# Sources: ai.google.dev/gemini-api/docs/pricing as quoted by third-party
# summaries (deploybase.ai "Gemini API Pricing", January 2026; morphllm.com
# "Gemini API pricing", read 2026-12); the official page itself could not be
# read from here. Context windows: inputTokenLimit as the models list reports
# it (1,048,576 for every row). Prices as of 2026-12, not re-checked since.
MODELS: tuple[BuiltinModel, ...] = (
    # 2.5 Pro: <=200k prompt rate (over 200k: $2.50 in, $15 out).
    BuiltinModel("gemini-2.5-pro", 1_048_576, 1.25, 0.125, 10.0),
    BuiltinModel("gemini-2.5-flash", 1_048_576, 0.30, 0.03, 2.50),
    BuiltinModel("gemini-2.5-flash-lite", 1_048_576, 0.10, 0.01, 0.40),
    # 3 Pro preview and 3.1 Pro: <=200k prompt rate (over 200k: $4 in, $18 out).
    BuiltinModel("gemini-3-pro-preview", 1_048_576, 2.00, 0.20, 12.0),
    BuiltinModel("gemini-3.1-pro-preview", 1_048_576, 2.00, 0.20, 12.0),
    BuiltinModel("gemini-3-flash-preview", 1_048_576, 0.50, 0.05, 3.00),
    # Deprecated (shuts down 2026-06-01 per the same sources); flat rate.
    BuiltinModel("gemini-2.0-flash", 1_048_576, 0.10, 0.025, 0.40),
)
