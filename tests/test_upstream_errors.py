"""Upstream failures -> (gRPC code, ErrorReason), Retry-After, and keys kept out of errors."""

from __future__ import annotations

import email.utils
import math
import time
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from llmgateway.server.config import OpenRouterSettings, Secret, Timeouts, ZaiSettings
from llmgateway.server.providers import upstream_errors as ue
from llmgateway.server.providers.openai_compatible.stream import failure_from_error_object
from llmgateway.server.providers.openrouter import OpenRouterProvider
from llmgateway.server.providers.redaction import Redactor
from llmgateway.server.providers.zai import ZaiProvider
from llmgateway.testing.fake_upstream.app import PROVIDER_BEHIND, PROVIDER_RAW_REASON
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import rich_status

if TYPE_CHECKING:
    from llmgateway.server.errors import GatewayError
    from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

OPENROUTER_KEY = "sk-or-v1-test-not-a-key"
ZAI_KEY = "zai-test-not-a-key.0123456789"

S = grpc.StatusCode


@pytest.fixture
async def openrouter():
    provider = OpenRouterProvider(OpenRouterSettings(api_key=Secret(OPENROUTER_KEY)), Timeouts())
    yield provider
    await provider.aclose()


@pytest.fixture
async def zai():
    provider = ZaiProvider(ZaiSettings(api_key=Secret(ZAI_KEY)), Timeouts())
    yield provider
    await provider.aclose()


def ctx(*secrets: str) -> ue.ErrorContext:
    return ue.ErrorContext(
        provider_name="OpenRouter",
        provider_id="openrouter",
        key_env="OPENROUTER_API_KEY",
        model="openrouter/openai/gpt-4o",
        redactor=Redactor(secrets),
    )


def details(error: GatewayError) -> tuple[status_pb2.Status, dict[str, object]]:
    raw = dict(error.to_rpc_status().trailing_metadata)["grpc-status-details-bin"]
    status = status_pb2.Status.FromString(raw)
    found: dict[str, object] = {}
    for detail in status.details:
        for kind in (error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo):
            message = kind()
            if detail.Unpack(message):
                found[kind.DESCRIPTOR.full_name] = message
    return status, found


# -- classification ---------------------------------------------------------------

OPENROUTER_STATUSES = [
    (400, pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST, S.INVALID_ARGUMENT),
    (401, pb.ERROR_REASON_UPSTREAM_AUTH_FAILED, S.FAILED_PRECONDITION),
    (402, pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS, S.FAILED_PRECONDITION),
    (403, pb.ERROR_REASON_UPSTREAM_PERMISSION_DENIED, S.PERMISSION_DENIED),
    (404, pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND, S.NOT_FOUND),
    (408, pb.ERROR_REASON_UPSTREAM_TIMEOUT, S.DEADLINE_EXCEEDED),
    (413, pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST, S.INVALID_ARGUMENT),
    (422, pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST, S.INVALID_ARGUMENT),
    (429, pb.ERROR_REASON_UPSTREAM_RATE_LIMITED, S.RESOURCE_EXHAUSTED),
    (500, pb.ERROR_REASON_UPSTREAM_UNAVAILABLE, S.UNAVAILABLE),
    (502, pb.ERROR_REASON_UPSTREAM_UNAVAILABLE, S.UNAVAILABLE),
    (503, pb.ERROR_REASON_UPSTREAM_UNAVAILABLE, S.UNAVAILABLE),
    (524, pb.ERROR_REASON_UPSTREAM_TIMEOUT, S.DEADLINE_EXCEEDED),
    (529, pb.ERROR_REASON_UPSTREAM_OVERLOADED, S.UNAVAILABLE),
]


