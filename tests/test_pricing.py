"""Z.AI's price list: the models real traffic uses are priced and listed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from llmgateway.server.routing.pricing import ZAI_MODELS, PriceBook
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
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
