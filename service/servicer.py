"""The CompletionService handlers: validate, route, call the provider, report errors.

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

from service.errors import GatewayError, invalid_request, reason_name
from service.retry import RETRYABLE, RetryBudget, RetryPolicy, delay_before_retry
from service.validation import validate

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping

    from llmgateway.v1 import completion_pb2 as common

    from service.catalog import Catalog
    from service.providers.core import OpenAICompatibleProvider
    from service.providers.wire import AnyCompletionRequest
    from service.routing import Route, Router

    _AnyContext = grpc.aio.ServicerContext[Any, Any]

logger = logging.getLogger(__name__)


class CompletionServicer(pb_grpc.CompletionServiceServicer):
    """llmgateway.v1.CompletionService."""

    def __init__(
        self,
        router: Router,
        providers: Mapping[common.Provider.ValueType, OpenAICompatibleProvider],
        catalog: Catalog,
        *,
        max_request_bytes: int,
        retries: RetryPolicy | None = None,
        max_concurrent_upstream: int = 1000,
    ) -> None:
        self._router = router
        self._providers = providers
        self._catalog = catalog
        self._max_request_bytes = max_request_bytes
        self._retries = retries or RetryPolicy()
        self._budgets = {kind: RetryBudget() for kind in providers}
        self._max_in_flight = max_concurrent_upstream
        self._in_flight = dict.fromkeys(providers, 0)

    async def Complete(
        self,
        request: pb.CompleteRequest,
        context: grpc.aio.ServicerContext[pb.CompleteRequest, pb.CompleteResponse],
    ) -> pb.CompleteResponse:
        try:
            route, provider = self._prepare(request)
            with self._admitted(route):
                return await self._complete(request, route, provider, _deadline(context))
        except GatewayError as error:
            await _abort(context, error)
        except Exception:  # noqa: BLE001  # any bug becomes INTERNAL, never a traceback
            await _abort_internal(context, "Complete")
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def _complete(
        self,
        request: pb.CompleteRequest,
        route: Route,
        provider: OpenAICompatibleProvider,
        deadline: float | None,
    ) -> pb.CompleteResponse:
        attempt = 1
        while True:
            try:
                response = await provider.complete(request, route, deadline)
            except GatewayError as error:
                await self._before_retry(route, attempt, error, deadline)
                attempt += 1
                continue
            self._budgets[route.provider].record_success()
            response.attempts = attempt
            return response

    async def StreamComplete(
        self,
        request: pb.StreamCompleteRequest,
        context: grpc.aio.ServicerContext[pb.StreamCompleteRequest, pb.StreamCompleteResponse],
    ) -> AsyncIterator[pb.StreamCompleteResponse]:
        try:
            route, provider = self._prepare(request)
            with self._admitted(route):
                # aclosing: a cancelled call must close the upstream response
                # now, not whenever a generator happens to be collected.
                async with contextlib.aclosing(
                    self._stream(request, route, provider, _deadline(context))
                ) as events:
                    async for event in events:
                        yield event
        except GatewayError as error:
            await _abort(context, error)
        except Exception:  # noqa: BLE001  # any bug becomes INTERNAL, never a traceback
            await _abort_internal(context, "StreamComplete")

    async def _stream(
        self,
        request: pb.StreamCompleteRequest,
        route: Route,
        provider: OpenAICompatibleProvider,
        deadline: float | None,
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        attempt = 1
        while True:
            started = False
            try:
                async with contextlib.aclosing(provider.stream(request, route, deadline)) as events:
                    async for event in events:
                        started = True
                        if event.HasField("done"):
                            event.done.attempts = attempt
                        yield event
            except GatewayError as error:
                if started:
                    # Output reached the caller: a retry would repeat it.
                    if attempt > 1:
                        error.metadata["attempts"] = str(attempt)
                    raise
                await self._before_retry(route, attempt, error, deadline)
                attempt += 1
                continue
            self._budgets[route.provider].record_success()
            return

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

    @contextlib.contextmanager
    def _admitted(self, route: Route) -> Iterator[None]:
        """Count the call against its provider's limit, or refuse it now: a
        bounded refusal beats an unbounded queue in front of a slow provider."""
        if self._in_flight[route.provider] >= self._max_in_flight:
            raise GatewayError(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                pb.ERROR_REASON_GATEWAY_BUSY,
                f"the gateway has {self._max_in_flight} calls in flight to this provider, its "
                "limit; retry shortly",
                metadata={"model": route.requested, "limit": str(self._max_in_flight)},
                retry_after=1.0,
            )
        self._in_flight[route.provider] += 1
        try:
            yield
        finally:
            self._in_flight[route.provider] -= 1

    async def _before_retry(
        self, route: Route, attempt: int, error: GatewayError, deadline: float | None
    ) -> None:
        """Wait before the next attempt, or raise `error` if there must be none."""
        budget = self._budgets[route.provider]
        if error.reason in RETRYABLE:
            budget.record_failure()
        remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
        delay = delay_before_retry(self._retries, attempt, error, remaining)
        if delay is None or not budget.allows_retry:
            if attempt > 1:
                error.metadata["attempts"] = str(attempt)
            raise error
        logger.info(
            "attempt %d for %s failed (%s); retrying in %.2f s",
            attempt,
            route.requested,
            reason_name(error.reason),
            delay,
        )
        await asyncio.sleep(delay)

    def _prepare(self, request: AnyCompletionRequest) -> tuple[Route, OpenAICompatibleProvider]:
        violations = validate(request, self._max_request_bytes)
        if violations:
            raise invalid_request(violations)
        route = self._router.resolve(request.model)
        provider = self._providers[route.provider]
        if not provider.configured:
            raise provider.not_configured_error(route)
        violations = provider.check(request)
        if violations:
            raise invalid_request(violations)
        return route, provider


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
