"""Carrying one validated call to an answer: targets, retries, breakers, limits.

A call follows its plan's routes in order. On each route it is counted
against the provider's concurrency limit, passes the model's circuit
breaker (told whether the call could move to another route if refused), and
is retried on transient failures within the retry policy and budget. A failure whose reason the plan falls back on moves it to the next
route. All of it happens only before the first event reached the caller:
after that, a retry or a fallback would repeat output.

A routed call (`route/<name>`, its plan carrying the decision) falls back the
same way, with one addition: a target that answers that the prompt exceeds
its context window sends the call, once, to the first later target with a
larger known window (escalation), whatever the entry falls back on. Its
answer carries the decision, with the targets tried and passed over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from llmgateway.server.config import CircuitSettings
from llmgateway.server.errors import GatewayError, invalid_request, reason_name
from llmgateway.server.observability.observe import CallRecord
from llmgateway.server.resilience.circuit import Admission, CircuitBreaker, Circuits
from llmgateway.server.resilience.retry import (
    RETRYABLE,
    RetryBudget,
    RetryPolicy,
    delay_before_retry,
)
from llmgateway.server.routing.capabilities import SkipId, breaker_skip, needs_of
from llmgateway.server.routing.decide import Skip
from llmgateway.server.routing.router import gateway_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import routing_pb2 as rpb

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, Callable, Iterator, Mapping

    from llmgateway.server.providers.core import UpstreamProvider
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest
    from llmgateway.server.routing.decide import RouteDecision
    from llmgateway.server.routing.router import Plan, Route

logger = logging.getLogger(__name__)

# A timeout this close to the caller's own deadline is the caller's choice,
# not a sign of a sick provider.
_DEADLINE_SLACK = 0.15
_NO_PROBE = Admission()
_ALWAYS_FALL_BACK_ON = frozenset(
    {pb.ERROR_REASON_INVALID_REQUEST, pb.ERROR_REASON_UPSTREAM_CIRCUIT_OPEN}
)
_CONTEXT_LENGTH = pb.ERROR_REASON_UPSTREAM_CONTEXT_LENGTH_EXCEEDED


@dataclass(slots=True)
class _Journey:
    """What one call went through: upstream requests made, targets passed over."""

    plan: Plan
    record: CallRecord
    request: AnyCompletionRequest
    passed_over: list[str] = field(default_factory=list)
    # Routed calls only: the targets passed over at run time (failed, or
    # jumped over by an escalation), and the target whose context window the
    # prompt exceeded when the call escalated.
    runtime: list[Skip] = field(default_factory=list)
    escalated_from: str = ""
    # What an escalation jumps over, reported after the target that failed.
    _jumped: list[Skip] = field(default_factory=list)
    # Once escalating: the route whose window the prompt exceeded, that
    # window (None when unknown) and the size a later target must exceed.
    _exceeded: tuple[Route, int | None, int] | None = None

    @property
    def decision(self) -> RouteDecision | None:
        """Why a routed call's plan is what it is; None for a model or alias."""
        return self.plan.decision

    def attempt_failed(self, provider: UpstreamProvider, error: GatewayError) -> None:
        self.record.upstream_errors.append((provider.provider_id, reason_name(error.reason)))

    def attempt(self) -> None:
        # Counted as it happens: a call cut short still says it went upstream.
        self.record.attempts += 1

    def trying(self, provider: UpstreamProvider, route: Route) -> None:
        # What the record says until an answer names the model that served:
        # a call cut short is still charged to the target it was on.
        self.record.provider = provider.provider_id
        self.record.served_model = gateway_model_name(route.provider, route.upstream_model)

    @property
    def attempts(self) -> int:
        """Upstream requests made so far, across every target."""
        return self.record.attempts

    def served(self, index: int) -> None:
        self.record.fallbacks = index

    def may_fall_back(self, index: int, error: GatewayError) -> bool:
        if index + 1 >= len(self.plan.routes):
            return False
        # A target that cannot take this request (a provider-specific limit)
        # does not stop a later one that can; nor does one its open circuit
        # skipped (no request was made, and the breaker refuses only calls that
        # have somewhere else to go: it must not end a chain that would go on).
        return error.reason in self.plan.fallback_on or error.reason in _ALWAYS_FALL_BACK_ON

    def next_index(self, index: int, error: GatewayError) -> int | None:
        """The plan route to try after route `index` failed with `error`, or
        None to end the call with it. Models and aliases: the next route, when
        the plan falls back on the reason. Routed calls: the same, except that
        a context-length failure escalates, once, to the first later route
        whose known window is larger than the failed one's (or, when that is
        unknown, than the estimated prompt and answer), and never to an equal
        or smaller window; after it, a fallback also skips such windows."""
        decision = self.decision
        if decision is None or error.reason != _CONTEXT_LENGTH:
            following = index + 1 if self.may_fall_back(index, error) else None
            if following is None or decision is None or not self.escalated_from:
                return following
            # After an escalation the prompt is known to exceed the window it
            # escalated from: a fallback goes on only to a target known to be
            # larger, never back to one the prompt cannot fit.
            return self._larger_from(following)
        if self.escalated_from:
            return None  # bounded: once
        windows = decision.windows
        failed_window = windows[index] if index < len(windows) else None
        floor = failed_window if failed_window is not None else needs_of(self.request).total_tokens
        self._exceeded = (self.plan.routes[index], failed_window, floor)
        later = self._larger_from(index + 1)
        if later is not None:
            self.escalated_from = self.plan.routes[index].target
        return later

    def _larger_from(self, start: int) -> int | None:
        """The first plan route from `start` whose known window is larger
        than the one the prompt exceeded, noting the routes jumped over; None
        (nothing noted) when there is none."""
        assert self._exceeded is not None  # noqa: S101  # set before an escalation
        failed, failed_window, floor = self._exceeded
        windows = self.plan.decision.windows if self.plan.decision is not None else ()
        routes = self.plan.routes
        for later in range(start, len(routes)):
            window = windows[later] if later < len(windows) else None
            if window is not None and window > floor:
                for skipped in range(start, later):
                    self._jumped.append(
                        _jumped_over(
                            routes[skipped],
                            windows[skipped] if skipped < len(windows) else None,
                            failed,
                            failed_window,
                        )
                    )
                return later
        return None

    def pass_over(self, route: Route, error: GatewayError) -> None:
        self.passed_over.append(f"{route.target}: {reason_name(error.reason)}")
        if self.decision is not None:
            self.runtime.append(_failed(route, error))
            self.runtime.extend(self._jumped)
            self._jumped.clear()
        logger.info(
            "%s: target %s failed (%s); falling back",
            route.requested,
            route.target,
            reason_name(error.reason),
        )

    def answered(self, route: Route, explain: bool) -> rpb.RoutingDecision | None:
        """A routed call's decision, as its answer reports it (None for a
        model or alias); the record learns where it ended."""
        decision = self.decision
        if decision is None:
            return None
        self._record_route()
        self.record.route_target = route.target
        return decision.to_proto(
            chosen=route.target,
            runtime=self.runtime,
            escalated_from=self.escalated_from,
            explain=explain,
        )

    def _record_route(self) -> None:
        decision = self.decision
        assert decision is not None  # noqa: S101  # callers checked
        skips = (*decision.passed_over, *self.runtime)
        self.record.escalated = bool(self.escalated_from)
        self.record.route_skips = len(skips)
        self.record.route_skip_ids = tuple(skip.id for skip in skips)

    def final(self, route: Route, error: GatewayError) -> GatewayError:
        """`error`, annotated with the journey, to report to the caller."""
        self.served(len(self.passed_over))
        decision = self.decision
        if decision is not None:
            self._record_route()
            error.metadata["route"] = decision.route
            error.metadata["task"] = decision.task.value
            if self.escalated_from:
                error.metadata["escalatedFrom"] = self.escalated_from
        if self.attempts > 1:
            error.metadata["attempts"] = str(self.attempts)
        # A routed call names its target even when the decision left only
        # one: which model a route picked is not in the caller's request.
        if len(self.plan.routes) > 1 or decision is not None:
            error.metadata["target"] = route.target
        if self.passed_over:
            error.metadata["fallbacks"] = str(len(self.passed_over))
            error.metadata["tried"] = "; ".join(self.passed_over)
            error.message += (
                f" (the last of {len(self.passed_over) + 1} targets of "
                f"{route.requested!r}; earlier: {'; '.join(self.passed_over)})"
            )
        return error


