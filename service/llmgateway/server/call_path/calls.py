"""The bookkeeping around one call: its id, key, reservation, timings and record.

The servicer opens a `CallScope` per Complete/StreamComplete call. The scope
authenticates the caller, checks the model against the key, reserves against
the key's limits, notes the first output and the answer, and at the end
settles the reservation and hands the finished `CallRecord` to the observers
(ledger, metrics). None of it sees prompts or completions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

from llmgateway.server.call_path.access import Access, check_model
from llmgateway.server.errors import GatewayError, reason_name
from llmgateway.server.observability import logs
from llmgateway.server.observability.observe import CallObserver, CallRecord
from llmgateway.server.routing.decide import TASKS_BY_PROTO
from llmgateway.server.routing.router import OPENROUTER_PREFIX, PREFIXES
from llmgateway.server.state.db import StateUnavailableError
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence

    from llmgateway.server.observability.tracing import CallTrace, Tracing
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest
    from llmgateway.server.routing.decide import RouteDecision
    from llmgateway.server.routing.pricing import PriceBook
    from llmgateway.server.routing.router import Plan
    from llmgateway.server.state.keys import CallerKey
    from llmgateway.server.state.ledger import Ledger
    from llmgateway.server.state.limits import LimitStore, Reservation

logger = logging.getLogger(__name__)

# Output tokens assumed for a request without max_tokens, to size reservations.
DEFAULT_OUTPUT_ESTIMATE = 1024
# Cost reserved for a call whose model has no known price (settled to the
# reported cost afterwards).
UNKNOWN_PRICE_RESERVATION_USD = 0.05
# The provider label of records, metrics, logs and spans: the prefix of its
# model names without the slash.
_PROVIDER_IDS = {provider: prefix.rstrip("/") for provider, prefix in PREFIXES.items()}
# The ledger's task source for a task the caller named (RouteDecision's label too).
CALLER_TASK_SOURCE = "caller"


@contextlib.contextmanager
def state_errors() -> Iterator[None]:
    """A state database that cannot answer now is UNAVAILABLE to the caller
    (worth a retry), not an INTERNAL error. Not logged per call: the database
    layer says once (and reminds at intervals) that it is unavailable."""
    try:
        yield
    except StateUnavailableError:
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            pb.ERROR_REASON_GATEWAY_STATE_UNAVAILABLE,
            "the gateway's state store (database or Redis) is unavailable just now; retry shortly",
            retry_after=1.0,
        ) from None


def settlement(record: CallRecord, reservation: Reservation) -> tuple[int, float]:
    """Tokens and USD a finished call settles at. What it used, when known. A
    call the upstream may bill but whose use stays unknown (cut short after
    output began or while generating, or priced nowhere) keeps its estimate.
    A call that never went upstream, or that the upstream refused before any
    output, settles at nothing."""
    billable = record.attempts > 0 and (
        record.time_to_first_token is not None
        or record.status in ("OK", "CANCELLED", "DEADLINE_EXCEEDED")
    )
    used = record.prompt_tokens + record.completion_tokens
    tokens = used if used or not billable else reservation.tokens
    if record.cost_usd is not None:
        cost = record.cost_usd
    else:
        cost = reservation.cost_usd if billable else 0.0
    return tokens, cost


def deadline_passed(remaining: float | None, elapsed: float) -> bool:
    """Whether a call the caller's side cancelled, `elapsed` seconds in with
    `remaining` left of its deadline (None: it set none), was cut off by that
    deadline. The caller's gRPC library cancels at its own copy of the
    deadline, which runs ahead of ours by the time the request took to
    arrive (grpc-timeout is relative, counted from when the client sent it),
    so the cancellation often arrives just before our copy expires: within
    a tenth of the deadline (at least 20 ms, at most 1 s) is the deadline."""
    if remaining is None:
        return False
    return remaining <= min(1.0, max(0.02, 0.1 * (elapsed + remaining)))


def new_request_id() -> str:
    """A short random id for logs, metadata and the ledger: 16 hex digits.
    Straight from os.urandom: uuid4().hex[:16] cost several times more per
    call for the same 16 digits, one of them always "4" (the UUID version)."""
    return os.urandom(8).hex()


@dataclass(slots=True)
class CallScope:
    """One call in flight."""

    record: CallRecord
    started: float
    key: CallerKey | None = None
    reservation: Reservation | None = None
    # The call's span, when tracing is on.
    trace: CallTrace | None = None

    def routed(self, decision: RouteDecision, decision_us: float) -> None:
        """A `route/<name>` call was decided: the record says how (the
        dispatcher adds where it ended)."""
        record = self.record
        record.route = decision.route
        record.task = decision.task.value
        record.task_source = decision.task_source_label
        record.route_entry = decision.entry
        # Also a rule that fired below the threshold while the default served.
        record.route_rule = decision.rule
        record.sticky = decision.sticky
        record.route_skips = len(decision.passed_over)
        record.route_skip_ids = tuple(skip.id for skip in decision.passed_over)
        record.route_decision_us = decision_us

    def task_hint(self, request: AnyCompletionRequest) -> None:
        """A call naming a model or alias goes where it names, whatever its
        `routing` says; a task the caller set there is only its label in the
        ledger (source "caller")."""
        task = TASKS_BY_PROTO.get(request.routing.task)
        if task is not None:
            self.record.task = task.value
            self.record.task_source = CALLER_TASK_SOURCE

    def first_output(self) -> None:
        """The first content reached the caller."""
        if self.record.time_to_first_token is None:
            self.record.time_to_first_token = time.monotonic() - self.started

    def answered(self, answer: pb.CompleteResponse | pb.CompletionDone, prices: PriceBook) -> None:
        """The call's answer (or its final stream event) arrived. An answer
        without a cost is priced from the price book (every provider but
        OpenRouter, which reports its own, or else has it in its generation
        record: see `close`), on the answer too, so the caller sees it."""
        record = self.record
        record.served_model = answer.model
        record.provider = _PROVIDER_IDS.get(answer.provider, "")
        record.generation_id = answer.id
        provider = answer.provider
        usage = answer.usage if answer.HasField("usage") else None
        if usage is None:
            return
        if not usage.HasField("cost_usd") and provider != common.PROVIDER_OPENROUTER:
            price = prices.price(answer.model)
            if price is not None:
                usage.cost_usd = price.cost(
                    usage.prompt_tokens,
                    usage.completion_tokens,
                    usage.cached_tokens,
                    usage.cache_write_tokens,
                )
        record.prompt_tokens = usage.prompt_tokens
        record.completion_tokens = usage.completion_tokens
        record.cached_tokens = usage.cached_tokens
        record.cache_write_tokens = usage.cache_write_tokens
        record.reasoning_tokens = usage.reasoning_tokens
        record.cost_usd = usage.cost_usd if usage.HasField("cost_usd") else None


class Calls:
    """Opens and closes call scopes."""

    # Set by start_gateway when tracing is on (service/llmgateway/server/observability/tracing.py).
    tracing: Tracing | None = None

    def __init__(
        self,
        access: Access,
        limiter: LimitStore | None,
        prices: PriceBook,
        observers: Sequence[CallObserver] = (),
        *,
        ledger: Ledger | None = None,
        cost_lookup: Callable[[str], Awaitable[float | None]] | None = None,
    ) -> None:
        self._access = access
        self._limiter = limiter
        self.prices = prices
        self._observers = observers
        self._ledger = ledger
        # OpenRouter's generation record, for answers that came without a cost.
        self._cost_lookup = cost_lookup
        # Settling runs after the call's reply; strong references keep it alive.
        self._settling: set[asyncio.Task[None]] = set()

    def open(self, method: str, model: str) -> CallScope:
        """A scope for a call that just arrived."""
        record = CallRecord(
            request_id=new_request_id(),
            method=method,
            requested_model=model[:256],
            started_at=time.time(),
        )
        # Every log line of this call (this task) carries its request id.
        logs.REQUEST_ID.set(record.request_id)
        return CallScope(record, time.monotonic())

    async def authenticate(
        self, scope: CallScope, metadata: Iterable[tuple[str, str | bytes]]
    ) -> None:
        """Find the caller's key, or raise UNAUTHENTICATED."""
        if self.tracing is not None:
            scope.trace = self.tracing.start_call(scope.record, metadata)
        with state_errors():
            key = await self._access.authenticate(metadata)
        scope.key = key
        scope.record.authenticated = True
        if key is not None:
            scope.record.key_id, scope.record.key_name = key.id, key.name

    async def admit(self, scope: CallScope, request: AnyCompletionRequest, plan: Plan) -> None:
        """Check the model against the key, reserve against its limits; or
        raise the refusal. A routed plan's targets were checked against the
        key by the decision (a key that allows the route trusts its targets)."""
        key = scope.key
        if plan.decision is None:
            check_model(key, request.model)
        # OpenRouter's own fallback list can name other models: each must be allowed too.
        for slug in request.openrouter.models:
            check_model(key, OPENROUTER_PREFIX + slug)
        if key is not None and key.limited and self._limiter is not None:
            tokens, cost = self.estimate(request, plan)
            with state_errors():
                scope.reservation = await self._reserve(key, tokens, cost)
        if self._ledger is not None:
            # Recorded before it goes upstream, so no call the upstream may
            # bill is missing from the ledger if this process dies.
            reservation = scope.reservation
            with state_errors():
                await self._ledger.call_admitted(
                    scope.record, None if reservation is None else reservation.ledger_id
                )
        if scope.trace is not None:
            scope.trace.request(request)
        for observer in self._observers:
            observer.call_started(scope.record)

    async def _reserve(self, key: CallerKey, tokens: int, cost: float) -> Reservation:
        """Reserve; if the call is cancelled meanwhile, the reservation may still
        commit, so it is released (settled at nothing) once it has."""
        assert self._limiter is not None  # noqa: S101  # admit() checked
        limiter = self._limiter
        pending = asyncio.ensure_future(limiter.reserve(key, tokens, cost))
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            pending.add_done_callback(self._release_if_reserved)
            raise

    def _release_if_reserved(self, pending: asyncio.Future[Reservation]) -> None:
        if pending.cancelled() or pending.exception() is not None or self._limiter is None:
            return
        task = asyncio.get_running_loop().create_task(
            self._limiter.settle(pending.result(), 0, 0.0)
        )
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)

    async def authenticate_only(
        self, metadata: Iterable[tuple[str, str | bytes]]
    ) -> CallerKey | None:
        """The caller's key (None when open), for calls that reserve nothing."""
        with state_errors():
            return await self._access.authenticate(metadata)

    def estimate(self, request: AnyCompletionRequest, plan: Plan) -> tuple[int, float]:
        """Tokens and USD to reserve: the prompt at ~4 bytes a token plus the
        output allowed, priced at the dearest target of the plan."""
        prompt = max(1, request.ByteSize() // 4)
        output = (
            request.sampling.max_tokens
            if request.sampling.HasField("max_tokens")
            else DEFAULT_OUTPUT_ESTIMATE
        )
        models = [route.target.split("@", 1)[0] for route in plan.routes]
        models += [OPENROUTER_PREFIX + slug for slug in request.openrouter.models]
        costs = []
        for model in models:
            price = self.prices.price(model)
            costs.append(
                UNKNOWN_PRICE_RESERVATION_USD if price is None else price.cost(prompt, output)
            )
        return prompt + output, max(costs)

    def close(
        self,
        scope: CallScope,
        error: BaseException | None,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> None:
        """Record how the call ended; settle its reservation in the background."""
        record = scope.record
        record.latency = time.monotonic() - scope.started
        if isinstance(error, GatewayError):
            record.status, record.reason = error.code.name, reason_name(error.reason)
        elif isinstance(error, asyncio.CancelledError):
            expired = deadline_passed(context.time_remaining(), record.latency)
            record.status = "DEADLINE_EXCEEDED" if expired else "CANCELLED"
        elif error is not None:
            record.status, record.reason = "INTERNAL", "INTERNAL"
        needs_cost = (
            record.cost_usd is None
            and record.provider == "openrouter"
            and record.generation_id.startswith("gen-")
            and self._cost_lookup is not None
        )
        if needs_cost or (scope.reservation is not None and self._limiter is not None):
            task = asyncio.get_running_loop().create_task(
                self._after(scope.reservation, record, needs_cost=needs_cost)
            )
            self._settling.add(task)
            task.add_done_callback(self._settling.discard)
        for observer in self._observers:
            try:
                observer.call_finished(record)
            except Exception:
                logger.exception("a call observer failed")
        if scope.trace is not None:
            scope.trace.finish(record)
        elif self.tracing is not None:
            # Ended before authentication began (the caller left at once).
            self.tracing.start_call(record, ()).finish(record)

    async def _after(
        self, reservation: Reservation | None, record: CallRecord, *, needs_cost: bool
    ) -> None:
        """After the reply: find a missing cost, then settle the reservation."""
        try:
            if needs_cost and self._cost_lookup is not None:
                cost = await self._cost_lookup(record.generation_id)
                if cost is not None:
                    record.cost_usd = cost
                    if self._ledger is not None:
                        await self._ledger.amend_cost(record.request_id, cost)
                else:
                    logger.warning(
                        "no cost for generation %s: OpenRouter reported none inline and its "
                        "generation record did not appear",
                        record.generation_id,
                    )
        except Exception:
            logger.exception("finding the cost of call %s failed", record.request_id)
        if reservation is None or self._limiter is None:
            return
        try:
            await self._limiter.settle(reservation, *settlement(record, reservation))
        except Exception:
            logger.exception("settling call %s failed", record.request_id)

    async def aclose(self) -> None:
        """Wait for settlements (and cost look-ups) still running."""
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)
