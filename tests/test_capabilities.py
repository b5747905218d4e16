"""The capability filter: what a target can serve (table lookups, snapshots,
unknown models, the catalog overriding), what a request needs, each skip
reason on its own, agreement with the providers' own check(), and properties
over arbitrary requests and capabilities."""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any

import pytest
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmgateway.server.config import (
    Secret,
)
from llmgateway.server.routing.capabilities import (
    DEFAULT_ANSWER_TOKENS,
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    Capabilities,
    FactSource,
    RequestNeeds,
    SkipId,
    breaker_skip,
    capabilities_for,
    key_allows,
    needs_of,
    skip_reason,
    snapshot_bases,
)
from llmgateway.server.routing.pricing import BUILTIN_TABLES, PriceBook
from llmgateway.server.routing.router import gateway_model_name
from llmgateway.server.state.keys import CallerKey
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from tests.routing_fixtures import providers

if TYPE_CHECKING:
    from collections.abc import Sequence


PNG = "data:image/png;base64,iVBORw0KGgo="
KEY = Secret("sk-test-capabilities-000000000000000")


def _request(text: str = "hello", **fields: object) -> pb.CompleteRequest:
    request = pb.CompleteRequest(model="route/default", **fields)  # type: ignore[arg-type]
    request.messages.add(role=common.ROLE_USER, content=text)
    return request


def _schema() -> struct_pb2.Struct:
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"city": {"type": "string"}}})
    return schema


def _with_image(request: pb.CompleteRequest, url: str = PNG) -> pb.CompleteRequest:
    message = request.messages.add(role=common.ROLE_USER)
    message.parts.add(text="what is this?")
    message.parts.add(image=common.ImagePart(url=url))
    return request


# -- the table -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "tools", "vision", "json_schema", "json_object"),
    [
        ("openai/gpt-4o", True, True, True, True),
        ("openai/gpt-4.1-mini", True, True, True, True),
        ("openai/gpt-5-nano", True, True, True, True),
        ("openai/o3", True, True, True, True),
        ("openai/o4-mini", True, True, True, True),
        ("openai/o3-mini", True, False, True, True),
        ("openai/o1-mini", False, False, False, False),
        ("openai/gpt-3.5-turbo", True, False, False, True),
        ("openai/gpt-4-turbo", True, True, False, True),
        ("openai/gpt-4o-search-preview", False, False, True, True),
        # Claude: tools and images; the gateway carries no JSON output there.
        ("anthropic/claude-sonnet-4-5", True, True, False, False),
        ("anthropic/claude-3-5-haiku", True, True, False, False),
        ("gemini/gemini-2.5-flash", True, True, True, True),
        ("gemini/gemini-3-pro-preview", True, True, True, True),
        ("gemini/gemini-2.5-flash-image", False, True, False, False),
        ("gemini/gemini-embedding-001", False, False, False, False),
        ("groq/openai/gpt-oss-120b", True, False, True, True),
        ("groq/meta-llama/llama-4-scout-17b-16e-instruct", True, True, True, True),
        ("groq/meta-llama/llama-4-maverick-17b-128e-instruct", True, True, True, True),
        ("groq/llama-3.3-70b-versatile", True, False, False, True),
        ("groq/qwen/qwen3-32b", True, False, False, True),
        ("groq/meta-llama/llama-guard-4-12b", False, False, False, False),
        # Ollama: JSON always (constrained decoding); tools and images per family.
        ("ollama/llama3.2", True, False, True, True),
        ("ollama/llama3.2-vision", False, True, True, True),
        ("ollama/qwen2.5vl:7b", False, True, True, True),
        ("ollama/hf.co/someone/some-model:Q4_K_M", False, False, True, True),
        # Z.AI: tools everywhere, images only on V models, no json_schema on its wire.
        ("zai/glm-4.7", True, False, False, True),
        ("zai/glm-5.1", True, False, False, True),
        ("zai/glm-4.6v", True, True, False, True),
        ("zai/glm-4.6v-flash", True, True, False, True),
        ("zai/glm-4.5v", False, True, False, True),
        # OpenRouter: the vendor's family, else permissive.
        ("openrouter/openai/gpt-4o-mini", True, True, True, True),
        ("openrouter/anthropic/claude-sonnet-4.5", True, True, True, True),
        ("openrouter/openai/o1-mini", False, False, False, False),
        ("openrouter/meta-llama/llama-4-maverick", True, True, True, True),
        ("openrouter/somevendor/some-model:free", True, True, True, True),
    ],
)
def test_table_lookups(
    model: str, tools: bool, vision: bool, json_schema: bool, json_object: bool
) -> None:
    caps = capabilities_for(model, None)
    assert (caps.tools, caps.vision, caps.json_schema, caps.json_object) == (
        tools,
        vision,
        json_schema,
        json_object,
    )


