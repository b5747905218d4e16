"""Retries: transient failures before the first event are retried, nothing else is."""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import pytest

from llmgateway.server.errors import GatewayError
from llmgateway.server.resilience.retry import RetryBudget, RetryPolicy, delay_before_retry
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import gateway_stub, rich_status, user


async def test_unary_retries_a_flaky_upstream_and_says_so(stub, fake):
    response = await stub.Complete(
        pb.CompleteRequest(model="zai/fault-flaky", messages=[user("hi")]), timeout=10
    )
    assert response.content
    assert response.attempts == 3
    assert len(fake.requests) == 3


async def test_stream_retries_before_the_first_event(stub, fake):
    events = [
        e
        async for e in stub.StreamComplete(
            pb.StreamCompleteRequest(model="openrouter/x/fault-flaky", messages=[user("hi")]),
            timeout=10,
        )
    ]
    assert events[-1].done.attempts == 3
    assert len(fake.requests) == 3


async def test_first_attempt_success_reports_one(stub):
    response = await stub.Complete(
        pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")]), timeout=10
    )
    assert response.attempts == 1


@pytest.mark.parametrize(
    "model",
    [
        "openrouter/x/fault-http-400",  # the request is wrong: another try cannot help
        "openrouter/x/fault-http-401",  # the gateway's key
        "zai/fault-zai-1113",  # out of credit
        "openrouter/x/fault-http-429",  # Retry-After above what the gateway waits out
        "openrouter/x/fault-malformed-body",  # the upstream may already have billed
    ],
)
async def test_what_cannot_succeed_is_not_retried(stub, fake, model):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(model=model, messages=[user("hi")]), timeout=10)
    assert len(fake.requests) == 1
    assert "attempts" not in rich_status(caught.value).info.metadata


async def test_retries_stop_at_max_attempts_and_the_error_says_how_many(stub, fake):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(model="zai/fault-zai-1305", messages=[user("hi")]), timeout=10
        )
    status = rich_status(caught.value)
    assert status.info.reason == "UPSTREAM_OVERLOADED"
    assert status.info.metadata["attempts"] == "3"
    assert len(fake.requests) == 3


async def test_a_stream_that_failed_after_output_is_not_retried(stub, fake):
    events = []
    with pytest.raises(grpc.aio.AioRpcError):
        async for event in stub.StreamComplete(
            pb.StreamCompleteRequest(model="zai/fault-midstream-error", messages=[user("hi")]),
            timeout=10,
        ):
            events.append(event)
    assert events
    assert len(fake.requests) == 1


def _error(reason, retry_after=None):
    return GatewayError(grpc.StatusCode.UNAVAILABLE, reason, "x", retry_after=retry_after)


def test_backoff_grows_with_full_jitter_and_respects_the_deadline():
    policy = RetryPolicy(max_attempts=5, initial_backoff=0.5, max_backoff=1.5)
    unavailable = _error(pb.ERROR_REASON_UPSTREAM_UNAVAILABLE)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 1.5), (4, 1.5)]:
        for _ in range(50):
            delay = delay_before_retry(policy, attempt, unavailable, None)
            assert delay is not None
            assert 0 <= delay <= ceiling
    assert delay_before_retry(policy, 5, unavailable, None) is None  # attempts used up
    assert delay_before_retry(policy, 1, unavailable, 0.04) is None  # no time left


def test_retry_after_is_honoured_up_to_the_cap():
    policy = RetryPolicy(max_retry_after=2.0)
    limited = pb.ERROR_REASON_UPSTREAM_RATE_LIMITED
    assert delay_before_retry(policy, 1, _error(limited, 1.5), None) == 1.5
    assert delay_before_retry(policy, 1, _error(limited, 2.5), None) is None
    assert delay_before_retry(policy, 1, _error(limited, 1.5), 1.0) is None  # past the deadline


def test_budget_stops_retries_in_an_outage_and_recovers():
    now = [0.0]
    budget = RetryBudget(
        max_tokens=10, refill_per_success=0.1, refill_per_second=1.0, clock=lambda: now[0]
    )
    for _ in range(5):
        assert budget.allows_retry
        budget.record_failure()
    assert not budget.allows_retry  # an outage: retries stop
    for _ in range(10):
        budget.record_success()
    assert budget.allows_retry  # successes bring them back
    for _ in range(10):
        budget.record_failure()
    assert not budget.allows_retry
    now[0] += 6.0
    assert budget.allows_retry  # and so does time, on a quiet gateway


async def test_calls_beyond_the_concurrency_limit_are_refused_not_queued(settings, fake):
    limited = dataclasses.replace(settings, max_concurrent_upstream=2)
    async with gateway_stub(limited) as stub:
        slow = [
            stub.StreamComplete(
                pb.StreamCompleteRequest(model="openrouter/x/fault-slow", messages=[user("a")]),
                timeout=30,
            )
            for _ in range(2)
        ]
        for call in slow:
            await call.read()  # both are now in flight upstream
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Complete(
                pb.CompleteRequest(model="openrouter/x/y", messages=[user("b")]), timeout=10
            )
        status = rich_status(caught.value)
        assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert status.info.reason == "GATEWAY_BUSY"
        assert status.retry is not None
        assert len(fake.requests) == 2  # the refused call never reached the upstream
        for call in slow:
            call.cancel()
        # Slots come back after cancellations and failures alike.
        for _ in range(3):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Complete(
                    pb.CompleteRequest(model="zai/fault-http-400", messages=[user("c")]),
                    timeout=10,
                )
        for _ in range(50):
            try:
                answer = await stub.Complete(
                    pb.CompleteRequest(model="zai/glm-4.7", messages=[user("d")]), timeout=10
                )
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.02)  # the cancelled streams are still unwinding
        assert answer.content
