"""Retrying transient upstream failures: which, how often, how long to wait.

A call is retried only before anything reached the caller, only for failures
that another try can fix (rate limit, overload, upstream 5xx, a refused or
reset connection), never past the caller's deadline, and only while the
provider's retry budget lasts, so an outage does not multiply the load on it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from service.errors import GatewayError

RETRYABLE = frozenset(
    {
        pb.ERROR_REASON_UPSTREAM_RATE_LIMITED,
        pb.ERROR_REASON_UPSTREAM_OVERLOADED,
        pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
        pb.ERROR_REASON_UPSTREAM_UNREACHABLE,
    }
)
# An attempt that cannot get this long before the deadline is not worth starting.
_MIN_ATTEMPT_SECONDS = 0.05


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
    """gRPC's retry throttling, per provider: failures drain tokens, successes
    refill a tenth of one; retries stop while fewer than half remain."""

    def __init__(self, max_tokens: float = 10.0, refill: float = 0.1) -> None:
        self._max = max_tokens
        self._refill = refill
        self._tokens = max_tokens

    def record_success(self) -> None:
        """One call (or attempt) succeeded."""
        self._tokens = min(self._max, self._tokens + self._refill)

    def record_failure(self) -> None:
        """One attempt failed in a retryable way."""
        self._tokens = max(0.0, self._tokens - 1)

    @property
    def allows_retry(self) -> bool:
        """Whether a retry may be sent now."""
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
