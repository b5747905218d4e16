"""Circuit breakers: the pure logic on a fake clock, and skipping a failing model end to end.

The breaker-under-load proofs (success rates with a flaky upstream, with and
without a fallback, a dead upstream, a flapping model) are in
tests/test_circuit_load.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmgateway.server.config import (
    AliasConfig,
    AliasTarget,
    CircuitSettings,
    ConfigError,
    Settings,
)
from llmgateway.server.process.server import start_gateway
from llmgateway.server.resilience.circuit import (
    Admission,
    CircuitBreaker,
    Circuits,
    CircuitState,
    ProviderVerdict,
)
from llmgateway.server.resilience.retry import RetryPolicy
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.conftest import rich_status, user

UNAVAILABLE = pb.ERROR_REASON_UPSTREAM_UNAVAILABLE
RATE_LIMITED = pb.ERROR_REASON_UPSTREAM_RATE_LIMITED
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Three failures at a rate of half the calls or more open it, for 30 s at first.
SETTINGS = CircuitSettings(
    failure_threshold=3,
    cool_down=30.0,
    failure_rate=0.5,
    window=30.0,
    max_cool_down=75.0,
    panic_success_rate=0.1,
    max_models=3,
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def breaker(
    clock: Clock, changes: list[CircuitState] | None = None, **settings: Any
) -> CircuitBreaker:
    return CircuitBreaker(
        "zai/glm-4.7",
        dataclasses.replace(SETTINGS, **settings),
        clock=clock,
        on_change=None if changes is None else (lambda _b, state, _why: changes.append(state)),
    )


def state(b: CircuitBreaker) -> CircuitState:
    """The breaker's state (a call, so mypy does not narrow it between checks)."""
    return b.state


def admitted(b: CircuitBreaker, *, has_fallback: bool = True) -> Admission:
    admission = b.admit(has_fallback=has_fallback)
    assert isinstance(admission, Admission), f"refused for {admission} s"
    return admission


def fail(b: CircuitBreaker, times: int, reason: pb.ErrorReason.ValueType = UNAVAILABLE) -> None:
    for _ in range(times):
        b.record(admitted(b), reason)


