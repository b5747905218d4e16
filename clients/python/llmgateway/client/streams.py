"""A streamed completion as a value: iterate it for events; leave a `with` block,
or call cancel(), to end it early. Either way the call is cancelled, and with it
the upstream request (which is what stops the provider's billing)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Self

import grpc

from llmgateway.client.errors import from_rpc_error

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from types import TracebackType

    from llmgateway.v1 import completion_service_pb2 as pb


class AsyncStream:
    """Events of one stream, for `async for` (the last is `done`).

    `async with client.stream(...) as events:` cancels on leaving the block,
    however the loop inside ended. A plain `async for ... in client.stream(...)`
    that breaks early cancels as soon as the loop's iterator is dropped.
    """

    def __init__(self, call: Any, *, target: str = "") -> None:
        self._call = call  # grpc.aio.UnaryStreamCall
        self._target = target  # named by GatewayUnreachableError and ConnectionLostError

    def __aiter__(self) -> AsyncIterator[pb.StreamCompleteResponse]:
        return self._events()

    async def _events(self) -> AsyncIterator[pb.StreamCompleteResponse]:
        answered = False  # an event came: a later UNAVAILABLE is a lost connection
        try:
            async for event in self._call:
                answered = True
                yield event
        except grpc.aio.AioRpcError as error:
            raise from_rpc_error(error, target=self._target, answered=answered) from error
        finally:
            self._call.cancel()  # a no-op when the call has already ended

    def cancel(self) -> None:
        """End the stream now."""
        self._call.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


class Stream:
    """The blocking twin of AsyncStream, for `for` and `with`."""

    def __init__(self, call: Any, *, target: str = "") -> None:
        self._call = call  # grpc's UnaryStreamMultiCallable result (an iterator and a Call)
        self._target = target  # named by GatewayUnreachableError and ConnectionLostError

    def __iter__(self) -> Iterator[pb.StreamCompleteResponse]:
        answered = False  # an event came: a later UNAVAILABLE is a lost connection
        try:
            for event in self._call:
                answered = True
                yield event
        except grpc.RpcError as error:
            raise from_rpc_error(error, target=self._target, answered=answered) from error
        finally:
            self._call.cancel()

    def cancel(self) -> None:
        """End the stream now."""
        self._call.cancel()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()
