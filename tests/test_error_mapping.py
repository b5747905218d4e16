"""The whole upstream error mapping, end to end: upstream condition -> status and reason.

Each row is also the README's error table; keep them in step.
"""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from llmgateway.v1 import completion_service_pb2 as pb

from tests.conftest import gateway_stub, rich_status, user

S = grpc.StatusCode

# (model that makes the fake misbehave, expected code, expected ErrorInfo reason)
ROWS = [
    ("openrouter/x/fault-http-400", S.INVALID_ARGUMENT, "UPSTREAM_REJECTED_REQUEST"),
    ("openrouter/x/fault-http-401", S.FAILED_PRECONDITION, "UPSTREAM_AUTH_FAILED"),
    ("openrouter/x/fault-http-402", S.FAILED_PRECONDITION, "UPSTREAM_INSUFFICIENT_CREDITS"),
    ("openrouter/x/fault-http-403", S.PERMISSION_DENIED, "UPSTREAM_PERMISSION_DENIED"),
    ("openrouter/x/fault-moderation", S.PERMISSION_DENIED, "UPSTREAM_CONTENT_FLAGGED"),
    ("openrouter/x/fault-http-404", S.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND"),
    ("openrouter/x/fault-no-endpoints", S.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND"),
    ("openrouter/x/fault-http-408", S.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT"),
    ("openrouter/x/fault-http-413", S.INVALID_ARGUMENT, "UPSTREAM_REJECTED_REQUEST"),
    ("openrouter/x/fault-http-422", S.INVALID_ARGUMENT, "UPSTREAM_REJECTED_REQUEST"),
    ("openrouter/x/fault-context-length", S.INVALID_ARGUMENT, "UPSTREAM_CONTEXT_LENGTH_EXCEEDED"),
    ("openrouter/x/fault-http-429", S.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED"),
    ("openrouter/x/fault-error-in-200", S.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED"),
    ("openrouter/x/fault-http-500", S.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ("openrouter/x/fault-http-502", S.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ("openrouter/x/fault-http-503", S.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ("openrouter/x/fault-http-524", S.DEADLINE_EXCEEDED, "UPSTREAM_TIMEOUT"),
    ("openrouter/x/fault-http-529", S.UNAVAILABLE, "UPSTREAM_OVERLOADED"),
    ("openrouter/x/fault-finish-error", S.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ("openrouter/x/fault-malformed-body", S.UNAVAILABLE, "UPSTREAM_MALFORMED_RESPONSE"),
    ("openrouter/x/fault-reset", S.UNAVAILABLE, "UPSTREAM_UNREACHABLE"),
    ("zai/fault-zai-1000", S.FAILED_PRECONDITION, "UPSTREAM_AUTH_FAILED"),
    ("zai/fault-zai-1113", S.FAILED_PRECONDITION, "UPSTREAM_INSUFFICIENT_CREDITS"),
    ("zai/fault-zai-1210", S.INVALID_ARGUMENT, "UPSTREAM_REJECTED_REQUEST"),
    ("zai/fault-zai-1211", S.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND"),
    ("zai/fault-zai-1231", S.ALREADY_EXISTS, "UPSTREAM_DUPLICATE_REQUEST"),
    ("zai/fault-zai-1234", S.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ("zai/fault-zai-1261", S.INVALID_ARGUMENT, "UPSTREAM_CONTEXT_LENGTH_EXCEEDED"),
    ("zai/fault-zai-1301", S.PERMISSION_DENIED, "UPSTREAM_CONTENT_FLAGGED"),
    ("zai/fault-zai-1302", S.RESOURCE_EXHAUSTED, "UPSTREAM_RATE_LIMITED"),
    ("zai/fault-zai-1305", S.UNAVAILABLE, "UPSTREAM_OVERLOADED"),
    ("zai/fault-zai-1308", S.RESOURCE_EXHAUSTED, "UPSTREAM_QUOTA_EXCEEDED"),
    ("zai/fault-zai-1313", S.PERMISSION_DENIED, "UPSTREAM_PERMISSION_DENIED"),
    ("zai/fault-zai-500", S.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ("zai/fault-http-503", S.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ("zai/fault-malformed-body", S.UNAVAILABLE, "UPSTREAM_MALFORMED_RESPONSE"),
    ("openrouter/x/fault-redirect", S.UNAVAILABLE, "UPSTREAM_MALFORMED_RESPONSE"),
    ("openrouter/x/fault-http-409", S.UNAVAILABLE, "UPSTREAM_UNAVAILABLE"),
    ("openrouter/x/fault-bad-types", S.UNAVAILABLE, "UPSTREAM_MALFORMED_RESPONSE"),
]


@pytest.mark.parametrize(("model", "code", "reason"), ROWS, ids=[r[0] for r in ROWS])
async def test_unary_error_mapping(stub, fake, model, code, reason):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(model=model, messages=[user("hi")]), timeout=10)
    status = rich_status(caught.value)
    assert (status.code, status.info.reason) == (code, reason)
    assert status.info.domain == "llmgateway.v1"
    assert status.info.metadata["provider"] == model.split("/", 1)[0]
    assert status.info.metadata["model"] == model
    _assert_no_secrets(status.message + str(dict(status.info.metadata)), fake)


UNARY_ONLY = ("malformed-body", "finish-error", "bad-types")
STREAMABLE = [r for r in ROWS if not any(fault in r[0] for fault in UNARY_ONLY)]


@pytest.mark.parametrize(("model", "code", "reason"), STREAMABLE, ids=[r[0] for r in STREAMABLE])
async def test_stream_error_mapping_before_first_event(stub, model, code, reason):
    request = pb.StreamCompleteRequest(model=model, messages=[user("hi")])
    events = []
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for event in stub.StreamComplete(request, timeout=10):
            events.append(event)
    assert events == []
    status = rich_status(caught.value)
    assert (status.code, status.info.reason) == (code, reason)


async def test_rate_limit_carries_retry_info_and_upstream_details(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(model="openrouter/x/fault-http-429", messages=[user("hi")]),
            timeout=10,
        )
    status = rich_status(caught.value)
    assert status.retry is not None
    assert status.retry.retry_delay.seconds == 7
    assert status.info.metadata["upstreamStatus"] == "429"
    assert "OpenRouter rate-limited the request (HTTP 429)" in status.message


async def test_zai_business_code_is_in_metadata_and_message(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(model="zai/fault-zai-1113", messages=[user("hi")]), timeout=10
        )
    status = rich_status(caught.value)
    assert status.info.metadata["upstreamCode"] == "1113"
    assert status.info.metadata["upstreamStatus"] == "429"
    assert status.retry is None  # out of credit: nothing to retry soon
    assert "Insufficient balance" in status.message


async def test_rejected_gateway_key_names_the_variable_and_never_the_key(stub, fake):
    fake.openrouter_key = "sk-or-v1-a-different-key"  # the gateway's key no longer matches
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(model="openrouter/openai/gpt-4o", messages=[user("hi")]), timeout=10
        )
    status = rich_status(caught.value)
    assert status.code == S.FAILED_PRECONDITION
    assert status.info.reason == "UPSTREAM_AUTH_FAILED"
    assert "OPENROUTER_API_KEY" in status.message
    assert "sk-or-v1-fake-test-key" not in status.message


async def test_unreachable_upstream(settings):
    dead = dataclasses.replace(
        settings,
        zai=dataclasses.replace(settings.zai, base_url="http://127.0.0.1:9/api/paas/v4"),
    )
    async with gateway_stub(dead) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Complete(
                pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")]), timeout=10
            )
    status = rich_status(caught.value)
    assert (status.code, status.info.reason) == (S.UNAVAILABLE, "UPSTREAM_UNREACHABLE")


def _assert_no_secrets(text, fake):
    assert fake.openrouter_key not in text
    assert fake.zai_key not in text
    assert "Traceback" not in text


async def test_redirect_names_the_base_url_setting(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(model="openrouter/x/fault-redirect", messages=[user("hi")]),
            timeout=10,
        )
    assert "check OPENROUTER_BASE_URL" in rich_status(caught.value).message


async def test_wrong_endpoint_hint_for_zai_1113(stub):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(
            pb.CompleteRequest(model="zai/fault-zai-1113", messages=[user("hi")]), timeout=10
        )
    assert "Coding Plan key" in rich_status(caught.value).message


@pytest.mark.parametrize("model", ["openrouter/x/fault-echo-auth", "zai/fault-echo-auth"])
async def test_an_upstream_quoting_the_key_is_redacted(stub, fake, model):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(model=model, messages=[user("hi")]), timeout=10)
    status = rich_status(caught.value)
    assert status.info.reason == "UPSTREAM_REJECTED_REQUEST"
    assert "Bearer [redacted]" in status.message
    _assert_no_secrets(status.message, fake)


async def test_http_proxy_from_the_environment_is_used(settings, fake, monkeypatch):
    # The upstream host does not resolve; only the proxy (the fake) can answer.
    monkeypatch.setenv("HTTP_PROXY", fake.base_url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    unresolvable = "http://upstream.invalid/zai/api/paas/v4"
    proxied = dataclasses.replace(
        settings, zai=dataclasses.replace(settings.zai, base_url=unresolvable)
    )
    async with gateway_stub(proxied) as stub:
        answer = await stub.Complete(
            pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")]), timeout=10
        )
    assert answer.content
    assert fake.requests[-1].endpoint == "general"
