"""Capabilities from the catalog: what OpenRouter's /models and Ollama's
/api/show publish (ListModels' `capabilities`), read by the capability filter
before the built-in table and never past what the gateway's adapter carries;
end to end, ListModels over the fake and a route decided by a published fact."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypothesis import given
from hypothesis import strategies as st

from llmgateway.server.call_path.routing_view import apply_override
from llmgateway.server.config import CapabilityOverride
from llmgateway.server.providers.ollama import _capabilities as ollama_capabilities
from llmgateway.server.providers.openrouter import openrouter_models
from llmgateway.server.routing.capabilities import (
    FactSource,
    SkipId,
    adapter_refuses,
    capabilities_for,
    needs_of,
    skip_reason,
)
from llmgateway.testing.fake_upstream.ollama_wire import CAPABILITIES as FAKE_OLLAMA
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import routing_pb2 as rpb
from tests.routing_fixtures import make_request
from tests.test_routing_e2e import explain, routed_settings, skipped, started

if TYPE_CHECKING:
    from pathlib import Path

    from llmgateway.server.config import Settings
    from llmgateway.testing.fake_upstream import FakeUpstream


def _published(caps: pb.ModelCapabilities) -> dict[str, bool]:
    """The fields a ModelCapabilities has set, by name."""
    return {field.name: value for field, value in caps.ListFields()}


def _openrouter(entry: dict[str, Any]) -> pb.ModelInfo:
    (info,) = openrouter_models({"data": [{"id": "v/m", **entry}]}, True, str)
    return info


# -- OpenRouter's /models -------------------------------------------------------------


def test_openrouter_publishes_tools_json_and_vision_from_its_model_entry() -> None:
    info = _openrouter(
        {
            "supported_parameters": ["max_tokens", "tools", "tool_choice", "structured_outputs"],
            "architecture": {"input_modalities": ["text", "image"]},
        }
    )
    assert _published(info.capabilities) == {
        "tools": True,
        "forced_tool_choice": True,
        # A schema travels in response_format, so a plain object does too.
        "json_schema": True,
        "json_object": True,
        "vision": True,
    }


def test_a_parameter_missing_from_openrouters_list_is_a_no() -> None:
    info = _openrouter(
        {
            "supported_parameters": ["temperature", "tools", "response_format"],
            "architecture": {"input_modalities": ["text"]},
        }
    )
    assert _published(info.capabilities) == {
        "tools": True,
        # tools without tool_choice: OpenRouter would drop the forcing silently.
        "forced_tool_choice": False,
        "json_schema": False,
        "json_object": True,
        "vision": False,
    }


def test_an_openrouter_entry_without_the_fields_publishes_nothing() -> None:
    assert not _openrouter({}).HasField("capabilities")
    # Malformed fields are not facts either.
    odd = _openrouter({"supported_parameters": "tools", "architecture": ["image"]})
    assert not odd.HasField("capabilities")
    # One field alone publishes only its own facts.
    only_modalities = _openrouter({"architecture": {"input_modalities": ["image"]}})
    assert _published(only_modalities.capabilities) == {"vision": True}


# -- Ollama's /api/show ------------------------------------------------------------------


def test_ollama_publishes_tools_and_vision_and_json_for_completion_models() -> None:
    shown = ollama_capabilities({"capabilities": ["completion", "vision", "thinking"]})
    assert shown is not None
    assert _published(shown) == {
        "tools": False,
        "vision": True,
        "json_schema": True,
        "json_object": True,
    }
    embedder = ollama_capabilities({"capabilities": ["embedding"]})
    assert embedder is not None
    assert not any(_published(embedder).values())


def test_an_ollama_answer_without_capabilities_publishes_nothing() -> None:
    assert ollama_capabilities({"model_info": {}}) is None
    assert ollama_capabilities({"capabilities": "tools"}) is None
    assert ollama_capabilities([]) is None


# -- capabilities_for reads the catalog first --------------------------------------------


def _info(name: str, **published: bool) -> pb.ModelInfo:
    info = pb.ModelInfo(name=name)
    for field, value in published.items():
        setattr(info.capabilities, field, value)
    return info


ALL_FOUR = {"tools": True, "json_schema": True, "json_object": True, "vision": True}


def test_a_published_fact_wins_over_the_built_in_table() -> None:
    name = "openrouter/z-ai/glm-4.7"
    table = capabilities_for(name, None)
    assert (table.json_schema, table.vision) == (False, False)
    caps = capabilities_for(name, _info(name, **ALL_FOUR))
    assert (caps.json_schema, caps.vision, caps.image_urls) == (True, True, True)
    assert (caps.features_source, caps.matched) == (FactSource.CATALOG, "catalog")


def test_a_catalog_that_publishes_some_facts_leaves_the_others_to_the_table() -> None:
    name = "openrouter/openai/gpt-4o"
    caps = capabilities_for(name, _info(name, vision=False))
    assert not caps.vision
    assert caps.tools
    assert caps.json_schema
    assert caps.features_source == FactSource.BUILTIN_TABLE
    assert caps.catalog_facts == {"vision", "image_urls"}
    image = make_request("what is this?", images=1)
    found = skip_reason(needs_of(image), caps, key_patterns=None, model_name=name)
    assert found is not None
    assert found.id == SkipId.NO_VISION
    assert found.message.endswith("(catalog)")


def test_an_unset_capabilities_message_is_no_fact() -> None:
    name = "ollama/gemma3:1b"
    assert capabilities_for(name, pb.ModelInfo(name=name)) == capabilities_for(name, None)


def test_the_adapter_caps_what_the_catalog_publishes() -> None:
    # Ollama says the model takes tools and images; the gateway's Ollama
    # adapter cannot force a call nor send an image by URL.
    name = "ollama/llama3.2"
    caps = capabilities_for(name, _info(name, **ALL_FOUR))
    assert (caps.tools, caps.vision) == (True, True)
    assert (caps.forced_tool_choice, caps.image_urls) == (False, False)
    forced = make_request("look it up", tools=1, tool_choice="required")
    found = skip_reason(needs_of(forced), caps, key_patterns=None, model_name=name)
    assert found is not None
    assert found.id == SkipId.CANNOT_FORCE_TOOL
    assert "the gateway's adapter for this provider cannot carry it" in found.message
    # A catalog that said Claude takes a JSON schema would not get one past
    # the Anthropic adapter either.
    claude = "anthropic/claude-sonnet-4-5"
    assert not capabilities_for(claude, _info(claude, **ALL_FOUR)).json_schema


def test_a_catalog_that_says_the_model_cannot_be_forced_is_believed() -> None:
    name = "openrouter/v/m"
    caps = capabilities_for(name, _info(name, tools=True, forced_tool_choice=False))
    assert caps.tools
    assert not caps.forced_tool_choice
    forced = make_request("look it up", tools=1, tool_choice="lookup")
    found = skip_reason(needs_of(forced), caps, key_patterns=None, model_name=name)
    assert found is not None
    assert (found.id, found.message.endswith("(catalog)")) == (SkipId.CANNOT_FORCE_TOOL, True)


def test_an_operators_override_is_phrased_as_config_not_catalog() -> None:
    name = "openrouter/openai/gpt-4o"
    caps = capabilities_for(name, _info(name, **ALL_FOUR))
    overridden = apply_override(name, caps, CapabilityOverride(vision=False))
    image = make_request("what is this?", images=1)
    found = skip_reason(needs_of(image), overridden, key_patterns=None, model_name=name)
    assert found is not None
    assert found.message.endswith(f'(config: [capabilities."{name}"])')
    assert "tools" in overridden.catalog_facts
    assert "vision" not in overridden.catalog_facts


# Models of every provider, each adapter's refusals among them.
_MODELS = (
    "openai/gpt-4o",
    "anthropic/claude-sonnet-4-5",
    "gemini/gemini-2.5-flash",
    "groq/llama-3.3-70b-versatile",
    "ollama/llama3.2",
    "zai/glm-4.7",
    "openrouter/z-ai/glm-4.7",
    "openrouter/v/unknown",
)
_PUBLISHABLE = ("tools", "json_schema", "json_object", "vision", "forced_tool_choice")


@given(
    model=st.sampled_from(_MODELS),
    published=st.dictionaries(st.sampled_from(_PUBLISHABLE), st.booleans()),
)
def test_published_facts_are_taken_but_never_past_the_adapter(
    model: str, published: dict[str, bool]
) -> None:
    caps = capabilities_for(model, _info(model, **published))
    refused = adapter_refuses(model)
    for fact in refused:
        assert not getattr(caps, fact), fact
    for fact, value in published.items():
        assert fact in caps.catalog_facts
        if fact == "forced_tool_choice":
            assert caps.forced_tool_choice == (value and caps.tools and fact not in refused)
        else:
            assert getattr(caps, fact) == (value and fact not in refused), fact
    # Nothing the catalog left out is credited to it.
    assert not caps.catalog_facts - {
        *published,
        *(("image_urls",) if "vision" in published else ()),
        *(
            ("forced_tool_choice", "forced_tool_choice_while_thinking")
            if {"tools", "forced_tool_choice"} & published.keys()
            else ()
        ),
    }


# -- end to end: ListModels over the fake, and a route decided by a published fact --------

VISION_ROUTE = """
[routes.local]
default = ["ollama/gemma3:1b", "openai/gpt-4o"]
"""


async def test_list_models_carries_what_the_providers_publish(
    settings: Settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    async with started(routed_settings(settings, tmp_path), fake) as routed:
        reply = await routed.stub.ListModels(pb.ListModelsRequest(), timeout=10)
    by_name = {m.name: m for m in reply.models}
    assert _published(by_name["openrouter/openai/gpt-4o-mini"].capabilities) == {
        "tools": True,
        "forced_tool_choice": True,
        "json_schema": True,
        "json_object": True,
        "vision": True,
    }
    glm = _published(by_name["openrouter/z-ai/glm-4.7"].capabilities)
    assert (glm["json_schema"], glm["json_object"], glm["vision"]) == (False, True, False)
    llama = _published(by_name["ollama/llama3.2"].capabilities)
    assert llama == {"tools": True, "vision": False, "json_schema": True, "json_object": True}
    assert FAKE_OLLAMA["gemma3:1b"] == ("completion",)
    assert not _published(by_name["ollama/gemma3:1b"].capabilities)["tools"]
    # /api/show failed for it; Z.AI's built-in list and aliases and routes publish none.
    for name in ("ollama/broken-show", "zai/glm-4.7", "fast", "route/default"):
        assert not by_name[name].HasField("capabilities"), name


async def test_a_route_reads_a_published_fact_once_the_catalogue_is_cached(
    settings: Settings, fake: FakeUpstream, tmp_path: Path
) -> None:
    image = make_request("what is in this picture?", model="route/local", images=1)
    assert isinstance(image, pb.CompleteRequest)
    running = routed_settings(settings, tmp_path, VISION_ROUTE)
    async with started(running, fake) as routed:
        # Before Ollama's list is fetched, the built-in table's gemma3 row
        # says it reads images.
        before = await explain(routed, image)
        assert before.chosen == "ollama/gemma3:1b"
        await routed.stub.ListModels(
            pb.ListModelsRequest(provider=common.PROVIDER_OLLAMA), timeout=10
        )
        # /api/show says gemma3:1b has no `vision`: passed over, the catalog named.
        response: pb.CompleteResponse = await routed.stub.Complete(image, timeout=10)
    decision = response.routing
    assert decision.chosen == "openai/gpt-4o"
    assert skipped(decision) == [("ollama/gemma3:1b", "NO_VISION")]
    (passed,) = decision.passed_over
    assert passed.detail == ("ollama/gemma3:1b does not read images; the request has 1 (catalog)")
    assert decision.task == rpb.TASK_VISION
    assert routed.sent() == [("openai", "openai", "gpt-4o")]
