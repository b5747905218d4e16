"""Retrying transient upstream failures: which, how often, how long to wait.

A call is retried only before anything reached the caller, only for failures
that another try can fix (rate limit, overload, upstream 5xx, a refused or
reset connection), never past the caller's deadline, and only while the
provider's retry budget lasts, so an outage does not multiply the load on it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmgateway.server.errors import GatewayError

RETRYABLE = frozenset(
    {
        pb.ERROR_REASON_UPSTREAM_RATE_LIMITED,
        pb.ERROR_REASON_UPSTREAM_OVERLOADED,
        pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
        pb.ERROR_REASON_UPSTREAM_UNREACHABLE,
        # The model's bad tool call (Groq tool_use_failed, Gemini
        # MALFORMED_FUNCTION_CALL): sampling again usually works.
        pb.ERROR_REASON_UPSTREAM_INVALID_TOOL_CALL,
    }
)
# An attempt that cannot get this long before the deadline is not worth starting:
# the caller is better served by the original error (and its RetryInfo) now.
_MIN_ATTEMPT_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How the gateway retries. max_attempts=1 turns retries off."""

    max_attempts: int = 3
    initial_backoff: float = 0.25
    max_backoff: float = 4.0
    # The longest Retry-After the gateway waits out itself; a longer one goes
    # back to the caller (with RetryInfo) at once.
    max_retry_after: float = 10.0


class RetryBudget:
    """Retry throttling per provider, after gRPC's: each retryable failure
    drains a token; tokens come back with successes (a tenth each) and with
    time (one a second); retries stop while fewer than half remain. So in an
    outage retries fall to about one a second per worker, and a quiet gateway
    recovers within seconds rather than waiting for successes."""

    def __init__(
        self,
        max_tokens: float = 20.0,
        refill_per_success: float = 0.1,
        refill_per_second: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._max = max_tokens
        self._per_success = refill_per_success
        self._per_second = refill_per_second
        self._clock = clock
        self._tokens = max_tokens
        self._updated = clock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self._max, self._tokens + (now - self._updated) * self._per_second)
        self._updated = now

    def record_success(self) -> None:
        """One call succeeded."""
        self._refill()
        self._tokens = min(self._max, self._tokens + self._per_success)

    def record_failure(self) -> None:
        """One attempt failed in a retryable way."""
        self._refill()
        self._tokens = max(0.0, self._tokens - 1)

    @property
    def allows_retry(self) -> bool:
        """Whether a retry may be sent now."""
        self._refill()
        return self._tokens > self._max / 2


def delay_before_retry(
    policy: RetryPolicy, attempt: int, error: GatewayError, remaining: float | None
) -> float | None:
    """Seconds to wait before attempt `attempt + 1`, or None: do not retry."""
    if error.reason not in RETRYABLE or attempt >= policy.max_attempts:
        return None
    if error.retry_after is not None:
        if error.retry_after > policy.max_retry_after:
            return None
        delay = error.retry_after
    else:
        ceiling = min(policy.max_backoff, policy.initial_backoff * 2 ** (attempt - 1))
        delay = random.uniform(0, ceiling)  # noqa: S311  # full jitter, not cryptography
    if remaining is not None and delay + _MIN_ATTEMPT_SECONDS >= remaining:
        return None
    return delay
