"""Caller keys, model patterns, rate limits and budgets, end to end, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import TYPE_CHECKING

import grpc
import pytest
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

from fake_upstream import FakeUpstream
from service import access
from service.config import PriceOverride, Settings
from service.server import start_gateway
from service.state.db import Database
from service.state.keys import KeyStore, hash_key
from service.state.schema import migrate
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
        assert migrate(db) == migrate(db) == 1
    finally:
        db.close()


async def test_open_without_keys_and_says_so(keyed, caplog):
    caplog.set_level(logging.WARNING, logger="service.server")
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


async def test_requests_per_minute(keyed, store):
    _, key = store.create("slow-lane", rpm=2)
    async with gateway(keyed) as (stub, _):
        await complete(stub, key)
        await complete(stub, key)
        limited = await refused(complete(stub, key))
    assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    status = rich_status(limited)
    assert status.info.reason == "KEY_RATE_LIMITED"
    assert status.retry is not None
    assert 0 < status.retry.retry_delay.ToTimedelta().total_seconds() <= 60
    assert "2 requests per minute" in status.message


async def test_tokens_per_minute(keyed, store):
    _, key = store.create("tiny", tpm=100)
    async with gateway(keyed) as (stub, _):
        too_big = await refused(complete(stub, key))  # 1,024 output tokens assumed
        assert "lower max_tokens" in (too_big.details() or "")
        assert rich_status(too_big).retry is None  # waiting would not help
        small = pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")])
        small.sampling.max_tokens = 40
        await stub.Complete(small, metadata=bearer(key), timeout=10)
        # The first call settled at what it used, well under 100: room for another.
        await stub.Complete(small, metadata=bearer(key), timeout=10)


async def test_a_budget_is_not_overspent_by_concurrent_calls(keyed, store):
    # Each call may cost up to 100 completion tokens at $1,000 per million:
    # $0.10 reserved each. A $0.35 daily budget admits three of eight
    # concurrent calls, however they interleave.
    slow = FakeUpstream(chunk_delay=0.05)
    await slow.start()
    try:
        settings = dataclasses.replace(
            Settings.load({**slow.environment(), "LLMGATEWAY_DB": keyed.db}),
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