@pytest.mark.parametrize(
    ("snapshot", "base"),
    [
        ("openai/gpt-4o-2024-08-06", "openai/gpt-4o"),
        ("openai/gpt-4o-mini-2024-07-18", "openai/gpt-4o-mini"),
        ("anthropic/claude-sonnet-4-5-20250929", "anthropic/claude-sonnet-4-5"),
        ("anthropic/claude-3-5-haiku-latest", "anthropic/claude-3-5-haiku"),
        ("openai/o3-2025-04-16", "openai/o3"),
        ("zai/glm-4.6v-20260101", "zai/glm-4.6v"),
    ],
)
def test_a_dated_snapshot_takes_its_base_models_row(snapshot: str, base: str) -> None:
    of_snapshot = capabilities_for(snapshot, None)
    of_base = capabilities_for(base, None)
    assert of_snapshot == of_base
    assert of_snapshot.context_window is not None
    assert of_snapshot.context_source == FactSource.PRICE_TABLE


def test_another_word_after_a_name_is_another_model_not_a_snapshot() -> None:
    # gpt-4o-mini is not a snapshot of gpt-4o (pricing.py's rule): its own row.
    assert "openai/gpt-4o" not in snapshot_bases("openai/gpt-4o-mini")
    assert capabilities_for("openai/gpt-4o-mini", None).context_window == 128_000
    assert "openai/gpt-4o" in snapshot_bases("openai/gpt-4o-2024-08-06")


@pytest.mark.parametrize(
    "name",
    [
        gateway_model_name(provider, model.name) + suffix
        for provider, models in BUILTIN_TABLES.items()
        for model in models
        for suffix in ("", "-2025-01-31", "-20250101", "-latest", "-mini", "-x")
    ],
)
def test_windows_follow_the_same_snapshot_rule_as_prices(name: str) -> None:
    """A built-in window is found for exactly the names PriceBook prices
    (Ollama aside, which is priced at 0 and has no table)."""
    has_price = PriceBook({}).price(name) is not None
    caps = capabilities_for(name, None)
    assert (caps.context_source == FactSource.PRICE_TABLE) == has_price


def test_every_price_table_row_gives_its_window() -> None:
    for provider, models in BUILTIN_TABLES.items():
        for model in models:
            caps = capabilities_for(gateway_model_name(provider, model.name), None)
            assert caps.context_window == model.context, model.name


def test_the_catalogs_window_wins_over_the_price_table() -> None:
    info = pb.ModelInfo(name="openai/gpt-4o", context_length=64_000)
    caps = capabilities_for("openai/gpt-4o", info)
    assert caps.context_window == 64_000
    assert caps.context_source == FactSource.CATALOG
    # A catalog entry without a window leaves the table's.
    caps = capabilities_for("openai/gpt-4o", pb.ModelInfo(name="openai/gpt-4o"))
    assert (caps.context_window, caps.context_source) == (128_000, FactSource.PRICE_TABLE)


def test_an_openrouter_model_takes_its_catalogue_window_else_its_direct_twins() -> None:
    info = pb.ModelInfo(name="openrouter/openai/gpt-4o", context_length=128_000)
    assert capabilities_for("openrouter/openai/gpt-4o", info).context_source == FactSource.CATALOG
    twin = capabilities_for("openrouter/openai/gpt-4.1", None)
    assert (twin.context_window, twin.context_source) == (1_047_576, FactSource.PRICE_TABLE)
    assert capabilities_for("openrouter/somevendor/some-model", None).context_window is None