@pytest.mark.parametrize(("status", "reason", "code"), OPENROUTER_STATUSES)
async def test_openrouter_http_status(openrouter, status, reason, code):
    failure = failure_from_error_object({"code": status, "message": "upstream said no"}, status)
    got = openrouter.classify(failure)
    assert got == reason, pb.ErrorReason.Name(got)
    assert ue.REASON_CODES[got] == code


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (
            400,
            {
                "code": 400,
                "message": "too long",
                "metadata": {"error_type": "context_length_exceeded"},
            },
            pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED,
        ),
        (
            400,
            {"code": 400, "message": "x", "metadata": {"error_type": "max_tokens_exceeded"}},
            pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED,
        ),
        (
            # The upstream's error type decides, not the 502 OpenRouter wrapped it in.
            502,
            {
                "code": 502,
                "message": "slow down",
                "metadata": {"error_type": "rate_limit_exceeded"},
            },
            pb.ERROR_REASON_UPSTREAM_RATE_LIMITED,
        ),
        (
            503,
            {"code": 503, "message": "busy", "metadata": {"error_type": "provider_overloaded"}},
            pb.ERROR_REASON_UPSTREAM_OVERLOADED,
        ),
        (
            400,
            {"code": 400, "message": "bad image", "metadata": {"error_type": "invalid_image"}},
            pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST,
        ),
        (
            500,
            {"code": 500, "message": "late", "metadata": {"error_type": "timeout"}},
            pb.ERROR_REASON_UPSTREAM_TIMEOUT,
        ),
        (
            # Model availability errors carry their code in `availability`.
            429,
            {
                "code": 429,
                "message": "no capacity",
                "availability": {"code": "capacity_exhausted", "retryable": True},
            },
            pb.ERROR_REASON_UPSTREAM_OVERLOADED,
        ),
        (
            400,
            {
                "message": "unknown model",
                "error_type": "model_not_found",
                "http_status": 400,
            },
            pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND,
        ),
        (
            # Moderation: 403 with `reasons` and `flagged_input` in the metadata.
            403,
            {
                "code": 403,
                "message": "flagged",
                "metadata": {
                    "reasons": ["violence"],
                    "flagged_input": "...",
                    "provider_name": "OpenAI",
                    "model_slug": "openai/gpt-4o",
                },
            },
            pb.ERROR_REASON_UPSTREAM_CONTENT_FLAGGED,
        ),
        (
            # An unknown error type falls back to the HTTP status.
            429,
            {"code": 429, "message": "x", "metadata": {"error_type": "something_new"}},
            pb.ERROR_REASON_UPSTREAM_RATE_LIMITED,
        ),
    ],
)
async def test_openrouter_error_type(openrouter, status, error, reason):
    got = openrouter.classify(failure_from_error_object(error, status))
    assert got == reason, pb.ErrorReason.Name(got)


async def test_openrouter_moderation_is_permission_denied(openrouter):
    failure = ue.UpstreamFailure(403, "403", "flagged", moderation=True)
    reason = openrouter.classify(failure)
    assert reason == pb.ERROR_REASON_UPSTREAM_CONTENT_FLAGGED
    assert ue.REASON_CODES[reason] == S.PERMISSION_DENIED


async def test_openrouter_error_type_maps_to_its_grpc_code(openrouter):
    for error_type, code in [
        ("context_length_exceeded", S.INVALID_ARGUMENT),
        ("rate_limit_exceeded", S.RESOURCE_EXHAUSTED),
        ("provider_overloaded", S.UNAVAILABLE),
        ("authentication", S.FAILED_PRECONDITION),
        ("payment_required", S.FAILED_PRECONDITION),
        ("permission_denied", S.PERMISSION_DENIED),
        ("not_found", S.NOT_FOUND),
    ]:
        failure = ue.UpstreamFailure(400, "400", "m", error_type=error_type)
        assert ue.REASON_CODES[openrouter.classify(failure)] == code, error_type


