"""Prices: Z.AI's list (the models real traffic uses are priced and listed), every
provider's built-in table, snapshots, cache reads and writes, overrides, catalogues."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmgateway.server.call_path.calls import CallScope
from llmgateway.server.config import ConfigError, PriceOverride, Settings
from llmgateway.server.observability.observe import CallRecord
from llmgateway.server.routing.price_tables import BuiltinModel
from llmgateway.server.routing.pricing import BUILTIN_TABLES, ZAI_MODELS, Price, PriceBook
from llmgateway.server.routing.router import gateway_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

# Seen in recorded Z.AI traffic (../shared/captures) and in Z.AI's later docs.
REAL_TRAFFIC = [
    "glm-4.7-flash",
    "glm-4.6v",
    "glm-4.6v-flash",
    "glm-5",
    "glm-5-turbo",
    "glm-5.1",
    "glm-5.2",
    "glm-5.3",
]


@pytest.mark.parametrize("model", REAL_TRAFFIC)
def test_models_real_traffic_uses_have_a_price(model: str) -> None:
    assert PriceBook({}).price(f"zai/{model}") is not None


def test_a_glm_5_3_call_costs_what_z_ai_charges() -> None:
    price = PriceBook({}).price("zai/glm-5.3")
    assert price is not None
    # 1.40 per million prompt tokens (0.26 cached), 4.40 per million completion tokens.
    assert price.cost(1_000_000, 1_000_000) == pytest.approx(5.80)
    assert price.cost(1_000_000, 0, cached=500_000) == pytest.approx(0.70 + 0.13)


def test_free_models_cost_nothing() -> None:
    for model in ("glm-4.7-flash", "glm-4.6v-flash", "glm-4.5-flash"):
        price = PriceBook({}).price(f"zai/{model}")
        assert price is not None
        assert price.cost(10_000, 10_000, cached=5_000) == 0.0


def test_every_model_is_listed_once() -> None:
    names = [m.name for m in ZAI_MODELS]
    assert len(names) == len(set(names))


async def test_list_models_offers_them_with_their_prices(
    stub: pb_grpc.CompletionServiceAsyncStub,
) -> None:
    listed = await stub.ListModels(pb.ListModelsRequest(provider=common.PROVIDER_ZAI), timeout=10)
    by_name = {m.name: m for m in listed.models}
    for model in REAL_TRAFFIC:
        assert f"zai/{model}" in by_name
    glm_46v = by_name["zai/glm-4.6v"]
    assert glm_46v.pricing.prompt_per_million == pytest.approx(0.30)
    assert glm_46v.pricing.completion_per_million == pytest.approx(0.90)
    assert glm_46v.pricing.cached_prompt_per_million == pytest.approx(0.05)


# -- every provider's table ------------------------------------------------------------

TABLES = {
    common.PROVIDER_OPENAI: (
        BuiltinModel("gpt-4o", 128_000, 2.50, 1.25, 10.00),
        BuiltinModel("gpt-4o-mini", 128_000, 0.15, 0.075, 0.60),
    ),
    common.PROVIDER_ANTHROPIC: (
        BuiltinModel("claude-sonnet-4-5", 200_000, 3.00, 0.30, 15.00, cache_write=3.75),
    ),
    common.PROVIDER_GEMINI: (BuiltinModel("gemini-2.5-flash", 1_048_576, 0.30, 0.03, 2.50),),
    common.PROVIDER_GROQ: (BuiltinModel("openai/gpt-oss-120b", 131_072, 0.15, None, 0.60),),
}


def book(
    overrides: dict[str, PriceOverride] | None = None,
    catalogue: Callable[[str], pb.ModelPricing | None] | None = None,
) -> PriceBook:
    return PriceBook(overrides or {}, catalogue, tables=TABLES)


@pytest.mark.parametrize(
    ("model", "prompt"),
    [
        ("openai/gpt-4o", 2.50),
        ("anthropic/claude-sonnet-4-5", 3.00),
        ("gemini/gemini-2.5-flash", 0.30),
        ("groq/openai/gpt-oss-120b", 0.15),
    ],
)
def test_each_providers_table_prices_its_models_under_their_gateway_names(model, prompt):
    price = book().price(model)
    assert price is not None
    assert price.prompt == prompt


def test_the_default_tables_are_the_providers_own():
    # Read from routing/price_tables/ when the book is made, rows and all.
    for provider, models in BUILTIN_TABLES.items():
        for model in models:
            assert PriceBook({}).price(gateway_model_name(provider, model.name)) is not None


@pytest.mark.parametrize(
    ("served", "listed"),
    [
        ("openai/gpt-4o-2024-08-06", "openai/gpt-4o"),
        ("openai/gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"),
        ("anthropic/claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4-5"),
        ("anthropic/claude-sonnet-4-5-latest", "anthropic/claude-sonnet-4-5"),
        ("gemini/gemini-2.5-flash-preview-09-2025", "gemini/gemini-2.5-flash"),
        ("gemini/gemini-2.5-flash-001", "gemini/gemini-2.5-flash"),
    ],
)
def test_a_dated_snapshot_takes_the_row_of_the_longest_name_it_extends(served, listed):
    prices = book()
    assert prices.price(served) == prices.price(listed)


@pytest.mark.parametrize(
    "model",
    [
        # Another model, not a snapshot: its own row or none.
        "gemini/gemini-2.5-flash-lite",
        "openai/gpt-4o-audio-preview",
        "openai/gpt-4o2",
        "openai/gpt-4",
        "anthropic/claude-sonnet-4-5-",
        # A provider's name under another's prefix.
        "openai/claude-sonnet-4-5",
    ],
)
def test_other_models_do_not_borrow_a_price(model):
    assert book().price(model) is None


def test_cache_writes_are_billed_at_their_rate_and_reads_at_theirs():
    price = book().price("anthropic/claude-sonnet-4-5")
    assert price is not None
    # 1532 prompt tokens = 3 fresh + 1111 read from cache + 418 written to it.
    cost = price.cost(1532, 100, cached=1111, cache_write=418)
    expected = (3 * 3.00 + 1111 * 0.30 + 418 * 3.75 + 100 * 15.00) / 1_000_000
    assert cost == pytest.approx(expected)


def test_cache_writes_without_a_rate_are_billed_as_prompt_tokens():
    price = book().price("openai/gpt-4o")
    assert price is not None
    assert price.cost(1000, 0, cached=200, cache_write=300) == pytest.approx(
        (800 * 2.50 + 200 * 1.25) / 1_000_000
    )


def test_cache_counts_beyond_the_prompt_are_never_billed_twice():
    price = Price(1.0, 0.0, cached_prompt=0.5, cache_write=2.0)
    # A provider that over-reports: at most the whole prompt, reads first.
    assert price.cost(100, 0, cached=80, cache_write=80) == pytest.approx(
        (80 * 0.5 + 20 * 2.0) / 1_000_000
    )
    assert price.cost(100, 0, cached=-5, cache_write=-5) == pytest.approx(100 / 1_000_000)


@settings(max_examples=200)
@given(
    prompt=st.integers(0, 10**7),
    completion=st.integers(0, 10**7),
    cached=st.integers(0, 10**7),
    cache_write=st.integers(0, 10**7),
)
def test_a_cost_is_between_the_cheapest_and_dearest_rate_for_every_token(
    prompt, completion, cached, cache_write
):
    price = Price(3.0, 15.0, cached_prompt=0.3, cache_write=3.75)
    cost = price.cost(prompt, completion, cached, cache_write)
    assert (prompt * 0.3 + completion * 15.0) / 1e6 - 1e-9 <= cost
    assert cost <= (prompt * 3.75 + completion * 15.0) / 1e6 + 1e-9


def test_ollama_runs_locally_and_costs_nothing():
    price = book().price("ollama/llama3.2")
    assert price is not None
    assert price.cost(10_000, 10_000, cached=10) == 0.0
    assert book().price("ollama/hf.co/user/repo:Q4_K_M") == price


def test_overrides_win_over_the_table_and_price_its_snapshots():
    override = PriceOverride(prompt=1.0, completion=2.0, cached_prompt=0.1, cache_write=1.5)
    prices = book({"anthropic/claude-sonnet-4-5": override, "ollama/llama3.2": override})
    expected = Price(1.0, 2.0, 0.1, 1.5)
    assert prices.price("anthropic/claude-sonnet-4-5") == expected
    assert prices.price("anthropic/claude-sonnet-4-5-20250929") == expected
    # Even a local model, for an operator who counts its electricity.
    assert prices.price("ollama/llama3.2") == expected


def test_a_catalogue_prices_what_no_table_lists():
    asked: list[str] = []

    def catalogue(model: str) -> pb.ModelPricing | None:
        asked.append(model)
        if model == "openrouter/openai/gpt-4o":
            return pb.ModelPricing(prompt_per_million=2.5, completion_per_million=10.0)
        if model == "groq/new-model":
            return pb.ModelPricing(prompt_per_million=0.1)  # no completion price: unknown
        return None

    prices = book(catalogue=catalogue)
    assert prices.price("openrouter/openai/gpt-4o") == Price(2.5, 10.0)
    assert prices.price("groq/new-model") is None
    assert prices.price("openai/gpt-4o") is not None
    assert "openai/gpt-4o" not in asked  # the table answered first


def test_config_takes_a_cache_write_rate(tmp_path):
    path = tmp_path / "llmgateway.toml"
    path.write_text(
        '[prices."anthropic/claude-opus-4-1"]\n'
        "prompt_per_million = 15\ncompletion_per_million = 75\n"
        "cached_per_million = 1.5\ncache_write_per_million = 18.75\n"
    )
    loaded = Settings.load({}, path)
    assert loaded.prices["anthropic/claude-opus-4-1"] == PriceOverride(15.0, 75.0, 1.5, 18.75)
    path.write_text(
        '[prices."anthropic/claude-opus-4-1"]\n'
        "prompt_per_million = 15\ncompletion_per_million = 75\ncache_write_per_million = -1\n"
    )
    with pytest.raises(ConfigError, match="cache_write_per_million must be a number, 0 or more"):
        Settings.load({}, path)


def _scope() -> CallScope:
    return CallScope(CallRecord(request_id="r", method="Complete"), 0.0)


def test_an_answer_without_a_cost_is_priced_from_the_book_with_its_cache_tokens():
    scope = _scope()
    answer = pb.CompleteResponse(
        model="anthropic/claude-sonnet-4-5-20250929",
        provider=common.PROVIDER_ANTHROPIC,
        usage=common.Usage(
            prompt_tokens=1532, completion_tokens=100, cached_tokens=1111, cache_write_tokens=418
        ),
    )
    scope.answered(answer, book())
    expected = (3 * 3.00 + 1111 * 0.30 + 418 * 3.75 + 100 * 15.00) / 1_000_000
    # On the answer, so the caller sees it, and on the record for the ledger.
    assert answer.usage.cost_usd == pytest.approx(expected)
    assert scope.record.cost_usd == pytest.approx(expected)
    assert (scope.record.provider, scope.record.cache_write_tokens) == ("anthropic", 418)


@pytest.mark.parametrize(
    ("provider", "label"),
    [
        (common.PROVIDER_OPENAI, "openai"),
        (common.PROVIDER_GEMINI, "gemini"),
        (common.PROVIDER_GROQ, "groq"),
        (common.PROVIDER_OLLAMA, "ollama"),
        (common.PROVIDER_ZAI, "zai"),
    ],
)
def test_every_provider_but_openrouter_is_priced_by_the_gateway(provider, label):
    model = {
        common.PROVIDER_OPENAI: "openai/gpt-4o-2024-08-06",
        common.PROVIDER_GEMINI: "gemini/gemini-2.5-flash",
        common.PROVIDER_GROQ: "groq/openai/gpt-oss-120b",
        common.PROVIDER_OLLAMA: "ollama/llama3.2",
        common.PROVIDER_ZAI: "zai/glm-4.7",
    }[provider]
    scope = _scope()
    answer = pb.CompleteResponse(
        model=model, provider=provider, usage=common.Usage(prompt_tokens=10, completion_tokens=5)
    )
    prices = PriceBook({}, tables={**BUILTIN_TABLES, **TABLES})
    scope.answered(answer, prices)
    price = prices.price(model)
    assert price is not None
    assert answer.usage.HasField("cost_usd")
    assert answer.usage.cost_usd == pytest.approx(price.cost(10, 5))
    assert scope.record.provider == label


def test_an_openrouter_answer_without_a_cost_waits_for_its_generation_record():
    scope = _scope()
    answer = pb.CompleteResponse(
        model="openrouter/openai/gpt-4o",
        provider=common.PROVIDER_OPENROUTER,
        usage=common.Usage(prompt_tokens=10, completion_tokens=5),
    )
    catalogue = pb.ModelPricing(prompt_per_million=2.5, completion_per_million=10.0)
    scope.answered(answer, book(catalogue=lambda _: catalogue))
    assert not answer.usage.HasField("cost_usd")
    assert scope.record.cost_usd is None


def test_an_answer_with_a_cost_keeps_it():
    scope = _scope()
    usage = common.Usage(prompt_tokens=10, completion_tokens=5, cost_usd=0.5)
    scope.answered(
        pb.CompleteResponse(model="openai/gpt-4o", provider=common.PROVIDER_OPENAI, usage=usage),
        book(),
    )
    assert scope.record.cost_usd == 0.5
