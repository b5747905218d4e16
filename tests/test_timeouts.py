"""The first-byte timeout: a stream that never begins ends (or falls back) on time."""

from __future__ import annotations

import dataclasses

import grpc
import pytest

from llmgateway.server.config import AliasConfig, AliasTarget, Timeouts
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import gateway_stub, rich_status, user


@pytest.fixture
def impatient(settings):
    """Streams must begin within 0.3 s; the idle timeout alone would wait 5 s."""
    return dataclasses.replace(
        settings, timeouts=Timeouts(connect=1, first_byte=0.3, stream_idle=5, stream_total=10)
    )


async def test_a_stream_that_never_begins_ends_at_the_first_byte_timeout(impatient, fake):
    async with gateway_stub(impatient) as stub:
        call = stub.StreamComplete(
            pb.StreamCompleteRequest(model="zai/fault-hang", messages=[user("hi")]), timeout=4
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in call:
                pass
    status = rich_status(caught.value)
    assert (status.code, status.info.reason) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "UPSTREAM_TIMEOUT",
    )
    assert "had not begun within 0.3 s" in status.message


async def test_a_stream_that_never_begins_falls_back(impatient, fake):
    chain = AliasConfig((AliasTarget("zai/fault-hang"), AliasTarget("openrouter/z-ai/glm-4.7")))
    async with gateway_stub(dataclasses.replace(impatient, aliases={"coding": chain})) as stub:
        events = [
            e
            async for e in stub.StreamComplete(
                pb.StreamCompleteRequest(model="coding", messages=[user("hi")]), timeout=4
            )
        ]
    done = events[-1].done
    assert (done.provider, done.fallbacks) == (common.PROVIDER_OPENROUTER, 1)