ZAI_CODES = [
    (401, "1000", pb.ERROR_REASON_UPSTREAM_AUTH_FAILED, S.FAILED_PRECONDITION),
    (429, "1113", pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS, S.FAILED_PRECONDITION),
    (400, "1210", pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST, S.INVALID_ARGUMENT),
    (400, "1211", pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND, S.NOT_FOUND),
    (400, "1214", pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST, S.INVALID_ARGUMENT),
    (400, "1231", pb.ERROR_REASON_UPSTREAM_DUPLICATE_REQUEST, S.ALREADY_EXISTS),
    (500, "1234", pb.ERROR_REASON_UPSTREAM_UNAVAILABLE, S.UNAVAILABLE),
    (400, "1261", pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED, S.INVALID_ARGUMENT),
    (400, "1301", pb.ERROR_REASON_UPSTREAM_CONTENT_FLAGGED, S.PERMISSION_DENIED),
    (429, "1302", pb.ERROR_REASON_UPSTREAM_RATE_LIMITED, S.RESOURCE_EXHAUSTED),
    (429, "1305", pb.ERROR_REASON_UPSTREAM_OVERLOADED, S.UNAVAILABLE),
    (429, "1308", pb.ERROR_REASON_UPSTREAM_QUOTA_EXCEEDED, S.RESOURCE_EXHAUSTED),
    (429, "1313", pb.ERROR_REASON_UPSTREAM_PERMISSION_DENIED, S.PERMISSION_DENIED),
    (500, "500", pb.ERROR_REASON_UPSTREAM_UNAVAILABLE, S.UNAVAILABLE),
    # Unknown or non-numeric codes fall back to the HTTP status.
    (429, "9999", pb.ERROR_REASON_UPSTREAM_RATE_LIMITED, S.RESOURCE_EXHAUSTED),
    (400, "9999", pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST, S.INVALID_ARGUMENT),
    (503, "9999", pb.ERROR_REASON_UPSTREAM_UNAVAILABLE, S.UNAVAILABLE),
    (401, "oops", pb.ERROR_REASON_UPSTREAM_AUTH_FAILED, S.FAILED_PRECONDITION),
    (404, None, pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND, S.NOT_FOUND),
]


@pytest.mark.parametrize(("status", "code", "reason", "grpc_code"), ZAI_CODES)
async def test_zai_business_code(zai, status, code, reason, grpc_code):
    error = {"message": "z.ai said no"} if code is None else {"code": code, "message": "no"}
    got = zai.classify(failure_from_error_object(error, status))
    assert got == reason, pb.ErrorReason.Name(got)
    assert ue.REASON_CODES[got] == grpc_code


async def test_zai_business_code_as_a_json_number(zai):
    failure = failure_from_error_object({"code": 1302, "message": "slow down"}, 429)
    assert zai.classify(failure) == pb.ERROR_REASON_UPSTREAM_RATE_LIMITED


async def test_zai_429_means_different_things_by_business_code(zai):
    # The whole point of business codes: 429 is retryable for 1302 and 1305 only.
    reasons = {
        code: zai.classify(ue.UpstreamFailure(429, code, "m"))
        for code in ("1113", "1302", "1305", "1308")
    }
    assert len(set(reasons.values())) == 4


async def test_in_band_error_without_status_or_known_code_is_unavailable(zai, openrouter):
    failure = ue.UpstreamFailure(None, None, "something broke")
    assert zai.classify(failure) == pb.ERROR_REASON_UPSTREAM_UNAVAILABLE
    assert openrouter.classify(failure) == pb.ERROR_REASON_UPSTREAM_UNAVAILABLE


def test_every_reason_has_a_code_and_none_is_ok():
    upstream = [v for n, v in pb.ErrorReason.items() if n.startswith("ERROR_REASON_UPSTREAM_")]
    # Also in the table, raised by the routing decision before any upstream call.
    decided = [pb.ERROR_REASON_NO_ELIGIBLE_TARGET]
    assert set(upstream + decided) == set(ue.REASON_CODES)
    assert S.OK not in ue.REASON_CODES.values()


@pytest.mark.parametrize("reason", sorted(ue.REASON_CODES))
def test_build_error_uses_the_reason_code_table(reason):
    error = ue.build_error(reason, ue.UpstreamFailure(500, None, "m"), ctx())
    assert error.reason == reason
    assert error.code == ue.REASON_CODES[reason]


# -- building the error -------------------------------------------------------------


def test_build_error_message_and_metadata():
    failure = ue.UpstreamFailure(
        429, "1302", "Rate limit reached for requests", error_type="rate_limit_exceeded"
    )
    error = ue.build_error(pb.ERROR_REASON_UPSTREAM_RATE_LIMITED, failure, ctx(OPENROUTER_KEY))
    assert error.code == S.RESOURCE_EXHAUSTED
    assert error.message == (
        "OpenRouter rate-limited the request (HTTP 429, code 1302): Rate limit reached for requests"
    )
    assert error.metadata == {
        "provider": "openrouter",
        "model": "openrouter/openai/gpt-4o",
        "upstreamStatus": "429",
        "upstreamCode": "1302",
        "upstreamErrorType": "rate_limit_exceeded",
    }


