"""Limits in Redis (state/redis_limits.py): the same answers as the database's,
exact under concurrency, leases that lapse with their owner, and what a
caller sees while Redis is stopped, killed, paused or restarted."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import threading
import time
import uuid
from typing import TYPE_CHECKING

import grpc
import pytest
import redis.asyncio
import redis.exceptions
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from llmgateway.server.config import ConfigError, PriceOverride, Settings
from llmgateway.server.errors import GatewayError
from llmgateway.server.process.server import CLOSE_FLOOR_SECONDS, start_gateway
from llmgateway.server.state.db import Database, StateUnavailableError
from llmgateway.server.state.keys import CallerKey, KeyStore
from llmgateway.server.state.limits import Limiter, LimitStore, Reservation, period_bounds
from llmgateway.server.state.redis_limits import RedisLimiter, nano, unavailable
from llmgateway.server.state.redis_url import display_url
from llmgateway.server.state.runtime import open_state
from llmgateway.server.state.schema import migrate
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.conftest import rich_status, user
from tests.postgres import fresh_database
from tests.redis_server import RedisServer, echoing_server, throwaway_redis

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from llmgateway.server.process.server import Gateway
    from llmgateway.server.state.keys import Period


def caller_key(
    *,
    rpm: int | None = None,
    tpm: int | None = None,
    budget_usd: float | None = None,
    budget_period: Period | None = None,
) -> CallerKey:
    """A key of its own (a fresh id: nothing held against it yet)."""
    return CallerKey(
        id=uuid.uuid4().hex,
        name="limited",
        prefix="lgw_test",
        models=(),
        rpm=rpm,
        tpm=tpm,
        budget_usd=budget_usd,
        budget_period=budget_period if budget_usd is not None and budget_period else None,
        usage_reader=False,
        created_at=0.0,
        revoked_at=None,
    )


def redis_limiter(url: str, *, lease: float = 15.0, timeout: float = 5.0) -> RedisLimiter:
    """A limiter as one replica's (its own instance id)."""
    return RedisLimiter(
        url, instance_id=uuid.uuid4().hex[:16], lease_seconds=lease, timeout=timeout
    )


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[redis.asyncio.Redis]:
    opened = redis.asyncio.Redis.from_url(url)
    try:
        yield opened
    finally:
        await opened.aclose()


async def held_usd(url: str, key: CallerKey) -> float:
    """What the key has spent or holds this period in Redis."""
    assert key.budget_period is not None
    start, _ = period_bounds(key.budget_period, time.time())
    async with client(url) as redis_client:
        return int(await redis_client.get(f"lgw:{{{key.id}}}:b:{int(start)}") or 0) / 1e9


async def held_tokens(url: str, key: CallerKey) -> int:
    """Tokens of the key's last minute in Redis."""
    async with client(url) as redis_client:
        return int(await redis_client.get(f"lgw:{{{key.id}}}:ts") or 0)


async def records(url: str) -> list[bytes]:
    """The reservation records (leases) Redis holds."""
    async with client(url) as redis_client:
        return [name async for name in redis_client.scan_iter(match="lgw:*:r:*")]


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test's own, to stop, kill, pause and restart."""
    with throwaway_redis() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
async def limit_store(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_server: str | None
) -> AsyncIterator[LimitStore]:
    """Each store: the database's Limiter on SQLite and PostgreSQL, then Redis."""
    if request.param == "redis":
        limiter = redis_limiter(request.getfixturevalue("redis_url"))
        await limiter.start()
        yield limiter
        await limiter.close()
        return
    if request.param == "sqlite":
        location = str(tmp_path / "state.db")
    else:
        if postgres_server is None:
            pytest.skip("PostgreSQL is not installed here (.ci/run installs it)")
        location = fresh_database(postgres_server, f"t_{uuid.uuid4().hex[:12]}")
    db = Database(location)
    migrate(db)
    yield Limiter(db)
    db.close()


