"""OpenAI's models: context windows and USD per million tokens (see __init__.py).

OpenAI's /models lists ids only, so this table gives ListModels its context
windows and prices, and the ledger its costs. Standard (not Batch, not Flex,
not Priority) rates; `cached` is the cached-input rate. Rows match exact ids
and dated snapshots of them (gpt-4o-2024-08-06 takes gpt-4o's row), so every
minor version needs a row of its own. OpenAI's pricing page itself is not in
the project's reference store: each row names the third-party copy it was
read from (through the documentation search, on 2026-12-01), and the date
that copy gives. Re-check against https://platform.openai.com/docs/pricing
when OpenAI ships or reprices a model, and override with `[prices]`.

Sources:
[copilot]  github/docs data/tables/copilot/models-and-pricing.yml (per-1M
           input / cached / output rates it quotes for OpenAI's models).
[crate]    the openai-models Rust crate's table, "from openai.com/api/pricing".
[adk]      adk-model's openai/pricing.rs, "Token pricing for OpenAI models (March 2026)".
[deploy]   deploybase.ai "OpenAI API Pricing 2026", prices "as of March 21, 2026".
[aumiqx]   aumiqx.com "OpenAI API Pricing Decoded", "as of April 2026".
[calc]     aimodelcalc "OpenAI API Pricing Explained", "platform.openai.com/docs/pricing, May 2026".
[litellm]  BerriAI/litellm model_prices_and_context_window.json at commit 00035b69
           (read through the code search on 2026-12-01; the index gives no commit
           date, and its newest OpenAI rows are dated 2026-04, e.g. gpt-5.5-2026-04-23).
[yingtu]   yingtu.ai "o4-mini Pricing", OpenAI Standard rates "as of July 2, 2026".
"""

from __future__ import annotations

from llmgateway.server.routing.price_tables import BuiltinModel

MODELS: tuple[BuiltinModel, ...] = (
    # GPT-5 family: cached input at a tenth of input ([adk]: "90% off cached input reads").
    BuiltinModel("gpt-5.5", 400_000, 5.00, 0.50, 30.00),  # aipromptshub.co, June 2026
    BuiltinModel("gpt-5.4", 272_000, 2.50, 0.25, 15.00),  # [adk], [deploy] (272K context)
    BuiltinModel("gpt-5.4-mini", 400_000, 0.75, 0.075, 4.50),  # [adk]
    BuiltinModel("gpt-5.2", 400_000, 1.75, 0.175, 14.00),  # [copilot]
    BuiltinModel("gpt-5.1", 400_000, 1.25, 0.125, 10.00),  # [deploy] (cached: [adk] rule)
    BuiltinModel("gpt-5", 400_000, 1.25, 0.125, 10.00),  # [deploy], openai-cost crate
    BuiltinModel("gpt-5-mini", 400_000, 0.25, 0.025, 2.00),  # [copilot]
    BuiltinModel("gpt-5-nano", 400_000, 0.05, 0.005, 0.40),  # [deploy] input; [litellm] all three
    # GPT-4.1 family: 1M-token context, cached input at a quarter ([adk]).
    BuiltinModel("gpt-4.1", 1_047_576, 2.00, 0.50, 8.00),  # [copilot], [aumiqx]
    BuiltinModel("gpt-4.1-mini", 1_047_576, 0.40, 0.10, 1.60),  # [aumiqx]; cached [adk] rule
    BuiltinModel("gpt-4.1-nano", 1_047_576, 0.10, 0.025, 0.40),  # [aumiqx]; cached [adk] rule
    # GPT-4o family: cached input at half ([adk]).
    BuiltinModel("gpt-4o", 128_000, 2.50, 1.25, 10.00),  # [crate], [calc], [aumiqx]
    BuiltinModel("gpt-4o-mini", 128_000, 0.15, 0.075, 0.60),  # [crate], [calc], [aumiqx]
    # o-series reasoning models.
    BuiltinModel("o3", 200_000, 2.00, 0.50, 8.00),  # [deploy], [aumiqx]; cached [litellm]
    BuiltinModel("o4-mini", 200_000, 1.10, 0.275, 4.40),  # [yingtu], [litellm]
    # o3-mini: llmcalc.app (verified 2026-05-06) gives the same three rates, and saw it
    # dropped from OpenAI's public pricing page on 2026-06-12.
    BuiltinModel("o3-mini", 200_000, 1.10, 0.55, 4.40),  # [calc]; cached [litellm]
    BuiltinModel("o1", 200_000, 15.00, 7.50, 60.00),  # [crate], [calc]
    # o1-mini: deprecated by OpenAI and gone from [litellm]; rates and context from
    # langfa.st/models/o1-mini (undated, read 2026-12-01).
    BuiltinModel("o1-mini", 128_000, 1.10, 0.55, 4.40),
)
