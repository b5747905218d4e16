"""The CompletionService handlers: validate, route, dispatch, report errors.

Handlers stay thin. Validation happens before the first upstream byte and
before the first yield, so bad input never produces a partial stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import grpc

from llmgateway.server.call_path.calls import new_request_id, state_errors
from llmgateway.server.call_path.validation import validate
from llmgateway.server.errors import REQUEST_ID_HEADER, GatewayError, invalid_request
from llmgateway.server.observability import logs
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from llmgateway.server.call_path.calls import Calls, CallScope
    from llmgateway.server.call_path.dispatch import Dispatcher
    from llmgateway.server.call_path.usage import UsageReader
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest
    from llmgateway.server.routing.catalog import Catalog
    from llmgateway.server.routing.router import Plan, Router

    _AnyContext = grpc.aio.ServicerContext[Any, Any]

logger = logging.getLogger(__name__)
# A flood of calls refused before the caller was let in gets one "call
# failed" line a second per status, and a count.
_failures = logs.SampledLog(logger)


def flush_sampled_logs() -> None:
    """Write the counts of refusal lines held back (at shutdown)."""
    _failures.flush()


class CompletionServicer(pb_grpc.CompletionServiceServicer):
    """llmgateway.v1.CompletionService."""

    def __init__(
        self,
        router: Router,
        dispatcher: Dispatcher,
        catalog: Catalog,
        calls: Calls,
        *,
        max_request_bytes: int,
        usage: UsageReader | None = None,
    ) -> None:
        self._router = router
        self._dispatcher = dispatcher
        self._catalog = catalog
        self._calls = calls
        self._max_request_bytes = max_request_bytes
        self._usage = usage

    async def Complete(
        self,
        request: pb.CompleteRequest,
        context: grpc.aio.ServicerContext[pb.CompleteRequest, pb.CompleteResponse],
    ) -> pb.CompleteResponse:
        scope = self._calls.open("Complete", request.model)
        failure: BaseException | None = None
        try:
            await _send_request_id(context, scope.record.request_id)
            plan = await self._prepare(request, scope, context)
            response = await self._dispatcher.complete(
                request, plan, _deadline(context), scope.record
            )
            scope.first_output()
            scope.answered(response, self._calls.prices)
            return response
        except GatewayError as error:
            failure = error
            await _abort(
                context,
                error,
                scope.record.request_id,
                authenticated=scope.record.authenticated,
            )
        except asyncio.CancelledError as cancelled:
            failure = cancelled
            raise
        except Exception as exc:  # noqa: BLE001  # any bug becomes INTERNAL, never a traceback
            failure = exc
            await _abort_internal(context, "Complete", scope.record.request_id)
        finally:
            self._calls.close(scope, failure, context)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def StreamComplete(
        self,
        request: pb.StreamCompleteRequest,
        context: grpc.aio.ServicerContext[pb.StreamCompleteRequest, pb.StreamCompleteResponse],
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        scope = self._calls.open("StreamComplete", request.model)
        failure: BaseException | None = None
        try:
            await _send_request_id(context, scope.record.request_id)
            plan = await self._prepare(request, scope, context)
            # aclosing: a cancelled call must close the upstream response
            # now, not whenever a generator happens to be collected.
            async with contextlib.aclosing(
                self._dispatcher.stream(request, plan, _deadline(context), scope.record)
            ) as events:
                async for event in events:
                    if event.HasField("done"):
                        scope.answered(event.done, self._calls.prices)
                    else:
                        scope.first_output()
                    yield event
        except GatewayError as error:
            failure = error
            await _abort(
                context,
                error,
                scope.record.request_id,
                authenticated=scope.record.authenticated,
            )
        except (asyncio.CancelledError, GeneratorExit) as cancelled:
            failure = (
                asyncio.CancelledError() if isinstance(cancelled, GeneratorExit) else cancelled
            )
            raise
        except Exception as exc:  # noqa: BLE001  # any bug becomes INTERNAL, never a traceback
            failure = exc
            await _abort_internal(context, "StreamComplete", scope.record.request_id)
        finally:
            self._calls.close(scope, failure, context)

    async def ListModels(
        self,
        request: pb.ListModelsRequest,
        context: grpc.aio.ServicerContext[pb.ListModelsRequest, pb.ListModelsResponse],
    ) -> pb.ListModelsResponse:
        authenticated = False
        try:
            await self._calls.authenticate_only(context.invocation_metadata() or ())
            authenticated = True
            remaining = context.time_remaining()
            # Leave a little of the caller's deadline for the reply itself.
            within = 10.0 if remaining is None else max(0.01, min(10.0, remaining - 0.05))
            return await self._catalog.list_models(request.provider, within)
        except GatewayError as error:
            await _abort(context, error, None, authenticated=authenticated)
        except Exception:  # noqa: BLE001  # any bug becomes INTERNAL, never a traceback
            await _abort_internal(context, "ListModels", None)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def GetUsage(
        self,
        request: pb.GetUsageRequest,
        context: grpc.aio.ServicerContext[pb.GetUsageRequest, pb.GetUsageResponse],
    ) -> pb.GetUsageResponse:
        authenticated = False
        try:
            key = await self._calls.authenticate_only(context.invocation_metadata() or ())
            authenticated = True
            if self._usage is None:
                raise GatewayError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    pb.ERROR_REASON_INTERNAL,
                    "this gateway keeps no usage ledger",
                )
            with state_errors():
                return await self._usage.get_usage(request, key)
        except GatewayError as error:
            await _abort(context, error, None, authenticated=authenticated)
        except Exception:  # noqa: BLE001  # any bug becomes INTERNAL, never a traceback
            await _abort_internal(context, "GetUsage", None)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def _prepare(
        self, request: AnyCompletionRequest, scope: CallScope, context: _AnyContext
    ) -> Plan:
        # Who is calling comes first: a caller without a key learns nothing else.
        await self._calls.authenticate(scope, context.invocation_metadata() or ())
        violations = validate(request, self._max_request_bytes)
        if violations:
            raise invalid_request(violations)
        plan = self._router.resolve(request.model)
        self._dispatcher.check(request, plan)
        await self._calls.admit(scope, request, plan)
        return plan


async def _send_request_id(context: _AnyContext, request_id: str) -> None:
    await context.send_initial_metadata(((REQUEST_ID_HEADER, request_id),))


def _deadline(context: _AnyContext) -> float | None:
    """The caller's deadline on the event loop's clock, if it set one."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


async def _abort(
    context: _AnyContext, error: GatewayError, request_id: str | None, *, authenticated: bool
) -> None:
    """End the call with `error`; `authenticated`: the caller was let in
    (lines about callers who were not are sampled)."""
    if request_id is not None:
        error.metadata["requestId"] = request_id
    _failures.info(error.code.name, "call failed: %s", error, sampled=not authenticated)
    if context.cancelled():
        # The caller has gone: no status can reach it, and sending one anyway
        # only makes gRPC log an ExecuteBatchError.
        raise asyncio.CancelledError
    # The status's trailers replace any set before, so the id travels in them.
    await context.abort_with_status(error.to_rpc_status(request_id))


async def _abort_internal(context: _AnyContext, method: str, request_id: str | None) -> None:
    # The traceback stays in our logs; the caller gets an id to quote.
    request_id = request_id or new_request_id()
    logger.exception("%s failed unexpectedly (request id %s)", method, request_id)
    error = GatewayError(
        grpc.StatusCode.INTERNAL,
        pb.ERROR_REASON_INTERNAL,
        f"internal gateway error; quote request id {request_id} to the operator",
        metadata={"requestId": request_id},
    )
    await context.abort_with_status(error.to_rpc_status(request_id))