def succeed(b: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        b.record(admitted(b), None)


def open_it(b: CircuitBreaker) -> None:
    fail(b, SETTINGS.failure_threshold)
    assert state(b) is CircuitState.OPEN


# -- the window: a failure rate, not a run ---------------------------------------------


def test_opens_on_the_minimum_of_failures_at_the_failure_rate():
    clock, changes = Clock(), list[CircuitState]()
    b = breaker(clock, changes)
    fail(b, 2)
    assert state(b) is CircuitState.CLOSED
    fail(b, 1)
    assert state(b) is CircuitState.OPEN
    assert changes == [CircuitState.OPEN]
    clock.now += 10
    assert b.admit(has_fallback=True) == pytest.approx(20.0)


def test_a_run_of_failures_below_the_failure_rate_does_not_open_it():
    # The old breaker opened on 5 failures in a row, whatever came before: a
    # model answering most calls was shut off by one unlucky run.
    b = breaker(Clock())
    succeed(b, 10)
    fail(b, 8)  # 8 of 18 calls: under half
    assert state(b) is CircuitState.CLOSED
    fail(b, 2)  # 10 of 20: half
    assert state(b) is CircuitState.OPEN


def test_failures_leave_the_window():
    clock = Clock()
    b = breaker(clock)
    fail(b, 2)
    clock.now += 31
    fail(b, 2)
    assert state(b) is CircuitState.CLOSED
    fail(b, 1)
    assert state(b) is CircuitState.OPEN


def test_a_non_health_failure_counts_as_an_answer():
    b = breaker(Clock())
    fail(b, 2)
    fail(b, 10, RATE_LIMITED)  # this account's limit, not the model's health
    fail(b, 3)  # 5 of 15 calls failed
    assert state(b) is CircuitState.CLOSED


# -- ejection and probing -------------------------------------------------------------


def test_ejection_time_grows_with_each_opening_in_a_row_up_to_the_cap():
    clock = Clock()
    b = breaker(clock)
    open_it(b)
    ejections = []
    for _ in range(3):
        ejections.append(b.admit(has_fallback=True))
        clock.now += 100
        probe = admitted(b)
        assert probe.probe
        b.record(probe, UNAVAILABLE)
    ejections.append(b.admit(has_fallback=True))
    assert ejections == [pytest.approx(30), pytest.approx(60), pytest.approx(75), 75]


def test_openings_are_forgiven_one_per_cool_down_spent_closed():
    clock = Clock()
    b = breaker(clock)
    open_it(b)
    clock.now += 30
    b.record(admitted(b), UNAVAILABLE)  # the probe fails: 60 s next time
    clock.now += 60
    b.record(admitted(b), None)  # the probe succeeds: closed, two openings in a row
    assert state(b) is CircuitState.CLOSED
    clock.now += 31  # one cool-down closed: one opening forgiven
    open_it(b)
    assert b.admit(has_fallback=True) == pytest.approx(60)


def test_after_the_ejection_one_probe_decides():
    clock, changes = Clock(), list[CircuitState]()
    b = breaker(clock, changes)
    open_it(b)
    clock.now += 30
    probe = b.admit(has_fallback=True)
    assert probe == Admission(probe=True)
    assert state(b) is CircuitState.HALF_OPEN
    # Others wait while the probe is out.
    assert b.admit(has_fallback=True) == pytest.approx(1.0)
    b.record(probe, None)
    assert state(b) is CircuitState.CLOSED
    assert b.admit(has_fallback=True) == Admission()
    assert changes == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]
    # Closing starts a fresh window: the failures that opened it are forgotten.
    fail(b, 2)
    assert state(b) is CircuitState.CLOSED


def test_only_the_probe_closes_it():
    clock = Clock()
    b = breaker(clock)
    succeed(b, 3)
    fail(b, 3)
    assert state(b) is CircuitState.OPEN
    # A call admitted before it opened answers late: the circuit stays open.
    b.record(Admission(), None)
    assert state(b) is CircuitState.OPEN


def test_an_abandoned_probe_lets_the_next_call_probe():
    clock = Clock()
    b = breaker(clock)
    open_it(b)
    clock.now += 30
    probe = admitted(b)
    b.abandon(probe)
    assert b.admit(has_fallback=True) == Admission(probe=True)


# -- the panic rule -------------------------------------------------------------------


def test_refuses_now_reads_the_breaker_without_taking_the_probe():
    # A routing decision (and ExplainRoute, a dry run) asks whether a target
    # would be refused; asking must never use up a half-open circuit's probe.
    clock = Clock()
    b = breaker(clock)
    assert not b.refuses_now()
    open_it(b)
    assert b.refuses_now()
    clock.now += 30
    for _ in range(3):
        assert not b.refuses_now()
    assert state(b) is CircuitState.HALF_OPEN
    probe = admitted(b)
    assert probe.probe
    # The probe is out: calls with somewhere else to go are refused.
    assert b.refuses_now()
    assert b.admit(has_fallback=True) == pytest.approx(1.0)
    b.record(probe, None)
    assert not b.refuses_now()
    assert state(b) is CircuitState.CLOSED


def test_refuses_now_agrees_with_admit_with_a_fallback():
    clock = Clock()
    b = breaker(clock)
    moments = []
    open_it(b)
    moments.append(b.refuses_now())
    clock.now += 30
    moments.append(b.refuses_now())
    # What admit() says at the same moments, on a twin breaker.
    twin_clock = Clock()
    twin = breaker(twin_clock)
    open_it(twin)
    refused = [not isinstance(twin.admit(has_fallback=True), Admission)]
    twin_clock.now += 30
    refused.append(not isinstance(twin.admit(has_fallback=True), Admission))
    assert moments == refused == [True, False]


