"""The Python clients and routes: `routing()` hints by name, `explain_route`, usage by
route or task; scripted, and end to end against a gateway with a route over the fake."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import TYPE_CHECKING

import grpc
import grpc_testing
import pytest
from google.rpc import error_details_pb2, status_pb2
from hypothesis import given
from hypothesis import strategies as st

from llmgateway.client import (
    AsyncCompletionClient,
    CompletionClient,
    GatewayError,
    InvalidRequestError,
    acollect,
    routing,
)
from llmgateway.client.channel import usage_request
from llmgateway.client.hints import COST_TIERS, TASKS, cost_tier_name, task_name
from llmgateway.server.config import Settings
from llmgateway.server.process.server import start_gateway
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import routing_pb2 as rpb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from llmgateway.server.process.server import Gateway
    from llmgateway.testing.fake_upstream import FakeUpstream

SERVICE = pb.DESCRIPTOR.services_by_name["CompletionService"]


def test_routing_takes_names_prefixed_names_and_values():
    hints = routing("code", "low", "conversation-1", explain=True)
    assert hints == rpb.RoutingHints(
        task=rpb.TASK_CODE,
        cost_tier=rpb.COST_TIER_LOW,
        session_id="conversation-1",
        explain=True,
    )
    assert routing(task="TASK_CODE") == routing(task=" Code ") == routing(task=rpb.TASK_CODE)
    assert routing(cost_tier="COST_TIER_HIGH").cost_tier == rpb.COST_TIER_HIGH
    assert routing(task="auto").task == rpb.TASK_AUTO
    # Nothing given: every field unset, so the gateway infers the task.
    assert routing() == rpb.RoutingHints()


def test_every_task_and_tier_has_a_name_that_round_trips():
    named = {value for name, value in rpb.Task.items() if name != "TASK_UNSPECIFIED"}
    assert {routing(task=name).task for name in TASKS} == named
    assert [task_name(routing(task=name).task) for name in TASKS] == list(TASKS)
    assert "vision" in TASKS
    assert "auto" in TASKS
    assert COST_TIERS == ("low", "medium", "high")
    assert [cost_tier_name(routing(cost_tier=name).cost_tier) for name in COST_TIERS] == list(
        COST_TIERS
    )
    # A value from a newer gateway prints as its number rather than failing.
    assert task_name(rpb.Task.ValueType(9)) == "9"


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"task": "cod"}, "unknown task 'cod'; known: chat, code, reasoning,"),
        ({"task": "unspecified"}, "unknown task 'unspecified'"),
        ({"task": 22}, "unknown task 22; known: chat, code,"),
        ({"cost_tier": "cheap"}, "unknown cost_tier 'cheap'; known: low, medium, high"),
        ({"cost_tier": 7}, "unknown cost_tier 7"),
    ],
)
def test_an_unknown_name_or_value_is_refused_with_the_known_names(arguments, problem):
    with pytest.raises(ValueError, match="known:") as caught:
        routing(**arguments)
    assert str(caught.value).startswith(problem)


def test_a_bool_is_not_a_task():
    with pytest.raises(TypeError, match="task takes a name or a Task value"):
        routing(task=True)  # type: ignore[arg-type]  # what a caller might pass anyway


_SPELLINGS = st.sampled_from(TASKS).flatmap(
    lambda name: st.sampled_from([name, name.upper(), f"TASK_{name.upper()}", f" {name.title()}"])
)


@given(st.one_of(st.text(max_size=30), _SPELLINGS))
def test_any_text_is_a_known_task_or_a_value_error_listing_them(text):
    name = text.strip().upper().removeprefix("TASK_").lower()
    if name in TASKS:
        assert task_name(routing(task=text).task) == name
    else:
        with pytest.raises(ValueError, match="known: " + ", ".join(TASKS) + "$"):
            routing(task=text)


def test_usage_groups_by_route_and_by_task():
    assert usage_request(None, None, "route", None).group_by == pb.USAGE_GROUPING_ROUTE
    assert usage_request(None, None, "task", None).group_by == pb.USAGE_GROUPING_TASK
    with pytest.raises(ValueError, match="'route', 'task'"):
        usage_request(None, None, "entry", None)


class _Scripted:
    """A sync client on a grpc_testing channel; the call runs in a thread the test answers."""

    def __init__(self, call):
        self.channel = grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())
        client = CompletionClient(channel=self.channel, timeout=10)
        self.result = None
        self.error = None

        def main():
            try:
                self.result = call(client)
            except GatewayError as error:  # handed to the test, which asserts on it
                self.error = error

        self.thread = threading.Thread(target=main)
        self.thread.start()

    def take(self):
        return self.channel.take_unary_unary(SERVICE.methods_by_name["ExplainRoute"])

    def finish(self):
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()


def test_explain_route_sends_the_call_as_complete_would_and_returns_the_decision():
    scripted = _Scripted(
        lambda client: client.explain_route(
            "route/default",
            [("system", "Be terse."), ("user", "Fix this")],
            routing=routing("code", session_id="s-1"),
            sampling=common.SamplingParams(max_tokens=64),
        )
    )
    _, request, rpc = scripted.take()
    assert request.request.model == "route/default"
    assert [m.content for m in request.request.messages] == ["Be terse.", "Fix this"]
    assert request.request.routing == routing("code", session_id="s-1")
    assert request.request.sampling.max_tokens == 64
    decision = rpb.RoutingDecision(
        route="route/default", task=rpb.TASK_CODE, chosen="zai/glm-4.7@coding"
    )
    rpc.terminate(pb.ExplainRouteResponse(decision=decision), (), grpc.StatusCode.OK, "")
    scripted.finish()
    assert scripted.error is None
    assert scripted.result == decision


def test_explain_route_errors_are_the_clients_typed_errors():
    scripted = _Scripted(lambda client: client.explain_route("zai/glm-4.7", "hi"))
    _, _, rpc = scripted.take()
    info = error_details_pb2.ErrorInfo(reason="INVALID_REQUEST", domain="llmgateway.v1")
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field="request.model", description="explains route/<name> models")
    status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message="no route")
    status.details.add().Pack(info)
    status.details.add().Pack(bad)
    rpc.terminate(
        None,
        (("grpc-status-details-bin", status.SerializeToString()),),
        grpc.StatusCode.INVALID_ARGUMENT,
        "no route",
    )
    scripted.finish()
    assert isinstance(scripted.error, InvalidRequestError)
    assert scripted.error.field_violations == {"request.model": "explains route/<name> models"}


# -- end to end ------------------------------------------------------------------------

# `fast` is the fixtures' alias for zai/glm-4.5-flash.
ROUTES = """
[routes.default]
default = "fast"
code = [{ model = "zai/glm-4.7", zai_endpoint = "coding" }, "openrouter/anthropic/claude-sonnet-4.5"]
"""
CODE = "```python\ndef add(a, b):\n    return a - b\n```\nWhy is the sum wrong?"
CODE_PLAN = ["zai/glm-4.7@coding", "openrouter/anthropic/claude-sonnet-4.5"]


@pytest.fixture
async def routed_gateway(settings: Settings, tmp_path: Path) -> AsyncIterator[Gateway]:
    config = tmp_path / "routes.toml"
    config.write_text(ROUTES, encoding="utf-8")
    routes = Settings.load({}, config).routes
    running = await start_gateway(
        dataclasses.replace(settings, routes=routes), address="127.0.0.1:0"
    )
    yield running
    await running.stop(grace=0)


@pytest.fixture
async def client(routed_gateway: Gateway) -> AsyncIterator[AsyncCompletionClient]:
    async with AsyncCompletionClient(f"127.0.0.1:{routed_gateway.port}", timeout=10) as opened:
        yield opened


def sent(fake: FakeUpstream) -> list[tuple[str, str, object]]:
    return [(r.provider, r.endpoint, r.body.get("model")) for r in fake.requests]


async def test_explain_route_is_a_dry_run_and_the_call_gets_the_same_decision(client, fake):
    explained = await client.explain_route("route/default", "hello", routing=routing("code"))
    assert explained.chosen == "zai/glm-4.7@coding"
    assert explained.task == rpb.TASK_CODE
    assert explained.task_source == rpb.TASK_SOURCE_CALLER
    assert explained.entry == "code"
    assert list(explained.plan) == CODE_PLAN  # ExplainRoute always explains in full
    assert fake.requests == []  # nothing went upstream
    answer = await client.complete("route/default", "hello", routing=routing("code"))
    assert sent(fake) == [("zai", "coding", "glm-4.7")]
    assert answer.routing.chosen == explained.chosen
    assert answer.routing.task == rpb.TASK_CODE
    assert answer.routing.entry == "code"
    assert list(answer.routing.plan) == []  # a call explains in full only when asked


async def test_a_streamed_routed_call_carries_the_decision_on_done(client, fake):
    collected = await acollect(
        client.stream("route/default", CODE, routing=routing(session_id="s-1", explain=True))
    )
    assert collected.text.startswith("Hello from the fake upstream!")
    assert collected.done is not None
    decision = collected.done.routing
    assert (decision.task, decision.task_source, decision.rule) == (
        rpb.TASK_CODE,
        rpb.TASK_SOURCE_RULE,
        "code-fences",
    )
    assert decision.chosen == "zai/glm-4.7@coding"
    assert list(decision.plan) == CODE_PLAN
    assert sent(fake) == [("zai", "coding", "glm-4.7")]


async def test_the_sync_client_explains_and_routes_too(routed_gateway, fake):
    def use_sync_client():
        with CompletionClient(f"127.0.0.1:{routed_gateway.port}", timeout=10) as sync:
            explained = sync.explain_route("route/default", CODE)
            answer = sync.complete("route/default", "hi", routing=routing(task="code"))
            return explained, answer

    explained, answer = await asyncio.to_thread(use_sync_client)
    assert (explained.task, explained.rule) == (rpb.TASK_CODE, "code-fences")
    assert answer.routing.chosen == "zai/glm-4.7@coding"
    assert len(fake.requests) == 1  # the call, not the explanation


async def test_a_named_model_is_served_as_named_and_cannot_be_explained(client, fake):
    answer = await client.complete("zai/glm-4.7", "hi", routing=routing("code", explain=True))
    assert not answer.HasField("routing")
    assert sent(fake) == [("zai", "general", "glm-4.7")]
    with pytest.raises(InvalidRequestError) as caught:
        await client.explain_route("zai/glm-4.7", "hi")
    assert "request.model" in caught.value.field_violations


async def test_usage_by_route_and_by_task(client, routed_gateway):
    await client.complete("route/default", CODE)
    await client.complete("zai/glm-4.7", "hi")
    await routed_gateway.calls.aclose()  # the ledger's writes are done
    by_route = await client.get_usage(by="route")
    by_task = await client.get_usage(by="task")
    assert {row.group: row.calls for row in by_route.rows} == {"route/default": 1, "": 1}
    assert {row.group: row.calls for row in by_task.rows} == {"code": 1, "": 1}
