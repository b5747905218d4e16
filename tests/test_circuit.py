"""Circuit breakers: the state machine, and skipping a failing provider end to end."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

from service.circuit import Admission, CircuitBreaker, CircuitState
from service.config import AliasConfig, AliasTarget, CircuitSettings
from service.retry import RetryPolicy
from service.server import start_gateway
from tests.conftest import rich_status, user

UNAVAILABLE = pb.ERROR_REASON_UPSTREAM_UNAVAILABLE
RATE_LIMITED = pb.ERROR_REASON_UPSTREAM_RATE_LIMITED


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, changes: list[CircuitState] | None = None) -> CircuitBreaker:
    return CircuitBreaker(
        "zai",
        failure_threshold=3,
        cool_down=30.0,
        clock=clock,
        on_change=None if changes is None else (lambda _name, state: changes.append(state)),
    )


def state(b: CircuitBreaker) -> CircuitState:
    """The breaker's state (a call, so mypy does not narrow it between checks)."""
    return b.state


def fail(b: CircuitBreaker, times: int, reason: pb.ErrorReason.ValueType = UNAVAILABLE) -> None:
    for _ in range(times):
        admission = b.admit()
        assert isinstance(admission, Admission)
        b.record(admission, reason)


def test_opens_after_consecutive_failures_and_refuses_for_the_cool_down():
    clock, changes = Clock(), list[CircuitState]()
    b = breaker(clock, changes)
    fail(b, 2)
    assert state(b) is CircuitState.CLOSED
    fail(b, 1)
    assert state(b) is CircuitState.OPEN
    assert changes == [CircuitState.OPEN]
    clock.now += 10
    assert b.admit() == pytest.approx(20.0)


def test_a_healthy_answer_or_a_non_health_failure_resets_the_count():
    b = breaker(Clock())
    fail(b, 2)
    fail(b, 1, RATE_LIMITED)  # this account's limit, not the provider's health
    fail(b, 2)
    assert state(b) is CircuitState.CLOSED
    admission = b.admit()
    assert isinstance(admission, Admission)
    b.record(admission, None)
    fail(b, 2)
    assert state(b) is CircuitState.CLOSED


def test_after_the_cool_down_one_probe_decides():
    clock, changes = Clock(), list[CircuitState]()
    b = breaker(clock, changes)
    fail(b, 3)
    clock.now += 30
    probe = b.admit()
    assert probe == Admission(probe=True)
    assert state(b) is CircuitState.HALF_OPEN
    # Others wait while the probe is out.
    assert b.admit() == pytest.approx(1.0)
    b.record(probe, None)
    assert state(b) is CircuitState.CLOSED
    assert b.admit() == Admission(probe=False)
    assert changes == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]


def test_a_failed_probe_reopens_for_a_full_cool_down():
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 31
    fail(b, 1)
    assert state(b) is CircuitState.OPEN
    assert b.admit() == pytest.approx(30.0)


def test_an_abandoned_probe_lets_the_next_call_probe():
    clock = Clock()
    b = breaker(clock)
    fail(b, 3)
    clock.now += 30
    probe = b.admit()
    assert isinstance(probe, Admission)
    b.abandon(probe)
    assert b.admit() == Admission(probe=True)


# -- end to end -------------------------------------------------------------------------


@pytest.fixture
def tripping(settings):
    """Two failures open a circuit for half a second; no retries, to count exactly."""
    return dataclasses.replace(
        settings,
        retries=RetryPolicy(max_attempts=1),
        circuit=CircuitSettings(failure_threshold=2, cool_down=0.5),
        aliases={
            "coding": AliasConfig(
                (AliasTarget("zai/glm-4.7"), AliasTarget("openrouter/z-ai/glm-4.7"))
            )
        },
    )


async def health_of(channel: grpc.aio.Channel, service: str) -> int:
    stub: Any = health_pb2_grpc.HealthStub(channel)  # its stubs type only the sync API
    reply: health_pb2.HealthCheckResponse = await stub.Check(
        health_pb2.HealthCheckRequest(service=service), timeout=5
    )
    return reply.status


