"""The CompletionService handlers: validate, route, dispatch, report errors.

Handlers stay thin. Validation happens before the first upstream byte and
before the first yield, so bad input never produces a partial stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import TYPE_CHECKING, Any

import grpc
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

from service.errors import GatewayError, invalid_request
from service.validation import validate

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from service.catalog import Catalog
    from service.dispatch import Dispatcher
    from service.providers.wire import AnyCompletionRequest
    from service.routing import Plan, Router

    _AnyContext = grpc.aio.ServicerContext[Any, Any]

logger = logging.getLogger(__name__)


class CompletionServicer(pb_grpc.CompletionServiceServicer):
    """llmgateway.v1.CompletionService."""

    def __init__(
        self,
        router: Router,
        dispatcher: Dispatcher,
        catalog: Catalog,
        *,
        max_request_bytes: int,
    ) -> None:
        self._router = router
        self._dispatcher = dispatcher
        self._catalog = catalog
        self._max_request_bytes = max_request_bytes

    async def Complete(
        self,
        request: pb.CompleteRequest,
        context: grpc.aio.ServicerContext[pb.CompleteRequest, pb.CompleteResponse],
    ) -> pb.CompleteResponse:
        try:
            plan = self._prepare(request)
            return await self._dispatcher.complete(request, plan, _deadline(context))
        except GatewayError as error:
            await _abort(context, error)
        except Exception:  # noqa: BLE001  # any bug becomes INTERNAL, never a traceback
            await _abort_internal(context, "Complete")
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def StreamComplete(
        self,
        request: pb.StreamCompleteRequest,
        context: grpc.aio.ServicerContext[pb.StreamCompleteRequest, pb.StreamCompleteResponse],
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        try:
            plan = self._prepare(request)
            # aclosing: a cancelled call must close the upstream response
            # now, not whenever a generator happens to be collected.
            async with contextlib.aclosing(
                self._dispatcher.stream(request, plan, _deadline(context))
            ) as events:
                async for event in events:
                    yield event
        except GatewayError as error:
            await _abort(context, error)
        except Exception:  # noqa: BLE001  # any bug becomes INTERNAL, never a traceback
            await _abort_internal(context, "StreamComplete")

    async def ListModels(
        self,
        request: pb.ListModelsRequest,
        context: grpc.aio.ServicerContext[pb.ListModelsRequest, pb.ListModelsResponse],
    ) -> pb.ListModelsResponse:
        try:
            remaining = context.time_remaining()
            # Leave a little of the caller's deadline for the reply itself.
            within = 10.0 if remaining is None else max(0.01, min(10.0, remaining - 0.05))
            return await self._catalog.list_models(request.provider, within)
        except Exception:  # noqa: BLE001  # any bug becomes INTERNAL, never a traceback
            await _abort_internal(context, "ListModels")
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    def _prepare(self, request: AnyCompletionRequest) -> Plan:
        violations = validate(request, self._max_request_bytes)
        if violations:
            raise invalid_request(violations)
        plan = self._router.resolve(request.model)
        self._dispatcher.check(request, plan)
        return plan


def _deadline(context: _AnyContext) -> float | None:
    """The caller's deadline on the event loop's clock, if it set one."""
    remaining = context.time_remaining()
    if remaining is None:
        return None
    return asyncio.get_running_loop().time() + remaining


async def _abort(context: _AnyContext, error: GatewayError) -> None:
    logger.info("call failed: %s", error)
    await context.abort_with_status(error.to_rpc_status())


async def _abort_internal(context: _AnyContext, method: str) -> None:
    # The traceback stays in our logs; the caller gets an id to quote.
    request_id = uuid.uuid4().hex[:16]
    logger.exception("%s failed unexpectedly (request id %s)", method, request_id)
    error = GatewayError(
        grpc.StatusCode.INTERNAL,
        pb.ERROR_REASON_INTERNAL,
        f"internal gateway error; quote request id {request_id} to the operator",
        metadata={"requestId": request_id},
    )
    await context.abort_with_status(error.to_rpc_status())