def test_a_redis_password_is_never_displayed():
    for url in (
        "redis://:s3cret@cache.internal:6379/0",
        "rediss://gw:s3cret@cache.internal:6380/1",
        "redis://cache.internal:6379/0?password=s3cret",
    ):
        shown = display_url(url)
        assert "s3cret" not in shown
        assert "cache.internal" in shown
    assert display_url("unix:///run/redis.sock") == "unix:///run/redis.sock"


# Passwords made of secret pieces joined by the characters that end a URL's
# authority early when not percent-encoded (generated passwords hold '/' often).
_PASSWORDS = st.lists(st.sampled_from("/?#@:"), min_size=1, max_size=4).map(
    lambda delimiters: "SECRET" + "".join(d + "SECRET" for d in delimiters)
)


@given(password=_PASSWORDS, user=st.sampled_from(["", "gw"]))
def test_no_piece_of_a_password_with_url_delimiters_is_displayed(password, user):
    for scheme in ("redis", "rediss"):
        shown = display_url(f"{scheme}://{user}:{password}@cache.internal:6379/0")
        assert "SECRET" not in shown, shown
        assert shown.startswith(f"{scheme}://")


@given(password=_PASSWORDS)
def test_a_url_the_client_cannot_read_never_quotes_its_password(password):
    url = f"redis://:{password}@cache.internal:6379/0"
    try:
        RedisLimiter(url, instance_id="i", lease_seconds=15.0, timeout=0.5)
    except ConfigError as refused:
        message = str(refused)
        assert "SECRET" not in message, message
        assert "LLMGATEWAY_REDIS_URL" in message
        assert "percent-encode" in message


def test_what_counts_as_redis_being_unavailable():
    assert unavailable(redis.exceptions.ConnectionError("refused"))
    assert unavailable(redis.exceptions.TimeoutError("no answer"))
    assert unavailable(TimeoutError())
    assert unavailable(redis.exceptions.ReadOnlyError("READONLY replica"))
    assert unavailable(redis.exceptions.ResponseError("BUSY Redis is busy running a script"))
    assert unavailable(redis.exceptions.ResponseError("LOADING dataset in memory"))
    # A wrong script or command is a bug, to be seen.
    assert not unavailable(redis.exceptions.ResponseError("ERR wrong number of arguments"))
    assert not unavailable(ValueError("bug"))


async def test_rpm_is_exact_under_300_concurrent_reserves(limit_store):
    key = caller_key(rpm=100)
    results = await asyncio.gather(
        *(limit_store.reserve(key, 10, 0.0) for _ in range(300)), return_exceptions=True
    )
    refusals = [r for r in results if isinstance(r, GatewayError)]
    assert sum(isinstance(r, Reservation) for r in results) == 100
    assert len(refusals) == 200
    assert {(r.code, r.message) for r in refusals} == {
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "key 'limited' is at its limit of 100 requests per minute",
        )
    }
    assert all(0 < (r.retry_after or 0) <= 60 for r in refusals)


async def test_two_replicas_share_one_rpm_exactly(redis_url):
    replicas = [redis_limiter(redis_url), redis_limiter(redis_url)]
    key = caller_key(rpm=100)
    results = await asyncio.gather(
        *(replicas[i % 2].reserve(key, 10, 0.0) for i in range(300)), return_exceptions=True
    )
    for replica in replicas:
        await replica.close()
    assert sum(isinstance(r, Reservation) for r in results) == 100
    assert sum(isinstance(r, GatewayError) for r in results) == 200


# Open-ended sequences of reservations and settlements against keys with any
# mix of limits: Redis answers each exactly as the database does.
_operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("reserve"),
            st.integers(1, 300),
            st.integers(0, 50).map(lambda cents: cents / 100),
        ),
        st.tuples(
            st.just("settle"),
            st.integers(0, 300),
            st.integers(0, 50).map(lambda cents: cents / 100),
        ),
    ),
    min_size=1,
    max_size=12,
)
_NONE = {"rpm": None, "tpm": None, "budget_usd": None, "budget_period": "day"}
_limits = st.fixed_dictionaries(
    {
        "rpm": st.one_of(st.none(), st.integers(1, 6)),
        "tpm": st.one_of(st.none(), st.integers(50, 800)),
        "budget_usd": st.one_of(st.none(), st.integers(5, 100).map(lambda cents: cents / 100)),
        "budget_period": st.sampled_from(["day", "month"]),
    }
)


