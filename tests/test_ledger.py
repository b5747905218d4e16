"""The usage ledger: a row per call however it ended, the usage report and GetUsage."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import timestamp_pb2

from llmgateway.client import AsyncCompletionClient, CompletionClient
from llmgateway.client.errors import InvalidRequestError
from llmgateway.server.observability.observe import CallRecord
from llmgateway.server.process.cli import main
from llmgateway.server.providers import openrouter
from llmgateway.server.state.db import Database
from llmgateway.server.state.keys import KeyStore
from llmgateway.server.state.ledger import Ledger, parse_since, usage_sync
from llmgateway.server.state.schema import migrate
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import rich_status, user
from tests.test_keys import bearer, gateway

if TYPE_CHECKING:
    from llmgateway.server.config import Settings

COLUMNS = (
    "request_id, key_id, method, requested_model, served_model, provider, prompt_tokens, "
    "completion_tokens, cached_tokens, cache_write_tokens, reasoning_tokens, cost_usd, "
    "latency_ms, ttft_ms, status, reason, attempts, fallbacks"
)


def ledger_rows(location: str) -> list[dict[str, object]]:
    db = Database(location)
    try:
        rows = db.run_sync(
            lambda tx: tx.fetchall(f"SELECT {COLUMNS} FROM usage_records ORDER BY id")  # noqa: S608
        )
    finally:
        db.close()
    names = [c.strip() for c in COLUMNS.split(",")]
    return [dict(zip(names, row, strict=True)) for row in rows]


@pytest.fixture
def keyed(settings: Settings, db_location: str) -> Settings:
    return dataclasses.replace(settings, db=db_location)


async def test_every_call_is_recorded_however_it_ends(keyed, fake):
    async with gateway(keyed) as (stub, _):
        unary = stub.Complete(pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")]))
        response = await unary
        request_id = dict(await unary.initial_metadata())["x-request-id"]

        streamed = [
            e
            async for e in stub.StreamComplete(
                pb.StreamCompleteRequest(model="openrouter/openai/gpt-4o", messages=[user("hi")]),
                timeout=10,
            )
        ]
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub.Complete(
                pb.CompleteRequest(model="openrouter/x/fault-http-400", messages=[user("hi")])
            )

        # A stream the caller abandons after its first event.
        slow = stub.StreamComplete(
            pb.StreamCompleteRequest(model="openrouter/x/fault-slow", messages=[user("hi")])
        )
        async for _ in slow:
            break
        slow.cancel()
        await asyncio.sleep(0.3)
    rows = ledger_rows(keyed.db)
    assert [r["status"] for r in rows] == ["OK", "OK", "INVALID_ARGUMENT", "CANCELLED"]

    first = rows[0]
    assert first["request_id"] == request_id
    assert (first["method"], first["requested_model"], first["served_model"]) == (
        "Complete",
        "zai/glm-4.7",
        "zai/glm-4.7",
    )
    assert first["provider"] == "zai"
    assert first["prompt_tokens"] == response.usage.prompt_tokens
    assert first["completion_tokens"] == response.usage.completion_tokens
    assert first["reasoning_tokens"] == response.usage.reasoning_tokens
    assert first["cost_usd"] == pytest.approx(response.usage.cost_usd)
    assert first["key_id"] == ""  # the gateway runs open in this test
    assert first["attempts"] == 1

    stream = rows[1]
    done = streamed[-1].done
    assert (stream["method"], stream["provider"]) == ("StreamComplete", "openrouter")
    assert stream["completion_tokens"] == done.usage.completion_tokens
    assert stream["cost_usd"] == pytest.approx(done.usage.cost_usd)
    assert 0 < stream["ttft_ms"] <= stream["latency_ms"]  # type: ignore[operator]

    assert rows[2]["reason"] == "UPSTREAM_REJECTED_REQUEST"
    assert rich_status(failed.value).info.metadata["requestId"] == rows[2]["request_id"]
    assert (rows[3]["method"], rows[3]["provider"]) == ("StreamComplete", "openrouter")
    assert rows[3]["ttft_ms"] is not None  # an event reached the caller before it left


async def test_a_missing_openrouter_cost_comes_from_the_generation_record(keyed, fake, monkeypatch):
    monkeypatch.setattr(openrouter, "GENERATION_LOOKUP_DELAYS", (0.01, 0.05, 0.1))
    async with gateway(keyed) as (stub, _):
        response = await stub.Complete(
            pb.CompleteRequest(model="openrouter/openai/fault-no-cost", messages=[user("hi")])
        )
    assert not response.usage.HasField("cost_usd")
    (row,) = ledger_rows(keyed.db)
    # The fake charges $1 per million prompt tokens and $2 per million completion.
    expected = response.usage.prompt_tokens * 1e-6 + response.usage.completion_tokens * 2e-6
    assert row["cost_usd"] == pytest.approx(expected)
    # Its first look-up 404s, as OpenRouter's does right after a completion.
    assert fake.generation_lookups[response.id] == 2


async def test_get_usage_shows_a_key_its_own_calls_only(keyed, db_location):
    db = Database(db_location)
    migrate(db)
    store = KeyStore(db)
    alice, alice_key = store.create("alice")
    bob, bob_key = store.create("bob")
    _, reader_key = store.create("finance", usage_reader=True)
    db.close()
    async with gateway(keyed) as (stub, _):
        for key in (alice_key, alice_key, bob_key):
            await stub.Complete(
                pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")]),
                metadata=bearer(key),
            )
        by_key = pb.GetUsageRequest(group_by=pb.USAGE_GROUPING_KEY)
        mine = await stub.GetUsage(by_key, metadata=bearer(alice_key))
        everyone = await stub.GetUsage(by_key, metadata=bearer(reader_key))
        with pytest.raises(grpc.aio.AioRpcError) as peeking:
            await stub.GetUsage(
                pb.GetUsageRequest(key_id=bob.id), metadata=bearer(alice_key), timeout=10
            )
        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.GetUsage(by_key, timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as bad_grouping:
            await stub.GetUsage(
                pb.GetUsageRequest(group_by=99),  # type: ignore[arg-type]  # deliberately invalid
                metadata=bearer(reader_key),
                timeout=10,
            )
        later = int(time.time()) + 3600
        empty = await stub.GetUsage(
            pb.GetUsageRequest(
                start_time=timestamp_pb2.Timestamp(seconds=later),
                end_time=timestamp_pb2.Timestamp(seconds=later + 60),
            ),
            metadata=bearer(reader_key),
        )
    assert [(r.group, r.calls) for r in mine.rows] == [(alice.id, 2)]
    assert sorted((r.group, r.calls) for r in everyone.rows) == sorted([(alice.id, 2), (bob.id, 1)])
    assert all(r.cost_usd > 0 and r.prompt_tokens > 0 for r in everyone.rows)
    status = rich_status(peeking.value)
    assert (status.code, status.info.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "USAGE_NOT_ALLOWED",
    )
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert bad_grouping.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(empty.rows) == []


def test_usage_report_from_the_command_line(keyed, capsys):
    db = Database(keyed.db)
    migrate(db)
    now = time.time()
    sonnet = "anthropic/claude-sonnet-4-5"
    rows = [
        ("r1", "", "Complete", "zai/glm-4.7", "zai/glm-4.7", "zai", 10, 20, 0, 0, 5, 0.25, "OK"),
        ("r2", "", "Complete", "zai/glm-4.7", "zai/glm-4.7", "zai", 30, 40, 10, 0, 0, 0.5, "OK"),
        ("r3", "", "StreamComplete", "fast", "", "", 0, 0, 0, 0, 0, None, "UNAVAILABLE"),
        ("r4", "", "Complete", sonnet, sonnet, "anthropic", 1532, 9, 1111, 418, 0, 0.01, "OK"),
    ]
    db.run_sync(
        lambda tx: [
            tx.execute(
                "INSERT INTO usage_records (request_id, key_id, method, requested_model, "
                "served_model, provider, prompt_tokens, completion_tokens, cached_tokens, "
                "cache_write_tokens, reasoning_tokens, cost_usd, latency_ms, ttft_ms, status, "
                "reason, attempts, fallbacks, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 1, ?, '', 1, 0, ?)",
                (*row, now),
            )
            for row in rows
        ]
    )
    db.close()
    assert main(["usage", "--db", keyed.db, "--by", "model", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report == [
        {
            "model": sonnet,
            "calls": 1,
            "failed_calls": 0,
            "prompt_tokens": 1532,
            "completion_tokens": 9,
            "cached_tokens": 1111,
            "cache_write_tokens": 418,
            "reasoning_tokens": 0,
            "cost_usd": 0.01,
        },
        {
            "model": "fast",
            "calls": 1,
            "failed_calls": 1,
            "prompt_tokens": 0,
            "completion_tokens": 0,
            "cached_tokens": 0,
            "cache_write_tokens": 0,
            "reasoning_tokens": 0,
            "cost_usd": 0.0,
        },
        {
            "model": "zai/glm-4.7",
            "calls": 2,
            "failed_calls": 0,
            "prompt_tokens": 40,
            "completion_tokens": 60,
            "cached_tokens": 10,
            "cache_write_tokens": 0,
            "reasoning_tokens": 5,
            "cost_usd": 0.75,
        },
    ]
    assert main(["usage", "--db", keyed.db, "--by", "day"]) == 0
    table = capsys.readouterr().out
    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    assert today in table
    header, *_, total = table.splitlines()
    assert header.split() == [
        "day",
        "calls",
        "failed",
        "prompt",
        "completion",
        "cached",
        "cache",
        "write",
        "reasoning",
        "cost",
        "USD",
    ]
    assert total.split() == ["TOTAL", "4", "1", "1572", "69", "1121", "418", "5", "0.760000"]


def test_since_accepts_durations_and_dates():
    now = 1_800_000_000.0
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("24h", now) == now - 86400
    assert parse_since("2026-11-01", now) == 1_793_491_200.0
    with pytest.raises(ValueError, match="--since"):
        parse_since("last week", now)


async def test_the_python_clients_read_usage(keyed, db_location):
    db = Database(db_location)
    migrate(db)
    _, key = KeyStore(db).create("alice")
    db.close()
    async with gateway(keyed) as (_, port):
        target = f"127.0.0.1:{port}"
        async with AsyncCompletionClient(target, api_key=key) as client:
            await client.complete("zai/glm-4.7", "hi")
            by_day = await client.get_usage(by="day", since=dt.datetime(2020, 1, 1))
            with pytest.raises(InvalidRequestError):
                await client.get_usage(since=dt.datetime(2030, 1, 2), until=dt.datetime(2030, 1, 1))

        def blocking() -> pb.GetUsageResponse:
            with CompletionClient(target, api_key=key) as sync_client:
                return sync_client.get_usage(by="model")

        by_model = await asyncio.to_thread(blocking)
    today = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d")
    assert [(r.group, r.calls) for r in by_day.rows] == [(today, 1)]
    assert [(r.group, r.calls) for r in by_model.rows] == [("zai/glm-4.7", 1)]


async def test_admissions_arriving_together_share_a_transaction(db_location):
    db = Database(db_location)
    migrate(db)
    db.open_here()  # as the gateway does (SQLite only)
    transactions = 0
    run = db.run

    async def counting(work, **kwargs):
        nonlocal transactions
        transactions += 1
        return await run(work, **kwargs)

    db.run = counting  # type: ignore[method-assign]
    try_now = db.try_now

    def counting_here(work):
        nonlocal transactions
        written, result = try_now(work)
        transactions += written
        return written, result

    db.try_now = counting_here  # type: ignore[method-assign]
    ledger = Ledger(db, instance_id="me")
    ledger.start()
    records = [CallRecord(request_id=f"r{i}", method="Complete") for i in range(50)]
    try:
        await asyncio.gather(*(ledger.call_admitted(r, None) for r in records))
        admitted = transactions
        for record in records:
            ledger.call_finished(record)
        await ledger.flush()
        assert await ledger.close()
    finally:
        db.close()
    # Each admission waits for its row, but they are written together (on
    # SQLite the first is written alone, on the event loop: the rest, in the
    # same turn of the loop, queue), and so are their completions.
    assert admitted == (2 if db.dialect == "sqlite" else 1)
    assert transactions == admitted + 1
    assert {r["status"] for r in ledger_rows(db_location)} == {"OK"}
    assert len(ledger_rows(db_location)) == 50


async def test_cache_writes_are_recorded_and_added_up(db_location):
    db = Database(db_location)
    migrate(db)
    ledger = Ledger(db, instance_id="me")
    ledger.start()
    records = [
        CallRecord(
            request_id=f"w{i}",
            method="Complete",
            requested_model="anthropic/claude-sonnet-4-5",
            provider="anthropic",
            prompt_tokens=1000,
            cached_tokens=100 * i,
            cache_write_tokens=200 + i,
            started_at=time.time(),
        )
        for i in range(3)
    ]
    try:
        for record in records:
            await ledger.call_admitted(record, None)
            ledger.call_finished(record)
        assert await ledger.close()
        (row,) = usage_sync(db, "model", 0, time.time() + 60)
    finally:
        db.close()
    assert [r["cache_write_tokens"] for r in ledger_rows(db_location)] == [200, 201, 202]
    assert (row.prompt_tokens, row.cached_tokens, row.cache_write_tokens) == (3000, 300, 603)
