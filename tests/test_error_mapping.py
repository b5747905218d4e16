"""Upstream errors beyond their status and reason: RetryInfo, messages, redaction, proxies.

Status, reason, attempts and time of every upstream fault are rows of the fault
table (faults/table.py, run by tests/test_fault_suite.py); that table and the
README's error table must say the same.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from llmgateway.client.async_client import AsyncCompletionClient
from llmgateway.client.errors import InvalidRequestError
from llmgateway.server.errors import (
    MAX_FIELD_VIOLATIONS,
    TRAILER_BUDGET,
    FieldViolation,
    GatewayError,
    reason_name,
    trailer_size,
)
from llmgateway.server.providers import upstream_errors as ue
from llmgateway.server.resilience.retry import RETRYABLE
from llmgateway.server.routing.router import DEFAULT_FALLBACK_ON
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import gateway_stub, rich_status, user

S = grpc.StatusCode
README = Path(__file__).resolve().parent.parent / "README.md"


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


# -- statuses small enough for every client's trailer limit --------------------------


async def test_thousands_of_field_violations_still_reach_the_caller_as_invalid_argument(stub):
    bad_roles = [common.ChatMessage(role=99, content="x") for _ in range(2048)]  # type: ignore[arg-type]
    for call in (stub.Complete, stub.StreamComplete):
        request_type = pb.CompleteRequest if call is stub.Complete else pb.StreamCompleteRequest
        pending = call(request_type(model="zai/glm-4.7", messages=bad_roles), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            if call is stub.Complete:
                await pending
            else:
                async for _ in pending:
                    pass
        status = rich_status(caught.value)
        assert status.code == S.INVALID_ARGUMENT  # not the client's RESOURCE_EXHAUSTED
        assert status.bad_request is not None
        listed = [v.field for v in status.bad_request.field_violations]
        assert listed == [f"messages[{i}].role" for i in range(MAX_FIELD_VIOLATIONS)]
        assert status.info.metadata["omittedViolations"] == str(2048 - MAX_FIELD_VIOLATIONS)
        assert "and 2043 more" in status.message


async def test_the_python_client_sees_an_invalid_request_not_a_rate_limit(gateway):
    bad_roles = [common.ChatMessage(role=99, content="x") for _ in range(2048)]  # type: ignore[arg-type]
    async with AsyncCompletionClient(f"127.0.0.1:{gateway.port}") as client:
        with pytest.raises(InvalidRequestError) as caught:
            await client.complete("zai/glm-4.7", bad_roles, timeout=10)
    assert len(caught.value.field_violations) == MAX_FIELD_VIOLATIONS


# gRPC C core clients (Python's among them) refuse some trailer sets past this.
CLIENT_SOFT_LIMIT = 8 * 1024


def _trailers(status: grpc.Status) -> tuple[tuple[str, str | bytes], ...]:
    return tuple(status.trailing_metadata)


@pytest.mark.parametrize(
    "text",
    ["a" * 100_000, "\u8bf7\u6c42\u8fc7\u591a\uff0c" * 20_000, "\U0001f525" * 50_000],
    ids=["ascii", "full-width", "emoji"],
)
def test_a_status_fits_the_trailer_budget_whatever_its_message_and_metadata(text):
    error = GatewayError(
        S.UNAVAILABLE,
        pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
        f"Z.AI said: {text}",
        metadata={"upstreamMessage": text, "upstreamCode": text[:5000], "model": "zai/glm-4.7"},
        retry_after=3.0,
        field_violations=tuple(FieldViolation(f"f{i}", text) for i in range(500)),
    )
    status = error.to_rpc_status("0123456789abcdef")
    assert trailer_size(status.details, _trailers(status)) <= TRAILER_BUDGET < CLIENT_SOFT_LIMIT
    decoded = status_pb2.Status.FromString(dict(_trailers(status))["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    assert decoded.details[0].Unpack(info)
    assert info.reason == "UPSTREAM_UNAVAILABLE"  # the reason survives any shrinking
    assert info.metadata["model"] == "zai/glm-4.7"
    assert status.details.startswith("Z.AI said: ")
    assert dict(_trailers(status))["x-request-id"] == "0123456789abcdef"
    assert any(d.TypeName() == "google.rpc.RetryInfo" for d in decoded.details)


def test_a_small_status_is_left_whole():
    error = GatewayError(
        S.INVALID_ARGUMENT,
        pb.ERROR_REASON_INVALID_REQUEST,
        "invalid request: model: required",
        field_violations=(FieldViolation("model", "required"),),
    )
    status = error.to_rpc_status()
    decoded = status_pb2.Status.FromString(dict(_trailers(status))["grpc-status-details-bin"])
    assert status.details == "invalid request: model: required"
    assert len(decoded.details) == 2
    assert "x-request-id" not in dict(_trailers(status))


# -- the README's error table and the code table agree ------------------------------------


def readme_error_rows() -> dict[str, set[str]]:
    """Reason name -> the gRPC codes the README's error table gives it."""
    text = README.read_text(encoding="utf-8")
    table = text.split("| Upstream condition | gRPC status | Reason |", 1)[1].split("\n\n", 1)[0]
    rows: dict[str, set[str]] = {}
    for line in table.splitlines()[2:]:
        _, status, reason = (cell.strip() for cell in line.rsplit("|", 3)[:3])
        named = re.fullmatch(r"`([A-Z_]+)`", reason)
        if named:
            rows.setdefault(named[1], set()).add(status.split()[0])
    return rows


def test_the_readme_error_table_gives_every_reason_its_code():
    rows = readme_error_rows()
    for reason, code in ue.REASON_CODES.items():
        name = reason_name(reason)
        assert rows.get(name) == {code.name}, name


def test_no_eligible_target_is_the_callers_to_fix_and_never_retried_or_fallen_back_on():
    reason = pb.ERROR_REASON_NO_ELIGIBLE_TARGET
    assert ue.REASON_CODES[reason] == S.INVALID_ARGUMENT
    assert reason not in DEFAULT_FALLBACK_ON
    assert reason not in RETRYABLE
    assert readme_error_rows()["NO_ELIGIBLE_TARGET"] == {"INVALID_ARGUMENT"}