def test_a_call_with_no_fallback_goes_through_while_the_model_still_answers():
    clock = Clock()
    b = breaker(clock)
    succeed(b, 4)
    fail(b, 4)  # half the calls fail: open, but the model answers the other half
    assert state(b) is CircuitState.OPEN
    assert isinstance(b.admit(has_fallback=True), float), "a chain moves on"
    let_through = b.admit(has_fallback=False)
    assert let_through == Admission(panic=True)
    # What it says counts in the window, but does not close the circuit.
    b.record(let_through, None)
    assert state(b) is CircuitState.OPEN
    # While the probe is out, calls with nowhere else to go still go through.
    clock.now += 30
    assert admitted(b, has_fallback=False).probe
    assert admitted(b, has_fallback=False).panic


def test_a_dead_model_fails_fast_even_with_no_fallback():
    clock = Clock()
    b = breaker(clock)
    open_it(b)
    assert b.admit(has_fallback=False) == pytest.approx(30)
    # The window empties (refused calls add nothing to it): still dead, as it was.
    clock.now += 29
    assert b.admit(has_fallback=False) == pytest.approx(1)


def test_the_panic_floor_is_a_setting():
    b = breaker(Clock(), panic_success_rate=0.6)
    succeed(b, 5)
    fail(b, 5)
    assert isinstance(b.admit(has_fallback=False), float)
    never_refused = breaker(Clock(), panic_success_rate=0.0)
    succeed(never_refused, 1)
    fail(never_refused, 3)
    assert state(never_refused) is CircuitState.OPEN
    assert admitted(never_refused, has_fallback=False).panic


# -- per model, bounded, and the provider's verdict -----------------------------------


def test_each_model_and_endpoint_has_its_own_breaker_and_the_oldest_go():
    circuits = Circuits(SETTINGS, ["zai", "zai-coding"], clock=Clock())
    general = circuits.breaker("zai", "glm-4.7")
    assert circuits.breaker("zai-coding", "glm-4.7") is not general
    open_it(general)
    assert state(circuits.breaker("zai", "glm-4.6")) is CircuitState.CLOSED
    assert circuits.breaker("zai", "glm-4.7") is general  # used again: the newest
    circuits.breaker("zai", "glm-5")  # a fourth model: over max_models=3
    assert len(circuits) == 3
    assert "zai-coding/glm-4.7" not in circuits
    assert "zai/glm-4.7" in circuits


def test_the_provider_fails_only_when_its_calls_all_but_stopped_succeeding():
    clock, changes = Clock(), list[tuple[str, bool]]()
    circuits = Circuits(
        SETTINGS, ["openrouter"], clock=clock, on_provider_change=lambda *c: changes.append(c)
    )
    verdict: ProviderVerdict = circuits.providers["openrouter"]
    dead = circuits.breaker("openrouter", "x/dead")
    healthy = circuits.breaker("openrouter", "x/fine")
    succeed(healthy, 1)
    fail(dead, 3)
    assert state(dead) is CircuitState.OPEN
    assert verdict.serving, "one failing model among working ones"
    assert changes == []
    clock.now += 31
    for model in ("x/a", "x/b", "x/c"):
        fail(circuits.breaker("openrouter", model), 1)
    assert not verdict.serving
    assert changes == [("openrouter", False)]
    succeed(healthy, 1)
    assert verdict.serving
    assert changes == [("openrouter", False), ("openrouter", True)]


def test_state_changes_are_logged_within_a_budget(caplog):
    caplog.set_level(logging.INFO, logger="llmgateway.server.resilience.circuit")
    clock = Clock()
    circuits = Circuits(
        dataclasses.replace(SETTINGS, max_models=100),
        ["openrouter"],
        clock=clock,
        changes_logged_per_minute=3,
    )
    # The first opening also says the provider is failing: three lines.
    for index in range(5):
        fail(circuits.breaker("openrouter", f"x/m{index}"), 3)
    opened = [r.getMessage() for r in caplog.records if " open: " in r.getMessage()]
    assert len(opened) == 2
    assert opened[0].startswith("circuit openrouter/x/m0 open: 3 of 3 calls")
    clock.now += 60
    fail(circuits.breaker("openrouter", "x/m5"), 3)
    assert caplog.records[-1].getMessage().endswith("(3 earlier circuit changes not logged)")