def _failed(route: Route, error: GatewayError) -> Skip:
    """A routed call's target that was tried (or refused by its breaker) and
    fell back."""
    if error.reason == pb.ERROR_REASON_UPSTREAM_CIRCUIT_OPEN:
        skip = breaker_skip(gateway_model_name(route.provider, route.upstream_model))
        return Skip(route.target, rpb.SKIP_REASON_CIRCUIT_OPEN, skip.message, skip.id)
    return Skip(route.target, rpb.SKIP_REASON_FAILED, reason_name(error.reason), "failed")


def _jumped_over(
    route: Route, window: int | None, failed: Route, failed_window: int | None
) -> Skip:
    """A target an escalation passed over: its window is unknown, or not
    larger than the one the prompt exceeded."""
    exceeded = (
        f"{failed.target}'s {failed_window:,}"
        if failed_window is not None
        else "the estimated prompt and answer"
    )
    mine = "unknown" if window is None else f"{window:,} tokens"
    return Skip(
        route.target,
        rpb.SKIP_REASON_CONTEXT_WINDOW,
        f"escalating past it: its window ({mine}) is not known to be larger than {exceeded}",
        SkipId.CONTEXT_WINDOW.value,
    )


class Dispatcher:
    """Runs calls along their plans for one worker process."""

    def __init__(
        self,
        providers: Mapping[common.Provider.ValueType, UpstreamProvider],
        *,
        retries: RetryPolicy | None = None,
        max_concurrent_upstream: int = 1000,
        circuit: CircuitSettings | None = None,
        on_circuit_change: Callable[[str, bool], None] | None = None,
    ) -> None:
        self._providers = providers
        self._retries = retries or RetryPolicy()
        self._budgets = {kind: RetryBudget() for kind in providers}
        self._max_in_flight = max_concurrent_upstream
        self._in_flight = dict.fromkeys(providers, 0)
        # on_circuit_change(provider group, serving): a provider as a whole
        # started or stopped failing.
        self.circuits = Circuits(
            circuit or CircuitSettings(),
            [name for provider in providers.values() for name in provider.circuit_names],
            on_provider_change=on_circuit_change,
        )

    def check(self, request: AnyCompletionRequest, plan: Plan) -> None:
        """Refuse before any upstream byte what a one-target plan cannot serve.
        (A chain checks each target when it gets there, so a later target may
        serve what an earlier one cannot.)"""
        if len(plan.routes) == 1:
            self._provider_for(request, plan.routes[0])

    async def complete(
        self,
        request: AnyCompletionRequest,
        plan: Plan,
        deadline: float | None,
        record: CallRecord | None = None,
    ) -> pb.CompleteResponse:
        """The first answer any route of `plan` gives; `record` learns the journey."""
        journey = _Journey(plan, record or CallRecord("", ""), request)
        index: int | None = 0
        while index is not None:
            route = plan.routes[index]
            has_next = self._a_later_route_may_take(request, plan, index)
            try:
                provider = self._provider_for(request, route)
                journey.trying(provider, route)
                with self._admitted(route):
                    response = await self._complete_on(
                        provider, request, route, deadline, journey, has_next=has_next
                    )
            except GatewayError as error:
                following = journey.next_index(index, error)
                if following is None:
                    raise journey.final(route, error) from None
                journey.pass_over(route, error)
                index = following
                continue
            # Targets failed or refused by their breaker (as many as `index`
            # for a model or alias; an escalation also jumps over targets it
            # never tried).
            fallbacks = len(journey.passed_over)
            journey.served(fallbacks)
            response.attempts = journey.attempts
            response.fallbacks = fallbacks
            response.zai_endpoint = provider.served_endpoint(request, route)
            decision = journey.answered(route, request.routing.explain)
            if decision is not None:
                response.routing.CopyFrom(decision)
            return response
        raise AssertionError("unreachable: the last route raises or returns")  # pragma: no cover

    async def stream(
        self,
        request: AnyCompletionRequest,
        plan: Plan,
        deadline: float | None,
        record: CallRecord | None = None,
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        """The events of the first route of `plan` that starts answering;
        `record` learns the journey."""
        journey = _Journey(plan, record or CallRecord("", ""), request)
        index: int | None = 0
        while index is not None:
            route = plan.routes[index]
            has_next = self._a_later_route_may_take(request, plan, index)
            started = False
            try:
                provider = self._provider_for(request, route)
                journey.trying(provider, route)
                endpoint = provider.served_endpoint(request, route)
                with self._admitted(route):
                    async with contextlib.aclosing(
                        self._stream_on(
                            provider, request, route, deadline, journey, has_next=has_next
                        )
                    ) as events:
                        async for event in events:
                            started = True
                            if event.HasField("done"):
                                fallbacks = len(journey.passed_over)  # as in complete()
                                journey.served(fallbacks)
                                event.done.attempts = journey.attempts
                                event.done.fallbacks = fallbacks
                                event.done.zai_endpoint = endpoint
                                decision = journey.answered(route, request.routing.explain)
                                if decision is not None:
                                    event.done.routing.CopyFrom(decision)
                            yield event
            except GatewayError as error:
                # Once output reached the caller, nothing may move the call.
                following = None if started else journey.next_index(index, error)
                if following is None:
                    raise journey.final(route, error) from None
                journey.pass_over(route, error)
                index = following
                continue
            return

    async def _complete_on(
        self,
        provider: UpstreamProvider,
        request: AnyCompletionRequest,
        route: Route,
        deadline: float | None,
        journey: _Journey,
        *,
        has_next: bool,
    ) -> pb.CompleteResponse:
        attempt = 1
        failed: GatewayError | None = None
        while True:
            breaker = self._breaker(provider, request, route)
            admission = self._admit(breaker, route, has_fallback=has_next, retrying=failed)
            journey.attempt()
            try:
                response = await provider.complete(request, route, deadline)
            except GatewayError as error:
                failed = error
                journey.attempt_failed(provider, error)
                self._judge(breaker, admission, error, deadline)
                await self._before_retry(route, attempt, error, deadline, has_next=has_next)
                attempt += 1
                continue
            except BaseException:
                breaker.abandon(admission)
                raise
            breaker.record(admission, None)
            self._budgets[route.provider].record_success()
            return response

    async def _stream_on(
        self,
        provider: UpstreamProvider,
        request: AnyCompletionRequest,
        route: Route,
        deadline: float | None,
        journey: _Journey,
        *,
        has_next: bool,
    ) -> AsyncGenerator[pb.StreamCompleteResponse, None]:
        attempt = 1
        failed: GatewayError | None = None
        while True:
            breaker = self._breaker(provider, request, route)
            admission: Admission | None = self._admit(
                breaker, route, has_fallback=has_next, retrying=failed
            )
            journey.attempt()
            started = False
            try:
                async with contextlib.aclosing(provider.stream(request, route, deadline)) as events:
                    async for event in events:
                        if admission is not None:
                            # The upstream is answering: that is the verdict on
                            # its health, however long the stream runs.
                            breaker.record(admission, None)
                            admission = None
                        started = True
                        yield event
            except GatewayError as error:
                failed = error
                journey.attempt_failed(provider, error)
                # A stream that broke after it began answering counts as a
                # failure too: a model whose streams keep breaking reads as
                # failing half its calls.
                self._judge(breaker, admission or _NO_PROBE, error, deadline)
                if started:
                    raise
                await self._before_retry(route, attempt, error, deadline, has_next=has_next)
                attempt += 1
                continue
            except BaseException:
                if admission is not None:
                    breaker.abandon(admission)
                raise
            if admission is not None:
                breaker.record(admission, None)
            self._budgets[route.provider].record_success()
            return

    def _provider_for(self, request: AnyCompletionRequest, route: Route) -> UpstreamProvider:
        provider = self._providers[route.provider]
        if not provider.configured:
            raise provider.not_configured_error(route)
        violations = provider.check(request)
        if violations:
            raise invalid_request(violations)
        return provider

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

    def _a_later_route_may_take(
        self, request: AnyCompletionRequest, plan: Plan, index: int
    ) -> bool:
        """Whether a route after `index` could take the call if this one refuses
        it: its provider has a key and accepts the request, and its breaker would
        let a last-resort call through. Only then may an open circuit here send
        the call on; otherwise a chain of open circuits (one answering half its
        calls, the next dead) would refuse a call the first would have served."""
        for route in plan.routes[index + 1 :]:
            provider = self._providers[route.provider]
            if not provider.configured or provider.check(request):
                continue
            breaker = self.circuits.existing(
                provider.circuit_name(request, route), route.upstream_model
            )
            if breaker is None or breaker.takes_a_last_resort_call():
                return True
        return False

    def _breaker(
        self, provider: UpstreamProvider, request: AnyCompletionRequest, route: Route
    ) -> CircuitBreaker:
        """The breaker of what may fail on its own: this model on this provider
        (and Z.AI endpoint)."""
        return self.circuits.breaker(provider.circuit_name(request, route), route.upstream_model)

    @staticmethod
    def _admit(
        breaker: CircuitBreaker,
        route: Route,
        *,
        has_fallback: bool,
        retrying: GatewayError | None,
    ) -> Admission:
        """Leave from the breaker, or the error to end this route with: a retry
        the breaker refuses ends with the failure it would have retried (what
        the caller needs to know), a first attempt with UPSTREAM_CIRCUIT_OPEN."""
        admitted = breaker.admit(has_fallback=has_fallback)
        if isinstance(admitted, Admission):
            return admitted
        if retrying is not None:
            raise retrying
        group = breaker.name.split("/", 1)[0]
        why = (
            "another target of the chain takes the call"
            if has_fallback
            else "it answers too few calls to be worth trying"
        )
        raise GatewayError(
            grpc.StatusCode.UNAVAILABLE,
            pb.ERROR_REASON_UPSTREAM_CIRCUIT_OPEN,
            f"{breaker.name} is failing ({breaker.describe()}); {why}, so the gateway "
            f"skips it for {max(admitted, 0.0):.3g} s more and made no request "
            "(circuit breaker open)",
            metadata={"provider": group, "circuit": breaker.name, "model": route.requested},
            retry_after=max(admitted, 0.001),
        )

    @staticmethod
    def _judge(
        breaker: CircuitBreaker,
        admission: Admission,
        error: GatewayError,
        deadline: float | None,
    ) -> None:
        """Tell the breaker what `error` says about the provider's health."""
        loop_time = asyncio.get_running_loop().time()
        if (
            error.reason == pb.ERROR_REASON_UPSTREAM_TIMEOUT
            and deadline is not None
            and loop_time >= deadline - _DEADLINE_SLACK
        ):
            breaker.abandon(admission)
            return
        breaker.record(admission, error.reason)

    async def _before_retry(
        self,
        route: Route,
        attempt: int,
        error: GatewayError,
        deadline: float | None,
        *,
        has_next: bool,
    ) -> None:
        """Wait before the next attempt on this route, or raise `error` if there
        must be none. With a fallback waiting, an upstream that asked for time
        (Retry-After) is not waited for."""
        budget = self._budgets[route.provider]
        if error.reason in RETRYABLE:
            budget.record_failure()
        if has_next and error.retry_after is not None:
            raise error
        remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
        delay = delay_before_retry(self._retries, attempt, error, remaining)
        if delay is None or not budget.allows_retry:
            raise error
        logger.info(
            "attempt %d for %s on %s failed (%s); retrying in %.2f s",
            attempt,
            route.requested,
            route.target,
            reason_name(error.reason),
            delay,
        )
        await asyncio.sleep(delay)
