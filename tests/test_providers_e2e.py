"""All seven providers as equals, end to end over gRPC against the fake upstream.

Each provider's own wire is tested in its own files (tests/test_<provider>_*.py);
these tests hold what must be true of every one of them alike: both RPCs answer
in the contract's terms, every call lands in the ledger priced, a fallback chain
crosses providers, a missing key names its variable while the others keep
working, and ListModels and health cover them all.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmgateway.server.config import AliasConfig, AliasTarget, Settings
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import gateway_stub, rich_status, user

if TYPE_CHECKING:
    from pathlib import Path

    from llmgateway.testing.fake_upstream import FakeUpstream
    from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

# One healthy model per provider, in gateway naming, with the provider it must name.
MODELS = {
    "openrouter/openai/gpt-4o-mini": common.PROVIDER_OPENROUTER,
    "zai/glm-4.7": common.PROVIDER_ZAI,
    "openai/gpt-4o-mini": common.PROVIDER_OPENAI,
    "anthropic/claude-sonnet-4-5": common.PROVIDER_ANTHROPIC,
    "gemini/gemini-2.5-flash": common.PROVIDER_GEMINI,
    "groq/llama-3.3-70b-versatile": common.PROVIDER_GROQ,
    "ollama/llama3.2": common.PROVIDER_OLLAMA,
}
# The providers that need a key, with the variable that holds it.
KEYED = {
    "openrouter/openai/gpt-4o-mini": "OPENROUTER_API_KEY",
    "zai/glm-4.7": "ZAI_API_KEY",
    "openai/gpt-4o-mini": "OPENAI_API_KEY",
    "anthropic/claude-sonnet-4-5": "ANTHROPIC_API_KEY",
    "gemini/gemini-2.5-flash": "GEMINI_API_KEY",
    "groq/llama-3.3-70b-versatile": "GROQ_API_KEY",
}
HEALTH_NAMES = ("openrouter", "zai", "openai", "anthropic", "gemini", "groq", "ollama")


@pytest.mark.parametrize("model", list(MODELS))
async def test_every_provider_answers_both_rpcs_in_the_contracts_terms(
    stub: pb_grpc.CompletionServiceAsyncStub, model: str
) -> None:
    unary = await stub.Complete(
        pb.CompleteRequest(model=model, messages=[user("Say hello.")]), timeout=10
    )
    assert unary.provider == MODELS[model]
    assert unary.model.startswith(model.split("/", 1)[0] + "/")
    assert "Say hello." in unary.content
    assert unary.finish_reason == common.FINISH_REASON_STOP
    assert unary.native_finish_reason
    assert unary.usage.prompt_tokens > 0
    assert unary.usage.completion_tokens > 0
    assert unary.usage.total_tokens == unary.usage.prompt_tokens + unary.usage.completion_tokens
    assert unary.attempts == 1
    # Every direct provider names itself (OpenRouter names the provider behind it).
    assert unary.upstream_provider

    text = []
    done: pb.CompletionDone | None = None
    call = stub.StreamComplete(
        pb.StreamCompleteRequest(model=model, messages=[user("Say hello.")]), timeout=10
    )
    async for event in call:
        kind = event.WhichOneof("event")
        assert done is None, "nothing may follow done"
        if kind == "content_delta":
            text.append(event.content_delta.text)
        elif kind == "done":
            done = event.done
    assert done is not None
    assert "".join(text) == unary.content
    assert done.provider == MODELS[model]
    assert done.upstream_provider == unary.upstream_provider
    assert done.finish_reason == common.FINISH_REASON_STOP
    assert done.usage.completion_tokens > 0


async def test_every_call_lands_in_the_ledger_priced_by_its_providers_table(
    stub: pb_grpc.CompletionServiceAsyncStub,
) -> None:
    for model in MODELS:
        await stub.Complete(pb.CompleteRequest(model=model, messages=[user("Hi")]), timeout=10)
    usage = await stub.GetUsage(pb.GetUsageRequest(group_by=pb.USAGE_GROUPING_MODEL), timeout=10)
    rows = {row.group: row for row in usage.rows}
    assert set(rows) == set(MODELS)
    for model, row in rows.items():
        assert (row.calls, row.failed_calls) == (1, 0), model
        assert row.prompt_tokens > 0, model
        if model.startswith("ollama/"):
            # A local model costs nothing.
            assert row.cost_usd == 0, model
        else:
            # OpenRouter reports its cost; every other provider is priced from the
            # gateway's built-in table.
            assert row.cost_usd > 0, model


async def test_a_fallback_chain_crosses_providers(settings: Settings) -> None:
    chain = AliasConfig(
        (
            AliasTarget("anthropic/fault-http-503"),
            AliasTarget("gemini/fault-http-503"),
            AliasTarget("groq/x/fault-http-503"),
            AliasTarget("ollama/llama3.2"),
        )
    )
    chained = dataclasses.replace(settings, aliases={**settings.aliases, "everywhere": chain})
    async with gateway_stub(chained) as stub:
        unary = await stub.Complete(
            pb.CompleteRequest(model="everywhere", messages=[user("Hi")]), timeout=20
        )
        done = None
        async for event in stub.StreamComplete(
            pb.StreamCompleteRequest(model="everywhere", messages=[user("Hi")]), timeout=20
        ):
            if event.WhichOneof("event") == "done":
                done = event.done
    for answer in (unary, done):
        assert answer is not None
        assert answer.provider == common.PROVIDER_OLLAMA
        assert answer.model == "ollama/llama3.2"
        assert answer.fallbacks == 3
        assert answer.attempts >= 4


@pytest.mark.parametrize(("model", "variable"), list(KEYED.items()))
async def test_a_provider_without_its_key_names_the_variable_and_the_others_keep_working(
    fake: FakeUpstream, tmp_path: Path, model: str, variable: str
) -> None:
    environment = {**fake.environment(), "LLMGATEWAY_DB": str(tmp_path / "state.db")}
    del environment[variable]
    async with gateway_stub(Settings.load(environment)) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Complete(pb.CompleteRequest(model=model, messages=[user("Hi")]), timeout=10)
        status = rich_status(caught.value)
        assert status.code == grpc.StatusCode.FAILED_PRECONDITION
        assert status.info.reason == "PROVIDER_NOT_CONFIGURED"
        assert variable in status.message
        for other, provider in MODELS.items():
            if other != model:
                answer = await stub.Complete(
                    pb.CompleteRequest(model=other, messages=[user("Hi")]), timeout=10
                )
                assert answer.provider == provider


async def test_gemini_takes_its_key_from_google_api_key_too(fake: FakeUpstream) -> None:
    environment = fake.environment()
    environment["GOOGLE_API_KEY"] = environment.pop("GEMINI_API_KEY")
    async with gateway_stub(Settings.load(environment)) as stub:
        answer = await stub.Complete(
            pb.CompleteRequest(model="gemini/gemini-2.5-flash", messages=[user("Hi")]), timeout=10
        )
    assert answer.provider == common.PROVIDER_GEMINI


async def test_a_gateway_with_no_keys_at_all_still_serves_ollama(fake: FakeUpstream) -> None:
    environment = {
        name: value for name, value in fake.environment().items() if name.endswith("_BASE_URL")
    }
    settings = Settings.load(environment)
    async with gateway_stub(settings) as stub:
        answer = await stub.Complete(
            pb.CompleteRequest(model="ollama/llama3.2", messages=[user("Hi")]), timeout=10
        )
        assert answer.provider == common.PROVIDER_OLLAMA
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Complete(
                pb.CompleteRequest(model="openai/gpt-4o-mini", messages=[user("Hi")]), timeout=10
            )
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_list_models_covers_every_provider(stub: pb_grpc.CompletionServiceAsyncStub) -> None:
    reply = await stub.ListModels(pb.ListModelsRequest(), timeout=10)
    assert list(reply.incomplete_providers) == []
    providers = {m.provider for m in reply.models}
    assert set(MODELS.values()) <= providers
    names = {m.name for m in reply.models}
    for model in MODELS:
        # Anthropic lists dated snapshots (claude-sonnet-4-5-20250929); the
        # undated name is its alias for the latest.
        assert any(n == model or n.startswith(model + "-") for n in names), model
    for provider in set(MODELS.values()):
        only = await stub.ListModels(pb.ListModelsRequest(provider=provider), timeout=10)
        assert only.models
        assert {m.provider for m in only.models} == {provider}
        assert all(m.available for m in only.models)


async def test_health_reports_every_provider(channel: grpc.aio.Channel) -> None:
    health: Any = health_pb2_grpc.HealthStub(channel)  # its stubs type only the sync API
    for name in HEALTH_NAMES:
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service=f"provider/{name}"), timeout=5
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
