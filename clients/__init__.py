"""Python clients for llmgateway: `AsyncCompletionClient`, its blocking twin
`CompletionClient`, typed errors, and helpers for messages, tools and streams.

The protobuf types stay visible: requests take the contract's fields as
keywords, and responses are the generated messages.
"""

from __future__ import annotations

from clients.async_client import AsyncCompletionClient
from clients.errors import (
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    GatewayError,
    InternalError,
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    UnauthenticatedError,
    UpstreamUnavailableError,
)
from clients.messages import Collected, acollect, collect, message, to_messages, tool
from clients.streams import AsyncStream, Stream
from clients.sync_client import CompletionClient

__all__ = [
    "AsyncCompletionClient",
    "AsyncStream",
    "CancelledError",
    "Collected",
    "CompletionClient",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "GatewayError",
    "InternalError",
    "InvalidRequestError",
    "ModelNotFoundError",
    "PermissionDeniedError",
    "RateLimitedError",
    "Stream",
    "UnauthenticatedError",
    "UpstreamUnavailableError",
    "acollect",
    "collect",
    "message",
    "to_messages",
    "tool",
]
