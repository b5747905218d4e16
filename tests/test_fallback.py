"""Fallback chains: configuration, and calls moving along an alias's targets end to end."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import grpc
import pytest

from llmgateway.server.config import (
    AliasConfig,
    AliasTarget,
    CircuitSettings,
    ConfigError,
    Settings,
)
from llmgateway.server.resilience.retry import RetryPolicy
from llmgateway.server.routing.router import DEFAULT_FALLBACK_ON, Route, Router
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import gateway_stub, rich_status, user

if TYPE_CHECKING:
    from llmgateway.testing.fake_upstream import FakeUpstream

CHAIN_TOML = """
[aliases]
one = "zai/glm-4.7"
listed = ["zai/glm-4.7", "openrouter/z-ai/glm-4.7"]

[aliases.coding]
targets = [
  { model = "zai/glm-4.7", zai_endpoint = "coding" },
  "openrouter/z-ai/glm-4.7",
  "openrouter/anthropic/claude-sonnet-4.5",
]
fallback_on = ["UPSTREAM_RATE_LIMITED", "UPSTREAM_UNAVAILABLE"]
"""


def test_chains_from_the_config_file(tmp_path):
    path = tmp_path / "gw.toml"
    path.write_text(CHAIN_TOML)
    aliases = Settings.load({}, path).aliases
    assert aliases["one"] == AliasConfig((AliasTarget("zai/glm-4.7"),))
    assert aliases["listed"] == AliasConfig(
        (AliasTarget("zai/glm-4.7"), AliasTarget("openrouter/z-ai/glm-4.7"))
    )
    router = Router(aliases)
    coding = router.resolve("coding")
    assert coding.routes == (
        Route(common.PROVIDER_ZAI, "glm-4.7", "coding", common.ZAI_ENDPOINT_CODING),
        Route(common.PROVIDER_OPENROUTER, "z-ai/glm-4.7", "coding"),
        Route(common.PROVIDER_OPENROUTER, "anthropic/claude-sonnet-4.5", "coding"),
    )
    assert [r.target for r in coding.routes] == [
        "zai/glm-4.7@coding",
        "openrouter/z-ai/glm-4.7",
        "openrouter/anthropic/claude-sonnet-4.5",
    ]
    assert coding.fallback_on == {
        pb.ERROR_REASON_UPSTREAM_RATE_LIMITED,
        pb.ERROR_REASON_UPSTREAM_UNAVAILABLE,
    }
    assert router.resolve("listed").fallback_on == DEFAULT_FALLBACK_ON


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[aliases]\nx = []\n", ["[aliases] x", "non-empty"]),
        ("[aliases]\nx = [3]\n", ["[aliases] x", "model name"]),
        ("[aliases.x]\nfallback_on = []\n", ["[aliases] x", "targets"]),
        ('[aliases.x]\ntargets = ["zai/a"]\nretry = 1\n', ["[aliases] x", "retry"]),
        ('[aliases]\nx = [{ model = "zai/a", region = "eu" }]\n', ["[aliases] x", "zai_endpoint"]),
        ('[aliases.x]\ntargets = ["zai/a"]\nfallback_on = "all"\n', ["fallback_on"]),
    ],
)
def test_malformed_chains_name_the_alias(tmp_path, text, words):
    path = tmp_path / "gw.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        Settings.load({}, path)
    for word in words:
        assert word in str(caught.value)


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (AliasConfig((AliasTarget("openrouter/a/b", "coding"),)), ["zai_endpoint", "zai/"]),
        (AliasConfig((AliasTarget("zai/glm-4.7", "turbo"),)), ["'general' or 'coding'", "turbo"]),
        (AliasConfig((AliasTarget("zai/glm-4.7"),), ("RATE_LIMITED",)), ["RATE_LIMITED"]),
        (AliasConfig((AliasTarget("glm-4.7"),)), ["'glm-4.7'"]),
    ],
)
def test_chains_the_router_refuses(config, words):
    with pytest.raises(ConfigError) as caught:
        Router({"mine": config})
    assert "'mine'" in str(caught.value)
    for word in words:
        assert word in str(caught.value)


def chain(*targets: str | AliasTarget, fallback_on: tuple[str, ...] | None = None) -> AliasConfig:
    return AliasConfig(
        tuple(t if isinstance(t, AliasTarget) else AliasTarget(t) for t in targets), fallback_on
    )


def with_aliases(settings: Settings, **aliases: AliasConfig) -> Settings:
    return dataclasses.replace(settings, aliases=aliases)


async def complete_coding(settings: Settings, timeout: float = 10) -> pb.CompleteResponse:
    """A unary call to the alias `coding` on a gateway started from `settings`."""
    async with gateway_stub(settings) as stub:
        response: pb.CompleteResponse = await stub.Complete(
            pb.CompleteRequest(model="coding", messages=[user("hi")]), timeout=timeout
        )
    return response


def sent_models(fake: FakeUpstream) -> list[tuple[str, str]]:
    """(endpoint, model) of every chat request the fake received, in order."""
    return [(r.endpoint, r.body["model"]) for r in fake.requests]


async def test_unary_falls_back_and_says_which_target_served(settings, fake):
    alias = chain(AliasTarget("zai/fault-http-502", "coding"), "openrouter/z-ai/glm-4.7")
    response = await complete_coding(with_aliases(settings, coding=alias), timeout=10)
    assert response.provider == common.PROVIDER_OPENROUTER
    assert response.model == "openrouter/z-ai/glm-4.7"
    assert response.fallbacks == 1
    assert response.zai_endpoint == common.ZAI_ENDPOINT_UNSPECIFIED
    # Three tries of the coding endpoint (502 is transient), then the fallback.
    assert response.attempts == 4
    assert sent_models(fake) == [("coding", "fault-http-502")] * 3 + [
        ("openrouter", "z-ai/glm-4.7")
    ]


async def test_stream_falls_back_before_the_first_event(settings, fake):
    alias = chain("zai/fault-reset", "openrouter/z-ai/glm-4.7")
    async with gateway_stub(with_aliases(settings, coding=alias)) as stub:
        events = [
            e
            async for e in stub.StreamComplete(
                pb.StreamCompleteRequest(model="coding", messages=[user("hi")]), timeout=10
            )
        ]
    done = events[-1].done
    assert (done.provider, done.fallbacks, done.attempts) == (common.PROVIDER_OPENROUTER, 1, 4)
    assert "".join(e.content_delta.text for e in events)
    assert [m for _, m in sent_models(fake)][-1] == "z-ai/glm-4.7"


async def test_a_pinned_endpoint_serves_and_is_reported(settings, fake):
    alias = chain(AliasTarget("zai/glm-4.7", "coding"), "openrouter/z-ai/glm-4.7")
    async with gateway_stub(with_aliases(settings, coding=alias)) as stub:
        response = await stub.Complete(
            pb.CompleteRequest(
                model="coding",
                messages=[user("hi")],
                # The alias's pin wins over the caller's choice.
                zai=common.ZaiOptions(endpoint=common.ZAI_ENDPOINT_GENERAL),
            ),
            timeout=10,
        )
    assert (response.provider, response.zai_endpoint) == (
        common.PROVIDER_ZAI,
        common.ZAI_ENDPOINT_CODING,
    )
    assert (response.fallbacks, response.attempts) == (0, 1)
    assert sent_models(fake) == [("coding", "glm-4.7")]


async def test_a_reason_outside_fallback_on_ends_the_chain(settings, fake):
    alias = chain("openrouter/x/fault-http-400", "zai/glm-4.7")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await complete_coding(with_aliases(settings, coding=alias))
    status = rich_status(caught.value)
    assert (status.code, status.info.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "UPSTREAM_REJECTED_REQUEST",
    )
    assert status.info.metadata["target"] == "openrouter/x/fault-http-400"
    assert "fallbacks" not in status.info.metadata
    assert sent_models(fake) == [("openrouter", "x/fault-http-400")]


async def test_fallback_on_is_configurable(settings, fake):
    alias = chain(
        "openrouter/x/fault-http-400", "zai/glm-4.7", fallback_on=("UPSTREAM_REJECTED_REQUEST",)
    )
    response = await complete_coding(with_aliases(settings, coding=alias), timeout=10)
    assert (response.provider, response.fallbacks) == (common.PROVIDER_ZAI, 1)


async def test_when_every_target_fails_the_error_lists_them(settings, fake):
    alias = chain("zai/fault-http-529", "openrouter/x/fault-http-502")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await complete_coding(with_aliases(settings, coding=alias))
    status = rich_status(caught.value)
    assert (status.code, status.info.reason) == (
        grpc.StatusCode.UNAVAILABLE,
        "UPSTREAM_UNAVAILABLE",
    )
    metadata = status.info.metadata
    assert metadata["target"] == "openrouter/x/fault-http-502"
    assert metadata["fallbacks"] == "1"
    assert metadata["tried"] == "zai/fault-http-529: UPSTREAM_OVERLOADED"
    assert metadata["attempts"] == "6"
    assert "zai/fault-http-529" in status.message
    assert len(fake.requests) == 6


async def test_a_rate_limited_target_is_not_waited_for_when_a_fallback_exists(settings, fake):
    # The fake's 429 says Retry-After: 7. Alone, the gateway would wait it out
    # (max_retry_after 10 s); with a fallback waiting, it moves on at once.
    patient = dataclasses.replace(
        settings,
        retries=RetryPolicy(max_attempts=3, initial_backoff=0.01, max_retry_after=10.0),
        aliases={"coding": chain("zai/fault-http-429", "openrouter/z-ai/glm-4.7")},
    )
    response = await complete_coding(patient, timeout=5)
    assert (response.attempts, response.fallbacks) == (2, 1)


async def test_an_unconfigured_provider_is_passed_over(settings, fake):
    no_zai = dataclasses.replace(
        settings,
        zai=dataclasses.replace(settings.zai, api_key=None),
        aliases={"coding": chain("zai/glm-4.7", "openrouter/z-ai/glm-4.7")},
    )
    response = await complete_coding(no_zai, timeout=10)
    assert (response.provider, response.attempts, response.fallbacks) == (
        common.PROVIDER_OPENROUTER,
        1,
        1,
    )


async def test_a_target_that_cannot_take_the_request_is_passed_over(settings, fake):
    # Z.AI takes one stop word; OpenRouter takes several.
    alias = chain("zai/glm-4.7", "openrouter/z-ai/glm-4.7")
    async with gateway_stub(with_aliases(settings, coding=alias)) as stub:
        response = await stub.Complete(
            pb.CompleteRequest(
                model="coding",
                messages=[user("hi")],
                sampling=common.SamplingParams(stop=["a", "b"]),
            ),
            timeout=10,
        )
    assert (response.provider, response.attempts, response.fallbacks) == (
        common.PROVIDER_OPENROUTER,
        1,
        1,
    )


async def test_no_fallback_once_output_reached_the_caller(settings, fake):
    alias = chain("openrouter/x/fault-midstream-error", "zai/glm-4.7")
    async with gateway_stub(with_aliases(settings, coding=alias)) as stub:
        call = stub.StreamComplete(
            pb.StreamCompleteRequest(model="coding", messages=[user("hi")]), timeout=10
        )
        events = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for event in call:
                events.append(event)
    assert events, "the first target streamed some output before failing"
    assert rich_status(caught.value).info.metadata["target"] == "openrouter/x/fault-midstream-error"
    assert [p for p, _ in sent_models(fake)] == ["openrouter"]


async def test_list_models_shows_the_chain(settings):
    alias = chain(AliasTarget("zai/glm-4.7", "coding"), "openrouter/z-ai/glm-4.7")
    async with gateway_stub(with_aliases(settings, coding=alias)) as stub:
        listed = await stub.ListModels(pb.ListModelsRequest(), timeout=10)
    coding = next(m for m in listed.models if m.name == "coding")
    assert coding.alias_of == "zai/glm-4.7@coding"
    assert list(coding.fallbacks) == ["openrouter/z-ai/glm-4.7"]
    assert coding.provider == common.PROVIDER_ZAI


async def test_a_target_skipped_by_its_open_circuit_is_passed_over_whatever_fallback_on_says(
    settings, fake
):
    # The chain falls back on rate limits only. Its first target's circuit is
    # open (opened by direct calls): the breaker refuses the chain's call only
    # because it has somewhere else to go, so the chain must go there.
    tripping = dataclasses.replace(
        settings,
        retries=RetryPolicy(max_attempts=1),
        circuit=CircuitSettings(failure_threshold=2),
        aliases={
            "coding": chain(
                "openrouter/x/fault-http-502",
                "zai/glm-4.7",
                fallback_on=("UPSTREAM_RATE_LIMITED",),
            )
        },
    )
    async with gateway_stub(tripping) as stub:
        for _ in range(2):
            with pytest.raises(grpc.aio.AioRpcError):
                await stub.Complete(
                    pb.CompleteRequest(model="openrouter/x/fault-http-502", messages=[user("hi")]),
                    timeout=10,
                )
        response = await stub.Complete(
            pb.CompleteRequest(model="coding", messages=[user("hi")]), timeout=10
        )
    assert (response.provider, response.attempts, response.fallbacks) == (
        common.PROVIDER_ZAI,
        1,
        1,
    )
    assert sent_models(fake) == [("openrouter", "x/fault-http-502")] * 2 + [("general", "glm-4.7")]


async def test_an_alias_falls_back_on_context_length_to_any_next_target(settings, fake):
    # Escalation (a larger window, once) is for routes only: an alias moves on
    # from a context-length failure to its next target as it always has,
    # whatever that target's window, two failures in a row included, and its
    # answer carries no routing decision.
    alias = chain(
        "openrouter/x/fault-context-length",
        "openrouter/y/fault-context-length",
        "zai/glm-4.7",
    )
    response = await complete_coding(with_aliases(settings, coding=alias))
    assert sent_models(fake) == [
        ("openrouter", "x/fault-context-length"),
        ("openrouter", "y/fault-context-length"),
        ("general", "glm-4.7"),
    ]
    assert (response.attempts, response.fallbacks) == (3, 2)
    assert not response.HasField("routing")
