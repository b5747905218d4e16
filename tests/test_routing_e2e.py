"""Routes end to end over gRPC: `route/<name>` calls against the fake upstream.

Each test asserts what the fake upstream received (provider, endpoint, model)
and the decision the caller got back, for unary calls and streams: tasks
named and inferred, targets passed over with their reasons, stickiness,
escalation on a context-length failure, open breakers, the refusals, a named
model left alone, ExplainRoute as a dry run, and the ledger and metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from llmgateway.server.config import CircuitSettings
from llmgateway.server.process.server import Gateway, start_gateway
from llmgateway.server.resilience.retry import RetryPolicy
from llmgateway.server.state.db import Database
from llmgateway.server.state.keys import KeyStore
from llmgateway.server.state.schema import migrate
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from llmgateway.v1 import routing_pb2 as rpb
from tests.conftest import rich_status, with_config_file
from tests.routing_fixtures import make_request
from tests.test_reflection import SERVICE, ask, files_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence
    from pathlib import Path

    from llmgateway.server.config import Settings
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest
    from llmgateway.testing.fake_upstream import FakeUpstream, RecordedRequest

# `fast` is the fixtures' alias for zai/glm-4.5-flash. Z.AI has no vision and
# refuses json_schema; the fake answers every model that is not a fault.
ROUTES = """
[routes.default]
default = "fast"
code = [{ model = "zai/glm-4.7", zai_endpoint = "coding" }, "openrouter/anthropic/claude-sonnet-4.5"]
translation = "zai/glm-4.7"
chinese = "zai/glm-4.7"
vision = ["zai/glm-4.7", "gemini/gemini-2.5-flash"]
agent = "anthropic/claude-sonnet-4-5"
extraction = ["zai/glm-4.7", "openai/gpt-4o-mini"]

# The fault answers context_length_exceeded whatever the prompt; its window is
# 8k by the override below, so a short prompt passes the filter first.
[routes.long]
default = ["openrouter/x/fault-context-length", "openrouter/x/small-window", "zai/glm-4.7"]

# Escalation is bounded: the second context-length failure ends the call.
[routes.twice]
default = [
  "openrouter/x/fault-context-length",
  "openrouter/y/fault-context-length",
  "zai/glm-4.7",
]

[routes.flaky]
default = ["zai/fault-http-502", "openrouter/z-ai/glm-4.7"]

[routes.textonly]
default = "zai/glm-4.7"

[capabilities."openrouter/x/fault-context-length"]
context_window = 8192

[capabilities."openrouter/x/small-window"]
context_window = 4096

