"""The gateway's one error type and its translation to a rich gRPC status.

Every failure the caller sees is a `GatewayError`: a canonical status code, a
reason from the contract's `ErrorReason` enum, a message that says what to do,
and metadata. `to_rpc_status()` packs it as a `google.rpc.Status` with exactly
one `ErrorInfo` (AIP-193), plus `BadRequest` for field violations and
`RetryInfo` when the upstream said when to retry.

Everything a status carries travels in HTTP/2 trailers, which clients bound:
gRPC's C core (Python, C++, Ruby...) refuses a random share of trailer sets
over 8 KiB and every one over 16 KiB, reporting RESOURCE_EXHAUSTED instead of
our status; grpc-js inherits Node's 64 KiB. So a status lists at most
`MAX_FIELD_VIOLATIONS` violations (and says how many it left out), and is
shrunk until its trailers fit `TRAILER_BUDGET`, whatever the upstream wrote.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from llmgateway.v1 import completion_service_pb2 as pb

DOMAIN = "llmgateway.v1"
_REASON_PREFIX = "ERROR_REASON_"
# Sent to the caller in initial metadata, and in trailing metadata on errors.
REQUEST_ID_HEADER = "x-request-id"
# BadRequest lists this many field violations; ErrorInfo's `omittedViolations`
# and the message count the rest.
MAX_FIELD_VIOLATIONS = 20
# Bytes of trailers (as HPACK counts them: name + value + 32 per entry, values
# as sent: base64 for -bin, percent-encoding for grpc-message) a status may
# take: half of the C core's 8 KiB soft limit, leaving room for what proxies add.
TRAILER_BUDGET = 4096
# Starting caps, halved until a status fits the budget.
_MESSAGE_CHARS = 1024
_VALUE_CHARS = 512
_ELLIPSIS = "…"
# Characters gRPC sends as-is in grpc-message; the rest are %XX per UTF-8 byte.
_PLAIN_MESSAGE_BYTES = frozenset(range(0x20, 0x7F)) - {ord("%")}
_HPACK_ENTRY_OVERHEAD = 32


def reason_name(reason: pb.ErrorReason.ValueType) -> str:
    """The ErrorInfo.reason string: the enum value's name without its prefix."""
    return pb.ErrorReason.Name(reason).removeprefix(_REASON_PREFIX)


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One invalid request field, named by its path (`messages[2].role`)."""

    field: str
    description: str


@dataclass(slots=True)
class GatewayError(Exception):
    """A failure to report to the caller as a gRPC status."""

    code: grpc.StatusCode
    reason: pb.ErrorReason.ValueType
    message: str
    metadata: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None
    field_violations: tuple[FieldViolation, ...] = ()

    def __post_init__(self) -> None:
        Exception.__init__(self, self.message)

    def __str__(self) -> str:
        return f"{self.code.name} {reason_name(self.reason)}: {self.message}"

    def to_rpc_status(self, request_id: str | None = None) -> grpc.Status:
        """The status to abort the RPC with, details included, and the call's
        request id in the trailers (aborting replaces trailers set earlier)."""
        retry = _pack(_retry_info(self.retry_after)) if self.retry_after is not None else None
        extra: tuple[tuple[str, str | bytes], ...] = (
            # The gateway has already retried what was worth retrying; a
            # negative pushback tells gRPC clients with a retry policy not to
            # multiply that (they still retry when the gateway is unreachable).
            ("grpc-retry-pushback-ms", "-1"),
            *(((REQUEST_ID_HEADER, request_id),) if request_id is not None else ()),
        )
        violations = self.field_violations[:MAX_FIELD_VIOLATIONS]
        metadata = dict(self.metadata)
        omitted = len(self.field_violations) - len(violations)
        message_chars, value_chars = _MESSAGE_CHARS, _VALUE_CHARS
        while True:
            status = self._status(
                _shorten(self.message, message_chars),
                {k: _shorten(v, value_chars) for k, v in metadata.items()},
                [
                    FieldViolation(
                        _shorten(v.field, value_chars), _shorten(v.description, value_chars)
                    )
                    for v in violations
                ],
                omitted,
                retry,
            )
            plain = rpc_status.to_status(status)
            trailers = (*plain.trailing_metadata, *extra)
            if trailer_size(status.message, trailers) <= TRAILER_BUDGET or message_chars <= 16:
                return _Status(code=plain.code, details=plain.details, trailing_metadata=trailers)
            # Too big for every client: keep the reason, shrink what varies.
            if violations:
                keep = len(violations) // 2
                omitted += len(violations) - keep
                violations = violations[:keep]
            message_chars //= 2
            value_chars = max(16, value_chars // 2)

    def _status(
        self,
        message: str,
        metadata: dict[str, str],
        violations: list[FieldViolation],
        omitted: int,
        retry: any_pb2.Any | None,
    ) -> status_pb2.Status:
        if omitted:
            metadata["omittedViolations"] = str(omitted)
        info = error_details_pb2.ErrorInfo(
            reason=reason_name(self.reason), domain=DOMAIN, metadata=metadata
        )
        details = [_pack(info)]
        if violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in violations
                ]
            )
            details.append(_pack(bad_request))
        if retry is not None:
            details.append(retry)
        return status_pb2.Status(code=self.code.value[0], message=message, details=details)


def trailer_size(message: str, trailers: tuple[tuple[str, str | bytes], ...]) -> int:
    """Bytes the trailers of a status take as clients count them (HPACK's
    entry size), grpc-status and grpc-message included."""
    total = len("grpc-status") + 2 + _HPACK_ENTRY_OVERHEAD
    encoded = message.encode("utf-8", "replace")
    total += len("grpc-message") + _HPACK_ENTRY_OVERHEAD
    total += sum(1 if b in _PLAIN_MESSAGE_BYTES else 3 for b in encoded)
    for key, value in trailers:
        size = len(value) if isinstance(value, bytes) else len(value.encode("utf-8", "replace"))
        if key.endswith("-bin"):
            size = 4 * math.ceil(size / 3)
        total += len(key) + size + _HPACK_ENTRY_OVERHEAD
    return total


def _shorten(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + _ELLIPSIS


def _retry_info(retry_after: float) -> error_details_pb2.RetryInfo:
    seconds = min(max(0.0, retry_after), 86_400.0) if math.isfinite(retry_after) else 0.0
    whole = math.floor(seconds)
    delay = duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
    return error_details_pb2.RetryInfo(retry_delay=delay)


@dataclass(frozen=True)
class _Status(grpc.Status):
    """A grpc.Status with our trailing metadata."""

    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


def _pack(
    message: error_details_pb2.ErrorInfo
    | error_details_pb2.BadRequest
    | error_details_pb2.RetryInfo,
) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def invalid_request(violations: list[FieldViolation]) -> GatewayError:
    """INVALID_ARGUMENT naming every offending field."""
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
    if len(violations) > 5:
        summary += f"; and {len(violations) - 5} more"
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        pb.ERROR_REASON_INVALID_REQUEST,
        f"invalid request: {summary}",
        field_violations=tuple(violations),
    )
