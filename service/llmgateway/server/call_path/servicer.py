"""The CompletionService handlers: validate, route, dispatch, report errors.

Handlers stay thin. Validation happens before the first upstream byte and
before the first yield, so bad input never produces a partial stream.
A `route/<name>` call is decided after authentication (the decision applies
the caller key's model patterns) and before admission (the reservation is
priced at the dearest target the decision left eligible).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any

import grpc

from llmgateway.server.call_path.calls import new_request_id, state_errors
from llmgateway.server.call_path.validation import validate
from llmgateway.server.errors import (
    REQUEST_ID_HEADER,
    FieldViolation,
    GatewayError,
    invalid_request,
)
from llmgateway.server.observability import logs
from llmgateway.server.routing.decide import decide
from llmgateway.server.routing.router import is_route_name
from llmgateway.server.routing.sticky import sticky_key
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from llmgateway.server.call_path.calls import Calls, CallScope
    from llmgateway.server.call_path.dispatch import Dispatcher
    from llmgateway.server.call_path.usage import UsageReader
    from llmgateway.server.config import RoutingSettings
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest
    from llmgateway.server.routing.catalog import Catalog
    from llmgateway.server.routing.decide import RouteDecision, TargetView
    from llmgateway.server.routing.router import Plan, Router
    from llmgateway.server.routing.routes import RouteTable
    from llmgateway.server.routing.sticky import StickySessions
    from llmgateway.server.state.keys import CallerKey

    _AnyContext = grpc.aio.ServicerContext[Any, Any]

logger = logging.getLogger(__name__)
# A flood of calls refused before the caller was let in gets one "call
# failed" line a second per status, and a count.
_failures = logs.SampledLog(logger)


# What the inner request's field paths start with in ExplainRoute's errors.
_EXPLAINED = "request."
_NOT_A_ROUTE = (
    "ExplainRoute explains route/<name> models; a model or alias named directly is served as named"
)


def flush_sampled_logs() -> None:
    """Write the counts of refusal lines held back (at shutdown)."""
    _failures.flush()


@dataclasses.dataclass(frozen=True, slots=True)
class Planner:
    """Which targets a call may take: a model's or alias's plan as the router
    has it, or a route's decision. Reads the sticky sessions, never writes
    them (the servicer does, after a routed call succeeded)."""

    router: Router
    routes: RouteTable
    view: TargetView
    sticky: StickySessions | None
    routing: RoutingSettings

    def plan_for(self, request: AnyCompletionRequest, key: CallerKey | None) -> Plan:
        """The plan for a validated request: a named model or alias goes where
        it names, whatever `routing` says (its plan carries no decision); a
        `route/<name>` call goes where the decision sends it."""
        if not is_route_name(request.model):
            return self.router.resolve(request.model)
        decision = self.decide(request, key)
        return dataclasses.replace(decision.plan, decision=decision)

    def decide(self, request: AnyCompletionRequest, key: CallerKey | None) -> RouteDecision:
        """The decision for a `route/<name>` request; UNKNOWN_MODEL for a
        route that is not configured, or the decision's own refusals."""
        route = self.routes.resolve(request.model)
        return decide(
            request, route, key=key, view=self.view, sticky=self.sticky, settings=self.routing
        )


class CompletionServicer(pb_grpc.CompletionServiceServicer):
    """llmgateway.v1.CompletionService."""

    def __init__(
        self,
        planner: Planner,
        dispatcher: Dispatcher,
        catalog: Catalog,
        calls: Calls,
        *,
        max_request_bytes: int,
        usage: UsageReader | None = None,
    ) -> None:
        self._planner = planner
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
            self._served(request, scope)
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
                        self._served(request, scope)
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

    async def ExplainRoute(
        self,
        request: pb.ExplainRouteRequest,
        context: grpc.aio.ServicerContext[pb.ExplainRouteRequest, pb.ExplainRouteResponse],
    ) -> pb.ExplainRouteResponse:
        """The decision a `route/<name>` call would get now, with no upstream
        request, no reservation, no ledger row and no call metrics (like
        ListModels). The sticky sessions are read, never written."""
        authenticated = False
        try:
            key = await self._calls.authenticate_only(context.invocation_metadata() or ())
            authenticated = True
            inner = request.request
            violations = validate(inner, self._max_request_bytes, prefix=_EXPLAINED)
            if violations:
                raise invalid_request(violations)
            if not is_route_name(inner.model):
                raise GatewayError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    pb.ERROR_REASON_INVALID_REQUEST,
                    f"{_NOT_A_ROUTE} ({inner.model[:256]!r})",
                    field_violations=(FieldViolation(_EXPLAINED + "model", _NOT_A_ROUTE),),
                )
            try:
                decision = self._planner.decide(inner, key)
            except GatewayError as error:
                # The decision names the inner request's fields.
                error.field_violations = tuple(
                    FieldViolation(_EXPLAINED + v.field, v.description)
                    for v in error.field_violations
                )
                raise
            chosen = decision.plan.routes[0].target
            return pb.ExplainRouteResponse(decision=decision.to_proto(chosen=chosen, explain=True))
        except GatewayError as error:
            await _abort(context, error, None, authenticated=authenticated)
        except Exception:  # noqa: BLE001  # any bug becomes INTERNAL, never a traceback
            await _abort_internal(context, "ExplainRoute", None)
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
        started = time.perf_counter()
        try:
            plan = self._planner.plan_for(request, scope.key)
        except GatewayError:
            if self._planner.routes.get(request.model) is not None:
                # A configured route that could not decide (NO_ELIGIBLE_TARGET,
                # MODEL_NOT_ALLOWED) is still that route's failed call in the
                # ledger (`usage --by route`), not a call that named no route.
                scope.record.route = request.model
            raise
        if plan.decision is not None:
            scope.routed(plan.decision, (time.perf_counter() - started) * 1e6)
        else:
            scope.task_hint(request)
        self._dispatcher.check(request, plan)
        await self._calls.admit(scope, request, plan)
        return plan

    def _served(self, request: AnyCompletionRequest, scope: CallScope) -> None:
        """A routed call with a session answered: later turns of the session
        prefer the target that served (after a fallback or an escalation, the
        provider's prompt cache now lives there)."""
        sticky = self._planner.sticky
        session = request.routing.session_id
        record = scope.record
        if sticky is None or not session or not record.route or not record.route_target:
            return
        key_id = scope.key.id if scope.key is not None else None
        sticky.served(sticky_key(key_id, record.route, session), record.route_target)


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