[capabilities."openrouter/y/fault-context-length"]
context_window = 65536
"""
CODE_TEXT = "```python\ndef add(a, b):\n    return a - b\n```\nWhy does this return the wrong sum?"
CHINESE_TEXT = "请把这段话翻译成英文：今天天气很好，我们一起去公园散步吧。"
# Two failures open a breaker, for long enough that no test waits it out by
# accident; no retries, so every request upstream is counted.
BREAKERS = CircuitSettings(failure_threshold=2, cool_down=30.0)


@dataclass
class Routed:
    """A gateway started with ROUTES, a stub on it, and the fake behind it."""

    gateway: Gateway
    channel: grpc.aio.Channel
    stub: pb_grpc.CompletionServiceAsyncStub
    fake: FakeUpstream

    def sent(self) -> list[tuple[str, str, str]]:
        """(provider, endpoint, model) of every request the fake received."""
        return [upstream(r) for r in self.fake.requests]


def upstream(request: RecordedRequest) -> tuple[str, str, str]:
    return request.provider, request.endpoint, _model_of(request)


def _model_of(request: RecordedRequest) -> str:
    model = request.body.get("model")
    if isinstance(model, str):
        return model
    # Gemini names the model in the path: /v1beta/models/<model>:generateContent
    return request.path.rsplit("/", 1)[-1].split(":", 1)[0]


def routed_settings(settings: Settings, tmp_path: Path, extra: str = "") -> Settings:
    return dataclasses.replace(
        with_config_file(settings, tmp_path / "routes.toml", ROUTES + extra),
        retries=RetryPolicy(max_attempts=1),
        circuit=BREAKERS,
    )


@contextlib.asynccontextmanager
async def started(settings: Settings, fake: FakeUpstream) -> AsyncIterator[Routed]:
    running = await start_gateway(settings, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Routed(running, channel, pb_grpc.CompletionServiceStub(channel), fake)
    finally:
        await running.stop(grace=0)


@pytest.fixture
async def routed(settings: Settings, fake: FakeUpstream, tmp_path: Path) -> AsyncIterator[Routed]:
    async with started(routed_settings(settings, tmp_path), fake) as running:
        yield running


async def complete(
    routed: Routed, request: AnyCompletionRequest, key: str | None = None
) -> pb.CompleteResponse:
    assert isinstance(request, pb.CompleteRequest)
    response: pb.CompleteResponse = await routed.stub.Complete(
        request, timeout=10, metadata=_bearer(key)
    )
    return response


async def stream(
    routed: Routed, request: AnyCompletionRequest
) -> tuple[list[pb.StreamCompleteResponse], pb.CompletionDone]:
    as_stream = pb.StreamCompleteRequest()
    as_stream.ParseFromString(request.SerializeToString())
    events = [event async for event in routed.stub.StreamComplete(as_stream, timeout=10)]
    assert events[-1].HasField("done")
    return events, events[-1].done


async def explain(
    routed: Routed, request: AnyCompletionRequest, key: str | None = None
) -> rpb.RoutingDecision:
    assert isinstance(request, pb.CompleteRequest)
    reply: pb.ExplainRouteResponse = await routed.stub.ExplainRoute(
        pb.ExplainRouteRequest(request=request), timeout=10, metadata=_bearer(key)
    )
    assert reply.HasField("decision")
    return reply.decision


def _bearer(key: str | None) -> tuple[tuple[str, str], ...] | None:
    return (("authorization", f"Bearer {key}"),) if key else None


async def refusal(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def skipped(decision: rpb.RoutingDecision) -> list[tuple[str, str]]:
    """(target, reason name without the prefix) of every target passed over."""
    return [
        (p.target, rpb.SkipReason.Name(p.reason).removeprefix("SKIP_REASON_"))
        for p in decision.passed_over
    ]


# -- tasks reach their targets ---------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "text", "sent", "entry"),
    [
        (rpb.TASK_CODE, "hello", ("zai", "coding", "glm-4.7"), "code"),
        (rpb.TASK_TRANSLATION, "hello", ("zai", "general", "glm-4.7"), "translation"),
        (
            rpb.TASK_AGENT,
            "hello",
            ("anthropic", "anthropic", "claude-sonnet-4-5"),
            "agent",
        ),
        # The route has no chat entry: the caller's task, the default's targets.
        (rpb.TASK_CHAT, "hello", ("zai", "general", "glm-4.5-flash"), "default"),
    ],
)
async def test_a_task_the_caller_names_reaches_its_entry(routed, task, text, sent, entry):
    response = await complete(routed, make_request(text, task=task))
    assert routed.sent() == [sent]
    decision = response.routing
    assert decision.route == "route/default"
    assert decision.task == task
    assert decision.task_source == rpb.TASK_SOURCE_CALLER
    assert decision.rule == ""
    assert decision.confidence == 1.0
    assert decision.entry == entry
    assert decision.chosen.split("@", 1)[0] == f"{sent[0]}/{sent[2]}"
    assert decision.passed_over == []
    assert not decision.sticky
    assert not decision.escalated
    # plan and signals come only with explain.
    assert decision.plan == []
    assert dict(decision.signals) == {}


@pytest.mark.parametrize(
    ("request_", "sent", "task", "rule", "entry"),
    [
        (
            make_request(CODE_TEXT),
            ("zai", "coding", "glm-4.7"),
            rpb.TASK_CODE,
            "code-fences",
            "code",
        ),
        (
            make_request(CHINESE_TEXT),
            ("zai", "general", "glm-4.7"),
            rpb.TASK_TRANSLATION,
            "cjk-text",
            "chinese",
        ),
        (
            make_request("Look these up for me", tools=2),
            ("anthropic", "anthropic", "claude-sonnet-4-5"),
            rpb.TASK_AGENT,
            "tools-present",
            "agent",
        ),
        (
            make_request("What is in this picture?", images=1),
            ("gemini", "gemini", "gemini-2.5-flash"),
            rpb.TASK_VISION,
            "image-parts",
            "vision",
        ),
        (
            make_request("Pull the name and the date out of: Ada, 1843", json_schema=True),
            ("openai", "openai", "gpt-4o-mini"),
            rpb.TASK_EXTRACTION,
            "json-schema",
            "extraction",
        ),
    ],
    ids=["code", "chinese", "agent", "vision", "extraction"],
)
async def test_an_inferred_task_reaches_its_entry(routed, request_, sent, task, rule, entry):
    response = await complete(routed, request_)
    assert routed.sent() == [sent]
    decision = response.routing
    assert (decision.task, decision.task_source, decision.rule, decision.entry) == (
        task,
        rpb.TASK_SOURCE_RULE,
        rule,
        entry,
    )
    assert 0 < decision.confidence <= 1
    assert not decision.below_threshold
    assert decision.estimated_prompt_tokens > 0


async def test_a_callers_translation_of_chinese_text_is_served_by_the_chinese_entry(routed):
    request = make_request(CHINESE_TEXT, task=rpb.TASK_TRANSLATION)
    request.routing.explain = True
    explained = await explain(routed, request)
    answered = await complete(routed, request)
    assert routed.sent() == [("zai", "general", "glm-4.7")]
    decision = answered.routing
    assert decision == explained
    assert (decision.task, decision.task_source, decision.rule) == (
        rpb.TASK_TRANSLATION,
        rpb.TASK_SOURCE_CALLER,
        "",
    )
    assert decision.entry == "chinese"
    assert decision.signals["chinese"] == "true"
    # English text named translation: the translation entry.
    english = await complete(routed, make_request("Good night", task=rpb.TASK_TRANSLATION))
    assert english.routing.entry == "translation"


async def test_no_confident_rule_serves_the_default_and_says_which_rule_fired(routed):
    response = await complete(routed, make_request("hello there"))
    assert routed.sent() == [("zai", "general", "glm-4.5-flash")]
    decision = response.routing
    assert decision.task_source == rpb.TASK_SOURCE_ROUTE_DEFAULT
    assert decision.entry == "default"
    assert decision.rule == "no-signal"
    assert decision.chosen == "zai/glm-4.5-flash"


async def test_a_unary_answer_and_a_streams_done_carry_the_same_decision(routed):
    request = make_request(CODE_TEXT)
    request.routing.explain = True
    unary = await complete(routed, request)
    events, done = await stream(routed, request)
    assert routed.sent() == [("zai", "coding", "glm-4.7")] * 2
    assert done.routing == unary.routing
    assert done.routing.plan == ["zai/glm-4.7@coding", "openrouter/anthropic/claude-sonnet-4.5"]
    assert done.routing.signals["scanned_chars"] == str(len(CODE_TEXT))
    # Only the last event carries it.
    assert not any(event.HasField("done") for event in events[:-1])
    assert done.zai_endpoint == common.ZAI_ENDPOINT_CODING


# -- targets passed over, with their reasons -----------------------------------------


async def test_a_target_without_vision_is_passed_over(routed):
    response = await complete(routed, make_request("Describe it", images=1))
    assert routed.sent() == [("gemini", "gemini", "gemini-2.5-flash")]
    (passed,) = response.routing.passed_over
    assert (passed.target, passed.reason, passed.id) == (
        "zai/glm-4.7",
        rpb.SKIP_REASON_NO_VISION,
        "no-vision",
    )
    assert "does not read images" in passed.detail


async def test_a_target_that_cannot_give_a_json_schema_answer_is_passed_over(routed):
    request = make_request("Extract the fields", json_schema=True, task=rpb.TASK_EXTRACTION)
    response = await complete(routed, request)
    assert routed.sent() == [("openai", "openai", "gpt-4o-mini")]
    (passed,) = response.routing.passed_over
    assert (passed.target, passed.reason, passed.id) == (
        "zai/glm-4.7",
        rpb.SKIP_REASON_NO_JSON_SCHEMA,
        "no-json-schema",
    )
    # The detail says where the fact came from.
    assert "JSON schema" in passed.detail
    assert '(built-in table, row "zai glm text models' in passed.detail


async def test_a_target_whose_provider_refuses_a_field_is_passed_over(routed):
    # Z.AI takes one stop sequence; the code entry's second target takes two.
    response = await complete(routed, make_request(CODE_TEXT, stop=("END", "STOP")))
    assert routed.sent() == [("openrouter", "openrouter", "anthropic/claude-sonnet-4.5")]
    (passed,) = response.routing.passed_over
    assert (passed.target, passed.reason) == (
        "zai/glm-4.7@coding",
        rpb.SKIP_REASON_PROVIDER_REFUSES,
    )
    assert "sampling.stop" in passed.detail
    assert response.routing.chosen == "openrouter/anthropic/claude-sonnet-4.5"
    assert response.fallbacks == 0  # passed over before any request, not fallen back from


def make_key(settings: Settings, name: str, **fields: object) -> str:
    """A caller key in the gateway's state database (the gateway is then closed to others)."""
    assert settings.db is not None
    db = Database(settings.db)
    try:
        migrate(db)
        _, key = KeyStore(db).create(name, **fields)  # type: ignore[arg-type]
    finally:
        db.close()
    return key