def test_ollamas_num_ctx_caps_its_window() -> None:
    info = pb.ModelInfo(name="ollama/llama3.2", context_length=131_072)
    caps = capabilities_for("ollama/llama3.2", info, ollama_num_ctx=8192)
    assert (caps.context_window, caps.context_source) == (8192, FactSource.CONFIG)
    # A smaller trained window stays the model's.
    info.context_length = 4096
    caps = capabilities_for("ollama/llama3.2", info, ollama_num_ctx=8192)
    assert (caps.context_window, caps.context_source) == (4096, FactSource.CATALOG)
    # Unknown window: the gateway sends num_ctx, so that is the window.
    caps = capabilities_for("ollama/llama3.2", None, ollama_num_ctx=8192)
    assert (caps.context_window, caps.context_source) == (8192, FactSource.CONFIG)
    # num_ctx caps Ollama only.
    caps = capabilities_for("openai/gpt-4o", None, ollama_num_ctx=8192)
    assert caps.context_window == 128_000


def test_unknown_models_get_their_providers_conservative_default() -> None:
    caps = capabilities_for("openai/gpt-99-ultra", None)
    assert caps.features_source == FactSource.PROVIDER_DEFAULT
    assert caps.matched == ""
    assert caps.context_window is None
    assert caps.context_source is None
    assert (caps.tools, caps.json_object) == (True, True)
    assert (caps.vision, caps.json_schema) == (False, False)
    # Not a gateway model name at all: nothing is assumed.
    nothing = capabilities_for("not-a-model", None)
    assert not any((nothing.tools, nothing.vision, nothing.json_schema, nothing.json_object))


def test_facts_the_gateways_adapter_cannot_carry_are_named() -> None:
    claude = capabilities_for("anthropic/claude-sonnet-4-5", None)
    assert claude.gateway_refuses == {
        "json_schema",
        "json_object",
        "forced_tool_choice_while_thinking",
    }
    assert claude.forced_tool_choice
    assert not claude.forced_tool_choice_while_thinking
    zai = capabilities_for("zai/glm-4.7", None)
    assert zai.gateway_refuses == {"forced_tool_choice"}
    assert not zai.forced_tool_choice
    gemini = capabilities_for("gemini/gemini-2.5-flash", None)
    assert gemini.gateway_refuses == {"image_urls"}
    assert gemini.vision
    assert not gemini.image_urls


# -- needs ---------------------------------------------------------------------------


def test_needs_of_a_plain_request() -> None:
    needs = needs_of(_request("x" * 400))
    assert needs.estimated_prompt_tokens == 100 + MESSAGE_OVERHEAD_TOKENS
    assert needs.max_tokens == DEFAULT_ANSWER_TOKENS
    assert not needs.max_tokens_given
    assert (needs.tools, needs.json_schema, needs.json_object, needs.images) == (
        False,
        False,
        False,
        0,
    )
    assert needs.forced_tool is None
    assert not needs.thinking


def test_cjk_text_counts_by_its_utf8_bytes() -> None:
    # 100 characters of 3 bytes each: 75 tokens, not 25.
    needs = needs_of(_request("中" * 100))
    assert needs.estimated_prompt_tokens == 75 + MESSAGE_OVERHEAD_TOKENS


def test_images_cost_a_fixed_amount_and_their_data_is_not_counted_as_text() -> None:
    huge = "data:image/png;base64," + "A" * 400_000
    needs = needs_of(_with_image(_request(""), huge))
    text = math.ceil(len(b"what is this?") / 4)
    assert needs.estimated_prompt_tokens == text + IMAGE_TOKENS + 2 * MESSAGE_OVERHEAD_TOKENS
    assert (needs.images, needs.image_urls) == (1, 0)
    by_url = needs_of(_with_image(_request(""), "https://example.test/cat.png"))
    assert (by_url.images, by_url.image_urls) == (1, 1)


def test_max_tokens_from_sampling_else_the_reserve_plus_a_thinking_budget() -> None:
    request = _request()
    request.sampling.max_tokens = 5000
    needs = needs_of(request)
    assert (needs.max_tokens, needs.max_tokens_given) == (5000, True)
    request = _request()
    request.reasoning.max_tokens = 2048
    needs = needs_of(request)
    assert (needs.max_tokens, needs.max_tokens_given) == (DEFAULT_ANSWER_TOKENS + 2048, False)
    assert needs.thinking


