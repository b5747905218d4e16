"""Per-key rate limits and budgets in Redis, shared by every replica.

The same reserve-then-settle as the database's `Limiter`, with the same
refusals, as two Lua scripts Redis runs atomically: a reservation checks the
key's requests and tokens in the last minute and its spend this period, and
records itself, in one step, so concurrent calls on any replica cannot
together pass a limit. Windows use Redis's clock (`TIME`), so replicas whose
clocks disagree still share one minute. Money is counted in integer
nano-USD, so sums are exact.

Each reservation held is a record with a TTL (the instance lease), which its
owner renews while the call runs. A replica that dies stops renewing, so its
records lapse; the estimates they hold stay counted (as `reaper.py` does for
the database: the upstream may bill those calls). A settlement that finds no
record changes nothing and leaves a short-lived tombstone, so a reservation
that arrives after its own release (it timed out on the way) holds nothing.

When Redis does not answer within the timeout, a reservation fails closed
(StateUnavailableError: UNAVAILABLE GATEWAY_STATE_UNAVAILABLE), or with
`failure_mode="open"` the call is admitted unchecked (counted, and logged
once per outage). Settlements wait and are retried until Redis answers.

Keys (`K` = the caller key's id, a hash tag, so a Redis Cluster keeps a key's
counters on one node): `lgw:{K}:w` (window: reservation -> created ms),
`lgw:{K}:t` (window: reservation -> tokens), `lgw:{K}:ts` (the window's
token sum), `lgw:{K}:b:<period start>` (nano-USD spent or held this period),
`lgw:{K}:r:<id>` (the held reservation, with its TTL), `lgw:{K}:x:<id>`
(tombstone).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

import redis.asyncio
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from llmgateway.server.config import ConfigError, check_redis_url
from llmgateway.server.state.db import StateUnavailableError
from llmgateway.server.state.limits import (
    WINDOW_SECONDS,
    Reservation,
    budget_refused,
    budget_too_large,
    period_bounds,
    rpm_refused,
    tpm_refused,
    tpm_too_large,
)
from llmgateway.server.state.redis_url import display_url, redact, scrub, url_secrets
from llmgateway.server.state.settlements import PendingSettlements, SettlementCounts

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from llmgateway.server.state.db import Database
    from llmgateway.server.state.keys import CallerKey

logger = logging.getLogger(__name__)

FailureMode = Literal["closed", "open"]
NANO = 1_000_000_000
# A budget is met within one nano-USD (the database's epsilon, 1e-9 USD).
_EPSILON_NANO = 1
# Window keys of a key that stops calling are forgotten after this (twice the window).
_IDLE_MS = int(2 * WINDOW_SECONDS * 1000)
# A budget counter outlives its period by a day (a late settlement still finds it).
_BUDGET_GRACE_MS = 86_400_000
# How long a tombstone stops a late reservation (far beyond any timeout).
_TOMBSTONE_SECONDS = 120
# Connections to Redis per process; a call waits for a free one within the timeout.
_MAX_CONNECTIONS = 64
# Renewals per pipeline round trip.
_RENEW_BATCH = 1000
# While Redis stays unavailable, a reminder at most this often.
REMINDER_SECONDS = 30.0

# Reserve. KEYS: w, t, ts, b, r, x. ARGV: id, tokens, cost (nano-USD), rpm,
# tpm, budget (nano-USD; -1: none), budget expiry (epoch ms), instance,
# lease (ms), window (ms), idle (ms), seed ("1": a missing budget counter
# is to be seeded first). Answers {0} (held), {-1} (released before it
# arrived), {6} (seed the budget counter, then ask again), or a refusal:
# {1, wait ms} rpm, {2} tpm too large, {3, used, wait ms} tpm, {4} budget
# too large, {5, spent} budget.
_RESERVE = """
if redis.call('EXISTS', KEYS[5]) == 1 then return {0} end
if redis.call('EXISTS', KEYS[6]) == 1 then return {-1} end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local tokens, cost = tonumber(ARGV[2]), tonumber(ARGV[3])
local rpm, tpm, budget = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local window = tonumber(ARGV[10])
local windowed = rpm >= 0 or tpm >= 0
if windowed then
  local cutoff = now - window
  while true do
    local old = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff, 'LIMIT', 0, 500)
    if #old == 0 then break end
    local held = redis.call('HMGET', KEYS[2], unpack(old))
    local sum = 0
    for i = 1, #held do sum = sum + (tonumber(held[i]) or 0) end
    redis.call('ZREM', KEYS[1], unpack(old))
    redis.call('HDEL', KEYS[2], unpack(old))
    if sum ~= 0 then redis.call('DECRBY', KEYS[3], string.format('%d', sum)) end
  end
  local calls = redis.call('ZCARD', KEYS[1])
  local used = tonumber(redis.call('GET', KEYS[3]) or '0')
  local wait = window
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #oldest > 0 then wait = math.max(1, tonumber(oldest[2]) + window - now) end
  if rpm >= 0 and calls >= rpm then return {1, wait} end
  if tpm >= 0 and used + tokens > tpm then
    if tokens > tpm then return {2} end
    return {3, used, wait}
  end