async def test_targets_outside_the_keys_model_patterns_are_passed_over(settings, fake, tmp_path):
    configured = routed_settings(settings, tmp_path)
    key = make_key(configured, "images-only", models=("openai/*", "gemini/*"))
    async with started(configured, fake) as running:
        response = await complete(running, make_request("Describe it", images=1), key)
        assert running.sent() == [("gemini", "gemini", "gemini-2.5-flash")]
        assert skipped(response.routing) == [("zai/glm-4.7", "KEY_MODEL_PATTERNS")]
        assert "openai/*, gemini/*" in response.routing.passed_over[0].detail
        # Only the key's patterns stand in the way: the key's own refusal.
        error = await refusal(complete(running, make_request(CODE_TEXT), key))
        status = rich_status(error)
        assert (status.code, status.info.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "MODEL_NOT_ALLOWED",
        )
        assert "openai/*" in status.message
        assert len(running.fake.requests) == 1


async def test_a_key_that_allows_the_route_trusts_its_targets(settings, fake, tmp_path):
    configured = routed_settings(settings, tmp_path)
    key = make_key(configured, "routes-only", models=("route/*",))
    async with started(configured, fake) as running:
        response = await complete(running, make_request(CODE_TEXT), key)
        assert running.sent() == [("zai", "coding", "glm-4.7")]
        assert response.routing.passed_over == []
        # The key still may not name a model itself.
        error = await refusal(complete(running, make_request("hi", model="zai/glm-4.7"), key))
        assert rich_status(error).info.reason == "MODEL_NOT_ALLOWED"