def _outcome(result: Reservation | BaseException) -> tuple[object, ...]:
    if isinstance(result, Reservation):
        return ("held",)
    assert isinstance(result, GatewayError), result
    return (result.code, result.reason, result.message, result.retry_after is None)


async def _run(
    store: LimitStore, key: CallerKey, operations: list[tuple[str, int, float]]
) -> tuple[list[tuple[object, ...]], list[float | None]]:
    outcomes: list[tuple[object, ...]] = []
    waits: list[float | None] = []
    held: list[Reservation] = []
    for operation, tokens, cost in operations:
        if operation == "settle":
            if held:
                await store.settle(held.pop(0), tokens, cost)
            continue
        try:
            result: Reservation | BaseException = await store.reserve(key, tokens, cost)
        except GatewayError as error:
            result = error
        outcomes.append(_outcome(result))
        waits.append(result.retry_after if isinstance(result, GatewayError) else None)
        if isinstance(result, Reservation):
            held.append(result)
    return outcomes, waits


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(limits=_limits, operations=_operations)
# Every refusal at least once, whatever the search finds.
@example(limits={**_NONE, "rpm": 1}, operations=[("reserve", 10, 0.0)] * 2)
@example(
    limits={**_NONE, "tpm": 100},
    operations=[("reserve", 150, 0.0), ("reserve", 60, 0.0), ("reserve", 60, 0.0)],
)
@example(
    limits={**_NONE, "tpm": 100},
    operations=[("reserve", 60, 0.0), ("settle", 10, 0.0), ("reserve", 60, 0.0)],
)
@example(
    limits={**_NONE, "budget_usd": 0.1},
    operations=[("reserve", 1, 0.2), ("reserve", 1, 0.06), ("reserve", 1, 0.06)],
)
@example(
    limits={**_NONE, "budget_usd": 0.1, "budget_period": "month"},
    operations=[("reserve", 1, 0.06), ("settle", 1, 0.01), ("reserve", 1, 0.06)],
)
def test_refusals_and_retry_info_match_the_database(tmp_path, redis_url, limits, operations):
    location = str(tmp_path / "compare.db")
    key = caller_key(**limits)

    async def both() -> None:
        db = Database(location)
        migrate(db)
        limiter = redis_limiter(redis_url)
        try:
            expected, expected_waits = await _run(Limiter(db), key, operations)
            got, got_waits = await _run(limiter, key, operations)
        finally:
            await limiter.close()
            db.close()
        assert got == expected
        for want, have in zip(expected_waits, got_waits, strict=True):
            # The same wait, but for the moments between the two runs.
            assert (want is None) == (have is None)
            if want is not None and have is not None:
                assert abs(want - have) < 5.0

    asyncio.run(both())


async def test_settling_adjusts_the_token_window(redis_url):
    limiter = redis_limiter(redis_url)
    key = caller_key(tpm=100)
    try:
        first = await limiter.reserve(key, 70, 0.0)
        with pytest.raises(
            GatewayError, match=r"\(70 used or reserved, this request needs about 70\)"
        ):
            await limiter.reserve(key, 70, 0.0)
        await limiter.settle(first, 20, 0.0)  # it used less than its estimate
        assert await held_tokens(redis_url, key) == 20
        await limiter.reserve(key, 70, 0.0)
        with pytest.raises(GatewayError, match=r"\(90 used or reserved"):
            await limiter.reserve(key, 70, 0.0)
    finally:
        await limiter.close()


