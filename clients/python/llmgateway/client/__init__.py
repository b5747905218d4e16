"""Python clients for llmgateway: `AsyncCompletionClient`, its blocking twin
`CompletionClient`, typed errors, and helpers for messages, tools, streams and routing hints.

The protobuf types stay visible: requests take the contract's fields as
keywords, and responses are the generated messages.
"""

from __future__ import annotations

from llmgateway.client.async_client import AsyncCompletionClient
from llmgateway.client.errors import (
    CancelledError,
    ConnectionLostError,
    DeadlineExceededError,
    FailedPreconditionError,
    GatewayError,
    GatewayUnreachableError,
    InternalError,
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    UnauthenticatedError,
    UnavailableError,
    UpstreamUnavailableError,
)
from llmgateway.client.hints import routing
from llmgateway.client.messages import (
    Collected,
    acollect,
    assistant_turn,
    collect,
    message,
    to_messages,
    tool,
)
from llmgateway.client.streams import AsyncStream, Stream
from llmgateway.client.sync_client import CompletionClient

__all__ = [
    "AsyncCompletionClient",
    "AsyncStream",
    "CancelledError",
    "Collected",
    "CompletionClient",
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
    "Stream",
    "UnauthenticatedError",
    "UnavailableError",
    "UpstreamUnavailableError",
    "acollect",
    "assistant_turn",
    "collect",
    "message",
    "routing",
    "to_messages",
    "tool",
]
