"""Issue 13 audit: per-key model patterns and budgets with the direct providers' names, end to end.

The existing key tests use only `zai/*` and OpenRouter names; these check that a caller
key's fnmatch patterns and its USD budget work the same for OpenAI, Anthropic, Gemini,
Groq (slashes in the model) and Ollama, over gRPC against the fake upstream.
"""

from __future__ import annotations

import grpc

from llmgateway.server.state.db import Database
from tests.conftest import rich_status
from tests.test_keys import complete, gateway, keyed, refused, store

__all__ = ["keyed", "store"]  # fixtures, re-used from test_keys


async def test_direct_provider_model_patterns(keyed, store):
    _, key = store.create(
        "direct-only", models=("anthropic/*", "groq/openai/*", "ollama/llama3.2", "openai/gpt-4o*")
    )
    async with gateway(keyed) as (stub, _):
        for allowed in (
            "anthropic/claude-sonnet-4-5",
            "groq/openai/gpt-oss-120b",
            "ollama/llama3.2",
            "openai/gpt-4o-mini",
        ):
            assert (await complete(stub, key, allowed)).content, allowed
        for denied_model in (
            "gemini/gemini-2.5-flash",
            "groq/llama-3.3-70b-versatile",
            "ollama/qwen3:8b",
            "openai/gpt-5",
            "openrouter/anthropic/claude-sonnet-4.5",
        ):
            denied = await refused(complete(stub, key, denied_model))
            assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, denied_model
            status = rich_status(denied)
            assert status.info.reason == "MODEL_NOT_ALLOWED", denied_model
            assert "anthropic/*" in status.message


async def test_direct_provider_costs_reach_the_ledger_and_the_budget(keyed, store):
    # A budget too small for one Anthropic call's reservation is refused before any
    # upstream request, as for Z.AI: the built-in price table sizes the reservation.
    _, poor = store.create("pocket-money", budget_usd=0.0001, budget_period="day")
    _, rich = store.create("rich", budget_usd=10.0, budget_period="day")
    async with gateway(keyed) as (stub, _):
        error = await refused(complete(stub, poor, "anthropic/claude-sonnet-4-5"))
        assert rich_status(error).info.reason == "KEY_BUDGET_EXCEEDED"
        costs = {}
        for model in (
            "openai/gpt-4o-mini",
            "anthropic/claude-sonnet-4-5",
            "gemini/gemini-2.5-flash",
            "groq/openai/gpt-oss-120b",
            "ollama/llama3.2",
        ):
            response = await complete(stub, rich, model)
            assert response.usage.HasField("cost_usd"), model
            costs[model] = response.usage.cost_usd
    for model, cost in costs.items():
        if model.startswith("ollama/"):
            assert cost == 0, model
        else:
            assert cost > 0, model
    db = Database(keyed.db)
    try:
        rows = db.run_sync(
            lambda tx: tx.fetchall(
                "SELECT requested_model, cost_usd FROM usage_records WHERE status = 'OK'"
            )
        )
    finally:
        db.close()
    ledger = {model: cost for model, cost in rows}
    for model, cost in costs.items():
        assert abs(ledger[model] - cost) < 1e-12, (model, ledger.get(model), cost)
