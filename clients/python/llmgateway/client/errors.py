"""Typed exceptions for llmgateway calls, decoded from the status the server sends.

    GatewayError                      any failed call; .code, .reason, .message, .metadata
    ├── InvalidRequestError           INVALID_ARGUMENT; .field_violations {field: description}
    ├── ModelNotFoundError            NOT_FOUND
    ├── RateLimitedError              RESOURCE_EXHAUSTED; .retry_after (seconds or None)
    ├── UnavailableError              UNAVAILABLE, any of the three cases below
    │   ├── UpstreamUnavailableError  the gateway answered: its provider is down; .retry_after
    │   ├── GatewayUnreachableError   the gateway never answered (refused, DNS, TLS); .target
    │   └── ConnectionLostError       the connection broke after the gateway answered; .target
    │                                 (also INTERNAL/UNKNOWN without the gateway's ErrorInfo:
    │                                 a proxy in front relayed a dead replica's reset)
    ├── DeadlineExceededError         DEADLINE_EXCEEDED
    ├── UnauthenticatedError          UNAUTHENTICATED
    ├── PermissionDeniedError         PERMISSION_DENIED
    ├── FailedPreconditionError       FAILED_PRECONDITION (e.g. a provider without a key)
    ├── CancelledError                CANCELLED
    └── InternalError                 INTERNAL, UNKNOWN (the gateway's, or before it answered)
                                      and anything else

Each is raised `from` the original grpc error. `reason` is the ErrorInfo reason
(`UPSTREAM_RATE_LIMITED`, ...; see the contract's ErrorReason enum), or "" when
the status carried none, as when the gateway could not be reached at all.

Every one pickles with its fields, so it can cross a ProcessPoolExecutor or a
multiprocessing queue (its traceback and `__cause__` stay behind, as with any
pickled exception).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, cast

import grpc
from google.rpc import error_details_pb2, status_pb2

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CancelledError",
    "ConnectionLostError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "GatewayError",
    "GatewayUnreachableError",
    "InternalError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "UnauthenticatedError",
    "UnavailableError",
    "UpstreamUnavailableError",
    "from_rpc_error",
]

_DETAILS_KEY = "grpc-status-details-bin"
# The ErrorInfo domain of every status the gateway itself sends.
GATEWAY_DOMAIN = "llmgateway.v1"


class GatewayError(Exception):
    """A call to the gateway failed."""

    codes: ClassVar[tuple[grpc.StatusCode, ...]] = ()

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        # The reason adds nothing when it repeats the code (UNAUTHENTICATED).
        shown = f" ({reason})" if reason and reason != code.name else ""
        super().__init__(f"{code.name}{shown}: {message}")
        self.code = code
        self.message = message
        self.reason = reason
        self.domain = domain
        self.metadata = dict(metadata or {})
        self.field_violations = dict(field_violations or {})
        self.retry_after = retry_after

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception's own reduce calls cls(*self.args), and args holds only the
        # formatted text, which no subclass's __init__ takes; rebuild from the
        # fields instead so every subclass pickles the same way.
        return (_rebuild, (type(self), self.args, self.__dict__.copy()))


def _rebuild(cls: type[GatewayError], args: tuple[Any, ...], state: dict[str, Any]) -> GatewayError:
    """The unpickled twin of an error: its text (`args`) and its fields (`state`)."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class InvalidRequestError(GatewayError):
    """The request broke the contract; `field_violations` names each field."""

    codes = (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE)


class ModelNotFoundError(GatewayError):
    """The provider does not know the model."""

    codes = (grpc.StatusCode.NOT_FOUND,)


class RateLimitedError(GatewayError):
    """Rate limit or quota; `retry_after` says when to try again, if known."""

    codes = (grpc.StatusCode.RESOURCE_EXHAUSTED,)


class UnavailableError(GatewayError):
    """UNAVAILABLE: the call did not complete this time.

    Catch this for every case; its subclasses say which side failed, and so
    whether a retry can repeat work: GatewayUnreachableError and
    UpstreamUnavailableError are worth retrying with backoff, while after a
    ConnectionLostError the provider may already have served (and billed) the call.
    """

    codes = (grpc.StatusCode.UNAVAILABLE,)


class UpstreamUnavailableError(UnavailableError):
    """The gateway answered that what is behind it is unavailable for now: the
    provider (`UPSTREAM_UNAVAILABLE`, `UPSTREAM_CIRCUIT_OPEN`, ...) or the
    gateway's own state store (`GATEWAY_STATE_UNAVAILABLE`); `reason` says which.
    Retry with backoff, after `retry_after` when it is set."""


class _ChannelUnavailableError(UnavailableError):
    """An UNAVAILABLE that the local gRPC channel (or a proxy) produced, not the
    gateway: no `reason`, and `target` is the address the client dialled."""

    # How the subclass puts it; {gateway} is "the gateway at <target>".
    template: ClassVar[str] = "{gateway}: {details}"

    def __init__(self, code: grpc.StatusCode, message: str, *, target: str = "") -> None:
        gateway = f"the gateway at {target}" if target else "the gateway"
        super().__init__(code, self.template.format(gateway=gateway, details=message))
        self.target = target