async def test_settling_twice_is_harmless(redis_url):
    limiter = redis_limiter(redis_url)
    key = caller_key(budget_usd=1.0, budget_period="day")
    try:
        reservation = await limiter.reserve(key, 10, 0.5)
        await limiter.settle(reservation, 5, 0.2)
        await limiter.settle(reservation, 0, 0.0)  # a second settlement finds nothing held
        assert await held_usd(redis_url, key) == pytest.approx(0.2)
        assert await records(redis_url) == []
    finally:
        await limiter.close()


async def test_a_settlement_after_the_lease_lapsed_changes_nothing(redis_url):
    # Not started: nothing renews the lease (as when its owner stalled past it).
    limiter = redis_limiter(redis_url, lease=0.2)
    key = caller_key(budget_usd=1.0, budget_period="day", tpm=1000)
    try:
        reservation = await limiter.reserve(key, 300, 0.5)
        async with asyncio.timeout(30):  # a bound for a loaded machine, not a speed check
            while await records(redis_url):  # noqa: ASYNC110  # no event marks an expiry
                await asyncio.sleep(0.05)
        await limiter.settle(reservation, 10, 0.1)
        # The estimate stands: the call may have been billed in full.
        assert await held_usd(redis_url, key) == pytest.approx(0.5)
        assert await held_tokens(redis_url, key) == 300
    finally:
        await limiter.close()


async def test_a_release_that_overtakes_its_reservation_leaves_nothing_held(redis_url, monkeypatch):
    # A reservation that timed out on its way is released by id; if it reaches
    # Redis after its release, the tombstone that release left stops it.
    limiter = redis_limiter(redis_url)
    key = caller_key(budget_usd=1.0, budget_period="day", rpm=10)
    monkeypatch.setattr(limiter, "_new_id", lambda: 4242)
    start, _ = period_bounds("day", time.time())
    released = Reservation(
        id=4242, tokens=10, cost_usd=0.5, store="redis", key_id=key.id, period_start=int(start)
    )
    try:
        await limiter.settle(released, 0, 0.0)
        with pytest.raises(StateUnavailableError, match="after its release"):
            await limiter.reserve(key, 10, 0.5)
        assert await held_usd(redis_url, key) == 0.0
        assert await records(redis_url) == []
    finally:
        await limiter.close()


async def test_a_reservation_that_timed_out_is_released_whenever_it_arrives(own_redis):
    # Redis hangs while the reservation is on its way: the caller is told
    # UNAVAILABLE at once, and once Redis answers nothing stays held, whichever
    # of the reservation and its release it runs first.
    limiter = redis_limiter(own_redis.url, timeout=0.3)
    key = caller_key(budget_usd=1.0, budget_period="day", tpm=1000)
    try:
        await limiter.ping()
        own_redis.pause()
        try:
            with pytest.raises(StateUnavailableError):
                await limiter.reserve(key, 100, 0.5)
            assert limiter.unsettled == 1
        finally:
            own_redis.resume()
        async with asyncio.timeout(30):
            await limiter.drain()
        assert await held_usd(own_redis.url, key) == 0.0
        assert await held_tokens(own_redis.url, key) == 0
        assert await records(own_redis.url) == []
    finally:
        await limiter.close()


async def test_the_owner_keeps_its_reservation_alive_past_three_leases(redis_url):
    limiter = redis_limiter(redis_url, lease=2.0)
    await limiter.start()
    key = caller_key(budget_usd=1.0, budget_period="day")
    try:
        reservation = await limiter.reserve(key, 10, 0.5)
        await asyncio.sleep(7.0)  # three leases and a half: renewed every third of one
        assert len(await records(redis_url)) == 1
        await limiter.settle(reservation, 5, 0.1)
        assert await held_usd(redis_url, key) == pytest.approx(0.1)  # the settlement counted
    finally:
        await limiter.close()