async def call(stub: pb_grpc.CompletionServiceAsyncStub, model: str) -> pb.CompleteResponse:
    response: pb.CompleteResponse = await stub.Complete(
        pb.CompleteRequest(model=model, messages=[user("hi")]), timeout=10
    )
    return response


async def test_an_open_circuit_skips_the_provider_and_shows_in_health(tripping, fake, caplog):
    serving, not_serving = (
        health_pb2.HealthCheckResponse.SERVING,
        health_pb2.HealthCheckResponse.NOT_SERVING,
    )
    caplog.set_level(logging.INFO, logger="service.circuit")
    gateway = await start_gateway(tripping, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub: pb_grpc.CompletionServiceAsyncStub = pb_grpc.CompletionServiceStub(channel)
            assert await health_of(channel, "provider/zai") == serving
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError):
                    await call(stub, "zai/fault-http-502")
            await asyncio.sleep(0)  # health updates are scheduled on the loop
            assert await health_of(channel, "provider/zai") == not_serving
            # The other endpoint and provider have circuits of their own.
            assert await health_of(channel, "provider/zai-coding") == serving
            assert await health_of(channel, "provider/openrouter") == serving
            assert await health_of(channel, "") == serving
            sent = len(fake.requests)

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(stub, "zai/glm-4.7")
            status = rich_status(caught.value)
            assert (status.code, status.info.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "UPSTREAM_CIRCUIT_OPEN",
            )
            assert status.retry is not None
            assert 0 < status.retry.retry_delay.ToTimedelta().total_seconds() <= 0.5
            assert status.info.metadata["provider"] == "zai"
            assert len(fake.requests) == sent, "an open circuit sends nothing upstream"

            # glm-4.6 is on the coding endpoint in the test settings: unaffected.
            assert (await call(stub, "zai/glm-4.6")).provider == common.PROVIDER_ZAI
            # An alias moves straight to its fallback, without an upstream attempt.
            response = await call(stub, "coding")
            assert (response.provider, response.attempts, response.fallbacks) == (
                common.PROVIDER_OPENROUTER,
                1,
                1,
            )

            await asyncio.sleep(0.55)
            # The cool-down is over: the next call probes, succeeds and closes it.
            assert (await call(stub, "zai/glm-4.7")).provider == common.PROVIDER_ZAI
            await asyncio.sleep(0)
            assert await health_of(channel, "provider/zai") == serving
    finally:
        await gateway.stop(grace=0)
    messages = [r.getMessage() for r in caplog.records if r.name == "service.circuit"]
    assert any("circuit zai opened" in m for m in messages)
    assert any("circuit zai half-open" in m for m in messages)
    assert any("circuit zai closed" in m for m in messages)


async def test_a_short_caller_deadline_does_not_trip_the_circuit(tripping, fake):
    gateway = await start_gateway(tripping, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub: pb_grpc.CompletionServiceAsyncStub = pb_grpc.CompletionServiceStub(channel)
            for _ in range(3):
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    await stub.Complete(
                        pb.CompleteRequest(model="zai/fault-hang", messages=[user("hi")]),
                        timeout=0.2,
                    )
                assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert (await call(stub, "zai/glm-4.7")).provider == common.PROVIDER_ZAI
            assert (
                await health_of(channel, "provider/zai") == health_pb2.HealthCheckResponse.SERVING
            )
    finally:
        await gateway.stop(grace=0)


async def test_an_unconfigured_provider_reports_not_serving(settings):
    no_keys = dataclasses.replace(settings, zai=dataclasses.replace(settings.zai, api_key=None))
    gateway = await start_gateway(no_keys, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
            assert await health_of(channel, "provider/zai") == not_serving
            assert await health_of(channel, "provider/zai-coding") == not_serving
            assert (
                await health_of(channel, "provider/openrouter")
                == health_pb2.HealthCheckResponse.SERVING
            )
    finally:
        await gateway.stop(grace=0)