class GatewayUnreachableError(_ChannelUnavailableError):
    """The gateway never answered the call: connection refused, a name that does
    not resolve, a failed TLS handshake, or a connection that broke before the
    gateway sent anything back. The status came from the local gRPC channel, not
    the gateway, so there is no `reason`.

    The gateway answers (with response headers) before it calls a provider, so
    the call was almost certainly not served: retry with backoff.

    `target` is the address the client dialled; the message names it and says
    what gRPC reported.
    """

    template = "cannot reach {gateway}: {details}"


class ConnectionLostError(_ChannelUnavailableError):
    """The gateway answered, then the connection broke before the call ended:
    the gateway stopped and its drain grace ran out ("Cancelling all calls"), a
    keepalive ping went unanswered, or the connection was reset mid-stream. The
    status came from the local gRPC channel, or from a proxy in front of the
    gateway, so there is no `reason`.

    `code` is what gRPC reported: UNAVAILABLE, or INTERNAL (or UNKNOWN) when a
    proxy such as Envoy relayed the reset of a gateway replica that died
    mid-call ("Received RST_STREAM with error code 2"). The gateway's own
    INTERNAL always carries its ErrorInfo (reason INTERNAL) and stays an
    InternalError.

    The provider may already have served the call, and billed for it; a retry
    can do (and charge for) the work again. Retry only what is safe to repeat,
    or check the usage the gateway recorded first.

    `target` is the address the client dialled; the message names it and says
    what gRPC reported.
    """

    template = "the connection to {gateway} broke during the call: {details}"


class DeadlineExceededError(GatewayError):
    """The call ran out of time."""

    codes = (grpc.StatusCode.DEADLINE_EXCEEDED,)


class UnauthenticatedError(GatewayError):
    """The gateway did not accept the caller's credentials."""

    codes = (grpc.StatusCode.UNAUTHENTICATED,)


class PermissionDeniedError(GatewayError):
    """The caller, or the provider's moderation, refused the request."""

    codes = (grpc.StatusCode.PERMISSION_DENIED,)


class FailedPreconditionError(GatewayError):
    """The gateway cannot serve this now (a missing provider key, no credit)."""

    codes = (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS)


class CancelledError(GatewayError):
    """The call was cancelled."""

    codes = (grpc.StatusCode.CANCELLED,)


class InternalError(GatewayError):
    """A bug in the gateway, or a status this client does not know."""

    codes = (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)


_CLASSES: dict[grpc.StatusCode, type[GatewayError]] = {
    code: cls
    for cls in (
        InvalidRequestError,
        ModelNotFoundError,
        RateLimitedError,
        UpstreamUnavailableError,
        DeadlineExceededError,
        UnauthenticatedError,
        PermissionDeniedError,
        FailedPreconditionError,
        CancelledError,
        InternalError,
    )
    for code in cls.codes
}


@dataclass
class _Details:
    reason: str = ""
    domain: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: dict[str, str] = field(default_factory=dict)
    retry_after: float | None = None


def from_rpc_error(
    error: grpc.RpcError, *, target: str = "", answered: bool = False
) -> GatewayError:
    """The typed exception for a failed call (sync or asyncio) to `target`;
    `answered`: the caller already received something from the gateway (a
    stream's event), which the error itself may not show."""
    # Every RpcError a call raises is also a grpc.Call (sync) or an AioRpcError.
    call = cast("grpc.Call", error)
    code = call.code() or grpc.StatusCode.UNKNOWN
    raw = dict(call.trailing_metadata() or ()).get(_DETAILS_KEY)
    details = _decode(raw) if isinstance(raw, bytes) else _Details()
    if code == grpc.StatusCode.UNAVAILABLE and details.domain != GATEWAY_DOMAIN:
        # The gateway explains every UNAVAILABLE it sends with its ErrorInfo;
        # without one the channel (or a proxy in front) gave up. Whether the
        # gateway had answered first tells a gateway that was never reached from
        # a call cut off midway, which the provider may already have served.
        cls_ = ConnectionLostError if _answered(call, answered) else GatewayUnreachableError
        return cls_(code, call.details() or "", target=target)
    if (
        code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN)
        and details.domain != GATEWAY_DOMAIN
        and _answered(call, answered)
    ):
        # The gateway sends INTERNAL only with its ErrorInfo. Without one, after
        # it had answered, something between the two cut the call: behind
        # Envoy, a replica that died mid-call ends as INTERNAL "Received
        # RST_STREAM with error code 2". That is a lost connection, not a bug.
        return ConnectionLostError(code, call.details() or "", target=target)
    cls = _CLASSES.get(code, InternalError)
    return cls(
        code,
        call.details() or "",
        reason=details.reason,
        domain=details.domain,
        metadata=details.metadata,
        field_violations=details.field_violations,
        retry_after=details.retry_after,
    )


def _answered(call: grpc.Call, answered: bool) -> bool:
    """Whether the gateway had answered the call (response headers, or an event
    the caller saw) before it failed."""
    return answered or bool(call.initial_metadata())


def _decode(raw: bytes) -> _Details:
    found = _Details()
    for detail in status_pb2.Status.FromString(raw).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            found.reason, found.domain, found.metadata = (
                info.reason,
                info.domain,
                dict(info.metadata),
            )
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.field_violations = {v.field: v.description for v in bad.field_violations}
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            found.retry_after = retry.retry_delay.seconds + retry.retry_delay.nanos / 1e9
    return found
