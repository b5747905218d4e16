"""Caller-key checks stay cheap under a flood of refusals, and never lock out a real key."""

from __future__ import annotations

import asyncio
import secrets
from typing import TYPE_CHECKING, cast

import grpc
import pytest

from llmgateway.server.call_path import access
from llmgateway.server.call_path.access import Access
from llmgateway.server.errors import GatewayError
from llmgateway.server.state.db import Database, StateUnavailableError
from llmgateway.server.state.keys import KEY_SHAPE, CallerKey, KeyStore
from llmgateway.server.state.schema import migrate
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import gateway_stub, user

if TYPE_CHECKING:
    from pathlib import Path

    from llmgateway.server.config import Settings
    from llmgateway.testing.fake_upstream import FakeUpstream

LIVE = CallerKey(
    id="key_live",
    name="live",
    prefix="lgw_live",
    models=(),
    rpm=None,
    tpm=None,
    budget_usd=None,
    budget_period=None,
    usage_reader=False,
    created_at=0.0,
    revoked_at=None,
)


def token() -> str:
    """A well-formed key nobody issued."""
    return "lgw_" + secrets.token_urlsafe(32)


class CountingStore:
    """A key store that knows `issued` and counts the look-ups it serves."""

    def __init__(self) -> None:
        self.issued: dict[str, CallerKey] = {}
        self.finds = 0
        self.failing = False
        self.gate: asyncio.Event | None = None
        # Whether any key exists, as any_issued answers it, and how often it was asked.
        self.any = True
        self.checks = 0
        self.check_failing = False

    async def find(self, key: str) -> CallerKey | None:
        self.finds += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise StateUnavailableError("the state database is unavailable")
        return self.issued.get(key)

    async def any_issued(self) -> bool:
        self.checks += 1
        if self.check_failing:
            raise StateUnavailableError("the state database is unavailable")
        return self.any

    @property
    def questions(self) -> int:
        """Every question put to the database."""
        return self.finds + self.checks


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def gate(store: CountingStore, clock: Clock | None = None) -> Access:
    return Access(cast("KeyStore", store), clock=clock)