def _hold_and_wait(url: str, key_id: str, ready: multiprocessing.synchronize.Event) -> None:
    """In a process of its own: hold one $0.50 reservation, renewing it, until killed."""
    key = dataclasses.replace(caller_key(budget_usd=1.0, budget_period="day"), id=key_id)

    async def hold() -> None:
        limiter = redis_limiter(url, lease=2.0)
        await limiter.start()
        await limiter.reserve(key, 10, 0.5)
        ready.set()
        await asyncio.sleep(3600)

    asyncio.run(hold())


async def test_a_killed_owners_reservations_lapse_within_a_lease_and_stay_counted(redis_url):
    key = caller_key(budget_usd=1.0, budget_period="day")
    context = multiprocessing.get_context("spawn")
    ready = context.Event()
    owner = context.Process(target=_hold_and_wait, args=(redis_url, key.id, ready))
    owner.start()
    try:
        assert await asyncio.to_thread(ready.wait, 60)
        (record,) = await records(redis_url)
        await asyncio.sleep(3.0)  # a lease and a half: the owner renewed it
        async with client(redis_url) as redis_client:
            assert 0 < await redis_client.pttl(record) <= 2000  # never more than one lease
        assert owner.pid is not None
        os.kill(owner.pid, signal.SIGKILL)
        owner.join()
        await asyncio.sleep(2.1)  # one lease (and Redis expires a key the moment it is read)
        assert await records(redis_url) == []
        # The upstream may bill the dead replica's call: its estimate stays spent.
        assert await held_usd(redis_url, key) == pytest.approx(0.5)
    finally:
        if owner.is_alive():
            owner.kill()
            owner.join()


# End to end: what callers see while Redis is away.


@pytest.fixture
def redis_keyed(settings: Settings, own_redis: RedisServer) -> Settings:
    return dataclasses.replace(settings, redis_url=own_redis.url, redis_timeout=0.5)