# -- stickiness ------------------------------------------------------------------------


async def test_a_session_stays_on_its_target_until_it_cannot_serve(routed):
    first = await complete(routed, make_request("hello there", session_id="s1"))
    assert first.routing.chosen == "zai/glm-4.5-flash"
    assert not first.routing.sticky
    # Turn 2 has code: the code entry would take it, but the session stays.
    second = await complete(routed, make_request(CODE_TEXT, session_id="s1"))
    assert second.routing.sticky
    assert second.routing.chosen == "zai/glm-4.5-flash"
    assert second.routing.entry == "code"
    # Another session with the same turn goes to the code entry.
    other = await complete(routed, make_request(CODE_TEXT, session_id="s2"))
    assert not other.routing.sticky
    assert other.routing.chosen == "zai/glm-4.7@coding"
    # Turn 3 has an image, which the session's target cannot read: decided afresh.
    third_request = make_request("And this?", images=1, session_id="s1")
    third_request.routing.explain = True
    third = await complete(routed, third_request)
    assert not third.routing.sticky
    assert third.routing.chosen == "gemini/gemini-2.5-flash"
    assert third.routing.signals["sticky_broken"] == "no-vision"
    # The session now lives where turn 3 was served.
    fourth = await complete(routed, make_request("thanks", session_id="s1"))
    assert fourth.routing.sticky
    assert fourth.routing.chosen == "gemini/gemini-2.5-flash"
    assert routed.sent() == [
        ("zai", "general", "glm-4.5-flash"),
        ("zai", "general", "glm-4.5-flash"),
        ("zai", "coding", "glm-4.7"),
        ("gemini", "gemini", "gemini-2.5-flash"),
        ("gemini", "gemini", "gemini-2.5-flash"),
    ]


async def test_a_failed_call_does_not_make_a_session_sticky(routed):
    request = make_request("hello", session_id="s9", model="route/twice")
    await refusal(complete(routed, request))
    again = await explain(routed, make_request("hello", session_id="s9", model="route/twice"))
    assert not again.sticky


# -- escalation ------------------------------------------------------------------------


async def test_a_context_length_failure_escalates_once_to_a_larger_window(routed):
    response = await complete(routed, make_request("hello", model="route/long"))
    # The fault, then straight to glm: the 4k target between is not larger than 8k.
    assert routed.sent() == [
        ("openrouter", "openrouter", "x/fault-context-length"),
        ("zai", "general", "glm-4.7"),
    ]
    decision = response.routing
    assert decision.escalated
    assert decision.escalated_from == "openrouter/x/fault-context-length"
    assert decision.chosen == "zai/glm-4.7"
    assert skipped(decision) == [
        ("openrouter/x/fault-context-length", "FAILED"),
        ("openrouter/x/small-window", "CONTEXT_WINDOW"),
    ]
    assert decision.passed_over[0].detail == "UPSTREAM_CONTEXT_LENGTH_EXCEEDED"
    assert "8,192" in decision.passed_over[1].detail
    assert response.attempts == 2


