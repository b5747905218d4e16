"""Circuit breakers: stop sending to a provider (or Z.AI endpoint) that keeps failing.

Closed: calls go through; consecutive health failures are counted and any
healthy answer resets the count. Open (the count reached the threshold): calls
are refused at once, so they fail fast or move to a fallback target instead of
waiting on a sick upstream. After the cool-down, half-open: one probe call goes
through; its success closes the circuit, its failure opens it for another
cool-down. Each worker process keeps its own breakers.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeAlias

from llmgateway.v1 import completion_service_pb2 as pb

from service.errors import reason_name

if TYPE_CHECKING:
    from collections.abc import Callable


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


class CircuitState(enum.Enum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True)
class Admission:
    """Leave to make one call; `probe` when it is the half-open trial call."""

    probe: bool


_CALL = Admission(probe=False)
_PROBE = Admission(probe=True)


class CircuitBreaker:
    """The breaker for one provider or endpoint. Not thread-safe: one event loop."""

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        cool_down: float,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[str, CircuitState], None] | None = None,
    ) -> None:
        self.name = name
        self._threshold = failure_threshold
        self._cool_down = cool_down
        self._clock = clock
        self._on_change = on_change
        self._state = CircuitState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False

    @property
    def state(self) -> CircuitState:
        """The state now (an open circuit past its cool-down reads half-open)."""
        if self._state is CircuitState.OPEN and self._cool_down_left() <= 0:
            self._change(CircuitState.HALF_OPEN)
        return self._state

    def admit(self) -> Admission | float:
        """Leave for one call (in half-open, the probe), or the seconds after
        which trying again makes sense."""
        state = self.state
        if state is CircuitState.CLOSED:
            return _CALL
        if state is CircuitState.OPEN:
            return self._cool_down_left()
        if self._probing:
            return _PROBE_WAIT
        self._probing = True
        return _PROBE

    def record(self, admission: Admission, reason: Reason | None) -> None:
        """The outcome of an admitted call: None for a healthy answer, else the
        failure's reason (only health failures count against the provider)."""
        if admission.probe:
            self._probing = False
        if reason is None or reason not in HEALTH_FAILURES:
            self._failures = 0
            if self._state is not CircuitState.CLOSED:
                logger.info("circuit %s closed: the provider answered again", self.name)
                self._change(CircuitState.CLOSED)
            return
        self._failures += 1
        if self._state is CircuitState.HALF_OPEN or self._failures >= self._threshold:
            logger.warning(
                "circuit %s opened after %d consecutive failure(s), last %s; "
                "skipping it for %.3g s",
                self.name,
                self._failures,
                reason_name(reason),
                self._cool_down,
            )
            self._opened_at = self._clock()
            self._change(CircuitState.OPEN)

    def abandon(self, admission: Admission) -> None:
        """An admitted call ended without a verdict (cancelled by its caller)."""
        if admission.probe:
            self._probing = False

    def _cool_down_left(self) -> float:
        return self._opened_at + self._cool_down - self._clock()

    def _change(self, state: CircuitState) -> None:
        if state is self._state:
            return
        self._state = state
        if state is CircuitState.HALF_OPEN:
            logger.info("circuit %s half-open: the next call probes the provider", self.name)
        if self._on_change is not None:
            self._on_change(self.name, state)
