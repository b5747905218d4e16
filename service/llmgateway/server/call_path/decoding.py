"""Requests that cannot be decoded are refused with INVALID_ARGUMENT, not crashed on.

gRPC decodes a request with its method's deserializer before any handler
runs, so protobuf's DecodeError (random bytes, invalid UTF-8 in a string
field, nesting deeper than protobuf's recursion limit) would surface as
UNKNOWN with a traceback logged per request, before authentication: cheap
for anyone to send and costly in log volume. `TolerantRegistrar` stands in
for the server while a generated `add_*_to_server` registers its handlers:
each handler's deserializer returns an `Undecodable` marker instead of
raising, and its behaviour refuses the marker with a rich INVALID_ARGUMENT.
The refusal is counted (metric), logged at most once per `LOG_INTERVAL`
seconds with how many were refused meanwhile, and costs no traceback. Such
a request never became a call: no request id, access line or ledger row.

The wrappers cost a call well under a microsecond of its ~0.4 ms (unary)
or ~4 ms (50-event stream) of server CPU: `python -m bench.decode_overhead`.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import time
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from llmgateway.server.errors import GatewayError
from llmgateway.server.observability.logs import LogSampler
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    _Context = grpc.aio.ServicerContext[Any, Any]

logger = logging.getLogger(__name__)

# At most one log line per this many seconds, however many requests are refused.
LOG_INTERVAL = 10.0


class Undecodable:
    """What the tolerant deserializer returns for bytes protobuf refused."""

    __slots__ = ("problem",)

    def __init__(self, problem: str) -> None:
        self.problem = problem


class RefusalLog:
    """One WARNING line per `interval` seconds at most, counting the refusals
    it did not log one by one (a flood of garbage cannot fill the disk)."""

    def __init__(
        self,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        log: logging.Logger = logger,
    ) -> None:
        self._interval = interval
        self._logger = log
        # No count of its own at the interval's end: the next line carries it.
        self._sampler = LogSampler(interval, clock=clock)

    def refused(self, method: str, problem: str, peer: str) -> None:
        """Note one refusal; log it if the last line is old enough."""
        admitted, held_back = self._sampler.admit()
        if not admitted:
            return
        self._logger.warning(
            "refused %d undecodable request(s) since the last such line (latest: %s from %s: "
            "%s); a client built from another contract version, or one sending invalid "
            "UTF-8? At most one line per %.0f s; llmgateway_undecodable_requests counts each",
            held_back + 1,
            method,
            peer,
            problem,
            self._interval,
        )


class TolerantRegistrar:
    """A stand-in for the server that registers what it is given with tolerant
    decoding. `on_refused(method)` is called per refusal (the metric)."""

    def __init__(
        self,
        server: grpc.aio.Server,
        *,
        on_refused: Callable[[str], None] | None = None,
        log: RefusalLog | None = None,
    ) -> None:
        self._server = server
        self._on_refused = on_refused
        self._log = log or RefusalLog()

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        """As grpc.aio.Server's, each handler's methods decoded tolerantly."""
        self._server.add_generic_rpc_handlers(
            [_TolerantGenericHandler(handler, self._tolerant) for handler in handlers]
        )

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        """As grpc.aio.Server's, each method decoded tolerantly."""
        self._server.add_registered_method_handlers(
            service, {name: self._tolerant(name, h) for name, h in handlers.items()}
        )

    def _tolerant(
        self, method: str, handler: grpc.RpcMethodHandler[Any, Any]
    ) -> grpc.RpcMethodHandler[Any, Any]:
        parse = handler.request_deserializer
        if parse is None:
            return handler  # bytes in, bytes out: nothing to decode
        message_type = getattr(getattr(parse, "__self__", None), "DESCRIPTOR", None)
        type_name = getattr(message_type, "full_name", method)
        refuse = _Refuser(method, type_name, self._on_refused, self._log)

        def decode(data: bytes) -> object:
            try:
                return parse(data)
            except DecodeError as exc:
                # "Error parsing message with type 'X': Wire format was corrupt": the
                # refusal names the type itself, so only what went wrong is kept.
                return Undecodable(str(exc).rpartition("': ")[2] or str(exc))

        return _rebuild(handler, decode, refuse)