async def test_a_stream_escalates_before_any_output(routed):
    _, done = await stream(routed, make_request("hello", model="route/long"))
    assert done.routing.escalated
    assert done.routing.chosen == "zai/glm-4.7"
    assert done.attempts == 2
    assert len(routed.fake.requests) == 2


async def test_a_second_context_length_failure_ends_the_call(routed):
    error = await refusal(complete(routed, make_request("hello", model="route/twice")))
    status = rich_status(error)
    assert status.info.reason == "UPSTREAM_CONTEXT_LENGTH_EXCEEDED"
    assert status.info.metadata["route"] == "route/twice"
    assert status.info.metadata["escalatedFrom"] == "openrouter/x/fault-context-length"
    # glm, with the largest window, is never tried: escalation happens once.
    assert routed.sent() == [
        ("openrouter", "openrouter", "x/fault-context-length"),
        ("openrouter", "openrouter", "y/fault-context-length"),
    ]


# -- very long input -------------------------------------------------------------------


async def test_a_paste_too_long_for_the_default_goes_to_the_routes_longest_window(routed):
    # 900 KB, about 225,000 tokens: more than fast's 131,072 and glm-4.7's
    # 204,800 windows; gemini-2.5-flash (the vision entry) takes 1,048,576.
    request = make_request("The committee met again and agreed. " * 25_000)
    request.routing.explain = True
    response = await complete(routed, request)
    assert routed.sent() == [("gemini", "gemini", "gemini-2.5-flash")]
    decision = response.routing
    assert (decision.task_source, decision.rule) == (rpb.TASK_SOURCE_ROUTE_DEFAULT, "long-input")
    assert (decision.entry, decision.chosen) == ("vision", "gemini/gemini-2.5-flash")
    assert decision.plan[0] == "gemini/gemini-2.5-flash"
    assert skipped(decision) == [
        ("zai/glm-4.5-flash", "CONTEXT_WINDOW"),
        ("zai/glm-4.7@coding", "CONTEXT_WINDOW"),
        ("zai/glm-4.7", "CONTEXT_WINDOW"),
        ("openai/gpt-4o-mini", "CONTEXT_WINDOW"),
        ("anthropic/claude-sonnet-4-5", "CONTEXT_WINDOW"),
    ]
    assert decision.signals["long_input"] == "true"
    assert decision.signals["long_input_search"] == "route"
    # A stream is decided the same.
    _, done = await stream(routed, request)
    assert done.routing == decision


# -- breakers --------------------------------------------------------------------------


async def test_a_failed_target_and_then_its_open_breaker_are_passed_over(routed):
    first = await complete(routed, make_request("hello", model="route/flaky"))
    assert skipped(first.routing) == [("zai/fault-http-502", "FAILED")]
    assert first.routing.passed_over[0].detail == "UPSTREAM_UNAVAILABLE"
    assert first.routing.chosen == "openrouter/z-ai/glm-4.7"
    assert (first.attempts, first.fallbacks) == (2, 1)
    await complete(routed, make_request("hello", model="route/flaky"))
    # Two failures: the breaker is open, and the decision moves past it before
    # any request.
    sent = len(routed.fake.requests)
    third = await complete(routed, make_request("hello", model="route/flaky"))
    assert skipped(third.routing) == [("zai/fault-http-502", "CIRCUIT_OPEN")]
    assert third.routing.passed_over[0].id == "breaker"
    assert routed.sent()[sent:] == [("openrouter", "openrouter", "z-ai/glm-4.7")]
    assert third.attempts == 1


# The code entry's only target fails; the default serves.
BRITTLE = """
[routes.brittle]
default = "fast"
code = "zai/fault-http-502"
"""


