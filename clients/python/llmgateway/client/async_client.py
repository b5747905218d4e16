"""The asyncio client: `async with AsyncCompletionClient("host:port") as client: ...`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import grpc

from llmgateway.client.channel import (
    call_metadata,
    channel_options,
    complete_request,
    credentials,
    deadline,
    explain_request,
    stream_request,
    usage_request,
)
from llmgateway.client.errors import from_rpc_error
from llmgateway.client.streams import AsyncStream
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    import datetime
    from collections.abc import Sequence
    from pathlib import Path
    from types import EllipsisType, TracebackType

    from llmgateway.client.messages import Messages
    from llmgateway.v1 import routing_pb2 as rpb

DEFAULT_TIMEOUT = 120.0


class AsyncCompletionClient:
    """Calls llmgateway.v1.CompletionService; failures raise `llmgateway.client.errors` types.

    Every call takes `timeout` (seconds; None for no deadline), and extra
    request fields as keywords (`sampling=`, `tools=`, `reasoning=`, ...).

    Several replicas behind one DNS name (a Kubernetes headless Service):
    `load_balancing="round_robin"` spreads calls over every address the name
    resolves to, for example with the target
    `dns:///llmgateway-headless.NAMESPACE.svc.cluster.local:50051`. The client
    resolves again when a connection ends (the gateway ends each one after
    LLMGATEWAY_MAX_CONNECTION_AGE), so it finds replicas added since; gRPC
    waits at least 30 s between resolutions, which `grpc_options=
    [("grpc.dns_min_time_between_resolutions_ms", 5000)]` shortens.
    `grpc_options` are raw gRPC channel options, over the client's own.
    """

    def __init__(
        self,
        target: str,
        *,
        tls: bool = False,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        api_key: str | None = None,
        keepalive_seconds: float | None = 30.0,
        max_attempts: int = 3,
        timeout: float | None = DEFAULT_TIMEOUT,
        load_balancing: str | None = None,
        grpc_options: Sequence[tuple[str, str | int]] = (),
    ) -> None:
        options = channel_options(
            keepalive_seconds=keepalive_seconds,
            max_attempts=max_attempts,
            load_balancing=load_balancing,
            extra=grpc_options,
        )
        creds = credentials(tls=tls, ca_file=ca_file, cert_file=cert_file, key_file=key_file)
        self._channel = (
            grpc.aio.secure_channel(target, creds, options=options)
            if creds is not None
            else grpc.aio.insecure_channel(target, options=options)
        )
        self._stub = pb_grpc.CompletionServiceStub(self._channel)
        self._metadata = call_metadata(api_key)
        self._timeout = timeout
        self._target = target

    async def complete(
        self,
        model: str,
        messages: Messages,
        *,
        timeout: float | EllipsisType | None = ...,
        **fields: Any,
    ) -> pb.CompleteResponse:
        """One whole completion."""
        request = complete_request(model, messages, fields)
        try:
            return await self._stub.Complete(
                request, timeout=self._deadline(timeout), metadata=self._metadata
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, target=self._target) from error

    def stream(
        self,
        model: str,
        messages: Messages,
        *,
        timeout: float | EllipsisType | None = ...,
        **fields: Any,
    ) -> AsyncStream:
        """Events as they arrive; the last is `done`. Use `async with` to be sure
        that leaving early cancels the call, and so the upstream request."""
        request = stream_request(model, messages, fields)
        return AsyncStream(
            self._stub.StreamComplete(
                request, timeout=self._deadline(timeout), metadata=self._metadata
            ),
            target=self._target,
        )

    async def explain_route(
        self,
        model: str,
        messages: Messages,
        *,
        timeout: float | EllipsisType | None = ...,
        **fields: Any,
    ) -> rpb.RoutingDecision:
        """How a `route/<name>` call with these arguments would be routed, as a dry
        run: the decision (plan and signals included), with no upstream request,
        no spend and no ledger row. Takes what `complete` takes (`routing=` too)."""
        request = explain_request(model, messages, fields)
        try:
            reply = await self._stub.ExplainRoute(
                request, timeout=self._deadline(timeout), metadata=self._metadata
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, target=self._target) from error
        return reply.decision

    async def list_models(
        self,
        provider: common.Provider.ValueType = common.PROVIDER_UNSPECIFIED,
        *,
        timeout: float | EllipsisType | None = ...,
    ) -> pb.ListModelsResponse:
        """The models the gateway routes to."""
        try:
            return await self._stub.ListModels(
                pb.ListModelsRequest(provider=provider),
                timeout=self._deadline(timeout),
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, target=self._target) from error

    async def get_usage(
        self,
        *,
        since: datetime.datetime | None = None,
        until: datetime.datetime | None = None,
        by: str = "model",
        key_id: str | None = None,
        timeout: float | EllipsisType | None = ...,
    ) -> pb.GetUsageResponse:
        """Usage and cost the gateway recorded, grouped `by` "model", "key", "day",
        "route" (calls that named a model or alias under "") or "task" (calls
        with no task under ""); default window: the 30 days before `until`. A
        key sees its own calls unless it was issued with usage access to every
        key."""
        try:
            return await self._stub.GetUsage(
                usage_request(since, until, by, key_id),
                timeout=self._deadline(timeout),
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, target=self._target) from error

    async def close(self) -> None:
        """Close the channel, cancelling calls in flight."""
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _deadline(self, timeout: float | EllipsisType | None) -> float | None:
        return deadline(self._timeout, timeout)