def test_build_error_does_not_repeat_a_code_equal_to_the_status():
    error = ue.build_error(
        pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS,
        ue.UpstreamFailure(402, "402", "Insufficient credits"),
        ctx(),
    )
    assert "(HTTP 402):" in error.message
    assert "code 402" not in error.message
    assert error.metadata["upstreamStatus"] == "402"
    assert error.metadata["upstreamCode"] == "402"


def test_build_error_auth_failure_names_the_variable_to_fix():
    error = ue.build_error(
        pb.ERROR_REASON_UPSTREAM_AUTH_FAILED, ue.UpstreamFailure(401, None, ""), ctx()
    )
    assert error.code == S.FAILED_PRECONDITION
    assert "OPENROUTER_API_KEY" in error.message
    assert error.message.endswith("(HTTP 401)")  # no dangling ": " without a message
    assert "upstreamCode" not in error.metadata


def test_build_error_in_band_has_no_status_metadata():
    error = ue.build_error(
        pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
        ue.UpstreamFailure(None, "server_error", "boom"),
        ctx(),
    )
    assert "in-band error" in error.message
    assert "code server_error" in error.message
    assert "upstreamStatus" not in error.metadata
    assert error.metadata["upstreamCode"] == "server_error"


def test_build_error_never_includes_the_api_key():
    message = f"Invalid API key {OPENROUTER_KEY} (Bearer {OPENROUTER_KEY}) for this account"
    failure = ue.UpstreamFailure(401, "401", message)
    error = ue.build_error(pb.ERROR_REASON_UPSTREAM_AUTH_FAILED, failure, ctx(OPENROUTER_KEY))
    assert OPENROUTER_KEY not in error.message
    assert OPENROUTER_KEY not in str(error)
    assert OPENROUTER_KEY not in repr(error)
    assert "[redacted]" in error.message
    for value in error.metadata.values():
        assert OPENROUTER_KEY not in value
    status, _ = details(error)
    assert OPENROUTER_KEY not in status.message
    assert OPENROUTER_KEY.encode() not in status.SerializeToString()


def test_build_error_redacts_before_truncating():
    # A key straddling the length cap must not survive as a prefix.
    message = "x" * 490 + OPENROUTER_KEY + " trailing"
    failure = ue.UpstreamFailure(400, None, message)
    error = ue.build_error(pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST, failure, ctx(OPENROUTER_KEY))
    assert "sk-or-v1" not in error.message
    assert error.message.endswith("x" * 490 + "[redacted]")


def test_build_error_caps_a_huge_upstream_message():
    failure = ue.UpstreamFailure(500, None, "~" * 10_000)
    error = ue.build_error(pb.ERROR_REASON_UPSTREAM_UNAVAILABLE, failure, ctx())
    assert error.message.endswith("(HTTP 500): " + "~" * 500)


def test_build_error_carries_retry_after_into_retry_info():
    failure = ue.UpstreamFailure(429, "429", "slow down", retry_after=7.5)
    error = ue.build_error(pb.ERROR_REASON_UPSTREAM_RATE_LIMITED, failure, ctx())
    assert error.retry_after == 7.5
    status, found = details(error)
    assert status.code == S.RESOURCE_EXHAUSTED.value[0]
    retry = found["google.rpc.RetryInfo"]
    assert isinstance(retry, error_details_pb2.RetryInfo)
    assert (retry.retry_delay.seconds, retry.retry_delay.nanos) == (7, 500_000_000)
    info = found["google.rpc.ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert info.reason == "UPSTREAM_RATE_LIMITED"
    assert info.metadata["upstreamStatus"] == "429"


def test_local_error_redacts_and_has_provider_metadata():
    error = ue.local_error(
        pb.ERROR_REASON_UPSTREAM_UNREACHABLE,
        f"connect to key={OPENROUTER_KEY} failed",
        ctx(OPENROUTER_KEY),
    )
    assert error.code == S.UNAVAILABLE
    assert OPENROUTER_KEY not in error.message
    assert error.metadata == {"provider": "openrouter", "model": "openrouter/openai/gpt-4o"}


def test_redact():
    # The provider's own redactor, as build_error and local_error use it.
    redactor = Redactor((OPENROUTER_KEY,))
    assert redactor.text(f"a {OPENROUTER_KEY} b {OPENROUTER_KEY}") == ("a [redacted] b [redacted]")
    assert redactor.text("nothing secret") == "nothing secret"
    # An empty secret must not turn every gap between characters into "[redacted]".
    assert Redactor(("",)).text("abc") == "abc"
    assert Redactor((OPENROUTER_KEY, ZAI_KEY)).text(f"{OPENROUTER_KEY}/{ZAI_KEY}") == (
        "[redacted]/[redacted]"
    )


# -- Retry-After ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("120", 120.0), ("0", 0.0), (" 7 ", 7.0), ("1.5", 1.5)],
)
def test_parse_retry_after_seconds(value, seconds):
    assert ue.parse_retry_after(value) == seconds