def test_tools_schemas_and_history_count() -> None:
    request = _request()
    tool = request.tools.add(name="get_weather", description="the weather in a city")
    tool.parameters.CopyFrom(_schema())
    needs = needs_of(request)
    assert needs.tools
    assert needs.estimated_prompt_tokens > needs_of(_request()).estimated_prompt_tokens
    # A history with tool calls and results needs a tool-capable model too.
    history = _request()
    history.messages.add(
        role=common.ROLE_ASSISTANT,
        tool_calls=[common.ToolCall(id="c1", name="get_weather", arguments='{"city":"Oslo"}')],
    )
    history.messages.add(role=common.ROLE_TOOL, tool_call_id="c1", content="sunny")
    assert needs_of(history).tools
    assert needs_of(history).forced_tool is None


def test_forced_tool_choice_is_needed_only_with_tools() -> None:
    request = _request()
    request.tool_choice.mode = common.TOOL_CHOICE_MODE_REQUIRED
    assert needs_of(request).forced_tool is None
    request.tools.add(name="lookup")
    assert needs_of(request).forced_tool == "required"
    request.tool_choice.function_name = "lookup"
    assert needs_of(request).forced_tool == "function"
    request.tool_choice.mode = common.TOOL_CHOICE_MODE_AUTO
    assert needs_of(request).forced_tool is None


def test_response_formats() -> None:
    request = _request()
    request.response_format.type = common.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    assert needs_of(request).json_object
    assert not needs_of(request).json_schema
    request.response_format.type = common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    request.response_format.json_schema.name = "answer"
    request.response_format.json_schema.schema.CopyFrom(_schema())
    assert needs_of(request).json_schema
    assert not needs_of(request).json_object


def test_stream_requests_are_read_the_same_way() -> None:
    unary = _request("same words")
    unary.tools.add(name="lookup")
    stream = pb.StreamCompleteRequest()
    stream.ParseFromString(unary.SerializeToString())
    assert needs_of(stream) == needs_of(unary)


# -- each skip reason on its own -----------------------------------------------------


def _skip(
    request: pb.CompleteRequest,
    model: str,
    *,
    patterns: Sequence[str] | None = None,
    info: pb.ModelInfo | None = None,
    num_ctx: int | None = None,
) -> tuple[SkipId | None, str]:
    reason = skip_reason(
        needs_of(request),
        capabilities_for(model, info, ollama_num_ctx=num_ctx),
        key_patterns=patterns,
        model_name=model,
    )
    return (None, "") if reason is None else (reason.id, str(reason))


def test_a_plain_request_passes_every_known_chat_model() -> None:
    for model in ("openai/gpt-4o", "anthropic/claude-haiku-4-5", "zai/glm-4.7", "ollama/llama3.2"):
        assert _skip(_request(), model) == (None, "")


def test_context_window() -> None:
    request = _request("x" * 49_584)  # 12,396 + 4 = 12,400 estimated tokens
    reason, text = _skip(request, "ollama/llama3.2", num_ctx=8192)
    assert reason == SkipId.CONTEXT_WINDOW
    assert text == (
        "context-window: 8,192 tokens < 12,400 estimated prompt + "
        "1,024 reserved for the answer (config)"
    )
    request.sampling.max_tokens = 1024
    _, text = _skip(request, "ollama/llama3.2", num_ctx=8192)
    assert "12,400 estimated prompt + 1,024 max_tokens" in text
    # Exactly full fits.
    request.sampling.max_tokens = 8192 - 12_400 + 8192
    assert _skip(request, "ollama/llama3.2", num_ctx=16_384)[0] is None
    # An unknown window refuses nothing.
    assert _skip(request, "openrouter/somevendor/some-model")[0] is None


def test_no_tools() -> None:
    request = _request()
    request.tools.add(name="lookup")
    reason, text = _skip(request, "openai/o1-mini")
    assert reason == SkipId.NO_TOOLS
    assert 'openai/o1-mini does not take tools (built-in table, row "openai o1-mini' in text
    assert _skip(request, "openai/gpt-4o")[0] is None


def test_cannot_force_tool() -> None:
    request = _request()
    request.tools.add(name="lookup")
    request.tool_choice.function_name = "lookup"
    reason, text = _skip(request, "zai/glm-4.7")
    assert reason == SkipId.CANNOT_FORCE_TOOL
    assert "cannot be forced to call the named tool" in text
    assert "the gateway's adapter for this provider cannot carry it" in text
    request.tool_choice.mode = common.TOOL_CHOICE_MODE_REQUIRED
    assert _skip(request, "ollama/llama3.2")[0] == SkipId.CANNOT_FORCE_TOOL
    assert _skip(request, "anthropic/claude-sonnet-4-5")[0] is None
    # Anthropic does not force tool use while thinking.
    request.reasoning.enabled = True
    reason, text = _skip(request, "anthropic/claude-sonnet-4-5")
    assert reason == SkipId.CANNOT_FORCE_TOOL
    assert "a tool (required) while thinking" in text
    assert _skip(request, "openai/gpt-4o")[0] is None