@pytest.mark.parametrize(
    ("variable", "value", "words"),
    [
        ("LLMGATEWAY_CIRCUIT_FAILURE_RATE", "1.5", ["failure_rate", "from 0 to 1"]),
        ("LLMGATEWAY_CIRCUIT_PANIC_SUCCESS_RATE", "-1", ["panic_success_rate"]),
        ("LLMGATEWAY_CIRCUIT_WINDOW", "0", ["window_seconds"]),
        ("LLMGATEWAY_CIRCUIT_MAX_MODELS", "2.5", ["max_models", "whole number"]),
    ],
)
def test_bad_circuit_settings_are_refused(variable, value, words):
    with pytest.raises(ConfigError) as caught:
        Settings.load({variable: value})
    for word in words:
        assert word in str(caught.value)


def test_circuit_settings_from_the_file_and_the_environment(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text(
        "[circuit_breaker]\nfailure_threshold = 8\ncool_down_seconds = 5\n"
        "failure_rate = 0.75\nwindow_seconds = 60\nmax_cool_down_seconds = 120\n"
        "panic_success_rate = 0\nmax_models = 50\n"
    )
    loaded = Settings.load({"LLMGATEWAY_CIRCUIT_FAILURES": "9"}, path).circuit
    assert loaded == CircuitSettings(
        failure_threshold=9,
        cool_down=5.0,
        failure_rate=0.75,
        window=60.0,
        max_cool_down=120.0,
        panic_success_rate=0.0,
        max_models=50,
    )


# -- end to end -----------------------------------------------------------------------


@pytest.fixture
def tripping(settings):
    """Two failures open a circuit for half a second; no retries, to count exactly."""
    return dataclasses.replace(
        settings,
        retries=RetryPolicy(max_attempts=1),
        circuit=CircuitSettings(failure_threshold=2, cool_down=0.5),
        aliases={
            "coding": AliasConfig(
                (AliasTarget("zai/fault-http-502"), AliasTarget("openrouter/z-ai/glm-4.7"))
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


async def test_an_open_circuit_skips_the_model_not_its_provider(tripping, fake, caplog):
    caplog.set_level(logging.INFO, logger="llmgateway.server.resilience.circuit")
    gateway = await start_gateway(tripping, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub: pb_grpc.CompletionServiceAsyncStub = pb_grpc.CompletionServiceStub(channel)
            assert await health_of(channel, "provider/zai") == SERVING
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError):
                    await call(stub, "zai/fault-http-502")
            await asyncio.sleep(0)  # health updates are scheduled on the loop
            # Every call the provider got lately failed: it reads as failing.
            assert await health_of(channel, "provider/zai") == NOT_SERVING
            assert await health_of(channel, "provider/zai-coding") == SERVING
            assert await health_of(channel, "provider/openrouter") == SERVING
            assert await health_of(channel, "") == SERVING
            sent = len(fake.requests)

            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(stub, "zai/fault-http-502")
            status = rich_status(caught.value)
            assert (status.code, status.info.reason) == (
                grpc.StatusCode.UNAVAILABLE,
                "UPSTREAM_CIRCUIT_OPEN",
            )
            assert status.retry is not None
            assert 0 < status.retry.retry_delay.ToTimedelta().total_seconds() <= 0.5
            assert status.info.metadata["provider"] == "zai"
            assert status.info.metadata["circuit"] == "zai/fault-http-502"
            assert "2 of 2 calls" in status.message
            assert len(fake.requests) == sent, "an open circuit sends nothing upstream"

            # Another model of the same provider and endpoint is unaffected.
            assert (await call(stub, "zai/glm-4.7")).attempts == 1
            await asyncio.sleep(0)
            assert await health_of(channel, "provider/zai") == SERVING
            # An alias moves straight to its fallback, without an upstream attempt.
            response = await call(stub, "coding")
            assert (response.provider, response.attempts, response.fallbacks) == (
                common.PROVIDER_OPENROUTER,
                1,
                1,
            )
            assert len(fake.requests) == sent + 2

            await asyncio.sleep(0.55)
            # The ejection is over: one probe goes upstream, fails, and the
            # model is skipped again, for longer (twice the cool-down).
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(stub, "zai/fault-http-502")
            assert rich_status(caught.value).info.reason == "UPSTREAM_UNAVAILABLE"
            assert len(fake.requests) == sent + 3
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(stub, "zai/fault-http-502")
            retry = rich_status(caught.value).retry
            assert retry is not None
            assert 0.5 < retry.retry_delay.ToTimedelta().total_seconds() <= 1.0
    finally:
        await gateway.stop(grace=0)
    messages = [
        r.getMessage() for r in caplog.records if r.name == "llmgateway.server.resilience.circuit"
    ]
    assert any(m.startswith("circuit zai/fault-http-502 open: 2 of 2 calls") for m in messages)
    assert any(m.startswith("circuit zai/fault-http-502 half-open") for m in messages)
    assert any(m.startswith("provider zai is failing") for m in messages)


async def test_a_successful_probe_closes_the_circuit(tripping, fake, caplog):
    caplog.set_level(logging.INFO, logger="llmgateway.server.resilience.circuit")
    gateway = await start_gateway(tripping, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub: pb_grpc.CompletionServiceAsyncStub = pb_grpc.CompletionServiceStub(channel)
            # `flaky`: the model's first two requests fail, then it answers.
            for _ in range(2):
                with pytest.raises(grpc.aio.AioRpcError):
                    await call(stub, "zai/fault-flaky")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(stub, "zai/fault-flaky")
            assert rich_status(caught.value).info.reason == "UPSTREAM_CIRCUIT_OPEN"
            await asyncio.sleep(0.55)
            assert (await call(stub, "zai/fault-flaky")).attempts == 1
            assert (await call(stub, "zai/fault-flaky")).attempts == 1
    finally:
        await gateway.stop(grace=0)
    messages = [
        r.getMessage() for r in caplog.records if r.name == "llmgateway.server.resilience.circuit"
    ]
    assert any(m.startswith("circuit zai/fault-flaky closed") for m in messages)


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
            assert await health_of(channel, "provider/zai") == SERVING
    finally:
        await gateway.stop(grace=0)


async def test_an_unconfigured_provider_reports_not_serving(settings):
    no_keys = dataclasses.replace(settings, zai=dataclasses.replace(settings.zai, api_key=None))
    gateway = await start_gateway(no_keys, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            assert await health_of(channel, "provider/zai") == NOT_SERVING
            assert await health_of(channel, "provider/zai-coding") == NOT_SERVING
            assert await health_of(channel, "provider/openrouter") == SERVING
    finally:
        await gateway.stop(grace=0)


async def test_a_retry_the_circuit_refuses_ends_with_the_upstream_failure(tripping, fake):
    retrying = dataclasses.replace(
        tripping, retries=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
    )
    gateway = await start_gateway(retrying, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub: pb_grpc.CompletionServiceAsyncStub = pb_grpc.CompletionServiceStub(channel)
            # Two failed attempts open the circuit; the third is refused, and the
            # caller learns what the upstream said, not only that it was skipped.
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(stub, "zai/fault-http-502")
    finally:
        await gateway.stop(grace=0)
    status = rich_status(caught.value)
    assert (status.info.reason, status.info.metadata["attempts"]) == ("UPSTREAM_UNAVAILABLE", "2")
    assert len(fake.requests) == 2
