"""check() and body() agree, for every provider: a request the gateway's
validation and the provider's check() accept is one its body() can build.

A body() that raises during dispatch (an Untranslatable its check() missed,
a KeyError on an odd but valid request) is an INTERNAL error for the caller
and a failure on the provider's breaker; check() exists to refuse such a
request first, with INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson
import pytest
from google.protobuf import struct_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmgateway.server.call_path.validation import validate
from llmgateway.server.config import (
    AnthropicSettings,
    GeminiSettings,
    GroqSettings,
    OllamaSettings,
    OpenAISettings,
    OpenRouterSettings,
    Secret,
    Timeouts,
    ZaiSettings,
)
from llmgateway.server.providers.anthropic import AnthropicProvider
from llmgateway.server.providers.gemini import GeminiProvider
from llmgateway.server.providers.groq import GroqProvider
from llmgateway.server.providers.ollama import OllamaProvider
from llmgateway.server.providers.openai import OpenAIProvider
from llmgateway.server.providers.openrouter import OpenRouterProvider
from llmgateway.server.providers.zai import ZaiProvider
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from llmgateway.server.providers.core import UpstreamProvider

KEY = Secret("sk-test-consistency-0000000000000000")
PNG = "data:image/png;base64,iVBORw0KGgo="

_texts = st.sampled_from(["hi", "ok then", '{"a": 1}', "[1]"])
_urls = st.sampled_from([PNG, "https://example.test/a.png", "data:image/png;base64,!!"])
_parts = st.one_of(
    st.builds(common.ContentPart, text=_texts),
    st.builds(
        lambda url, detail: common.ContentPart(image=common.ImagePart(url=url, detail=detail)),
        _urls,
        st.sampled_from(list(common.ImageDetail.values())),
    ),
)
_call_ids = st.sampled_from(["c1", "c2", "call_gw_0", "toolu_1"])
_calls = st.builds(
    common.ToolCall,
    id=_call_ids,
    name=st.sampled_from(["get_weather", "lookup"]),
    arguments=st.sampled_from(["", "{}", '{"city": "Oslo"}', "[]", "not json", "3"]),
)


@st.composite
def _detail(draw: st.DrawFn) -> common.ReasoningDetail:
    kind = draw(st.sampled_from(list(common.ReasoningDetailKind.values())[1:]))
    detail = common.ReasoningDetail(
        provider=draw(st.sampled_from(list(common.Provider.values())[1:])),
        kind=kind,
        text=draw(st.sampled_from(["", "thought"])),
        signature=draw(st.sampled_from(["", "sig"])),
        tool_call_id=draw(st.sampled_from(["", "c1", "c2"])),
        index=draw(st.integers(0, 3)),
    )
    if kind == common.REASONING_DETAIL_KIND_OPENROUTER:
        detail.raw_json = draw(st.sampled_from(['{"type": "reasoning.text"}', "[]", "nope"]))
    return detail


_details = _detail()


@st.composite
def _message(draw: st.DrawFn) -> common.ChatMessage:
    """A message shaped for its role (so that most pass validation), with the
    odd values providers must refuse or carry."""
    role = draw(
        st.sampled_from(
            [common.ROLE_SYSTEM, common.ROLE_USER, common.ROLE_ASSISTANT, common.ROLE_TOOL]
        )
    )
    message = common.ChatMessage(role=role)
    if draw(st.booleans()):
        message.parts.extend(draw(st.lists(_parts, min_size=1, max_size=2)))
    else:
        message.content = draw(_texts)
    if role == common.ROLE_ASSISTANT:
        message.tool_calls.extend(draw(st.lists(_calls, max_size=2)))
        message.reasoning = draw(st.sampled_from(["", "because"]))
        message.reasoning_details.extend(draw(st.lists(_details, max_size=2)))
        message.refusal = draw(st.sampled_from(["", "no"]))
    elif role == common.ROLE_TOOL:
        message.tool_call_id = draw(_call_ids)
    return message


_messages = _message()


@st.composite
def _sampling(draw: st.DrawFn) -> common.SamplingParams:
    sampling = common.SamplingParams(
        stop=draw(st.lists(st.sampled_from(["\n", "END", "###", "x", "y"]), max_size=4))
    )
    for name, values in (
        ("temperature", [0.0, 0.7, 1.5]),
        ("top_p", [0.1, 1.0]),
        ("max_tokens", [1, 16, 4096, 100000]),
        ("seed", [0, 7, 2**40]),
        ("presence_penalty", [0.0, 1.0]),
        ("frequency_penalty", [0.0, -1.0]),
    ):
        if draw(st.booleans()):
            setattr(sampling, name, draw(st.sampled_from(values)))
    return sampling


@st.composite
def _reasoning(draw: st.DrawFn) -> common.ReasoningOptions:
    options = common.ReasoningOptions(exclude=draw(st.booleans()))
    which = draw(st.integers(0, 3))
    if which == 1:
        options.effort = draw(st.sampled_from(list(common.ReasoningEffort.values())))
    elif which == 2:
        options.max_tokens = draw(st.sampled_from([1, 512, 1024, 2048, 50000]))
    elif which == 3:
        options.enabled = draw(st.booleans())
    return options


def _schema() -> struct_pb2.Struct:
    schema = struct_pb2.Struct()
    schema.update({"type": "object", "properties": {"city": {"type": "string"}}})
    return schema


@st.composite
def _requests(draw: st.DrawFn) -> pb.CompleteRequest:
    request = pb.CompleteRequest(model="openai/gpt-4o")
    request.messages.extend(draw(st.lists(_messages, min_size=1, max_size=4)))
    if draw(st.booleans()):
        request.sampling.CopyFrom(draw(_sampling()))
    for name in draw(st.lists(st.sampled_from(["get_weather", "lookup"]), max_size=2, unique=True)):
        tool = request.tools.add(name=name)
        if draw(st.booleans()):
            tool.parameters.CopyFrom(_schema())
    choice = draw(st.integers(0, 2))
    if choice == 1:
        request.tool_choice.mode = draw(st.sampled_from(list(common.ToolChoiceMode.values())))
    elif choice == 2:
        request.tool_choice.function_name = draw(st.sampled_from(["get_weather", "lookup"]))
    request.response_format.type = draw(st.sampled_from(list(common.ResponseFormatType.values())))
    if request.response_format.type == common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        request.response_format.json_schema.name = "answer"
        request.response_format.json_schema.schema.CopyFrom(_schema())
    if draw(st.booleans()):
        request.reasoning.CopyFrom(draw(_reasoning()))
    request.user = draw(st.sampled_from(["", "user-1"]))
    return request


def _providers() -> list[tuple[UpstreamProvider, Route]]:
    t = Timeouts()
    return [
        (
            OpenRouterProvider(OpenRouterSettings(api_key=KEY), t),
            Route(common.PROVIDER_OPENROUTER, "openai/gpt-4o", "x"),
        ),
        (ZaiProvider(ZaiSettings(api_key=KEY), t), Route(common.PROVIDER_ZAI, "glm-4.7", "x")),
        (
            OpenAIProvider(OpenAISettings(api_key=KEY), t),
            Route(common.PROVIDER_OPENAI, "gpt-4o", "x"),
        ),
        (
            AnthropicProvider(AnthropicSettings(api_key=KEY), t),
            Route(common.PROVIDER_ANTHROPIC, "claude-sonnet-4-5", "x"),
        ),
        (
            GeminiProvider(GeminiSettings(api_key=KEY), t),
            Route(common.PROVIDER_GEMINI, "gemini-2.5-flash", "x"),
        ),
        (
            GroqProvider(GroqSettings(api_key=KEY), t),
            Route(common.PROVIDER_GROQ, "llama-3.3-70b", "x"),
        ),
        (OllamaProvider(OllamaSettings(), t), Route(common.PROVIDER_OLLAMA, "llama3.2", "x")),
    ]


@pytest.fixture(scope="module")
def providers() -> list[tuple[UpstreamProvider, Route]]:
    return _providers()


@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(request=_requests())
def test_what_check_accepts_body_builds(
    providers: list[tuple[UpstreamProvider, Route]], request: pb.CompleteRequest
) -> None:
    if validate(request, 1 << 20):
        return  # refused before any provider sees it
    for provider, route in providers:
        if provider.check(request):
            continue
        for stream in (False, True):
            body = provider.body(request, route, stream=stream)
            orjson.dumps(body)
