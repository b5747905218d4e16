"""The gateway's one error type and its translation to a rich gRPC status.

Every failure the caller sees is a `GatewayError`: a canonical status code, a
reason from the contract's `ErrorReason` enum, a message that says what to do,
and metadata. `to_rpc_status()` packs it as a `google.rpc.Status` with exactly
one `ErrorInfo` (AIP-193), plus `BadRequest` for field violations and
`RetryInfo` when the upstream said when to retry.
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

    def to_rpc_status(self) -> grpc.Status:
        """The status to abort the RPC with, details included."""
        details: list[any_pb2.Any] = []
        info = error_details_pb2.ErrorInfo(
            reason=reason_name(self.reason), domain=DOMAIN, metadata=self.metadata
        )
        details.append(_pack(info))
        if self.field_violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.field_violations
                ]
            )
            details.append(_pack(bad_request))
        if self.retry_after is not None:
            seconds = (
                min(max(0.0, self.retry_after), 86_400.0)
                if math.isfinite(self.retry_after)
                else 0.0
            )
            whole = math.floor(seconds)
            delay = duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=details)
        plain = rpc_status.to_status(status)
        return _Status(
            code=plain.code,
            details=plain.details,
            # The gateway has already retried what was worth retrying; a
            # negative pushback tells gRPC clients with a retry policy not to
            # multiply that (they still retry when the gateway is unreachable).
            trailing_metadata=(*plain.trailing_metadata, ("grpc-retry-pushback-ms", "-1")),
        )


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