end
if budget >= 0 then
  if ARGV[12] == '1' and redis.call('EXISTS', KEYS[4]) == 0 then return {6} end
  local spent = tonumber(redis.call('GET', KEYS[4]) or '0')
  if cost > budget + EPSILON then return {4} end
  if spent + cost > budget + EPSILON then return {5, spent} end
end
if windowed then
  redis.call('ZADD', KEYS[1], now, ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('INCRBY', KEYS[3], ARGV[2])
  for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[11]) end
end
if budget >= 0 then
  redis.call('INCRBY', KEYS[4], ARGV[3])
  redis.call('PEXPIREAT', KEYS[4], ARGV[7])
end
redis.call('HSET', KEYS[5], 'tokens', ARGV[2], 'cost', ARGV[3], 'instance', ARGV[8],
  'created', string.format('%d', now))
redis.call('PEXPIRE', KEYS[5], ARGV[9])
return {0}
""".replace("EPSILON", str(_EPSILON_NANO))

# Settle. KEYS: r, t, ts, b, x. ARGV: id, tokens, cost (nano-USD), tombstone
# (s). Answers 1 (settled) or 0 (nothing held: lapsed, settled already, or
# not arrived yet, which the tombstone now stops).
_SETTLE = """
local held = redis.call('HMGET', KEYS[1], 'tokens', 'cost')
if not held[1] then
  redis.call('SET', KEYS[5], '1', 'EX', ARGV[4])
  return 0
end
redis.call('DEL', KEYS[1])
local before = redis.call('HGET', KEYS[2], ARGV[1])
if before then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  local delta = tonumber(ARGV[2]) - tonumber(before)
  if delta ~= 0 then redis.call('INCRBY', KEYS[3], string.format('%d', delta)) end
end
local delta = tonumber(ARGV[3]) - tonumber(held[2])
if delta ~= 0 and redis.call('EXISTS', KEYS[4]) == 1 then
  redis.call('INCRBY', KEYS[4], string.format('%d', delta))