def test_parse_retry_after_http_date_in_the_future():
    when = email.utils.formatdate(time.time() + 120, usegmt=True)
    seconds = ue.parse_retry_after(when)
    assert seconds is not None
    assert 110 <= seconds <= 121


@pytest.mark.parametrize("value", ["Wed, 21 Oct 2015 07:28:00 GMT", "-5", "-0.5"])
def test_parse_retry_after_past_or_negative_is_zero(value):
    assert ue.parse_retry_after(value) == 0.0


@pytest.mark.parametrize(
    "value", [None, "", "   ", "soon", "nan", "Mon, 99 Foo 2020 00:00:00 GMT", "12 seconds"]
)
def test_parse_retry_after_garbage_is_none(value):
    assert ue.parse_retry_after(value) is None


@pytest.mark.parametrize("value", ["inf", "Infinity", "1e400"])
def test_parse_retry_after_is_never_infinite(value):
    seconds = ue.parse_retry_after(value)
    assert seconds is None or math.isfinite(seconds)


@pytest.mark.parametrize("value", ["inf", "1e400", "1e30"])
def test_absurd_retry_after_still_yields_a_reportable_error(value):
    # A 429 with a nonsensical Retry-After must still reach the caller as
    # RESOURCE_EXHAUSTED, not crash while the status is being packed.
    failure = ue.UpstreamFailure(429, "429", "slow down", retry_after=ue.parse_retry_after(value))
    error = ue.build_error(pb.ERROR_REASON_UPSTREAM_RATE_LIMITED, failure, ctx())
    status, _ = details(error)
    assert status.code == S.RESOURCE_EXHAUSTED.value[0]


# -- OpenRouter's "Provider returned error", end to end ------------------------


@pytest.mark.parametrize("rpc", ["unary", "stream"])
async def test_provider_returned_error_reaches_the_caller_with_its_reason_and_provider(
    stub: pb_grpc.CompletionServiceAsyncStub, rpc: str
) -> None:
    model = "openrouter/x/fault-provider-returned-error"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if rpc == "unary":
            await stub.Complete(pb.CompleteRequest(model=model, messages=[_user()]), timeout=10)
        else:
            call = stub.StreamComplete(
                pb.StreamCompleteRequest(model=model, messages=[_user()]), timeout=10
            )
            async for _ in call:
                pass
    status = rich_status(caught.value)
    assert status.code == S.RESOURCE_EXHAUSTED
    assert status.info.reason == "UPSTREAM_RATE_LIMITED"
    # The caller reads why, and who: not only OpenRouter's "Provider returned error".
    assert PROVIDER_RAW_REASON in status.message
    assert f"provider {PROVIDER_BEHIND}" in status.message
    assert status.info.metadata["upstreamProvider"] == PROVIDER_BEHIND
    assert status.info.metadata["upstreamRaw"] == PROVIDER_RAW_REASON


async def test_a_raw_reason_given_as_an_object_reaches_the_caller_as_json(
    stub: pb_grpc.CompletionServiceAsyncStub,
) -> None:
    model = "openrouter/x/fault-provider-returned-error-object"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(model=model, messages=[_user()]), timeout=10)
    status = rich_status(caught.value)
    assert status.code == S.UNAVAILABLE
    assert "backend crashed" in status.message
    assert "backend crashed" in status.info.metadata["upstreamRaw"]
    assert status.info.metadata["upstreamProvider"] == PROVIDER_BEHIND


def _user() -> common.ChatMessage:
    return common.ChatMessage(role=common.ROLE_USER, content="hi")