async def test_an_entry_whose_breakers_are_all_open_falls_to_the_default(settings, fake, tmp_path):
    async with started(routed_settings(settings, tmp_path, BRITTLE), fake) as running:
        # Two failed calls (the entry has no other target) open the breaker.
        for _ in range(2):
            error = await refusal(complete(running, make_request(CODE_TEXT, model="route/brittle")))
            assert rich_status(error).info.reason == "UPSTREAM_UNAVAILABLE"
        sent = len(running.fake.requests)
        inferred = await complete(running, make_request(CODE_TEXT, model="route/brittle"))
        named = await complete(
            running, make_request(CODE_TEXT, model="route/brittle", task=rpb.TASK_CODE)
        )
        # Served by the default entry, no request to the open target.
        assert running.sent()[sent:] == [("zai", "general", "glm-4.5-flash")] * 2
        for response, source in (
            (inferred, rpb.TASK_SOURCE_ROUTE_DEFAULT),
            (named, rpb.TASK_SOURCE_CALLER),
        ):
            decision = response.routing
            assert (decision.task, decision.task_source) == (rpb.TASK_CODE, source)
            assert (decision.entry, decision.chosen) == ("default", "zai/glm-4.5-flash")
            assert skipped(decision) == [("zai/fault-http-502", "CIRCUIT_OPEN")]
            assert response.attempts == 1
        assert inferred.routing.rule == "code-fences"


async def test_explaining_never_takes_a_half_open_breakers_probe(settings, fake, tmp_path):
    configured = dataclasses.replace(
        routed_settings(settings, tmp_path),
        circuit=CircuitSettings(failure_threshold=2, cool_down=0.2),
    )
    async with started(configured, fake) as running:
        # Two failures open the breaker (test_a_failed_target_and_then_its_open_
        # breaker_are_passed_over shows the open state, with a longer ejection).
        for _ in range(2):
            await complete(running, make_request("hello", model="route/flaky"))
        await asyncio.sleep(0.25)  # the ejection ends: half-open, one probe to give
        for _ in range(3):
            half_open = await explain(running, make_request("hello", model="route/flaky"))
            assert half_open.chosen == "zai/fault-http-502"
        sent = len(running.fake.requests)
        probed = await complete(running, make_request("hello", model="route/flaky"))
        # The real call got the probe: it went to the failing target first.
        assert running.sent()[sent:] == [
            ("zai", "general", "fault-http-502"),
            ("openrouter", "openrouter", "z-ai/glm-4.7"),
        ]
        assert skipped(probed.routing) == [("zai/fault-http-502", "FAILED")]


# -- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "field", "reason"),
    [
        (make_request("Describe it", images=1, model="route/textonly"), "messages", "no-vision"),
        (
            make_request("hello", stop=("a", "b"), task=rpb.TASK_TRANSLATION),
            "sampling.stop",
            "provider-refuses",
        ),
    ],
    ids=["image", "stop-sequences"],
)
async def test_nothing_eligible_is_invalid_argument_naming_the_fields(
    routed, request_, field, reason
):
    error = await refusal(complete(routed, request_))
    status = rich_status(error)
    assert (status.code, status.info.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "NO_ELIGIBLE_TARGET",
    )
    assert reason in status.message
    assert status.bad_request is not None
    assert field in [v.field for v in status.bad_request.field_violations]
    assert routed.fake.requests == []


async def test_an_unknown_route_lists_the_configured_ones(routed):
    error = await refusal(complete(routed, make_request("hi", model="route/nope")))
    status = rich_status(error)
    assert (status.code, status.info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "UNKNOWN_MODEL")
    assert "route/default" in status.message
    assert "route/flaky" in status.message
    assert routed.fake.requests == []