def test_no_json_schema() -> None:
    request = _request()
    request.response_format.type = common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
    request.response_format.json_schema.name = "answer"
    request.response_format.json_schema.schema.CopyFrom(_schema())
    for model in ("zai/glm-4.7", "anthropic/claude-sonnet-4-5", "groq/llama-3.3-70b-versatile"):
        assert _skip(request, model)[0] == SkipId.NO_JSON_SCHEMA, model
    # Claude could; the gateway's Anthropic adapter cannot carry it. Z.AI's API has none.
    assert "cannot carry it" in _skip(request, "anthropic/claude-sonnet-4-5")[1]
    assert '(built-in table, row "zai glm text models' in _skip(request, "zai/glm-4.7")[1]
    assert (
        '(built-in table, row "llama 3.x and qwen3'
        in _skip(request, "groq/llama-3.3-70b-versatile")[1]
    )
    for model in ("openai/gpt-4o", "gemini/gemini-2.5-pro", "groq/openai/gpt-oss-20b"):
        assert _skip(request, model)[0] is None, model


def test_no_json_object() -> None:
    request = _request()
    request.response_format.type = common.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    assert _skip(request, "anthropic/claude-sonnet-4-5")[0] == SkipId.NO_JSON_OBJECT
    assert _skip(request, "openai/o1-mini")[0] == SkipId.NO_JSON_OBJECT
    assert _skip(request, "zai/glm-4.7")[0] is None


def test_no_vision() -> None:
    request = _with_image(_request())
    reason, text = _skip(request, "zai/glm-4.7")
    assert reason == SkipId.NO_VISION
    assert "does not read images; the request has 1" in text
    assert _skip(request, "openai/o3-mini")[0] == SkipId.NO_VISION
    for model in ("zai/glm-4.6v", "gemini/gemini-2.5-flash", "ollama/llava:13b"):
        assert _skip(request, model)[0] is None, model


def test_no_image_urls() -> None:
    request = _with_image(_request(), "https://example.test/cat.png")
    for model in ("gemini/gemini-2.5-flash", "ollama/llava"):
        reason, text = _skip(request, model)
        assert reason == SkipId.NO_IMAGE_URLS, model
        assert "data URLs only; the request has 1 by URL" in text
    assert _skip(request, "openai/gpt-4o")[0] is None


def test_key_model_patterns() -> None:
    reason, text = _skip(_request(), "openai/gpt-4o", patterns=["zai/*", "groq/*"])
    assert reason == SkipId.KEY_MODEL_PATTERNS
    assert text == (
        "key-model-patterns: the caller's key may not use openai/gpt-4o (it may use: zai/*, groq/*)"
    )
    assert _skip(_request(), "zai/glm-4.7", patterns=["zai/*"])[0] is None
    # No key, or a key without patterns, allows every model.
    assert _skip(_request(), "openai/gpt-4o", patterns=None)[0] is None
    assert _skip(_request(), "openai/gpt-4o", patterns=[])[0] is None


def test_breakers_are_dispatchs_with_the_same_shape() -> None:
    reason = breaker_skip("groq/llama-3.3-70b-versatile")
    assert reason.id == SkipId.BREAKER
    assert str(reason).startswith("breaker: groq/llama-3.3-70b-versatile")


def test_the_first_violated_constraint_is_reported() -> None:
    request = _with_image(_request())
    request.tools.add(name="lookup")
    request.response_format.type = common.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    # o1-mini fails tools, JSON and vision: tools comes first.
    assert _skip(request, "openai/o1-mini")[0] == SkipId.NO_TOOLS
    # ... but the key's patterns come before everything.
    assert _skip(request, "openai/o1-mini", patterns=["zai/*"])[0] == SkipId.KEY_MODEL_PATTERNS


# -- agreement with CallerKey and with the providers' check() -------------------------


