"""Shared fixtures: the fake upstream, a gateway pointed at it, and a real gRPC channel."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import uuid
from typing import TYPE_CHECKING

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2

from llmgateway.server.config import OpenRouterSettings, Secret, Settings, Timeouts, ZaiSettings
from llmgateway.server.process.server import Gateway, start_gateway
from llmgateway.server.providers.openrouter import OpenRouterProvider
from llmgateway.server.providers.zai import ZaiProvider
from llmgateway.server.resilience.retry import RetryPolicy
from llmgateway.testing.fake_upstream import FakeUpstream
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.postgres import fresh_database, throwaway_postgres
from tests.redis_server import RedisServer, throwaway_redis

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from google.protobuf import any_pb2

ALIASES = {"fast": "zai/glm-4.5-flash", "coder": "zai/glm-4.7"}


@pytest.fixture(autouse=True, scope="session")
def _private_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Nothing a test starts (serve subprocesses included) writes to the real
    user's data directory, where the default state database lives."""
    saved = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if saved is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = saved


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str | None]:
    """A throwaway PostgreSQL server for the whole run, if the machine has one."""
    with throwaway_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_location(request: pytest.FixtureRequest, tmp_path: Path, postgres_server: str | None) -> str:
    """A fresh state database: SQLite, then PostgreSQL (skipped without a server)."""
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    if postgres_server is None:
        pytest.skip("PostgreSQL is not installed here (.ci/run installs it)")
    return fresh_database(postgres_server, f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A throwaway Redis for the whole run (fails without redis-server:
    scripts/ensure-redis.sh installs it). Tests that stop or pause Redis
    start their own (tests/redis_server.py), so this one stays up."""
    with throwaway_redis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    import redis

    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server.url


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as upstream:
        yield upstream


@pytest.fixture
def settings(fake: FakeUpstream, tmp_path: Path) -> Settings:
    env = {
        **fake.environment(),
        "LLMGATEWAY_DB": str(tmp_path / "state.db"),
        "OPENROUTER_HTTP_REFERER": "https://gateway.example.test",
        "OPENROUTER_APP_TITLE": "llmgateway-tests",
        "LLMGATEWAY_STREAM_IDLE_TIMEOUT": "2",
    }
    loaded = Settings.load(env)
    return dataclasses.replace(
        loaded,
        # Retries as in production, with backoffs short enough for tests; Retry-After
        # hints (the fake's are 7 s) go back to the caller instead of being waited out.
        retries=RetryPolicy(
            max_attempts=3, initial_backoff=0.01, max_backoff=0.02, max_retry_after=0.0
        ),
        aliases=ALIASES,
        zai=dataclasses.replace(loaded.zai, coding_models=frozenset({"glm-4.6"})),
    )


@pytest.fixture
async def gateway(settings: Settings) -> AsyncIterator[Gateway]:
    running = await start_gateway(settings, address="127.0.0.1:0")
    yield running
    await running.stop(grace=0)


@pytest.fixture
async def channel(gateway: Gateway) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as opened:
        yield opened


@pytest.fixture
def stub(channel: grpc.aio.Channel) -> pb_grpc.CompletionServiceAsyncStub:
    return pb_grpc.CompletionServiceStub(channel)


# Providers built directly, for unit tests of translation and stream assembly.
@pytest.fixture
async def openrouter() -> AsyncIterator[OpenRouterProvider]:
    provider = OpenRouterProvider(
        OpenRouterSettings(api_key=Secret("sk-or-v1-test-not-a-key")), Timeouts()
    )
    yield provider
    await provider.aclose()


@pytest.fixture
async def zai() -> AsyncIterator[ZaiProvider]:
    provider = ZaiProvider(
        ZaiSettings(
            api_key=Secret("zai-test-not-a-key"),
            base_url="https://general.zai.test/api/paas/v4",
            coding_base_url="https://coding.zai.test/api/coding/paas/v4",
            coding_models=frozenset({"glm-4.6"}),
        ),
        Timeouts(),
    )
    yield provider
    await provider.aclose()


def with_config_file(settings: Settings, path: Path, text: str) -> Settings:
    """`settings` (the fixture's: the fake, its aliases, short retries) plus the
    `[routes]`, `[routing]` and `[capabilities]` of a config file holding
    `text`, written to `path` and loaded as `llmgateway serve --config` would.
    Aliases the routes name must be the fixture's (ALIASES) or in `text`."""
    path.write_text(text, encoding="utf-8")
    loaded = Settings.load({}, path)
    return dataclasses.replace(
        settings,
        aliases={**settings.aliases, **loaded.aliases},
        routes=loaded.routes,
        routing=loaded.routing,
        capabilities=loaded.capabilities,
    )


@contextlib.asynccontextmanager
async def gateway_stub(settings: Settings) -> AsyncIterator[pb_grpc.CompletionServiceAsyncStub]:
    """A separate gateway started from `settings`, and a stub connected to it."""
    running = await start_gateway(settings, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as opened:
            yield pb_grpc.CompletionServiceStub(opened)
    finally:
        await running.stop(grace=0)


def user(text: str) -> common.ChatMessage:
    """A user message."""
    return common.ChatMessage(role=common.ROLE_USER, content=text)


@dataclasses.dataclass
class RichStatus:
    """The details the gateway packs into an error status."""

    code: grpc.StatusCode
    message: str
    info: error_details_pb2.ErrorInfo
    bad_request: error_details_pb2.BadRequest | None
    retry: error_details_pb2.RetryInfo | None


def rich_status(error: grpc.aio.AioRpcError) -> RichStatus:
    """Decode `grpc-status-details-bin`; fails the test if ErrorInfo is missing."""
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    assert isinstance(raw, bytes), "the error carries no google.rpc.Status"
    status = status_pb2.Status.FromString(raw)
    assert status.code == error.code().value[0]
    found: dict[str, any_pb2.Any] = {d.TypeName(): d for d in status.details}
    info = error_details_pb2.ErrorInfo()
    assert found["google.rpc.ErrorInfo"].Unpack(info)
    bad_request = retry = None
    if "google.rpc.BadRequest" in found:
        bad_request = error_details_pb2.BadRequest()
        found["google.rpc.BadRequest"].Unpack(bad_request)
    if "google.rpc.RetryInfo" in found:
        retry = error_details_pb2.RetryInfo()
        found["google.rpc.RetryInfo"].Unpack(retry)
    return RichStatus(error.code(), status.message, info, bad_request, retry)