end
return 1
"""

# Server replies meaning "not now" rather than "wrong": a script running too
# long, loading the dataset, a replica without its master, a cluster resharding.
_UNAVAILABLE_REPLIES = ("BUSY", "LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "NOREPLICAS")


def unavailable(exc: BaseException) -> bool:
    """Whether `exc` says Redis cannot answer now (worth a retry), rather
    than that the work is wrong (a bug, raised as it is)."""
    if isinstance(exc, (TimeoutError, OSError)):
        return True
    if isinstance(
        exc,
        (
            redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError,
            redis.exceptions.ReadOnlyError,
            redis.exceptions.OutOfMemoryError,
        ),
    ):
        return True
    return isinstance(exc, redis.exceptions.ResponseError) and str(exc).startswith(
        _UNAVAILABLE_REPLIES
    )


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, TimeoutError) and not str(exc):
        text = "no answer within the timeout"
    return text if len(text) <= 300 else text[:299] + "…"


def _prefix(key_id: str) -> str:
    return f"lgw:{{{key_id}}}:"


def _settle_keys(reservation: Reservation) -> list[str]:
    prefix = _prefix(reservation.key_id)
    budget = "-" if reservation.period_start is None else str(reservation.period_start)
    return [
        f"{prefix}r:{reservation.id}",
        f"{prefix}t",
        f"{prefix}ts",
        f"{prefix}b:{budget}",
        f"{prefix}x:{reservation.id}",
    ]


def _config_value(reply: Any, name: str) -> str:
    """One parameter of a CONFIG GET reply (bytes or text); "" when absent."""
    for field, value in dict(reply).items():
        text = field.decode() if isinstance(field, bytes) else str(field)
        if text == name:
            return value.decode() if isinstance(value, bytes) else str(value)
    return ""


def ledger_spend(db: Database) -> Callable[[str, float], Awaitable[float]]:
    """What a key spent since a moment, by the ledger: the recorded cost of
    its calls (those still in flight have none yet), to seed a budget."""

    async def spend_since(key_id: str, since: float) -> float:
        rows = await db.run(
            lambda tx: tx.fetchall(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM usage_records "
                "WHERE key_id = ? AND created_at >= ?",
                (key_id, since),
            ),
            write=False,
        )
        return float(rows[0][0])

    return spend_since


def nano(usd: float) -> int:
    """USD as integer nano-USD."""
    return round(usd * NANO)


class _Outage:
    """What the log says while Redis is unavailable: the first failure, a
    reminder at most every REMINDER_SECONDS, and the first answer after."""

    def __init__(self, display: str, failure_mode: FailureMode) -> None:
        self._display = display
        self._mode = failure_mode
        self._lock = threading.Lock()
        self._said_at: float | None = None
        self._began = 0.0
        self._failures = 0
        self._outage_failures = 0
        self.down = False

    def failed(self, reason: str) -> None:
        now = time.monotonic()
        with self._lock:
            self.down = True
            self._failures += 1
            self._outage_failures += 1
            if self._said_at is not None and now - self._said_at < REMINDER_SECONDS:
                return
            reminder, failures = self._said_at is not None, self._failures
            if not reminder:
                self._began, self._outage_failures = now, 1
            self._said_at, self._failures = now, 0
        if reminder:
            logger.warning(
                "the limits store (Redis) %s is still unavailable (%d failures since the "
                "last line); last: %s",
                self._display,
                failures,
                reason,
            )
        elif self._mode == "open":
            logger.warning(
                "the limits store (Redis) %s is unavailable: %s; LLMGATEWAY_REDIS_FAILURE_MODE"
                "=open, so calls of keys with limits are admitted WITHOUT checking their rate "
                "limits and budgets until it answers again",
                self._display,
                reason,
            )
        else:
            logger.warning(
                "the limits store (Redis) %s is unavailable: %s; calls of keys with limits "
                "get UNAVAILABLE (GATEWAY_STATE_UNAVAILABLE) until it answers again",
                self._display,
                reason,
            )

    def answered(self) -> None:
        if not self.down:  # the common case: no lock
            return
        with self._lock:
            self.down = False
            if self._said_at is None:
                return
            self._said_at = None
            lasted, failures = time.monotonic() - self._began, self._outage_failures
        logger.warning(
            "the limits store (Redis) %s answers again, after %.1f s and %d failures",
            self._display,
            lasted,
            failures,
        )


class RedisLimiter(SettlementCounts):
    """Checks and records calls against their keys' limits in Redis (a
    LimitStore, as the database's Limiter)."""

    def __init__(
        self,
        url: str,
        *,
        instance_id: str,
        lease_seconds: float,
        timeout: float,
        failure_mode: FailureMode = "closed",
        spend_since: Callable[[str, float], Awaitable[float]] | None = None,
    ) -> None:
        """`spend_since(key_id, period_start)`: what the ledger says the key spent
        since then, to seed a budget counter Redis does not hold (a new Redis,
        one that lost its data, a switch from database limits mid-period)."""
        # First: a URL the client would misread (a password's '/' taken for the
        # end of the host) is refused before anything connects with it.
        check_redis_url(url)
        self.display = display_url(url)
        # Kept out of every error and log line that quotes redis-py (scrub).
        self._secrets = url_secrets(url)
        self._spend_since = spend_since
        # Budget counters being seeded by this process: concurrent calls wait for one.
        self._seeding: dict[str, asyncio.Future[None]] = {}
        self.timeout = timeout
        self._instance_id = instance_id
        self._lease_ms = max(1, round(lease_seconds * 1000))
        self._lease_seconds = lease_seconds
        self._failure_mode: FailureMode = failure_mode
        try:
            pool = redis.asyncio.BlockingConnectionPool.from_url(
                url,
                max_connections=_MAX_CONNECTIONS,
                timeout=timeout,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                # A pooled connection Redis dropped (it restarted) fails at once:
                # tried again on a fresh one. Safe, as both scripts are idempotent
                # by reservation id. Not on a timeout: that is the caller's answer.
                retry=Retry(NoBackoff(), 1, supported_errors=(redis.exceptions.ConnectionError,)),
            )
        except ValueError as exc:
            # The library's reason quotes what it read as the port, which is a
            # piece of the password when that holds an unencoded '/', '?' or '#'.
            reason = (
                redact(str(exc), self._secrets)
                if "@" not in url
                else "its host or port cannot be read"
            )
            msg = (
                f"LLMGATEWAY_REDIS_URL ([state] redis_url) {self.display} is malformed: "
                f"{reason} (percent-encode '/', '?', '#' and '@' in a user name or password, "
                "e.g. %2F for '/')"
            )
            raise ConfigError(msg) from None
        self._client: redis.asyncio.Redis = redis.asyncio.Redis(connection_pool=pool)
        self._reserve_script = self._client.register_script(_RESERVE)
        self._settle_script = self._client.register_script(_SETTLE)
        self._outage = _Outage(self.display, failure_mode)
        # Reservations held by calls of this process: id -> their record's key (renewed).
        self._held: dict[int, str] = {}
        # Reservation id -> (reservation, tokens, cost_usd) it settles at, until written.
        self._pending: PendingSettlements[tuple[Reservation, int, float]] = PendingSettlements(
            store="redis",
            where=f"the limits store (Redis) {self.display}",
            log=logger,
            write=self._write_unsettled,
            unavailable=self._unavailable,
            on_unavailable=lambda exc: self._outage.failed(_reason(exc)),
        )
        self._renewing: asyncio.Task[None] | None = None
        self._checked = False
        self._background: set[asyncio.Task[None]] = set()
        # Since start: calls admitted unchecked while Redis was unavailable
        # (failure_mode "open").
        self.fail_open_admits = 0

    @property
    def held(self) -> int:
        """Reservations of this process's calls in flight (their leases renewed)."""
        return len(self._held)

    async def start(self) -> None:
        """Renew held reservations every third of the lease, on the running
        loop. Redis that does not answer now is a warning, not a failure:
        calls get UNAVAILABLE (or pass, failing open) until it answers."""
        self._renewing = asyncio.get_running_loop().create_task(self._renew_forever())
        try:
            async with asyncio.timeout(self.timeout):
                await self._client.ping()
        except Exception as exc:
            if not self._unavailable(exc):
                raise
            self._outage.failed(f"at start-up: {_reason(exc)}")
            return
        logger.info(
            "limits in Redis %s (failure mode %s)",
            self.display,
            self._failure_mode,
            extra={"startup_summary": True},
        )
        await self._check_configuration()

    async def ping(self) -> bool:
        """Whether Redis answers within the timeout."""
        try:
            async with asyncio.timeout(self.timeout):
                await self._client.ping()
        except Exception as exc:
            if not self._unavailable(exc):
                raise
            return False
        return True

    async def reserve(self, key: CallerKey, tokens: int, cost_usd: float) -> Reservation:
        """Hold `tokens` and `cost_usd` for one call of `key`, or refuse it with
        RESOURCE_EXHAUSTED and a RetryInfo saying when it could pass."""
        reservation_id = self._new_id()
        period_start: int | None = None
        budget, budget_expiry, end = -1, 0, 0.0
        if key.budget_usd is not None and key.budget_period is not None:
            start, end = period_bounds(key.budget_period, time.time())
            period_start = int(start)
            budget = nano(key.budget_usd)
            budget_expiry = int(end * 1000) + _BUDGET_GRACE_MS
        reservation = Reservation(
            id=reservation_id,
            tokens=tokens,
            cost_usd=cost_usd,
            store="redis",
            key_id=key.id,
            period_start=period_start,
        )
        prefix = _prefix(key.id)
        record, budget_key, tombstone = (_settle_keys(reservation)[i] for i in (0, 3, 4))
        keys = [f"{prefix}w", f"{prefix}t", f"{prefix}ts", budget_key, record, tombstone]
        args: list[int | str] = [
            reservation_id,
            tokens,
            nano(cost_usd),
            -1 if key.rpm is None else key.rpm,
            -1 if key.tpm is None else key.tpm,
            budget,
            budget_expiry,
            self._instance_id,
            self._lease_ms,
            int(WINDOW_SECONDS * 1000),
            _IDLE_MS,
            int(self._spend_since is not None),
        ]
        try:
            async with asyncio.timeout(self.timeout):
                answer: list[Any] = await self._reserve_script(keys=keys, args=args)
            if int(answer[0]) == 6 and period_start is not None:
                await self._seed(key.id, budget_key, period_start, budget_expiry)
                args[-1] = 0  # seeded (here or by another replica): counted from there
                async with asyncio.timeout(self.timeout):
                    answer = await self._reserve_script(keys=keys, args=args)
        except Exception as exc:
            if not self._unavailable(exc):
                raise
            reason = _reason(exc)
            self._outage.failed(reason)
            # It may still arrive (it was sent): release it by id; if it comes
            # later, the tombstone this leaves stops it.
            self._pending.add(reservation.id, (reservation, 0, 0.0))
            if self._failure_mode == "open":
                self.fail_open_admits += 1
                if self._pending.observer is not None:
                    self._pending.observer.limit_store_counted("redis", "fail_open_admits")
                return Reservation(
                    id=reservation_id, tokens=tokens, cost_usd=cost_usd, store="none"
                )
            raise StateUnavailableError(
                f"the limits store (Redis) {self.display}: {reason}"
            ) from None
        self._answered()
        code = int(answer[0])
        if code == 0:
            self._held[reservation_id] = record
            return reservation
        if code == 1:
            raise rpm_refused(key, int(answer[1]) / 1000)
        if code == 2:
            raise tpm_too_large(key, tokens)
        if code == 3:
            raise tpm_refused(key, int(answer[1]), tokens, int(answer[2]) / 1000)
        if code == 4:
            raise budget_too_large(key, cost_usd)
        if code == 5:
            raise budget_refused(
                key, int(answer[1]) / NANO, cost_usd, max(0.001, end - time.time())
            )
        # -1: released before it arrived, which only a reservation that timed out meets.
        raise StateUnavailableError(
            f"the limits store (Redis) {self.display}: the reservation arrived after its release"
        )

    async def settle(self, reservation: Reservation, tokens: int, cost_usd: float) -> None:
        """Replace the estimate with what the call used; when Redis is
        unavailable, keep the settlement and retry it in the background."""
        if reservation.store != "redis":
            return  # admitted unchecked (failing open): nothing held
        self._held.pop(reservation.id, None)
        try:
            await self._settle_once(reservation, tokens, cost_usd, self.timeout)
        except Exception as exc:
            if not self._unavailable(exc):
                raise
            self._outage.failed(_reason(exc))
            self._pending.add(reservation.id, (reservation, tokens, cost_usd))

    async def drain(self) -> None:
        """Wait until every settlement that waited for Redis is written (for as
        long as that takes: bound it with asyncio.timeout)."""
        await self._pending.drain()

    async def close(self, give_up: float | None = None) -> None:
        """Stop renewing, try the waiting settlements once more (by `give_up`,
        loop time, when given: not at all once it has passed), say what is
        lost, and close the connections. Reservations of calls still in
        flight lapse within the lease, keeping their estimates."""
        await self._pending.stop()
        for task in (self._renewing, *self._background):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._renewing = None
        loop = asyncio.get_running_loop()
        left = None if give_up is None else give_up - loop.time()
        if self._pending.waiting and (left is None or left > 0):
            with contextlib.suppress(Exception):  # counted below
                async with asyncio.timeout(
                    self.timeout if left is None else min(left, self.timeout)
                ):
                    await self._write_unsettled()
        self._pending.give_up()
        left = None if give_up is None else give_up - loop.time()
        # Closing sends nothing: bounded all the same, it never outlasts shutdown.
        with contextlib.suppress(Exception):
            async with asyncio.timeout(0.1 if left is None or left < 0.1 else left):
                await self._client.aclose(close_connection_pool=True)

    async def _seed(self, key_id: str, budget_key: str, since: int, expiry_ms: int) -> None:
        """Seed a budget counter Redis does not hold with the ledger's spend
        since the period began (once: concurrent calls wait for the first)."""
        running = self._seeding.get(budget_key)
        if running is None:
            running = asyncio.ensure_future(self._seed_once(key_id, budget_key, since, expiry_ms))
            self._seeding[budget_key] = running
            running.add_done_callback(functools.partial(self._seeded, budget_key))
        await asyncio.shield(running)

    def _seeded(self, budget_key: str, seeding: asyncio.Future[None]) -> None:
        self._seeding.pop(budget_key, None)
        if not seeding.cancelled():
            seeding.exception()  # retrieved: each call that waited raised it already

    async def _seed_once(self, key_id: str, budget_key: str, since: int, expiry_ms: int) -> None:
        assert self._spend_since is not None  # noqa: S101  # asked for by the script only then
        # The database unavailable: StateUnavailableError, as for the ledger
        # the call could not be admitted to either.
        spent = await self._spend_since(key_id, float(since))
        async with asyncio.timeout(self.timeout):
            # NX: another replica may have seeded it (or counted calls) meanwhile.
            seeded = await self._client.set(budget_key, nano(spent), nx=True, pxat=expiry_ms)
        if seeded:
            logger.info(
                "the limits store (Redis) %s held no spend for key %s this period: seeded "
                "from the ledger ($%.4f)",
                self.display,
                key_id,
                spent,
            )

    def _new_id(self) -> int:
        """A reservation id, chosen here, so one that timed out can still be released."""
        return secrets.randbits(63)

    async def _settle_once(
        self, reservation: Reservation, tokens: int, cost_usd: float, within: float
    ) -> bool:
        async with asyncio.timeout(within):
            answer = await self._settle_script(
                keys=_settle_keys(reservation),
                args=[reservation.id, tokens, nano(cost_usd), _TOMBSTONE_SECONDS],
            )
        self._answered()
        return bool(answer)

    def _answered(self) -> None:
        self._outage.answered()
        if not self._checked:
            self._checked = True
            self._in_background(self._check_configuration())

    async def _check_configuration(self) -> None:
        """Warn when Redis may forget spend: evicting keys under memory
        pressure, or not writing an append-only file. Skipped where CONFIG is
        disabled (managed services)."""
        self._checked = True
        try:
            async with asyncio.timeout(self.timeout):
                policy = await self._client.config_get("maxmemory-policy")
                appendonly = await self._client.config_get("appendonly")
        except Exception:  # noqa: BLE001  # CONFIG renamed or refused: nothing to say
            return
        value = _config_value(policy, "maxmemory-policy")
        if value and value != "noeviction":
            logger.warning(
                "the limits store (Redis) %s has maxmemory-policy %s: under memory pressure it "
                "may evict budget counters and forget spend; set maxmemory-policy noeviction",
                self.display,
                value,
            )
        if _config_value(appendonly, "appendonly") == "no":
            logger.warning(
                "the limits store (Redis) %s writes no append-only file: a restart of it "
                "forgets the spend of this period; set appendonly yes (appendfsync always "
                "loses nothing on a crash)",
                self.display,
            )

    async def _write_unsettled(self) -> int:
        """Write the waiting settlements (those that arrive meanwhile too), one
        script each; how many. Any answer ends one: settled, or nothing held."""
        written = 0
        while self._pending.waiting:
            for reservation_id, settled in self._pending.batch():
                reservation, tokens, cost_usd = settled
                await self._settle_once(reservation, tokens, cost_usd, self.timeout)
                self._pending.written(reservation_id, settled)
                written += 1
        return written

    async def _renew_forever(self) -> None:
        while True:
            await asyncio.sleep(self._lease_seconds / 3)
            with contextlib.suppress(Exception):  # the next round tries again
                await self.renew()

    async def renew(self) -> int:
        """Extend the lease of every reservation this process holds; how many
        had lapsed (their calls settle to nothing changed)."""
        held = list(self._held.items())
        lapsed = 0
        for start in range(0, len(held), _RENEW_BATCH):
            chunk = held[start : start + _RENEW_BATCH]
            try:
                async with asyncio.timeout(self.timeout):
                    pipe = self._client.pipeline(transaction=False)
                    for _, record in chunk:
                        pipe.pexpire(record, self._lease_ms)
                    results = await pipe.execute()
            except Exception as exc:
                if self._unavailable(exc):
                    self._outage.failed(_reason(exc))
                raise
            for (reservation_id, _), renewed in zip(chunk, results, strict=True):
                if not renewed:
                    lapsed += 1
                    self._held.pop(reservation_id, None)
        return lapsed

    def _unavailable(self, exc: BaseException) -> bool:
        """unavailable(exc), once the URL's password is scrubbed from `exc` (and
        what it was raised from): whatever happens to it next, a log line, a
        reason for the caller, a traceback, carries none of it."""
        return unavailable(scrub(exc, self._secrets))

    def _in_background(self, work: Any) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