@given(
    model=st.from_regex(r"[a-z]{1,6}/[a-z0-9.*?-]{0,10}", fullmatch=True),
    patterns=st.lists(st.from_regex(r"[a-z*?\[\]!/-]{0,10}", fullmatch=True), max_size=3),
)
def test_key_patterns_match_as_caller_keys_do(model: str, patterns: list[str]) -> None:
    key = CallerKey(
        id="k",
        name="k",
        prefix="lgw_abcd",
        models=tuple(patterns),
        rpm=None,
        tpm=None,
        budget_usd=None,
        budget_period=None,
        usage_reader=False,
        created_at=0.0,
        revoked_at=None,
    )
    assert key_allows(patterns, model) == key.allows_model(model)


# A model per provider whose family could serve everything it has; what is
# left is the gateway's adapter.
_CAPABLE = {
    common.PROVIDER_OPENROUTER: "openrouter/openai/gpt-4o",
    common.PROVIDER_ZAI: "zai/glm-4.6v",
    common.PROVIDER_OPENAI: "openai/gpt-4o",
    common.PROVIDER_ANTHROPIC: "anthropic/claude-sonnet-4-5",
    common.PROVIDER_GEMINI: "gemini/gemini-2.5-flash",
    common.PROVIDER_GROQ: "groq/meta-llama/llama-4-scout-17b-16e-instruct",
    common.PROVIDER_OLLAMA: "ollama/llama4",
}


def _needing(feature: str) -> pb.CompleteRequest:
    request = _request()
    if feature == "json_schema":
        request.response_format.type = common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
        request.response_format.json_schema.name = "answer"
        request.response_format.json_schema.schema.CopyFrom(_schema())
    elif feature == "json_object":
        request.response_format.type = common.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    elif feature in ("required", "function", "required+thinking", "function+thinking"):
        request.tools.add(name="lookup")
        if feature.startswith("required"):
            request.tool_choice.mode = common.TOOL_CHOICE_MODE_REQUIRED
        else:
            request.tool_choice.function_name = "lookup"
        if feature.endswith("+thinking"):
            # Thinking in every provider's terms (OpenAI and Groq take no budget).
            request.reasoning.enabled = True
            request.sampling.max_tokens = 16_384
    elif feature == "image_data":
        _with_image(request)
    elif feature == "image_url":
        _with_image(request, "https://example.test/cat.png")
    elif feature == "tools":
        request.tools.add(name="lookup")
    return request


_FEATURES = [
    "plain",
    "tools",
    "json_schema",
    "json_object",
    "required",
    "function",
    "required+thinking",
    "function+thinking",
    "image_data",
    "image_url",
]


@pytest.mark.parametrize("provider", sorted(_CAPABLE))
@pytest.mark.parametrize("feature", _FEATURES)
def test_what_a_providers_check_refuses_the_capabilities_refuse(
    provider: common.Provider.ValueType, feature: str
) -> None:
    """Soundness against the adapters themselves: a request check() refuses is
    never one the capabilities let through. (The converse has two deliberate
    exceptions where the adapter softens instead of refusing: Z.AI sends any
    forced choice as "auto" and Ollama offers a named tool alone, so neither
    forces a call, and the filter says so.)"""
    request = _needing(feature)
    model = _CAPABLE[provider]
    refused = bool(providers()[provider].check(request))
    skipped = _skip(request, model)[0] is not None
    if refused:
        assert skipped, (model, feature)
    softened = {
        (common.PROVIDER_ZAI, "required"),
        (common.PROVIDER_ZAI, "function"),
        (common.PROVIDER_ZAI, "required+thinking"),
        (common.PROVIDER_ZAI, "function+thinking"),
        (common.PROVIDER_OLLAMA, "function"),
        (common.PROVIDER_OLLAMA, "function+thinking"),
    }
    if (provider, feature) not in softened:
        assert skipped == refused, (model, feature)


# -- properties -----------------------------------------------------------------------