def test_a_route_that_names_an_unknown_target_stops_the_start(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[routes.default]\ndefault = "fast"\ncode = "zai/glm4.7/x"\n')
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    done = subprocess.run(
        [
            sys.executable,
            *("-m", "llmgateway.server.process.cli", "serve", "--config", str(config)),
            *("--address", "127.0.0.1:0", "--workers", "1"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "llmgateway: configuration error:" in done.stderr
    assert "[routes.default]" in done.stderr
    assert "Traceback" not in done.stderr


# -- a named model is served as named --------------------------------------------------


async def test_a_named_model_with_routing_hints_is_not_rerouted(routed):
    plain = make_request(CODE_TEXT, model="zai/glm-4.7")
    hinted = make_request(CODE_TEXT, model="zai/glm-4.7", task=rpb.TASK_VISION, session_id="x")
    # Hints on a named model are not even validated.
    hinted.routing.session_id = "s" * 500
    hinted.routing.cost_tier = 99  # type: ignore[assignment]
    without = await complete(routed, plain)
    with_hints = await complete(routed, hinted)
    assert not without.HasField("routing")
    assert not with_hints.HasField("routing")
    first, second = routed.fake.requests
    assert upstream(first) == upstream(second) == ("zai", "general", "glm-4.7")
    assert first.body == second.body
    alias = await complete(routed, make_request(CODE_TEXT, model="fast", task=rpb.TASK_CODE))
    assert not alias.HasField("routing")
    assert upstream(routed.fake.requests[-1]) == ("zai", "general", "glm-4.5-flash")


# -- ExplainRoute ----------------------------------------------------------------------


async def test_explain_route_equals_the_real_calls_decision_without_a_request(routed):
    cases: Sequence[AnyCompletionRequest] = [
        make_request(CODE_TEXT),
        make_request(CHINESE_TEXT),
        make_request("Describe it", images=1),
        make_request("Extract", json_schema=True),
        make_request(CODE_TEXT, stop=("a", "b")),
        make_request("hello", task=rpb.TASK_AGENT),
    ]
    for request in cases:
        request.routing.explain = True
        before = len(routed.fake.requests)
        explained = await explain(routed, request)
        assert len(routed.fake.requests) == before, "ExplainRoute sent a request upstream"
        answered = await complete(routed, request)
        assert explained == answered.routing
        assert explained.plan[0] == explained.chosen


async def test_explain_route_reads_sessions_and_never_writes_them(routed):
    await explain(routed, make_request("hello there", session_id="fresh"))
    # Had the explanation stored glm-4.5-flash, this turn would stay there.
    coded = await complete(routed, make_request(CODE_TEXT, session_id="fresh"))
    assert not coded.routing.sticky
    assert coded.routing.chosen == "zai/glm-4.7@coding"
    explained = await explain(routed, make_request("hello there", session_id="fresh"))
    assert explained.sticky
    assert explained.chosen == "zai/glm-4.7@coding"


async def test_explain_route_reserves_nothing_and_records_nothing(settings, fake, tmp_path):
    configured = routed_settings(settings, tmp_path)
    # A budget too small for any call's reservation: every real call is
    # refused, an explanation is not.
    broke = make_key(configured, "broke", budget_usd=1e-9, budget_period="day")
    async with started(configured, fake) as running:
        decision = await explain(running, make_request(CODE_TEXT), broke)
        assert decision.chosen == "zai/glm-4.7@coding"
        error = await refusal(complete(running, make_request(CODE_TEXT), broke))
        assert rich_status(error).info.reason == "KEY_BUDGET_EXCEEDED"
        assert running.fake.requests == []
    assert settings.db is not None
    db = Database(configured.db or "")
    try:
        rows = db.run_sync(
            lambda tx: tx.fetchall("SELECT requested_model, status FROM usage_records")
        )
    finally:
        db.close()
    # The refused call left its row; the explanation none.
    assert [tuple(row) for row in rows] == [("route/default", "RESOURCE_EXHAUSTED")]


async def test_explain_route_refuses_what_it_cannot_explain(routed):
    named = await refusal(explain(routed, make_request("hi", model="zai/glm-4.7")))
    status = rich_status(named)
    assert (status.code, status.info.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    assert status.bad_request is not None
    assert [v.field for v in status.bad_request.field_violations] == ["request.model"]
    assert "served as named" in status.message

    empty = pb.CompleteRequest(model="route/default")
    invalid = await refusal(explain(routed, empty))
    bad = rich_status(invalid).bad_request
    assert bad is not None
    assert all(v.field.startswith("request.") for v in bad.field_violations)
    assert "request.messages" in [v.field for v in bad.field_violations]

    unknown = rich_status(await refusal(explain(routed, make_request("hi", model="route/x"))))
    assert unknown.info.reason == "UNKNOWN_MODEL"
    assert unknown.bad_request is not None
    assert [v.field for v in unknown.bad_request.field_violations] == ["request.model"]

    nothing = make_request("Describe it", images=1, model="route/textonly")
    none_eligible = rich_status(await refusal(explain(routed, nothing)))
    assert none_eligible.info.reason == "NO_ELIGIBLE_TARGET"
    assert none_eligible.bad_request is not None
    assert [v.field for v in none_eligible.bad_request.field_violations] == ["request.messages"]
    assert routed.fake.requests == []


async def test_explain_route_needs_a_key_like_list_models(settings, fake, tmp_path):
    configured = routed_settings(settings, tmp_path)
    make_key(configured, "someone")
    async with started(configured, fake) as running:
        error = await refusal(explain(running, make_request(CODE_TEXT)))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_explain_route_is_decoded_tolerantly_and_reflected(routed):
    call = routed.channel.unary_unary("/llmgateway.v1.CompletionService/ExplainRoute")
    error = await refusal(call(b"\xff\xff\xff\xff\x0f", timeout=10))
    status = rich_status(error)
    assert (status.code, status.info.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_REQUEST",
    )
    assert "could not be decoded as llmgateway.v1.ExplainRouteRequest" in status.message
    # grpcurl finds it by reflection, with its request and response types.
    described = files_of(
        await ask(routed.channel, "grpc.reflection.v1", file_containing_symbol=SERVICE)
    )
    methods = {
        method.name: (method.input_type, method.output_type)
        for file in described
        for service in file.service
        if service.name == "CompletionService"
        for method in service.method
    }
    assert methods["ExplainRoute"] == (
        ".llmgateway.v1.ExplainRouteRequest",
        ".llmgateway.v1.ExplainRouteResponse",
    )


async def test_routes_are_listed_after_the_aliases(routed):
    listed = await routed.stub.ListModels(pb.ListModelsRequest(), timeout=10)
    names = [model.name for model in listed.models]
    routes = [name for name in names if name.startswith("route/")]
    assert routes == sorted(routes)
    assert "route/default" in routes
    default = next(model for model in listed.models if model.name == "route/default")
    assert default.alias_of == "zai/glm-4.5-flash"
    flaky = next(model for model in listed.models if model.name == "route/flaky")
    assert (flaky.alias_of, list(flaky.fallbacks)) == (
        "zai/fault-http-502",
        ["openrouter/z-ai/glm-4.7"],
    )


# -- accounting ------------------------------------------------------------------------


async def test_usage_groups_by_route_and_by_task(routed):
    await complete(routed, make_request(CODE_TEXT))
    await complete(routed, make_request(CODE_TEXT, task=rpb.TASK_CODE))
    await complete(routed, make_request(CHINESE_TEXT))
    # A named model with a caller task: the task column only.
    await complete(routed, make_request("hi", model="zai/glm-4.7", task=rpb.TASK_SUMMARIZATION))
    await complete(routed, make_request("hi", model="zai/glm-4.7"))
    await routed.gateway.calls.aclose()
    by_route = await routed.stub.GetUsage(pb.GetUsageRequest(group_by=pb.USAGE_GROUPING_ROUTE))
    by_task = await routed.stub.GetUsage(pb.GetUsageRequest(group_by=pb.USAGE_GROUPING_TASK))
    assert {row.group: row.calls for row in by_route.rows} == {"route/default": 3, "": 2}
    assert {row.group: row.calls for row in by_task.rows} == {
        "code": 2,
        "translation": 1,
        "summarization": 1,
        "": 1,
    }
    db = Database(routed.gateway.state.db.location if routed.gateway.state else "")
    try:
        rows = db.run_sync(
            lambda tx: tx.fetchall(
                "SELECT route, task, task_source FROM usage_records ORDER BY created_at"
            )
        )
    finally:
        db.close()
    assert [tuple(row) for row in rows] == [
        ("route/default", "code", "rule:code-fences"),
        ("route/default", "code", "caller"),
        ("route/default", "translation", "rule:cjk-text"),
        ("", "summarization", "caller"),
        ("", "", ""),
    ]


def _samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_decisions_and_escalations_are_counted(settings, fake, tmp_path):
    configured = dataclasses.replace(
        routed_settings(settings, tmp_path), metrics_address="127.0.0.1:0"
    )
    async with started(configured, fake) as running:
        await complete(running, make_request(CODE_TEXT))
        await complete(running, make_request("hello", task=rpb.TASK_CODE))
        await complete(running, make_request("hello", model="route/long"))
        await complete(running, make_request("Describe it", images=1))
        await explain(running, make_request(CODE_TEXT))  # not a call: not counted
        assert running.gateway.metrics_server is not None
        async with httpx.AsyncClient() as client:
            scraped = await client.get(
                f"http://127.0.0.1:{running.gateway.metrics_server.port}/metrics", timeout=10
            )
    samples = _samples(scraped.text)

    def count(name: str, **labels: str) -> float:
        return samples.get((name, frozenset(labels.items())), 0.0)

    decisions = "llmgateway_route_decisions_total"
    default = "route/default"
    assert count(decisions, route=default, task="code", source="rule", rule="code-fences") == 1
    assert count(decisions, route=default, task="code", source="caller", rule="") == 1
    # The rule that fired is kept when it was not trusted and the default served.
    assert (
        count(decisions, route="route/long", task="chat", source="default", rule="no-signal") == 1
    )
    assert count("llmgateway_route_escalations_total", route="route/long") == 1
    skips = "llmgateway_route_skips_total"
    assert count(skips, route=default, reason="no-vision") == 1
    assert count(skips, route="route/long", reason="failed") == 1
    assert sum(v for (name, _), v in samples.items() if name == decisions) == 4
