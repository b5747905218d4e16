"""Upstream errors beyond their status and reason: RetryInfo, messages, redaction, proxies.

Status, reason, attempts and time of every upstream fault are rows of the fault
table (faults/table.py, run by tests/test_fault_suite.py); that table and the
README's error table must say the same.
"""

from __future__ import annotations

import dataclasses

import grpc
import pytest
from llmgateway.v1 import completion_service_pb2 as pb

from tests.conftest import gateway_stub, rich_status, user

S = grpc.StatusCode


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