_needs = st.builds(
    RequestNeeds,
    estimated_prompt_tokens=st.integers(0, 2_000_000),
    max_tokens=st.integers(0, 1_048_576),
    max_tokens_given=st.booleans(),
    tools=st.booleans(),
    json_schema=st.booleans(),
    json_object=st.booleans(),
    images=st.integers(0, 4),
    image_urls=st.integers(0, 4),
    forced_tool=st.sampled_from([None, "required", "function"]),
    thinking=st.booleans(),
).filter(lambda n: n.image_urls <= n.images)
_caps = st.builds(
    Capabilities,
    context_window=st.one_of(st.none(), st.integers(1, 2_000_000)),
    context_source=st.sampled_from([None, *FactSource]),
    tools=st.booleans(),
    json_schema=st.booleans(),
    json_object=st.booleans(),
    vision=st.booleans(),
    image_urls=st.booleans(),
    forced_tool_choice=st.booleans(),
    forced_tool_choice_while_thinking=st.booleans(),
    features_source=st.sampled_from(list(FactSource)),
    matched=st.sampled_from(["", "some family"]),
)
_model_names = st.sampled_from(
    ["openai/gpt-4o", "zai/glm-4.7", "groq/openai/gpt-oss-20b", "ollama/llama3.2", "x/y"]
)
_patterns = st.one_of(
    st.none(), st.lists(st.sampled_from(["*", "zai/*", "openai/gpt-4o", "groq/*/*"]), max_size=3)
)


def _violated(
    needs: RequestNeeds, caps: Capabilities, patterns: Sequence[str] | None, model: str
) -> set[SkipId]:
    """The hard constraints, stated independently of skip_reason:
    - a key with patterns allows only the models one of them matches (fnmatch);
    - a known window must hold the estimated prompt plus max_tokens;
    - tools (offered, or in the history) need a tool-capable model;
    - a forced call needs a model that can be forced, while thinking if thinking;
    - a JSON schema / JSON object response format needs that format;
    - images need vision, and images by URL a target that takes URLs."""
    out = set()
    if patterns and not key_allows(patterns, model):
        out.add(SkipId.KEY_MODEL_PATTERNS)
    if caps.context_window is not None and (
        needs.estimated_prompt_tokens + needs.max_tokens > caps.context_window
    ):
        out.add(SkipId.CONTEXT_WINDOW)
    if needs.tools and not caps.tools:
        out.add(SkipId.NO_TOOLS)
    if needs.forced_tool and not (
        caps.forced_tool_choice_while_thinking
        if needs.thinking and caps.forced_tool_choice
        else caps.forced_tool_choice
    ):
        out.add(SkipId.CANNOT_FORCE_TOOL)
    if needs.json_schema and not caps.json_schema:
        out.add(SkipId.NO_JSON_SCHEMA)
    if needs.json_object and not caps.json_object:
        out.add(SkipId.NO_JSON_OBJECT)
    if needs.images > 0 and not caps.vision:
        out.add(SkipId.NO_VISION)
    if needs.image_urls > 0 and not caps.image_urls:
        out.add(SkipId.NO_IMAGE_URLS)
    return out


@given(needs=_needs, caps=_caps, patterns=_patterns, model=_model_names)
def test_skip_reason_is_none_iff_no_hard_constraint_is_violated(
    needs: RequestNeeds,
    caps: Capabilities,
    patterns: list[str] | None,
    model: str,
) -> None:
    violated = _violated(needs, caps, patterns, model)
    reason = skip_reason(needs, caps, key_patterns=patterns, model_name=model)
    if not violated:
        assert reason is None
    else:
        assert reason is not None
        assert reason.id in violated
        assert reason.id != SkipId.BREAKER
        assert reason.message


@given(needs=_needs, caps=_caps, model=_model_names)
def test_lifting_the_reported_constraint_moves_on_or_passes(
    needs: RequestNeeds, caps: Capabilities, model: str
) -> None:
    """Each reason names a real constraint: granting that one capability
    makes skip_reason report another one or none."""
    reason = skip_reason(needs, caps, key_patterns=None, model_name=model)
    if reason is None:
        return
    grants: dict[SkipId, dict[str, Any]] = {
        SkipId.CONTEXT_WINDOW: {"context_window": None},
        SkipId.NO_TOOLS: {"tools": True},
        SkipId.CANNOT_FORCE_TOOL: {
            "forced_tool_choice": True,
            "forced_tool_choice_while_thinking": True,
        },
        SkipId.NO_JSON_SCHEMA: {"json_schema": True},
        SkipId.NO_JSON_OBJECT: {"json_object": True},
        SkipId.NO_VISION: {"vision": True},
        SkipId.NO_IMAGE_URLS: {"image_urls": True},
    }
    grant = grants[reason.id]
    lifted = skip_reason(
        needs, dataclasses.replace(caps, **grant), key_patterns=None, model_name=model
    )
    assert lifted is None or lifted.id != reason.id


