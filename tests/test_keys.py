"""Caller keys, model patterns, rate limits and budgets, end to end, on SQLite and PostgreSQL;
the limits also with Redis holding them (LLMGATEWAY_REDIS_URL)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import multiprocessing
import time
from typing import TYPE_CHECKING

import grpc
import pytest

from llmgateway.server.call_path import access
from llmgateway.server.call_path.calls import UNKNOWN_PRICE_RESERVATION_USD
from llmgateway.server.config import ConfigError, PriceOverride, Settings
from llmgateway.server.errors import GatewayError
from llmgateway.server.process.server import start_gateway
from llmgateway.server.state.db import Database
from llmgateway.server.state.keys import KeyStore, hash_key
from llmgateway.server.state.limits import Limiter, LimitStore, Reservation, period_bounds
from llmgateway.server.state.redis_limits import RedisLimiter
from llmgateway.server.state.schema import MIGRATIONS, migrate
from llmgateway.testing.fake_upstream import FakeUpstream
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.conftest import rich_status, user

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator


@pytest.fixture
def store(db_location: str) -> Iterator[KeyStore]:
    db = Database(db_location)
    migrate(db)
    yield KeyStore(db)
    db.close()


@pytest.fixture
def keyed(settings: Settings, db_location: str) -> Settings:
    return dataclasses.replace(settings, db=db_location)


@pytest.fixture(params=["db", "redis"])
def limits_url(request: pytest.FixtureRequest) -> str:
    """Where the limits live: the state database (""), then a Redis URL."""
    if request.param == "db":
        return ""
    url: str = request.getfixturevalue("redis_url")
    return url


@pytest.fixture
def limited(keyed: Settings, limits_url: str) -> Settings:
    """`keyed`, with the limits in the database, then in Redis."""
    return dataclasses.replace(keyed, redis_url=limits_url)


@contextlib.asynccontextmanager
async def gateway(
    settings: Settings,
) -> AsyncIterator[tuple[pb_grpc.CompletionServiceAsyncStub, int]]:
    running = await start_gateway(settings, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield pb_grpc.CompletionServiceStub(channel), running.port
    finally:
        await running.stop(grace=0)


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


async def complete(
    stub: pb_grpc.CompletionServiceAsyncStub, key: str | None, model: str = "zai/glm-4.7"
) -> pb.CompleteResponse:
    response: pb.CompleteResponse = await stub.Complete(
        pb.CompleteRequest(model=model, messages=[user("hi")]),
        metadata=bearer(key) if key else None,
        timeout=10,
    )
    return response


async def refused(call: asyncio.Future[object] | object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def test_keys_are_stored_as_hashes_and_listed_without_them(store, db_location):
    record, key = store.create("ci-bot", models=("zai/*",), rpm=5)
    assert key.startswith("lgw_")
    assert len(key) > 40
    assert record.prefix == key[:12]
    db = Database(db_location)
    try:
        rows = db.run_sync(lambda tx: tx.fetchall("SELECT * FROM api_keys"))
    finally:
        db.close()
    flat = repr(rows)
    assert key not in flat
    assert hash_key(key) in flat
    (listed,) = store.list()
    assert (listed.id, listed.name, listed.models, listed.rpm) == (
        record.id,
        "ci-bot",
        ("zai/*",),
        5,
    )


def test_migrations_are_idempotent(db_location):
    db = Database(db_location)
    try:
        assert migrate(db) == migrate(db) == len(MIGRATIONS)
    finally:
        db.close()


async def test_open_without_keys_and_says_so(keyed, caplog):
    caplog.set_level(logging.WARNING, logger="llmgateway.server.process.server")
    async with gateway(keyed) as (stub, _):
        assert (await complete(stub, None)).content
    assert any("OPEN GATEWAY" in r.getMessage() for r in caplog.records)


async def test_a_key_is_required_once_one_exists(keyed, store, monkeypatch):
    monkeypatch.setattr(access, "CACHE_SECONDS", 0.0)
    _, key = store.create("alice")
    async with gateway(keyed) as (stub, _):
        missing = await refused(complete(stub, None))
        assert missing.code() == grpc.StatusCode.UNAUTHENTICATED
        assert rich_status(missing).info.reason == "UNAUTHENTICATED"
        assert "authorization: Bearer" in (missing.details() or "")

        wrong = await refused(complete(stub, "lgw_not-a-key"))
        assert wrong.code() == grpc.StatusCode.UNAUTHENTICATED

        assert (await complete(stub, key)).content
        # Streams and model listing need the key too.
        stream = stub.StreamComplete(
            pb.StreamCompleteRequest(model="zai/glm-4.7", messages=[user("hi")]), timeout=10
        )
        no_key_stream = await refused(_drain(stream))
        assert no_key_stream.code() == grpc.StatusCode.UNAUTHENTICATED
        listing = await refused(stub.ListModels(pb.ListModelsRequest(), timeout=10))
        assert listing.code() == grpc.StatusCode.UNAUTHENTICATED
        assert (await stub.ListModels(pb.ListModelsRequest(), metadata=bearer(key))).models

        store.revoke("alice")
        revoked = await refused(complete(stub, key))
        assert revoked.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_unauthenticated_calls_learn_nothing_else(keyed, store):
    store.create("alice")
    async with gateway(keyed) as (stub, _):
        # An invalid request without a key is refused for the key, not the request.
        error = await refused(
            stub.Complete(pb.CompleteRequest(model="nonsense", messages=[]), timeout=10)
        )
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_model_patterns(keyed, store):
    _, key = store.create("zai-only", models=("zai/*", "fast"))
    async with gateway(keyed) as (stub, _):
        assert (await complete(stub, key, "zai/glm-4.7")).content
        assert (await complete(stub, key, "fast")).content  # an alias from the test settings
        denied = await refused(complete(stub, key, "openrouter/openai/gpt-4o"))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED
    status = rich_status(denied)
    assert status.info.reason == "MODEL_NOT_ALLOWED"
    assert "zai/*" in status.message


async def test_requests_per_minute(limited, store):
    _, key = store.create("slow-lane", rpm=2)
    async with gateway(limited) as (stub, _):
        await complete(stub, key)
        await complete(stub, key)
        limited = await refused(complete(stub, key))
    assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rich_status(limited)
    assert status.info.reason == "KEY_RATE_LIMITED"
    assert status.retry is not None
    assert 0 < status.retry.retry_delay.ToTimedelta().total_seconds() <= 60
    assert "2 requests per minute" in status.message


async def test_tokens_per_minute(limited, store):
    _, key = store.create("tiny", tpm=100)
    async with gateway(limited) as (stub, _):
        too_big = await refused(complete(stub, key))  # 1,024 output tokens assumed
        assert "lower max_tokens" in (too_big.details() or "")
        assert rich_status(too_big).retry is None  # waiting would not help
        # Each reserves about 70 tokens (its prompt and max_tokens 60) and uses
        # about 25: only settling to the real use leaves room for the second.
        small = pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")])
        small.sampling.max_tokens = 60
        await stub.Complete(small, metadata=bearer(key), timeout=10)
        await until_settled(limited)
        await stub.Complete(small, metadata=bearer(key), timeout=10)


async def until_settled(settings: Settings) -> list[tuple[int, float, int]]:
    """Once every reservation is settled (settling runs after the reply): from
    the database, the reservations in the order they were made; from Redis,
    nothing (it keeps no settled ones). The order must be asked for:
    PostgreSQL returns updated rows in no particular order (an UPDATE writes
    a new row version, so a scan may meet the last one settled first)."""
    if settings.redis_url:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(settings.redis_url)
        try:
            for _ in range(600):  # 30 s: a bound for a loaded machine, not a speed check
                if not [k async for k in client.scan_iter(match="lgw:*:r:*")]:
                    return []
                await asyncio.sleep(0.05)
        finally:
            await client.aclose()
        raise AssertionError("reservations were never settled")
    db = Database(settings.db)
    try:
        for _ in range(600):  # 30 s: a bound for a loaded machine, not a speed check
            rows = db.run_sync(
                lambda tx: tx.fetchall(
                    "SELECT tokens, cost_usd, settled FROM reservations ORDER BY id"
                )
            )
            if all(row[2] for row in rows):
                return [(int(r[0]), float(r[1]), int(r[2])) for r in rows]
            await asyncio.sleep(0.05)
    finally:
        db.close()
    raise AssertionError("reservations were never settled")


async def spent(settings: Settings, key_id: str, period: str) -> float:
    """USD the key has spent or holds this period, in the store that holds its limits."""
    if settings.redis_url:
        import redis.asyncio

        start, _ = period_bounds(period, time.time())
        client = redis.asyncio.Redis.from_url(settings.redis_url)
        try:
            held = await client.get(f"lgw:{{{key_id}}}:b:{int(start)}")
        finally:
            await client.aclose()
        return int(held or 0) / 1e9
    db = Database(settings.db)
    try:
        rows = db.run_sync(
            lambda tx: tx.fetchall(
                "SELECT COALESCE(SUM(cost_usd), 0) FROM reservations WHERE key_id = ?", (key_id,)
            )
        )
    finally:
        db.close()
    return float(rows[0][0])


async def test_a_stream_cut_short_keeps_its_reservation(limited, store, fake, monkeypatch):
    # The caller leaves after the first event: the usage never arrives, but the
    # upstream was generating (and billing), so the estimate stays spent.
    record, key = store.create("leaver", budget_usd=10.0, budget_period="month")
    # The cut-short call settles once the gateway notices the caller left,
    # which may be after the second call settled (the race that once made
    # this test fail): make it always so.
    store_class: type[LimitStore] = RedisLimiter if limited.redis_url else Limiter
    settle = store_class.settle
    refused_call_settled = asyncio.Event()

    async def second_settles_first(
        limiter: LimitStore, reservation: Reservation, tokens: int, cost_usd: float
    ) -> None:
        if tokens:  # the cut-short call, which keeps its estimate
            await refused_call_settled.wait()
        await settle(limiter, reservation, tokens, cost_usd)
        if not tokens:
            refused_call_settled.set()

    monkeypatch.setattr(store_class, "settle", second_settles_first)
    request = pb.StreamCompleteRequest(model="zai/fault-slow", messages=[user("hi")])
    request.sampling.max_tokens = 100
    async with gateway(limited) as (stub, _):
        call = stub.StreamComplete(request, metadata=bearer(key))
        async for _ in call:
            break
        call.cancel()
        # A call the upstream refused produced nothing to pay for.
        await refused(complete(stub, key, "zai/fault-http-400"))
        reservations = await until_settled(limited)
    # fault-slow has no price: what an unpriced model reserves, and all the key holds.
    assert await spent(limited, record.id, "month") == pytest.approx(UNKNOWN_PRICE_RESERVATION_USD)
    if not limited.redis_url:
        cut_short, refused_call = reservations
        assert cut_short[0] >= 100  # the estimate: prompt plus max_tokens
        assert cut_short[1] == pytest.approx(UNKNOWN_PRICE_RESERVATION_USD)
        assert refused_call[:2] == (0, 0.0)


async def test_openrouter_fallback_models_must_be_allowed_too(keyed, store, fake):
    _, key = store.create("mini-only", models=("openrouter/openai/gpt-4o-mini",))
    request = pb.CompleteRequest(model="openrouter/openai/gpt-4o-mini", messages=[user("hi")])
    request.openrouter.models.append("anthropic/claude-opus-4")
    async with gateway(keyed) as (stub, _):
        denied = await refused(stub.Complete(request, metadata=bearer(key), timeout=10))
    status = rich_status(denied)
    assert (status.code, status.info.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "MODEL_NOT_ALLOWED",
    )
    assert status.info.metadata["model"] == "openrouter/anthropic/claude-opus-4"
    assert fake.requests == []


async def test_a_call_dearer_than_the_whole_budget_is_told_so(limited, store):
    _, key = store.create("pocket-money", budget_usd=0.0001, budget_period="day")
    async with gateway(limited) as (stub, _):
        error = await refused(complete(stub, key))  # 1,024 output tokens at $2.20/M
    status = rich_status(error)
    assert status.info.reason == "KEY_BUDGET_EXCEEDED"
    assert "lower max_tokens" in status.message
    assert status.retry is None  # no day will be long enough


async def test_calls_without_a_valid_key_stay_out_of_the_ledger(keyed, store):
    _, key = store.create("alice")
    async with gateway(keyed) as (stub, _):
        for guess in ("lgw_a", "lgw_b", "lgw_c"):
            await refused(complete(stub, guess))
        await complete(stub, key)
    db = Database(keyed.db)
    try:
        rows = db.run_sync(lambda tx: tx.fetchall("SELECT status FROM usage_records"))
    finally:
        db.close()
    assert rows == [("OK",)]


def test_a_database_newer_than_the_gateway_is_refused(db_location):
    db = Database(db_location)
    try:
        migrate(db)
        db.run_sync(
            lambda tx: tx.execute(
                "INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)",
                (len(MIGRATIONS) + 1,),
            )
        )
        with pytest.raises(ConfigError, match="upgrade the gateway"):
            migrate(db)
    finally:
        db.close()


def test_a_postgresql_password_is_never_displayed():
    for url in (
        "postgresql://gw:s3cret@db.internal:5432/ledger",
        "postgresql://gw@db.internal/ledger?password=s3cret&sslmode=require",
    ):
        db = Database(url)
        try:
            assert "s3cret" not in db.display
            assert "db.internal" in db.display
        finally:
            db.close()


async def test_a_budget_is_not_overspent_by_concurrent_calls(limited, store):
    # Each call may cost up to 100 completion tokens at $1,000 per million:
    # $0.10 reserved each. A $0.35 daily budget admits three of eight
    # concurrent calls, however they interleave.
    slow = FakeUpstream(chunk_delay=0.05)
    await slow.start()
    try:
        settings = dataclasses.replace(
            Settings.load(
                {
                    **slow.environment(),
                    "LLMGATEWAY_DB": limited.db,
                    "LLMGATEWAY_REDIS_URL": limited.redis_url,
                }
            ),
            prices={"zai/glm-4.7": PriceOverride(prompt=0.0, completion=1000.0)},
        )
        record, key = store.create("capped", budget_usd=0.35, budget_period="day")
        request = pb.StreamCompleteRequest(model="zai/glm-4.7", messages=[user("hi")])
        request.sampling.max_tokens = 100
        async with gateway(settings) as (stub, _):
            results = await asyncio.gather(
                *(_drain(stub.StreamComplete(request, metadata=bearer(key))) for _ in range(8)),
                return_exceptions=True,
            )
            usage = await stub.GetUsage(
                pb.GetUsageRequest(group_by=pb.USAGE_GROUPING_KEY), metadata=bearer(key)
            )
    finally:
        await slow.close()
    errors = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(errors) == 5
    for error in errors:
        status = rich_status(error)
        assert (status.code, status.info.reason) == (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "KEY_BUDGET_EXCEEDED",
        )
        assert status.retry is not None  # until the UTC day ends
        assert status.retry.retry_delay.ToTimedelta().total_seconds() <= 86400
    (row,) = usage.rows
    assert (row.group, row.calls, row.failed_calls) == (record.id, 8, 5)
    assert 0 < row.cost_usd <= 0.35


async def _drain(call: object) -> list[pb.StreamCompleteResponse]:
    return [event async for event in call]  # type: ignore[attr-defined]


def _reserve_many(location: str, key_id: str, count: int, redis_url: str) -> int:
    """In a process of its own: try `count` $0.10 reservations; how many passed."""
    db = Database(location)
    try:
        key = next(k for k in KeyStore(db).list() if k.id == key_id)

        async def attempt() -> int:
            limiter: LimitStore = Limiter(db)
            if redis_url:
                limiter = RedisLimiter(
                    redis_url, instance_id="racer", lease_seconds=15.0, timeout=5.0
                )
                await limiter.start()
            passed = 0
            try:
                for _ in range(count):
                    try:
                        await limiter.reserve(key, tokens=10, cost_usd=0.1)
                        passed += 1
                    except GatewayError:
                        pass
            finally:
                await limiter.close()
            return passed

        return asyncio.run(attempt())
    finally:
        db.close()


def test_processes_sharing_a_database_cannot_overspend_together(store, db_location, limits_url):
    # Four processes (as four workers, or replicas on PostgreSQL or Redis) race
    # 80 $0.10 reservations against one $3.00 budget: exactly 30 may pass.
    record, _ = store.create("shared", budget_usd=3.0, budget_period="day")
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=context) as pool:
        passed = list(
            pool.map(
                _reserve_many,
                [db_location] * 4,
                [record.id] * 4,
                [20] * 4,
                [limits_url] * 4,
            )
        )
    assert sum(passed) == 30


def _open_and_migrate(location: str, at: float) -> int:
    time.sleep(max(0.0, at - time.time()))  # all at once, as workers starting together
    db = Database(location)
    try:
        return migrate(db)
    finally:
        db.close()


def test_workers_starting_together_on_a_new_database(tmp_path):
    # Several workers (processes) open a database that does not exist yet at
    # the same moment: each must wait its turn, none may fail with "locked".
    location = str(tmp_path / "fresh.db")
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(6, mp_context=context) as pool:
        at = time.time() + 3.0  # after every process has started
        versions = list(pool.map(_open_and_migrate, [location] * 6, [at] * 6))
    assert versions == [len(MIGRATIONS)] * 6