def bearer(key: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {key}")]


async def refused(checker: Access, key: str) -> bool:
    """Whether `key` is refused as UNAUTHENTICATED."""
    try:
        await checker.authenticate(bearer(key))
    except GatewayError as error:
        return error.code == grpc.StatusCode.UNAUTHENTICATED
    return False


def test_issued_keys_have_the_shape_the_gateway_checks_first(tmp_path: Path) -> None:
    db = Database(str(tmp_path / "state.db"))
    migrate(db)
    try:
        for i in range(20):
            _, key = KeyStore(db).create(f"shape-{i}")
            assert KEY_SHAPE.fullmatch(key)
    finally:
        db.close()


@pytest.mark.parametrize(
    "garbage",
    ["x", "lgw_short", "sk-or-v1-" + "a" * 40, "lgw_" + "a" * 44, "lgw_" + "a" * 42 + "!"],
)
async def test_a_token_that_cannot_be_a_key_is_refused_without_a_look_up(garbage: str) -> None:
    store = CountingStore()
    assert await refused(gate(store), garbage)
    assert store.finds == 0


async def test_a_repeated_wrong_key_costs_one_look_up_per_cache_period() -> None:
    store, clock = CountingStore(), Clock()
    checker = gate(store, clock)
    wrong = token()
    for _ in range(500):
        assert await refused(checker, wrong)
    assert store.finds == 1
    clock.now += access.REFUSED_CACHE_SECONDS + 0.001
    assert await refused(checker, wrong)
    assert store.finds == 2


async def test_concurrent_look_ups_of_one_token_share_one_query() -> None:
    store = CountingStore()
    store.gate = asyncio.Event()
    checker = gate(store)
    wrong = token()
    calls = [asyncio.ensure_future(refused(checker, wrong)) for _ in range(50)]
    await asyncio.sleep(0)
    # One caller leaving does not cancel the look-up the others wait on.
    calls[0].cancel()
    store.gate.set()
    results = await asyncio.gather(*calls[1:])
    assert all(results)
    assert store.finds == 1


async def test_a_key_issued_after_its_token_was_refused_works_within_the_cache_period() -> None:
    store, clock = CountingStore(), Clock()
    checker = gate(store, clock)
    key = token()
    assert await refused(checker, key)
    store.issued[key] = LIVE  # `keys create` in another process
    clock.now += access.REFUSED_CACHE_SECONDS / 2
    assert await refused(checker, key)  # still remembered as refused
    clock.now += access.REFUSED_CACHE_SECONDS / 2 + 0.001
    assert await checker.authenticate([("authorization", f"Bearer {key}")]) == LIVE


async def test_a_new_key_works_at_once_whatever_was_refused_before() -> None:
    store = CountingStore()
    checker = gate(store)
    for _ in range(100):
        assert await refused(checker, token())
    key = token()
    store.issued[key] = LIVE
    assert await checker.authenticate([("authorization", f"Bearer {key}")]) == LIVE


async def test_the_cache_of_refusals_cannot_grow_without_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(access, "MAX_REFUSED_CACHED", 64)
    store = CountingStore()
    checker = gate(store)
    live = token()
    store.issued[live] = LIVE
    assert await checker.authenticate([("authorization", f"Bearer {live}")]) == LIVE
    for _ in range(1000):
        assert await refused(checker, token())
    assert checker.cached_tokens <= 64 + 1
    # The flood evicted refusals only: the live key is still served from the cache.
    finds = store.finds
    assert await checker.authenticate([("authorization", f"Bearer {live}")]) == LIVE
    assert store.finds == finds


async def test_a_failed_look_up_is_not_remembered() -> None:
    store, clock = CountingStore(), Clock()
    checker = gate(store, clock)
    key = token()
    store.issued[key] = LIVE
    store.failing = True
    with pytest.raises(StateUnavailableError):
        await checker.authenticate(bearer(key))
    store.failing = False
    # The database just failed: asked again only after a pause.
    with pytest.raises(StateUnavailableError):
        await checker.authenticate(bearer(key))
    assert store.finds == 1
    clock.now += access.OUTAGE_RETRY_SECONDS
    assert await checker.authenticate(bearer(key)) == LIVE
    assert store.finds == 2


async def test_an_outage_keeps_a_closed_gateway_closed_and_its_refusals_cheap() -> None:
    store, clock = CountingStore(), Clock()
    checker = gate(store, clock)
    live = token()
    store.issued[live] = LIVE
    assert await checker.authenticate(bearer(live)) == LIVE
    store.failing = store.check_failing = True
    clock.now += access.CACHE_SECONDS + 1
    asked = store.questions
    seconds = 5.0
    for i in range(500):
        before = store.questions
        if i % 2:
            # Cannot be a key: refused at once, the database not asked.
            assert await refused(checker, f"not-a-key-{i}")
            assert store.questions == before
        else:
            with pytest.raises(StateUnavailableError):
                await checker.authenticate(bearer(token()))
        clock.now += seconds / 500
    # A question per retry interval, not one per call.
    assert store.questions - asked <= seconds / access.OUTAGE_RETRY_SECONDS + 1
    assert await refused(checker, "")  # no key at all: also refused without asking
    # Back: the next question goes through, and the live key works again.
    store.failing = store.check_failing = False
    clock.now += access.OUTAGE_RETRY_SECONDS
    assert await checker.authenticate(bearer(live)) == LIVE


async def test_a_closed_gateway_never_asks_again_whether_keys_exist() -> None:
    store, clock = CountingStore(), Clock()
    checker = gate(store, clock)
    assert await refused(checker, "not-a-key")
    for _ in range(10):
        clock.now += access.CACHE_SECONDS + 1
        assert await refused(checker, "not-a-key")
    assert store.checks == 1


async def test_an_open_gateway_stays_open_through_an_outage_and_closes_once_a_key_exists() -> None:
    store, clock = CountingStore(), Clock()
    store.any = False
    checker = gate(store, clock)
    assert await checker.authenticate(()) is None
    store.check_failing = True
    clock.now += access.CACHE_SECONDS + 1
    assert await checker.authenticate(()) is None  # the last answer stands
    assert await checker.authenticate(()) is None  # and is not asked again at once
    assert store.checks == 2
    store.check_failing, store.any = False, True  # back, and a key was issued
    clock.now += access.CACHE_SECONDS + 1
    assert await refused(checker, "not-a-key")


async def test_whether_keys_are_needed_is_never_guessed() -> None:
    store = CountingStore()
    store.check_failing = True
    with pytest.raises(StateUnavailableError):
        await gate(store).authenticate(bearer("not-a-key"))


async def test_concurrent_look_ups_put_a_bounded_number_of_questions_to_a_stalled_database() -> (
    None
):
    store = CountingStore()
    checker = gate(store)
    assert await refused(checker, token())  # closed, as found before the stall
    store.gate = asyncio.Event()
    store.failing = True
    calls = [asyncio.ensure_future(checker.authenticate(bearer(token()))) for _ in range(200)]
    for _ in range(20):
        await asyncio.sleep(0)  # every call has begun; the first few ask and wait
    assert store.finds == 1 + access.MAX_CONCURRENT_LOOKUPS
    store.gate.set()  # the database's timeout: each of them fails
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(result, StateUnavailableError) for result in results)
    # The calls that waited their turn were refused without asking.
    assert store.finds == 1 + access.MAX_CONCURRENT_LOOKUPS


async def test_refused_callers_stay_unauthenticated_and_a_key_created_meanwhile_works(
    settings: Settings, fake: FakeUpstream
) -> None:
    db = Database(settings.db)
    migrate(db)
    KeyStore(db).create("first")
    request = pb.CompleteRequest(model="zai/glm-4.7", messages=[user("hi")])
    async with gateway_stub(settings) as stub:
        for wrong in [token(), token(), "not-a-key", token()] * 5:
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Complete(
                    request, metadata=(("authorization", f"Bearer {wrong}"),), timeout=10
                )
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # `llmgateway keys create` from another process, while the refusals are cached.
        _, fresh = KeyStore(db).create("created-meanwhile")
        answer = await stub.Complete(
            request, metadata=(("authorization", f"Bearer {fresh}"),), timeout=10
        )
    db.close()
    assert answer.content
    assert len(fake.requests) == 1
