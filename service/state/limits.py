"""Per-key rate limits and budgets: reserve before the upstream call, settle after.

A call reserves its estimated tokens and cost inside one transaction that
also checks the key's requests and tokens in the last minute and its spend
this day or month, reservations of calls still in flight included. So
concurrent calls, in any worker or replica, cannot together pass a limit:
the last one to reserve is refused. After the call the reservation is
settled to what was really used.
"""

from __future__ import annotations

import calendar
import datetime as dt
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from llmgateway.v1 import completion_service_pb2 as pb

from service.errors import GatewayError

if TYPE_CHECKING:
    from service.state.db import Database, Tx
    from service.state.keys import CallerKey

_WINDOW = 60.0
# Sums of float dollars drift (0.1 * 30 > 3.0); a budget is met within this.
_EPSILON_USD = 1e-9
# Reservations older than this serve no limit any more (a month is at most 31 days).
_KEEP = 32 * 86400.0


@dataclass(frozen=True, slots=True)
class Reservation:
    """What one call holds against its key's limits until it settles."""

    id: int
    # The estimate held: what the call settles at when its use stays unknown.
    tokens: int
    cost_usd: float


class Limiter:
    """Checks and records calls against their keys' limits."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._reservations_since_prune = 0

    async def reserve(self, key: CallerKey, tokens: int, cost_usd: float) -> Reservation:
        """Hold `tokens` and `cost_usd` for one call of `key`, or refuse it with
        RESOURCE_EXHAUSTED and a RetryInfo saying when it could pass."""
        self._reservations_since_prune += 1
        prune = self._reservations_since_prune >= 1000
        if prune:
            self._reservations_since_prune = 0
        return await self._db.run(lambda tx: _reserve(tx, key, tokens, cost_usd, prune))

    async def settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        """Replace the estimate with what the call used."""
        await self._db.run(
            lambda tx: tx.execute(
                "UPDATE reservations SET tokens = ?, cost_usd = ?, settled = 1 WHERE id = ?",
                (tokens, cost_usd, reservation.id),
            )
        )


def _reserve(tx: Tx, key: CallerKey, tokens: int, cost_usd: float, prune: bool) -> Reservation:
    now = time.time()
    tx.lock(f"llmgateway-key-{key.id}")
    if prune:
        tx.execute("DELETE FROM reservations WHERE created_at < ?", (now - _KEEP,))
    if key.rpm is not None or key.tpm is not None:
        rows = tx.fetchall(
            "SELECT COUNT(*), COALESCE(SUM(tokens), 0), MIN(created_at) FROM reservations "
            "WHERE key_id = ? AND created_at > ?",
            (key.id, now - _WINDOW),
        )
        calls, used, oldest = int(rows[0][0]), int(rows[0][1]), rows[0][2]
        wait = _WINDOW if oldest is None else max(0.001, float(oldest) + _WINDOW - now)
        if key.rpm is not None and calls >= key.rpm:
            raise _refused(
                pb.ERROR_REASON_KEY_RATE_LIMITED,
                f"key {key.name!r} is at its limit of {key.rpm} requests per minute",
                key,
                wait,
            )
        if key.tpm is not None and used + tokens > key.tpm:
            if tokens > key.tpm:
                raise _refused(
                    pb.ERROR_REASON_KEY_RATE_LIMITED,
                    f"this request needs about {tokens} tokens, more than key {key.name!r} "
                    f"may use in a minute ({key.tpm}); lower max_tokens or shorten the prompt",
                    key,
                    None,
                )
            raise _refused(
                pb.ERROR_REASON_KEY_RATE_LIMITED,
                f"key {key.name!r} is at its limit of {key.tpm} tokens per minute "
                f"({used} used or reserved, this request needs about {tokens})",
                key,
                wait,
            )
    if key.budget_usd is not None and key.budget_period is not None:
        start, end = period_bounds(key.budget_period, now)
        rows = tx.fetchall(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM reservations "
            "WHERE key_id = ? AND created_at >= ?",
            (key.id, start),
        )
        spent = float(rows[0][0])
        if cost_usd > key.budget_usd + _EPSILON_USD:
            raise _refused(
                pb.ERROR_REASON_KEY_BUDGET_EXCEEDED,
                f"this call may cost up to ${cost_usd:.4f}, more than key {key.name!r} may "
                f"spend in a {key.budget_period} (${key.budget_usd:.4f}); lower max_tokens",
                key,
                None,
            )
        if spent + cost_usd > key.budget_usd + _EPSILON_USD:
            raise _refused(
                pb.ERROR_REASON_KEY_BUDGET_EXCEEDED,
                f"key {key.name!r} has spent or reserved ${spent:.4f} of its "
                f"${key.budget_usd:.4f} per {key.budget_period}; this call may cost up to "
                f"${cost_usd:.4f}",
                key,
                max(0.001, end - now),
            )
    rows = tx.fetchall(
        "INSERT INTO reservations (key_id, created_at, tokens, cost_usd) "
        "VALUES (?, ?, ?, ?) RETURNING id",
        (key.id, now, tokens, cost_usd),
    )
    return Reservation(id=int(rows[0][0]), tokens=tokens, cost_usd=cost_usd)


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """The UTC day or month holding `now`, as (start, end) epoch seconds."""
    today = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if period == "day":
        start = dt.datetime(today.year, today.month, today.day, tzinfo=dt.UTC)
        return start.timestamp(), start.timestamp() + 86400.0
    start = dt.datetime(today.year, today.month, 1, tzinfo=dt.UTC)
    days = calendar.monthrange(today.year, today.month)[1]
    return start.timestamp(), start.timestamp() + days * 86400.0


def _refused(
    reason: pb.ErrorReason.ValueType, message: str, key: CallerKey, retry_after: float | None
) -> GatewayError:
    return GatewayError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        reason,
        message,
        metadata={"keyId": key.id},
        retry_after=retry_after,
    )