class _TolerantGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose method handlers decode tolerantly (made once per method)."""

    def __init__(
        self,
        inner: grpc.GenericRpcHandler,
        tolerant: Callable[[str, grpc.RpcMethodHandler[Any, Any]], grpc.RpcMethodHandler[Any, Any]],
    ) -> None:
        self._inner = inner
        self._tolerant = tolerant
        # Only methods the inner handler serves: unknown names cannot grow it.
        self._made: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def service(
        self, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        path = handler_call_details.method
        made = self._made.get(path)
        if made is None:
            handler = self._inner.service(handler_call_details)
            if handler is None:
                return None
            made = self._made[path] = self._tolerant(path.rsplit("/", 1)[-1], handler)
        return made


class _Refuser:
    """Refuses an undecodable request of one method."""

    def __init__(
        self,
        method: str,
        type_name: str,
        on_refused: Callable[[str], None] | None,
        log: RefusalLog,
    ) -> None:
        self._method = method
        self._type_name = type_name
        self._on_refused = on_refused
        self._log = log

    async def __call__(self, context: _Context, request: Undecodable) -> None:
        await context.abort_with_status(self.status(request, context.peer()))

    def status(self, request: Undecodable, peer: str) -> grpc.Status:
        """Count and log the refusal; the status to refuse it with."""
        if self._on_refused is not None:
            self._on_refused(self._method)
        self._log.refused(self._method, request.problem, peer)
        error = GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.ERROR_REASON_INVALID_REQUEST,
            f"the request could not be decoded as {self._type_name} ({request.problem}); check "
            "that the client was built from the same contract version (protos/llmgateway/v1) "
            "and sends valid UTF-8 in every string field",
            metadata={"method": self._method},
        )
        return error.to_rpc_status()


def _rebuild(
    handler: grpc.RpcMethodHandler[Any, Any],
    decode: Callable[[bytes], object],
    refuse: _Refuser,
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same method, decoding with `decode` and refusing what it could not."""
    serialize = handler.response_serializer
    if not handler.request_streaming:
        behaviour: Any = handler.unary_stream if handler.response_streaming else handler.unary_unary
        if not handler.response_streaming and not inspect.iscoroutinefunction(behaviour):
            # Run on gRPC's thread pool (grpc_health leaves its List so).
            def unary_unary_sync(request: object, context: grpc.ServicerContext) -> object:
                if isinstance(request, Undecodable):
                    status = refuse.status(request, context.peer())
                    # The thread's context has no abort_with_status; abort sends these.
                    context.set_trailing_metadata(status.trailing_metadata)
                    context.abort(status.code, status.details)
                    return None  # grpc.aio ends the call with the abort's status
                return behaviour(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary_sync, decode, serialize)
        _check_async(behaviour)
        if not handler.response_streaming:

            async def unary_unary(request: object, context: _Context) -> object:
                if request.__class__ is Undecodable:
                    await refuse(context, request)
                return await behaviour(request, context)

            return grpc.unary_unary_rpc_method_handler(unary_unary, decode, serialize)
        if inspect.iscoroutinefunction(behaviour):  # it writes its own answers (health's Watch)

            async def unary_writer(request: object, context: _Context) -> None:
                if request.__class__ is Undecodable:
                    await refuse(context, request)
                await behaviour(request, context)

            return grpc.unary_stream_rpc_method_handler(unary_writer, decode, serialize)

        async def unary_stream(request: object, context: _Context) -> AsyncIterator[object]:
            if request.__class__ is Undecodable:
                await refuse(context, request)
            # Yielding on (measured as cheap as grpc.aio iterating the behaviour
            # itself; context.write from a coroutine cost ~12% more server CPU
            # per stream). aclosing: a cancelled call closes it now, not at collection.
            async with contextlib.aclosing(behaviour(request, context)) as responses:
                async for response in responses:
                    yield response

        return grpc.unary_stream_rpc_method_handler(unary_stream, decode, serialize)

    behaviour = handler.stream_stream if handler.response_streaming else handler.stream_unary
    _check_async(behaviour)

    async def checked(requests: AsyncIterator[object], context: _Context) -> AsyncIterator[object]:
        async for request in requests:
            if request.__class__ is Undecodable:
                await refuse(context, request)
            yield request

    if not handler.response_streaming:

        async def stream_unary(requests: AsyncIterator[object], context: _Context) -> object:
            return await behaviour(checked(requests, context), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, decode, serialize)

    if inspect.iscoroutinefunction(behaviour):

        async def stream_writer(requests: AsyncIterator[object], context: _Context) -> None:
            await behaviour(checked(requests, context), context)

        return grpc.stream_stream_rpc_method_handler(stream_writer, decode, serialize)

    async def stream_stream(
        requests: AsyncIterator[object], context: _Context
    ) -> AsyncIterator[object]:
        async with contextlib.aclosing(behaviour(checked(requests, context), context)) as responses:
            async for response in responses:
                yield response

    return grpc.stream_stream_rpc_method_handler(stream_stream, decode, serialize)


def _check_async(behaviour: object) -> None:
    if not (inspect.iscoroutinefunction(behaviour) or inspect.isasyncgenfunction(behaviour)):
        raise TypeError(f"{behaviour!r}: only grpc.aio (async) behaviours can be registered")
