"""Circuit breakers, after Envoy's outlier detection: skip a model that is failing,
and only where skipping it cannot make things worse.

A breaker guards what actually fails: one model on one provider (or Z.AI
endpoint), named `<group>/<model>` (`openrouter/openai/gpt-4o`,
`zai-coding/glm-4.7`, `openai/gpt-4o`, `groq/openai/gpt-oss-120b`,
`ollama/llama3.2`), so one flapping free model does not shut off the
provider's other models.

Closed: calls go through and their outcomes fill a sliding window of time
buckets. It opens (ejects the model) when the window holds at least
`failure_threshold` health failures and they are at least `failure_rate` of its
calls: a rate, not a run, so an upstream that fails now and then never trips
it. Open, for the ejection time (`cool_down` times the ejections in a row,
capped at `max_cool_down`, like Envoy's base_ejection_time): a call that has
another target to move to is refused at once, so it moves on without waiting
on the sick one. A call with nowhere else to go is refused only while the
model's success rate over the window is at or below `panic_success_rate` (the
panic rule): refusing an upstream that still answers a fair share would only
turn its successes into failures. So the breaker helps in two ways only:
failing fast on a dead upstream, and moving calls to a fallback target.

After the ejection time, half-open: one probe call goes through (calls let
through by the panic rule too); its success closes the circuit with a fresh
window, its failure ejects the model again, for longer. Ejections are
forgiven one per `cool_down` spent closed.

`Circuits` holds the breakers of one worker process, at most `max_models`
(the least recently used go first: a large catalogue, or a caller spraying
model names, cannot grow them without bound), and per group a
`ProviderVerdict` for the health service: a provider as a whole is failing
when its calls across every model over the window all but stopped succeeding.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from llmgateway.server.errors import reason_name
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from llmgateway.server.config import CircuitSettings


Reason: TypeAlias = pb.ErrorReason.ValueType
logger = logging.getLogger(__name__)

# Failures that say the upstream itself is unwell. A rate limit is not one (it
# is about this account, and comes with Retry-After); nor is a rejected request.
HEALTH_FAILURES: frozenset[Reason] = frozenset(
    {
        pb.ERROR_REASON_UPSTREAM_OVERLOADED,
        pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
        pb.ERROR_REASON_UPSTREAM_UNREACHABLE,
        pb.ERROR_REASON_UPSTREAM_TIMEOUT,
        pb.ERROR_REASON_UPSTREAM_STREAM_TRUNCATED,
    }
)
# How long a caller refused during another caller's probe is told to wait.
_PROBE_WAIT = 1.0
# Time buckets per window: fine enough that old outcomes leave it smoothly.
_BUCKETS = 10
# Breaker state changes logged per minute and process at most: with one breaker
# per model, a flapping catalogue must not flood the log.
_CHANGES_LOGGED_PER_MINUTE = 30


class CircuitState(enum.Enum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class Admission:
    """Leave to make one call: `probe` when it is the half-open trial call,
    `panic` when an open circuit let it through by the panic rule."""

    probe: bool = False
    panic: bool = False


_CALL = Admission()
_PROBE = Admission(probe=True)
_PANIC = Admission(panic=True)


class Window:
    """Calls and failures over the last `span` seconds, in time buckets."""

    def __init__(self, span: float, buckets: int = _BUCKETS) -> None:
        self._width = span / buckets
        self._calls = [0] * buckets
        self._failures = [0] * buckets
        # The bucket number (time // width) each slot counts for.
        self._numbers = [-1] * buckets

    def add(self, now: float, *, failed: bool) -> None:
        """One outcome, at `now`."""
        number = int(now // self._width)
        slot = number % len(self._numbers)
        if self._numbers[slot] != number:
            self._numbers[slot] = number
            self._calls[slot] = self._failures[slot] = 0
        self._calls[slot] += 1
        self._failures[slot] += failed

    def counts(self, now: float) -> tuple[int, int]:
        """(calls, failures) within the window ending at `now`."""
        oldest = int(now // self._width) - len(self._numbers) + 1
        calls = failures = 0
        for slot, number in enumerate(self._numbers):
            if number >= oldest:
                calls += self._calls[slot]
                failures += self._failures[slot]
        return calls, failures

    def clear(self) -> None:
        """Forget every outcome."""
        self._numbers = [-1] * len(self._numbers)


class ProviderVerdict:
    """Whether a provider (breaker group) as a whole is failing: over the
    window, across all its models, at least `failure_threshold` health
    failures and a success rate at or below `panic_success_rate`. Then it stays
    failing until a call succeeds while that no longer holds (refused calls do
    not count, so an outage does not read as over just because it was skipped)."""

    def __init__(
        self,
        name: str,
        settings: CircuitSettings,
        clock: Callable[[], float],
        on_change: Callable[[str, bool], None] | None,
        log: Callable[[int, str], None] | None = None,
    ) -> None:
        self.name = name
        self.serving = True
        self._settings = settings
        self._clock = clock
        self._on_change = on_change
        self._log = log or logger.log
        self._window = Window(settings.window)

    def add(self, *, failed: bool) -> None:
        """One call's outcome, on any of the provider's models."""
        now = self._clock()
        self._window.add(now, failed=failed)
        # Only a failure can make a serving provider failing, and only a
        # success can bring a failing one back.
        if self.serving != failed:
            return
        calls, failures = self._window.counts(now)
        failing = failures >= self._settings.failure_threshold and (
            calls - failures <= self._settings.panic_success_rate * calls
        )
        if failing != self.serving:
            return
        self.serving = not failing
        if failing:
            self._log(
                logging.WARNING,
                f"provider {self.name} is failing: {failures} of its last {calls} calls "
                f"in {self._settings.window:.3g} s failed",
            )
        else:
            self._log(logging.INFO, f"provider {self.name} answers again")
        if self._on_change is not None:
            self._on_change(self.name, self.serving)


class CircuitBreaker:
    """The breaker for one model of one provider group. Not thread-safe: one event loop."""

    def __init__(
        self,
        name: str,
        settings: CircuitSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        provider: ProviderVerdict | None = None,
        on_change: Callable[[CircuitBreaker, CircuitState, str], None] | None = None,
    ) -> None:
        self.name = name
        self._settings = settings
        self._clock = clock
        self._provider = provider
        self._on_change = on_change
        self._window = Window(settings.window)
        self._state = CircuitState.CLOSED
        self._probing = False
        self._open_until = 0.0
        # Ejections in a row (forgiven one per cool-down spent closed), and
        # when the circuit last closed.
        self._ejections = 0
        self._closed_at = clock()
        # The success rate that opened it, for the panic rule once the window
        # has emptied (refused calls add nothing to it).
        self._success_rate_at_opening = 1.0
        self._opened_because = ""

    @property
    def state(self) -> CircuitState:
        """The state now (an open circuit past its ejection time reads half-open)."""
        if self._state is CircuitState.OPEN and self._clock() >= self._open_until:
            self._change(CircuitState.HALF_OPEN, "the next call probes it")
        return self._state

    def admit(self, *, has_fallback: bool) -> Admission | float:
        """Leave for one call, or the seconds after which trying again makes
        sense. `has_fallback`: the call has another target to move to if refused."""
        state = self.state
        if state is CircuitState.CLOSED:
            return _CALL
        if state is CircuitState.HALF_OPEN and not self._probing:
            self._probing = True
            return _PROBE
        if not has_fallback and self.success_rate > self._settings.panic_success_rate:
            return _PANIC
        if state is CircuitState.OPEN:
            return self._open_until - self._clock()
        return _PROBE_WAIT

    def refuses_now(self) -> bool:
        """Whether a call that has another target to move to would be refused
        now, as `admit(has_fallback=True)` would decide, without taking the
        probe: open, or half-open with its probe already out. Read-only, for a
        routing decision (which may run for a dry run, ExplainRoute, and must
        not use up the one probe of a half-open circuit)."""
        state = self.state
        return state is CircuitState.OPEN or (state is CircuitState.HALF_OPEN and self._probing)

    def takes_a_last_resort_call(self) -> bool:
        """Whether a call with no other target would be let through now, as
        `admit(has_fallback=False)` would decide, without taking the probe."""
        state = self.state
        if state is CircuitState.CLOSED or (state is CircuitState.HALF_OPEN and not self._probing):
            return True
        return self.success_rate > self._settings.panic_success_rate

    @property
    def success_rate(self) -> float:
        """The share of calls that succeeded over the window (with an empty
        window, the share when it last opened)."""
        calls, failures = self._window.counts(self._clock())
        if calls == 0:
            return self._success_rate_at_opening
        return (calls - failures) / calls

    def describe(self) -> str:
        """What the window says, for messages: `4 of 6 calls in the last 30 s failed`
        (once the window has emptied, what it said when the circuit opened)."""
        calls, failures = self._window.counts(self._clock())
        if calls == 0 and self._opened_because:
            return self._opened_because
        return f"{failures} of {calls} calls in the last {self._settings.window:.3g} s failed"

    def record(self, admission: Admission, reason: Reason | None) -> None:
        """The outcome of an admitted call: None for a healthy answer, else the
        failure's reason (only health failures count against the model)."""
        failed = reason is not None and reason in HEALTH_FAILURES
        now = self._clock()
        self._window.add(now, failed=failed)
        if self._provider is not None:
            self._provider.add(failed=failed)
        if admission.probe:
            self._probing = False
            if failed:
                self._open(now, reason)
            else:
                self._window.clear()
                self._closed_at = now
                self._change(CircuitState.CLOSED, "the probe call succeeded")
            return
        if failed and self._state is CircuitState.CLOSED:
            calls, failures = self._window.counts(now)
            if (
                failures >= self._settings.failure_threshold
                and failures >= self._settings.failure_rate * calls
            ):
                # Forgive one ejection per cool-down it stayed closed.
                forgiven = int((now - self._closed_at) // self._settings.cool_down)
                self._ejections = max(0, self._ejections - forgiven)
                self._open(now, reason)

    def abandon(self, admission: Admission) -> None:
        """An admitted call ended without a verdict (cancelled by its caller)."""
        if admission.probe:
            self._probing = False

    def _open(self, now: float, reason: Reason | None) -> None:
        self._ejections += 1
        ejection = min(
            self._settings.cool_down * self._ejections,
            max(self._settings.max_cool_down, self._settings.cool_down),
        )
        self._open_until = now + ejection
        calls, failures = self._window.counts(now)
        self._success_rate_at_opening = (calls - failures) / calls if calls else 0.0
        self._opened_because = self.describe()
        last = reason_name(reason) if reason is not None else "none"
        why = f"{self._opened_because}, last {last}; skipping it for {ejection:.3g} s"
        if self._ejections > 1:
            why += f" (open {self._ejections} times in a row)"
        if self._success_rate_at_opening > self._settings.panic_success_rate:
            why += (
                f"; calls with no other target still go through (it answers "
                f"{self._success_rate_at_opening:.0%} of them)"
            )
        self._change(CircuitState.OPEN, why)

    def _change(self, state: CircuitState, why: str) -> None:
        if state is self._state:
            return
        self._state = state
        if self._on_change is not None:
            self._on_change(self, state, why)


class _ChangeLog:
    """Logs state changes, at most `per_minute` lines a minute; the next line
    logged says how many were left out."""

    def __init__(self, clock: Callable[[], float], per_minute: int) -> None:
        self._clock = clock
        self._per_minute = per_minute
        self._minute_started = clock()
        self._logged = 0
        self._left_out = 0

    def breaker_changed(self, breaker: CircuitBreaker, state: CircuitState, why: str) -> None:
        """A breaker's state change."""
        level = logging.WARNING if state is CircuitState.OPEN else logging.INFO
        self(level, f"circuit {breaker.name} {state.value}: {why}")

    def __call__(self, level: int, message: str) -> None:
        now = self._clock()
        if now - self._minute_started >= 60:
            self._minute_started, self._logged = now, 0
        if self._logged >= self._per_minute:
            self._left_out += 1
            return
        self._logged += 1
        if self._left_out:
            message += f" ({self._left_out} earlier circuit changes not logged)"
            self._left_out = 0
        logger.log(level, "%s", message)


class Circuits:
    """The breakers of one worker process, by group (`openrouter`, `zai`,
    `zai-coding`, `openai`, `anthropic`, `gemini`, `groq`, `ollama`) and
    model, and each group's provider verdict."""

    def __init__(
        self,
        settings: CircuitSettings,
        groups: Iterable[str],
        *,
        clock: Callable[[], float] = time.monotonic,
        on_provider_change: Callable[[str, bool], None] | None = None,
        changes_logged_per_minute: int = _CHANGES_LOGGED_PER_MINUTE,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._log = _ChangeLog(clock, changes_logged_per_minute)
        self.providers = {
            name: ProviderVerdict(name, settings, clock, on_provider_change, self._log)
            for name in groups
        }
        self._breakers: OrderedDict[str, CircuitBreaker] = OrderedDict()

    def __len__(self) -> int:
        return len(self._breakers)

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def existing(self, group: str, model: str) -> CircuitBreaker | None:
        """The breaker for `model` in `group` if there is one (a model never
        tried has none: nothing speaks against it), without making or touching it."""
        return self._breakers.get(f"{group}/{model}")

    def breaker(self, group: str, model: str) -> CircuitBreaker:
        """The breaker for `model` in `group`, made on first use."""
        name = f"{group}/{model}"
        found = self._breakers.get(name)
        if found is not None:
            self._breakers.move_to_end(name)
            return found
        made = CircuitBreaker(
            name,
            self._settings,
            clock=self._clock,
            provider=self.providers[group],
            on_change=self._log.breaker_changed,
        )
        self._breakers[name] = made
        if len(self._breakers) > self._settings.max_models:
            # Forgetting a breaker only forgets evidence: the model is tried again.
            self._breakers.popitem(last=False)
        return made
