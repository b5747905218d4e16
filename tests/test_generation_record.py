"""OpenRouter's generation record (the cost of answers whose usage carried none)
when what answers for it is not JSON."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from llmgateway.server.config import OpenRouterSettings, Secret, Timeouts
from llmgateway.server.providers import openrouter
from llmgateway.server.providers.openrouter import OpenRouterProvider
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import user

if TYPE_CHECKING:
    import pytest

    from llmgateway.testing.fake_upstream import FakeUpstream

DELAYS = (0.0, 0.01, 0.01)


async def test_a_record_that_is_an_html_page_is_a_missing_cost_not_a_traceback(
    fake: FakeUpstream, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(openrouter, "GENERATION_LOOKUP_DELAYS", DELAYS)
    env = fake.environment()
    provider = OpenRouterProvider(
        OpenRouterSettings(
            api_key=Secret(env["OPENROUTER_API_KEY"]), base_url=env["OPENROUTER_BASE_URL"]
        ),
        Timeouts(),
    )
    route = Route(common.PROVIDER_OPENROUTER, "x/fault-generation-html", "openrouter/x/y")
    request = pb.CompleteRequest(model="openrouter/x/fault-generation-html", messages=[user("hi")])
    caplog.set_level(logging.WARNING, logger="llmgateway.server")
    try:
        first = await provider.complete(request, route, None)
        second = await provider.complete(request, route, None)
        assert not first.usage.HasField("cost_usd")
        # Every try is made (the page may be a proxy's passing fault), then None.
        assert await provider.generation_cost(first.id) is None
        assert fake.generation_lookups[first.id] == len(DELAYS)
        assert await provider.generation_cost(second.id) is None
    finally:
        await provider.aclose()
    warnings = [r for r in caplog.records if r.name == "llmgateway.server.providers.openrouter"]
    # One line, no traceback; the second call's is held back by the sampler.
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].exc_info is None
    assert "not JSON" in warnings[0].getMessage()
