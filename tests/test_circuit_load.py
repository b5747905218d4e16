"""The circuit breaker never makes things worse: proofs under load, end to end.

Each test runs many calls at once through a real gRPC channel to a gateway in
front of the fake upstream, with the retries and breaker settings of the test
settings (3 attempts; the breaker's defaults), and prints a summary line with
the success rates (run with -s to see them):

1. a 50%-failing upstream and no fallback: callers succeed at least as often
   as calling the upstream directly (measured here, on the fake's own pattern);
2. the same upstream first in a fallback chain: at least 95% succeed;
3. a dead upstream: once the circuit is open, calls fail fast (no upstream
   request) with UPSTREAM_CIRCUIT_OPEN and RetryInfo;
4. a failing model does not open the circuit of another model of its provider.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from typing import TYPE_CHECKING, Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from faults.runner import refusing_base_url
from llmgateway.server.config import AliasConfig, AliasTarget, Settings
from llmgateway.server.process.server import start_gateway
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.conftest import rich_status, user

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from llmgateway.testing.fake_upstream import FakeUpstream

CALLS = 200
FLAKY = "fault-flaky-503-50"


@dataclasses.dataclass
class Outcomes:
    """What a batch of calls got: OK, or `CODE REASON`, per call."""

    results: list[pb.CompleteResponse | grpc.aio.AioRpcError]

    @property
    def ok(self) -> int:
        return sum(isinstance(r, pb.CompleteResponse) for r in self.results)

    @property
    def rate(self) -> float:
        return self.ok / len(self.results)

    def tally(self) -> Counter[str]:
        return Counter(
            "OK" if isinstance(r, pb.CompleteResponse) else describe(r) for r in self.results
        )


def describe(error: grpc.aio.AioRpcError) -> str:
    return f"{error.code().name} {rich_status(error).info.reason}"


@dataclasses.dataclass
class Gateway:
    stub: pb_grpc.CompletionServiceAsyncStub
    channel: grpc.aio.Channel

    async def calls(self, model: str, count: int = CALLS) -> Outcomes:
        """`count` unary calls to `model`, all at once."""
        return Outcomes(list(await asyncio.gather(*(self.call(model) for _ in range(count)))))

    async def call(self, model: str) -> pb.CompleteResponse | grpc.aio.AioRpcError:
        try:
            response: pb.CompleteResponse = await self.stub.Complete(
                pb.CompleteRequest(model=model, messages=[user("hi")]), timeout=30
            )
        except grpc.aio.AioRpcError as error:
            return error
        return response

    async def stream(self, model: str) -> pb.CompletionDone | grpc.aio.AioRpcError:
        """One streaming call to `model`: its `done` event, or its error."""
        done = pb.CompletionDone()
        try:
            async for event in self.stub.StreamComplete(
                pb.StreamCompleteRequest(model=model, messages=[user("hi")]), timeout=30
            ):
                if event.HasField("done"):
                    done = event.done
        except grpc.aio.AioRpcError as error:
            return error
        return done

    async def health(self, service: str) -> int:
        stub: Any = health_pb2_grpc.HealthStub(self.channel)  # typed for the sync API only
        reply: health_pb2.HealthCheckResponse = await stub.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return reply.status


async def open_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    running = await start_gateway(settings, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Gateway(pb_grpc.CompletionServiceStub(channel), channel)
    finally:
        await running.stop(grace=0)


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    async for opened in open_gateway(settings):
        yield opened


async def direct_success_rate(fake: FakeUpstream, count: int = CALLS) -> float:
    """The share of `count` requests the fake answers for a model with the flaky
    fault, asked directly (another model name: its own count, the same pattern)."""
    async with httpx.AsyncClient(timeout=10) as client:
        ok = 0
        for _ in range(count):
            answer = await client.post(
                fake.openrouter_base_url + "/chat/completions",
                headers={"Authorization": f"Bearer {fake.openrouter_key}"},
                json={"model": f"direct/{FLAKY}", "messages": [{"role": "user", "content": "hi"}]},
            )
            ok += answer.status_code == 200
    return ok / count


async def test_a_half_failing_upstream_with_no_fallback_is_no_worse_through_the_gateway(
    gateway, fake
):
    through = await gateway.calls(f"openrouter/x/{FLAKY}")
    direct = await direct_success_rate(fake)
    upstream = sum(r.body["model"] == f"x/{FLAKY}" for r in fake.requests)
    print(
        f"\nbreaker, 50%-failing upstream, no fallback: {through.ok}/{CALLS} OK through the "
        f"gateway ({through.rate:.1%}, {upstream} upstream requests) vs {direct:.1%} "
        f"calling it directly; outcomes {dict(through.tally())}"
    )
    assert 0.35 < direct < 0.65, "the fake fails about half its requests"
    assert through.rate >= direct
    assert "UNAVAILABLE UPSTREAM_CIRCUIT_OPEN" not in through.tally()


async def test_a_half_failing_upstream_with_a_fallback_serves_nearly_every_call(settings, fake):
    chain = AliasConfig((AliasTarget(f"openrouter/x/{FLAKY}"), AliasTarget("zai/glm-4.7")))
    async for gateway in open_gateway(dataclasses.replace(settings, aliases={"flaky": chain})):
        through = await gateway.calls("flaky")
        # Once its circuit is open, the flaky target is skipped without a request.
        later = await gateway.calls("flaky")
    served = Counter(
        common.Provider.Name(r.provider)
        for r in [*through.results, *later.results]
        if isinstance(r, pb.CompleteResponse)
    )
    flaky_requests = sum(r.body["model"] == f"x/{FLAKY}" for r in fake.requests)
    print(
        f"\nbreaker, 50%-failing upstream first in a fallback chain: {through.ok}/{CALLS} OK "
        f"({through.rate:.1%}), then {later.ok}/{CALLS} ({later.rate:.1%}); "
        f"{flaky_requests} requests to the flaky target for {2 * CALLS} calls; "
        f"served by {dict(served)}"
    )
    assert through.rate >= 0.95
    assert later.rate >= 0.95


async def test_a_half_failing_target_before_a_dead_one_is_no_worse_than_no_fallback(settings, fake):
    # Both circuits open: the dead fallback cannot take the call, so the
    # half-failing first target must not send it there (and refuse it).
    dead = "openrouter/x/fault-http-503"
    chain = AliasConfig((AliasTarget(f"openrouter/x/{FLAKY}"), AliasTarget(dead)))
    async for gateway in open_gateway(dataclasses.replace(settings, aliases={"shaky": chain})):
        for _ in range(settings.circuit.failure_threshold + 1):
            await gateway.call(dead)  # opens the dead target's circuit
        through = await gateway.calls("shaky")
    direct = await direct_success_rate(fake)
    print(
        f"\nbreaker, 50%-failing target before a dead one: {through.ok}/{CALLS} OK "
        f"({through.rate:.1%}) vs {direct:.1%} calling the first directly; "
        f"outcomes {dict(through.tally())}"
    )
    assert through.rate >= direct


@pytest.mark.parametrize("rpc", ["unary", "stream"])
@pytest.mark.parametrize("upstream", ["http-503", "refused"])
async def test_a_dead_upstream_fails_fast_once_the_circuit_is_open(settings, fake, upstream, rpc):
    model = "openrouter/x/fault-http-503"
    if upstream == "refused":
        with refusing_base_url() as url:
            refused = dataclasses.replace(
                settings, openrouter=dataclasses.replace(settings.openrouter, base_url=url)
            )
            outcomes, sent = await _sequential_calls(refused, fake, model, rpc)
    else:
        outcomes, sent = await _sequential_calls(settings, fake, model, rpc)
    kinds = [describe(e) for e in outcomes]
    first_refusal = kinds.index("UNAVAILABLE UPSTREAM_CIRCUIT_OPEN")
    print(
        f"\nbreaker, dead upstream ({upstream}, {rpc}): {len(kinds)} calls, the first "
        f"{first_refusal} reached it ({Counter(kinds[:first_refusal])}), the other "
        f"{len(kinds) - first_refusal} were refused by the open circuit without a request"
    )
    assert first_refusal <= settings.circuit.failure_threshold
    assert set(kinds[first_refusal:]) == {"UNAVAILABLE UPSTREAM_CIRCUIT_OPEN"}
    # The upstream request count stopped growing at the first refusal.
    assert len(set(sent[first_refusal:])) == 1
    for error in outcomes[first_refusal:]:
        retry = rich_status(error).retry
        assert retry is not None
        assert 0 < retry.retry_delay.ToTimedelta().total_seconds() <= settings.circuit.cool_down


async def _sequential_calls(
    settings: Settings, fake: FakeUpstream, model: str, rpc: str, count: int = 20
) -> tuple[list[grpc.aio.AioRpcError], list[int]]:
    """`count` calls one after another, each failing; and the fake's request count after each."""
    outcomes, sent = [], []
    async for gateway in open_gateway(settings):
        for _ in range(count):
            result = await (gateway.call(model) if rpc == "unary" else gateway.stream(model))
            assert isinstance(result, grpc.aio.AioRpcError)
            outcomes.append(result)
            sent.append(len(fake.requests))
    return outcomes, sent


async def test_a_failing_model_leaves_the_other_models_of_its_provider_alone(gateway, fake):
    failing, healthy = "openrouter/x/fault-http-502", "openrouter/openai/gpt-4o-mini"
    both = await asyncio.gather(gateway.calls(failing), gateway.calls(healthy))
    after = await asyncio.gather(gateway.calls(failing, 20), gateway.calls(healthy, 20))
    failing_tally = both[0].tally() + after[0].tally()
    healthy_tally = both[1].tally() + after[1].tally()
    print(
        f"\nbreaker, one failing model beside a healthy one of the same provider: healthy "
        f"{dict(healthy_tally)}, failing {dict(failing_tally)}"
    )
    assert healthy_tally == Counter({"OK": CALLS + 20})
    assert all(r.attempts == 1 for r in [*both[1].results, *after[1].results])
    assert after[0].tally() == Counter({"UNAVAILABLE UPSTREAM_CIRCUIT_OPEN": 20})
    # The provider as a whole still answers.
    assert await gateway.health("provider/openrouter") == health_pb2.HealthCheckResponse.SERVING
