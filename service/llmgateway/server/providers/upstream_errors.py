"""Upstream failures to gateway errors: one table of reasons, one of status codes.

Each provider only decides the *reason* (from an HTTP status, a business code or
an error type); the gRPC code follows from the reason, so the same reason never
travels under two codes.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from dataclasses import dataclass, field
from typing import TypeAlias

import grpc

from llmgateway.server.errors import GatewayError
from llmgateway.server.providers.redaction import Redactor
from llmgateway.v1 import completion_service_pb2 as pb

Reason: TypeAlias = pb.ErrorReason.ValueType

REASON_CODES: dict[Reason, grpc.StatusCode] = {
    pb.ERROR_REASON_UPSTREAM_AUTH_FAILED: grpc.StatusCode.FAILED_PRECONDITION,
    pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS: grpc.StatusCode.FAILED_PRECONDITION,
    pb.ERROR_REASON_UPSTREAM_PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    pb.ERROR_REASON_UPSTREAM_CONTENT_FLAGGED: grpc.StatusCode.PERMISSION_DENIED,
    pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST: grpc.StatusCode.INVALID_ARGUMENT,
    pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED: grpc.StatusCode.INVALID_ARGUMENT,
    pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    pb.ERROR_REASON_UPSTREAM_RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    pb.ERROR_REASON_UPSTREAM_QUOTA_EXCEEDED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    pb.ERROR_REASON_UPSTREAM_OVERLOADED: grpc.StatusCode.UNAVAILABLE,
    pb.ERROR_REASON_UPSTREAM_UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    pb.ERROR_REASON_UPSTREAM_UNREACHABLE: grpc.StatusCode.UNAVAILABLE,
    pb.ERROR_REASON_UPSTREAM_TIMEOUT: grpc.StatusCode.DEADLINE_EXCEEDED,
    pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE: grpc.StatusCode.UNAVAILABLE,
    pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED: grpc.StatusCode.UNAVAILABLE,
    pb.ERROR_REASON_UPSTREAM_DUPLICATE_REQUEST: grpc.StatusCode.ALREADY_EXISTS,
    # Raised by the gateway's circuit breaker (service/llmgateway/server/call_path/dispatch.py), not parsed.
    pb.ERROR_REASON_UPSTREAM_CIRCUIT_OPEN: grpc.StatusCode.UNAVAILABLE,
    pb.ERROR_REASON_UPSTREAM_RESPONSE_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    pb.ERROR_REASON_UPSTREAM_INVALID_TOOL_CALL: grpc.StatusCode.UNAVAILABLE,
    # Raised by the routing decision (service/llmgateway/server/routing/decide.py)
    # before any upstream request, not parsed: the caller can change the request
    # (drop the image, lower max_tokens), no retry or fallback helps.
    pb.ERROR_REASON_NO_ELIGIBLE_TARGET: grpc.StatusCode.INVALID_ARGUMENT,
}

# What the caller should read first, per reason; the provider's words follow.
_SUMMARIES: dict[Reason, str] = {
    pb.ERROR_REASON_UPSTREAM_AUTH_FAILED: "{p} rejected the gateway's API key; "
    "the operator must check {env}",
    pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS: "the {p} account is out of credit",
    pb.ERROR_REASON_UPSTREAM_PERMISSION_DENIED: "{p} refused the request",
    pb.ERROR_REASON_UPSTREAM_CONTENT_FLAGGED: "{p}'s moderation flagged the request",
    pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST: "{p} rejected the request as invalid",
    pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED: "the prompt does not fit the model's "
    "context window; shorten it or lower max_tokens",
    pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND: "{p} has no such model or no endpoint for it",
    pb.ERROR_REASON_UPSTREAM_RATE_LIMITED: "{p} rate-limited the request",
    pb.ERROR_REASON_UPSTREAM_QUOTA_EXCEEDED: "a {p} usage quota is exhausted",
    pb.ERROR_REASON_UPSTREAM_OVERLOADED: "{p} is overloaded; retry with backoff",
    pb.ERROR_REASON_UPSTREAM_UNAVAILABLE: "{p} failed to serve the request; retry with backoff",
    pb.ERROR_REASON_UPSTREAM_UNREACHABLE: "{p} could not be reached",
    pb.ERROR_REASON_UPSTREAM_TIMEOUT: "{p} did not answer in time",
    pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE: "{p} sent a response the gateway cannot parse",
    pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED: "{p}'s stream ended early; the output is incomplete",
    pb.ERROR_REASON_UPSTREAM_DUPLICATE_REQUEST: "{p} is already processing a request with this id",
    pb.ERROR_REASON_UPSTREAM_CIRCUIT_OPEN: "this model on {p} is failing just now and is "
    "skipped for a cool-down",
    pb.ERROR_REASON_UPSTREAM_RESPONSE_TOO_LARGE: "{p}'s answer is larger than the gateway "
    "accepts (LLMGATEWAY_MAX_RESPONSE_BYTES)",
    pb.ERROR_REASON_UPSTREAM_INVALID_TOOL_CALL: "the model produced a tool call {p} could not "
    "accept; retry (the model, not the request, failed)",
    pb.ERROR_REASON_NO_ELIGIBLE_TARGET: "no target of the route can serve this request; "
    "change the fields the error names, or name a model",
}

# Bounds on what the upstream wrote, applied after redaction (never before:
# cutting first could leave a key's prefix behind).
_MAX_UPSTREAM_MESSAGE = 500
_MAX_METADATA_VALUE = 64
_MAX_RAW_METADATA = 256
# Retry hints beyond a day are not hints; a nonsensical one must not break error reporting.
MAX_RETRY_AFTER = 86_400.0


def reason_for_http_status(status: int) -> Reason:
    """The reason an HTTP error status means when nothing more specific is known."""
    table: dict[int, Reason] = {
        401: pb.ERROR_REASON_UPSTREAM_AUTH_FAILED,
        402: pb.ERROR_REASON_UPSTREAM_INSUFFICIENT_CREDITS,
        403: pb.ERROR_REASON_UPSTREAM_PERMISSION_DENIED,
        404: pb.ERROR_REASON_UPSTREAM_MODEL_NOT_FOUND,
        408: pb.ERROR_REASON_UPSTREAM_TIMEOUT,
        429: pb.ERROR_REASON_UPSTREAM_RATE_LIMITED,
        524: pb.ERROR_REASON_UPSTREAM_TIMEOUT,
        529: pb.ERROR_REASON_UPSTREAM_OVERLOADED,
    }
    if status in table:
        return table[status]
    if status < 400:
        # A redirect or an odd 2xx: the base URL is wrong, or something
        # between here and the provider answers in its place.
        return pb.ERROR_REASON_UPSTREAM_MALFORMED_RESPONSE
    if status in (409, 425) or status >= 500:
        return pb.ERROR_REASON_UPSTREAM_UNAVAILABLE
    return pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST


@dataclass(frozen=True, slots=True)
class UpstreamFailure:
    """What the provider said went wrong, before classification."""

    # The HTTP status, or None for an error sent inside a 200 response.
    http_status: int | None
    # The provider's error code as text ("1302", "429", "server_error"), if any.
    code: str | None
    message: str
    # OpenRouter's metadata.error_type or availability code, if any.
    error_type: str | None = None
    retry_after: float | None = None
    moderation: bool = False
    # OpenRouter: what the provider behind it said (metadata.raw), and which one it was.
    raw: str | None = None
    upstream_provider: str | None = None
    # The provider's id for the failed request (Anthropic's request-id header,
    # `request_id` in its error body), for the operator's support ticket.
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorContext:
    """Who failed: used to word the message and fill ErrorInfo metadata."""

    provider_name: str
    provider_id: str
    key_env: str
    model: str
    # The provider's own: it removes every provider key the gateway holds, and
    # its key index is built once, not per error.
    redactor: Redactor = field(default_factory=Redactor)


def build_error(
    reason: Reason, failure: UpstreamFailure, ctx: ErrorContext, hint: str | None = None
) -> GatewayError:
    """A GatewayError for `failure`, with the provider's words redacted, then bounded.

    Every upstream-provided field (message, code, error type, OpenRouter's raw
    reason and the provider behind it) is redacted before it is cut to length.
    """
    r = ctx.redactor
    summary = _SUMMARIES[reason].format(p=ctx.provider_name, env=ctx.key_env)
    code = r.bounded(failure.code, _MAX_METADATA_VALUE) if failure.code else ""
    served_by = (
        r.bounded(failure.upstream_provider, _MAX_METADATA_VALUE)
        if failure.upstream_provider
        else ""
    )
    where = []
    if failure.http_status is not None:
        where.append(f"HTTP {failure.http_status}")
    else:
        where.append("in-band error")
    if code and code != str(failure.http_status):
        where.append(f"code {code}")
    if served_by:
        where.append(f"provider {served_by}")
    upstream_message = r.bounded(failure.message, _MAX_UPSTREAM_MESSAGE).strip()
    raw = r.bounded(failure.raw, _MAX_UPSTREAM_MESSAGE).strip() if failure.raw else ""
    message = f"{summary} ({', '.join(where)})"
    if upstream_message:
        message += f": {upstream_message}"
    if raw and raw != upstream_message:
        # OpenRouter's own message is often only "Provider returned error".
        message += f": {raw}"
    if hint:
        message += f" ({hint})"
    metadata = {"provider": ctx.provider_id, "model": ctx.model}
    if failure.http_status is not None:
        metadata["upstreamStatus"] = str(failure.http_status)
    if code:
        metadata["upstreamCode"] = code
    if failure.error_type:
        metadata["upstreamErrorType"] = r.bounded(failure.error_type, _MAX_METADATA_VALUE)
    if served_by:
        metadata["upstreamProvider"] = served_by
    if raw:
        metadata["upstreamRaw"] = raw[:_MAX_RAW_METADATA]
    if failure.request_id:
        metadata["upstreamRequestId"] = r.bounded(failure.request_id, _MAX_METADATA_VALUE)
    return GatewayError(
        REASON_CODES[reason], reason, message, metadata=metadata, retry_after=failure.retry_after
    )


def local_error(reason: Reason, detail: str, ctx: ErrorContext) -> GatewayError:
    """A GatewayError for a failure the gateway observed itself (timeout, reset, bad bytes)."""
    summary = _SUMMARIES[reason].format(p=ctx.provider_name, env=ctx.key_env)
    return GatewayError(
        REASON_CODES[reason],
        reason,
        f"{summary}: {ctx.redactor.text(detail)}",
        metadata={"provider": ctx.provider_id, "model": ctx.model},
    )


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    return sane_retry_after(seconds)


def sane_retry_after(seconds: float) -> float | None:
    """`seconds` as a usable retry delay: never negative, NaN or infinite, at most a day."""
    if not math.isfinite(seconds):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER)


# One part of a Go-style duration ("2m59.56s" is two): Groq's x-ratelimit-reset-*
# headers and Gemini's "Please retry in …" messages write them; a
# google.protobuf.Duration's JSON form ("26s", "1.5s") is one too.
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|us|µs|ns|h|m|s)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: object) -> float | None:
    """Seconds in a Go-style duration ("2m59.56s", "7.66s", "120ms", "1h2m")
    or a Duration's JSON form ("26s"); None for anything else (a bare number,
    a sign, trailing words). Not bounded: callers pass it to sane_retry_after."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    position = 0
    seconds = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        seconds += float(match[1]) * _DURATION_UNITS[match[2]]
        position = match.end()
    if position == 0 or position != len(text):
        return None
    return seconds
