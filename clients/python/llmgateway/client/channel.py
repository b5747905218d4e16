"""What the async and sync clients share: channel settings, requests, deadlines."""

from __future__ import annotations

import datetime
import json
from types import EllipsisType
from typing import TYPE_CHECKING, Any

import grpc

from llmgateway.client.messages import to_messages
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from llmgateway.client.messages import Messages

SERVICE = "llmgateway.v1.CompletionService"
MIN_KEEPALIVE_SECONDS = 10.0


# The policies a caller may name: gRPC's built-in ones that need no configuration.
LOAD_BALANCING_POLICIES = ("pick_first", "round_robin")


def channel_options(
    *,
    keepalive_seconds: float | None,
    max_attempts: int,
    load_balancing: str | None = None,
    extra: Sequence[tuple[str, str | int]] = (),
) -> list[tuple[str, str | int]]:
    """gRPC channel options: keepalive, retries of UNAVAILABLE on unary calls
    only, and the load-balancing policy, then `extra` (raw gRPC options, which
    replace any of the same name).

    A stream is never retried: once events have reached the caller a retry
    would repeat them, and gRPC cannot retry a call whose response has begun.

    `load_balancing="round_robin"` spreads calls over every address the
    target resolves to (a headless DNS name: one per replica); gRPC's default,
    pick_first, sends them all to one. It goes into the same service config as
    the retry policy, since a channel takes only one.
    """
    if load_balancing is not None and load_balancing not in LOAD_BALANCING_POLICIES:
        raise ValueError(
            f"load_balancing must be one of {', '.join(LOAD_BALANCING_POLICIES)} "
            f"(or None for gRPC's default, pick_first), got {load_balancing!r}"
        )
    options: dict[str, str | int] = {}
    config: dict[str, Any] = {}
    if load_balancing is not None:
        config["loadBalancingConfig"] = [{load_balancing: {}}]
    if max_attempts > 1:
        config["methodConfig"] = [
            {
                "name": [
                    {"service": SERVICE, "method": "Complete"},
                    {"service": SERVICE, "method": "ListModels"},
                    # A dry run: no upstream call, nothing recorded, so safe to repeat.
                    {"service": SERVICE, "method": "ExplainRoute"},
                ],
                "retryPolicy": {
                    "maxAttempts": min(max_attempts, 5),
                    "initialBackoff": "0.2s",
                    "maxBackoff": "5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    options["grpc.enable_retries"] = 1 if max_attempts > 1 else 0
    if config:
        options["grpc.service_config"] = json.dumps(config)
    if keepalive_seconds:
        # The gateway accepts a ping every 10 s while a call is silent; more
        # often and it would hang up ("too many pings").
        interval = max(keepalive_seconds, MIN_KEEPALIVE_SECONDS)
        options["grpc.keepalive_time_ms"] = int(interval * 1000)
        options["grpc.keepalive_timeout_ms"] = 20_000
        options["grpc.http2.max_pings_without_data"] = 0
    options.update(extra)
    return list(options.items())


def credentials(
    *,
    tls: bool,
    ca_file: Path | None,
    cert_file: Path | None = None,
    key_file: Path | None = None,
) -> grpc.ChannelCredentials | None:
    """TLS credentials (system roots, or `ca_file`), or None for plaintext.

    `cert_file` and `key_file` (PEM, together) are the client's own certificate
    for a gateway that requires mutual TLS; either implies TLS.
    """
    if (cert_file is None) != (key_file is None):
        raise ValueError("cert_file and key_file go together: a client certificate needs its key")
    if not tls and ca_file is None and cert_file is None:
        return None
    roots = ca_file.read_bytes() if ca_file is not None else None
    if cert_file is None or key_file is None:
        return grpc.ssl_channel_credentials(root_certificates=roots)
    return grpc.ssl_channel_credentials(
        root_certificates=roots,
        private_key=key_file.read_bytes(),
        certificate_chain=cert_file.read_bytes(),
    )


def call_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    """Per-call metadata: the API key as `authorization: Bearer ...`."""
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def complete_request(model: str, messages: Messages, fields: dict[str, Any]) -> pb.CompleteRequest:
    """A CompleteRequest from the client's arguments."""
    return pb.CompleteRequest(model=model, messages=to_messages(messages), **fields)


def explain_request(
    model: str, messages: Messages, fields: dict[str, Any]
) -> pb.ExplainRouteRequest:
    """An ExplainRouteRequest: the CompleteRequest the call would send, wrapped."""
    return pb.ExplainRouteRequest(request=complete_request(model, messages, fields))


def stream_request(
    model: str, messages: Messages, fields: dict[str, Any]
) -> pb.StreamCompleteRequest:
    """A StreamCompleteRequest from the client's arguments."""
    return pb.StreamCompleteRequest(model=model, messages=to_messages(messages), **fields)


_GROUPINGS = {
    "model": pb.USAGE_GROUPING_MODEL,
    "key": pb.USAGE_GROUPING_KEY,
    "day": pb.USAGE_GROUPING_DAY,
    "route": pb.USAGE_GROUPING_ROUTE,
    "task": pb.USAGE_GROUPING_TASK,
}


def usage_request(
    since: datetime.datetime | None,
    until: datetime.datetime | None,
    by: str,
    key_id: str | None,
) -> pb.GetUsageRequest:
    """A GetUsageRequest; naive datetimes are taken as UTC."""
    if by not in _GROUPINGS:
        raise ValueError(f"by must be one of {sorted(_GROUPINGS)}, got {by!r}")
    request = pb.GetUsageRequest(group_by=_GROUPINGS[by], key_id=key_id or "")
    for field, moment in (("start_time", since), ("end_time", until)):
        if moment is not None:
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=datetime.UTC)
            getattr(request, field).FromDatetime(moment)
    return request


def deadline(default: float | None, timeout: float | EllipsisType | None) -> float | None:
    """The call's timeout: `...` means the client's default; None means no deadline."""
    return default if isinstance(timeout, EllipsisType) else timeout