@contextlib.asynccontextmanager
async def serving(
    settings: Settings,
) -> AsyncIterator[tuple[Gateway, pb_grpc.CompletionServiceAsyncStub]]:
    running = await start_gateway(settings, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield running, pb_grpc.CompletionServiceStub(channel)
    finally:
        await running.stop(grace=0)


def new_key(settings: Settings, **limits: object) -> str:
    return new_key_record(settings, **limits)[1]


async def call(stub: pb_grpc.CompletionServiceAsyncStub, key: str) -> pb.CompleteResponse:
    response: pb.CompleteResponse = await stub.Complete(
        pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")]),
        metadata=(("authorization", f"Bearer {key}"),),
        # Far beyond the Redis timeout: an UNAVAILABLE comes from the gateway, not the deadline.
        timeout=20,
    )
    return response


async def refused(stub: pb_grpc.CompletionServiceAsyncStub, key: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(stub, key)
    return caught.value


def assert_state_unavailable(error: grpc.aio.AioRpcError) -> None:
    status = rich_status(error)
    assert (status.code, status.info.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "GATEWAY_STATE_UNAVAILABLE",
    )
    assert status.retry is not None
    assert status.retry.retry_delay.ToTimedelta().total_seconds() == 1.0


async def test_redis_killed_fails_closed_then_a_restart_keeps_the_counts(redis_keyed, own_redis):
    key = new_key(redis_keyed, rpm=3)
    async with serving(redis_keyed) as (_, stub):
        await call(stub, key)
        await call(stub, key)
        own_redis.stop(kill=True)  # a crash: only the append-only file survives
        assert_state_unavailable(await refused(stub, key))
        own_redis.start()  # the same directory: the counts are back
        # No restart of the gateway: the next call reconnects.
        await call(stub, key)
        limited = rich_status(await refused(stub, key))
    assert limited.info.reason == "KEY_RATE_LIMITED"
    assert "3 requests per minute" in limited.message


async def test_a_paused_redis_answers_unavailable_then_recovers(redis_keyed, own_redis):
    key = new_key(redis_keyed, rpm=100)
    async with serving(redis_keyed) as (_, stub):
        await call(stub, key)
        own_redis.pause()  # accepts connections, never answers
        try:
            for _ in range(3):
                assert_state_unavailable(await refused(stub, key))
        finally:
            own_redis.resume()
        await call(stub, key)


async def test_failing_open_admits_calls_counts_them_and_says_so_once(
    redis_keyed, own_redis, caplog
):
    caplog.set_level(logging.WARNING, logger="llmgateway.server.state.redis_limits")
    failing_open = dataclasses.replace(
        redis_keyed, redis_failure_mode="open", metrics_address="127.0.0.1:0"
    )
    key = new_key(failing_open, rpm=1)
    async with serving(failing_open) as (running, stub):
        await call(stub, key)
        own_redis.stop(kill=True)
        for _ in range(4):  # rpm 1, but nothing checks it meanwhile
            await call(stub, key)
        assert running.state is not None
        limiter = running.state.limiter
        assert isinstance(limiter, RedisLimiter)
        assert limiter.fail_open_admits == 4
        # As metrics too: each admitted unchecked, each one's release left waiting.
        assert running.metrics is not None
        exported = running.metrics.registry.get_sample_value
        labels = {"store": "redis"}
        assert exported("llmgateway_limit_fail_open_admits_total", labels) == 4
        assert exported("llmgateway_limit_settlements_waited_total", labels) == (
            limiter.settlements_waited
        )
        assert limiter.settlements_waited >= 4
        own_redis.start()
        # Back: checked again (the call before the outage still counts).
        assert rich_status(await refused(stub, key)).info.reason == "KEY_RATE_LIMITED"
    said = [r.getMessage() for r in caplog.records if "WITHOUT checking" in r.getMessage()]
    assert len(said) == 1
    assert any("answers again" in r.getMessage() for r in caplog.records)


async def test_a_gateway_starts_with_redis_down_and_serves_once_it_is_back(
    redis_keyed, own_redis, caplog
):
    caplog.set_level(logging.WARNING, logger="llmgateway.server.state.redis_limits")
    key = new_key(redis_keyed, rpm=100)
    own_redis.stop()
    async with serving(redis_keyed) as (_, stub):
        assert any(
            "at start-up" in r.getMessage() and "unavailable" in r.getMessage()
            for r in caplog.records
        )
        assert_state_unavailable(await refused(stub, key))
        own_redis.start()
        await call(stub, key)


async def test_stopping_with_redis_hung_closes_within_the_deadline(redis_keyed, own_redis, caplog):
    # A release cannot reach Redis (it hangs: the reservation it releases timed
    # out): the gateway still stops by its deadline, and says what was not written.
    caplog.set_level(logging.WARNING, logger="llmgateway.server.state.redis_limits")
    key = new_key(redis_keyed, budget_usd=10.0, budget_period="day")
    running = await start_gateway(redis_keyed, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = pb_grpc.CompletionServiceStub(channel)
            await call(stub, key)
            await running.calls.aclose()  # its settlement written
            own_redis.pause()
            await refused(stub, key)  # its release now waits for Redis
        assert running.state is not None
        limiter = running.state.limiter
        assert limiter.unsettled == 1
        began = asyncio.get_running_loop().time()
        # Bounded: Redis never answers, so only the gateway's own deadline ends it.
        async with asyncio.timeout(60):
            await running.stop(grace=0)
        took = asyncio.get_running_loop().time() - began
    except BaseException:
        await running.stop(grace=0)
        raise
    finally:
        own_redis.resume()
    assert limiter.settlements_lost == 1
    assert any("could not be written to the limits store" in r.getMessage() for r in caplog.records)
    # One deadline for all of it (grace 0: the close floor), plus the
    # Redis timeout of the write begun before it, and the machine's noise.
    assert took < CLOSE_FLOOR_SECONDS + 0.5 + 5.0


def test_nano_usd_is_exact_for_cents():
    assert nano(0.1) * 30 == nano(3.0)
    assert nano(25.5 * 0.05) == 1_275_000_000


async def test_a_redis_that_may_forget_spend_is_warned_about(own_redis, caplog):
    caplog.set_level(logging.WARNING, logger="llmgateway.server.state.redis_limits")
    async with client(own_redis.url) as redis_client:
        await redis_client.config_set("maxmemory-policy", "allkeys-lru")
        await redis_client.config_set("appendonly", "no")
    limiter = redis_limiter(own_redis.url)
    await limiter.start()
    await limiter.close()
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "maxmemory-policy allkeys-lru" in said
    assert "set maxmemory-policy noeviction" in said
    assert "writes no append-only file" in said


async def test_a_budget_redis_lost_is_seeded_from_the_ledger(redis_keyed, own_redis):
    # Redis loses its data mid-day (or replaces the database's limits): the
    # key's spend so far comes back from the ledger, not from zero.
    priced = dataclasses.replace(
        redis_keyed, prices={"zai/glm-4.7": PriceOverride(prompt=0.0, completion=1000.0)}
    )
    record, key = new_key_record(priced, budget_usd=10.0, budget_period="day")
    async with serving(priced) as (running, stub):
        for _ in range(3):
            await call(stub, key)
        await running.calls.aclose()  # settled at what they cost
        before = await held_usd(own_redis.url, record)
        assert before > 0
        assert await ledger_cost(priced, 3) == pytest.approx(before)
        async with client(own_redis.url) as redis_client:
            await redis_client.flushall()
        await call(stub, key)
        await running.calls.aclose()
        after = await held_usd(own_redis.url, record)
    assert after == pytest.approx(await ledger_cost(priced, 4))
    assert after > before


def new_key_record(settings: Settings, **limits: object) -> tuple[CallerKey, str]:
    db = Database(settings.db)
    try:
        migrate(db)
        return KeyStore(db).create("limited", **limits)  # type: ignore[arg-type]
    finally:
        db.close()


async def ledger_cost(settings: Settings, calls: int) -> float:
    """The ledger's cost of its `calls` calls, once each is complete (it writes in batches)."""
    db = Database(settings.db)
    try:
        for _ in range(600):  # 30 s: a bound for a loaded machine, not a speed check
            rows = db.run_sync(lambda tx: tx.fetchall("SELECT status, cost_usd FROM usage_records"))
            if len(rows) == calls and all(status != "IN_FLIGHT" for status, _ in rows):
                return sum(float(cost) for _, cost in rows)
            await asyncio.sleep(0.05)
    finally:
        db.close()
    raise AssertionError("the ledger never completed its rows")


async def test_a_start_redis_refuses_closes_what_it_opened(tmp_path):
    """Not an outage (Redis answers, with an error): the start fails, and the
    ledger's writers, the lease, Redis's connections and the database's threads
    opened before it are all closed."""
    threads = set(threading.enumerate())
    location = str(tmp_path / "state.db")
    async with echoing_server("ERR echo:") as server:
        configured = Settings(
            db=location, redis_url=f"redis://:pw@127.0.0.1:{server.port}/0", redis_timeout=5.0
        )
        with pytest.raises(redis.exceptions.ResponseError, match="echo:"):
            await open_state(configured)
        for _ in range(100):  # the server sees the hang-up a moment later: a bound, 5 s
            if not server.connections:
                break
            await asyncio.sleep(0.05)
        assert server.connections == 0
    assert [task for task in asyncio.all_tasks() if task is not asyncio.current_task()] == []
    assert [t.name for t in threading.enumerate() if t not in threads and t.is_alive()] == []
    db = Database(location)
    try:  # the lease was given back, not left to lapse
        assert db.run_sync(lambda tx: tx.fetchall("SELECT id FROM gateway_instances")) == []
    finally:
        db.close()


async def test_a_malformed_redis_url_stops_the_start_saying_what_to_fix(tmp_path):
    settings = Settings(db=str(tmp_path / "state.db"), redis_url="redis://:s3cret@cache:port/0")
    with pytest.raises(ConfigError, match="LLMGATEWAY_REDIS_URL") as caught:
        await open_state(settings)
    assert "s3cret" not in str(caught.value)