_texts = st.text(max_size=40)
_urls = st.one_of(st.just(PNG), st.just("https://example.test/a.png"), st.text(max_size=20))
_parts = st.one_of(
    st.builds(common.ContentPart, text=_texts),
    st.builds(lambda url: common.ContentPart(image=common.ImagePart(url=url)), _urls),
)


@st.composite
def _arbitrary_requests(draw: st.DrawFn) -> pb.CompleteRequest | pb.StreamCompleteRequest:
    """Requests validation may well refuse: needs_of must not care."""
    request: pb.CompleteRequest | pb.StreamCompleteRequest = (
        pb.CompleteRequest() if draw(st.booleans()) else pb.StreamCompleteRequest()
    )
    for _ in range(draw(st.integers(0, 4))):
        message = request.messages.add(role=draw(st.sampled_from(list(common.Role.values()))))
        message.content = draw(_texts)
        message.parts.extend(draw(st.lists(_parts, max_size=3)))
        message.reasoning = draw(_texts)
        for _ in range(draw(st.integers(0, 2))):
            message.tool_calls.add(id=draw(_texts), name=draw(_texts), arguments=draw(_texts))
        message.tool_call_id = draw(_texts)
    for name in draw(st.lists(_texts, max_size=3)):
        tool = request.tools.add(name=name, description=draw(_texts))
        if draw(st.booleans()):
            tool.parameters.CopyFrom(_schema())
    which = draw(st.integers(0, 2))
    if which == 1:
        request.tool_choice.mode = draw(st.sampled_from(list(common.ToolChoiceMode.values())))
    elif which == 2:
        request.tool_choice.function_name = draw(_texts)
    # Unknown enum numbers too (open enums: a newer client may send one).
    request.response_format.type = common.ResponseFormatType.ValueType(
        draw(st.sampled_from([*common.ResponseFormatType.values(), 99]))
    )
    if draw(st.booleans()):
        request.response_format.json_schema.schema.CopyFrom(_schema())
    if draw(st.booleans()):
        request.sampling.max_tokens = draw(st.integers(-(2**31), 2**31 - 1))
    if draw(st.booleans()):
        request.reasoning.max_tokens = draw(st.integers(-(2**31), 2**31 - 1))
    if draw(st.booleans()):
        request.reasoning.enabled = draw(st.booleans())
    request.reasoning.effort = common.ReasoningEffort.ValueType(
        draw(st.sampled_from([*common.ReasoningEffort.values(), 42]))
    )
    return request


_any_model = st.one_of(
    st.sampled_from(
        [
            "openai/gpt-4o-2024-08-06",
            "anthropic/claude-opus-4-7",
            "gemini/gemini-3-flash-preview",
            "groq/openai/gpt-oss-120b",
            "ollama/hf.co/a/b:Q4",
            "zai/glm-4.6v",
            "openrouter/openai/gpt-4o",
        ]
    ),
    st.text(max_size=30),
)
_infos = st.one_of(
    st.none(),
    st.builds(
        lambda n: pb.ModelInfo(context_length=n) if n is not None else pb.ModelInfo(),
        st.one_of(st.none(), st.integers(-(2**40), 2**40)),
    ),
)


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(
    request=_arbitrary_requests(),
    model=_any_model,
    info=_infos,
    num_ctx=st.one_of(st.none(), st.integers(-5, 1 << 20)),
    patterns=_patterns,
)
def test_never_raises_on_arbitrary_requests(
    request: pb.CompleteRequest | pb.StreamCompleteRequest,
    model: str,
    info: pb.ModelInfo | None,
    num_ctx: int | None,
    patterns: list[str] | None,
) -> None:
    needs = needs_of(request)
    assert needs.estimated_prompt_tokens >= 0
    assert needs.max_tokens >= 0
    assert needs.image_urls <= needs.images
    caps = capabilities_for(model, info, ollama_num_ctx=num_ctx)
    assert caps.context_window is None or caps.context_window > 0
    assert (caps.context_window is None) == (caps.context_source is None)
    reason = skip_reason(needs, caps, key_patterns=patterns, model_name=model)
    assert reason is None or reason.id in _violated(needs, caps, patterns, model)
