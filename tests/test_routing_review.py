"""Review findings on routed calls (issue 14), end to end over gRPC against
the fake upstream: each test pins a behaviour a caller relies on that the
first implementation got wrong."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import rich_status
from tests.routing_fixtures import make_request
from tests.test_routing_e2e import (
    complete,
    explain,
    refusal,
    routed_settings,
    started,
    stream,
)

if TYPE_CHECKING:
    from pathlib import Path

    from llmgateway.server.config import Settings
    from llmgateway.testing.fake_upstream import FakeUpstream

# The first target refuses the prompt's length (8k); the call escalates to the
# 200k target, which is unavailable; the 4k target after it is smaller than the
# window the prompt already exceeded.
AFTER_ESCALATION = """
[routes.afterescalation]
default = [
  "openrouter/x/fault-context-length",
  "openrouter/w/fault-http-502",
  "openrouter/x/small-window",
]

[capabilities."openrouter/w/fault-http-502"]
context_window = 200000
"""


async def test_after_escalating_a_fallback_never_goes_to_a_window_already_too_small(
    settings: Settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    configured = routed_settings(settings, tmp_path, AFTER_ESCALATION)
    async with started(configured, fake) as running:
        error = await refusal(
            complete(running, make_request("hello", model="route/afterescalation"))
        )
        # The larger target's own failure is what the caller learns, not a
        # context-length error from a target known to be too small for the prompt.
        status = rich_status(error)
        assert status.info.reason == "UPSTREAM_UNAVAILABLE"
        assert status.info.metadata["escalatedFrom"] == "openrouter/x/fault-context-length"
        assert running.sent() == [
            ("openrouter", "openrouter", "x/fault-context-length"),
            ("openrouter", "openrouter", "w/fault-http-502"),
        ]


async def test_an_escalation_counts_only_the_target_that_failed_as_a_fallback(
    settings: Settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    # route/long: the 8k fault refuses the length, the 4k target is jumped over
    # without a request, glm serves. `fallbacks` counts targets failed or
    # skipped by their breaker (the contract), as for an alias: one here.
    async with started(routed_settings(settings, tmp_path), fake) as running:
        response = await complete(running, make_request("hello", model="route/long"))
        assert response.routing.escalated
        assert (response.attempts, response.fallbacks) == (2, 1)
        _, done = await stream(running, make_request("hello", model="route/long"))
        assert done.routing.escalated
        assert (done.attempts, done.fallbacks) == (2, 1)


ONE_TARGET_LEFT = """
[routes.onefails]
default = ["zai/glm-4.7", "openrouter/w/fault-http-502"]
"""


async def test_a_routed_error_names_the_target_that_failed_even_when_it_was_the_only_one(
    settings: Settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    # Z.AI takes one stop sequence, so the decision leaves one target: the
    # caller cannot know from the route's name which model failed.
    configured = routed_settings(settings, tmp_path, ONE_TARGET_LEFT)
    async with started(configured, fake) as running:
        request = make_request("hello", model="route/onefails", stop=("END", "STOP"))
        decision = await explain(running, request)
        assert list(decision.plan) == ["openrouter/w/fault-http-502"]
        assert decision.passed_over[0].id == "provider-refuses"
        error = await refusal(complete(running, request))
        metadata = rich_status(error).info.metadata
        assert metadata["route"] == "route/onefails"
        assert metadata["target"] == "openrouter/w/fault-http-502"


async def test_a_route_call_no_target_could_serve_is_counted_under_its_route(
    settings: Settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    # route/textonly is zai/glm-4.7 alone, which has no vision: NO_ELIGIBLE_TARGET.
    # `usage --by route` must show the refusal as the route's failed call, not
    # as a call that named no route.
    async with started(routed_settings(settings, tmp_path), fake) as running:
        await complete(running, make_request("hello", model="route/textonly"))
        await refusal(
            complete(running, make_request("what is it?", model="route/textonly", images=1))
        )
        await running.gateway.calls.aclose()
        by_route = await running.stub.GetUsage(
            pb.GetUsageRequest(group_by=pb.USAGE_GROUPING_ROUTE), timeout=10
        )
        rows = {row.group: (row.calls, row.failed_calls) for row in by_route.rows}
        assert rows == {"route/textonly": (2, 1)}
