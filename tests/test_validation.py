"""Bad requests are refused before any upstream call, naming the field to fix."""

from __future__ import annotations

import dataclasses
from typing import cast

import grpc
import pytest
from google.protobuf import struct_pb2
from hypothesis import given
from hypothesis import strategies as st

from llmgateway.server.call_path.validation import MAX_DETAIL_FIELD_BYTES, validate
from llmgateway.server.config import ConfigError, Secret, Settings
from llmgateway.server.routing.names import first_invisible, model_name_problem
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import routing_pb2 as rpb
from tests.conftest import gateway_stub, rich_status, user

OK_MODEL = "zai/glm-4.7"
TOOL = common.Tool(name="lookup")
# A role number a newer client might send; this server does not know it.
FUTURE_ROLE = cast("common.Role.ValueType", 42)
FUTURE_TASK = cast("rpb.Task.ValueType", 9)
FUTURE_TIER = cast("rpb.CostTier.ValueType", 7)
ROUTE = "route/default"
OBJECT_SCHEMA = struct_pb2.Struct()
OBJECT_SCHEMA.update({"type": "object"})
THINKING_DETAIL = common.ReasoningDetail(
    provider=common.PROVIDER_ANTHROPIC,
    kind=common.REASONING_DETAIL_KIND_THINKING,
    text="the user wants a greeting",
    signature="EqQBCkYIBxgCKkBsig",
)


def violations(error):
    status = rich_status(error)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.bad_request is not None
    return {v.field: v.description for v in status.bad_request.field_violations}


CASES = [
    ("no model", pb.CompleteRequest(messages=[user("hi")]), "model"),
    ("no messages", pb.CompleteRequest(model=OK_MODEL), "messages"),
    (
        "unknown role",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[common.ChatMessage(role=common.ROLE_UNSPECIFIED, content="hi")],
        ),
        "messages[0].role",
    ),
    (
        "role from the future",
        pb.CompleteRequest(
            model=OK_MODEL, messages=[common.ChatMessage(role=FUTURE_ROLE, content="hi")]
        ),
        "messages[0].role",
    ),
    (
        "empty user message",
        pb.CompleteRequest(model=OK_MODEL, messages=[common.ChatMessage(role=common.ROLE_USER)]),
        "messages[0].content",
    ),
    (
        "content and parts",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[
                common.ChatMessage(
                    role=common.ROLE_USER, content="a", parts=[common.ContentPart(text="b")]
                )
            ],
        ),
        "messages[0].parts",
    ),
    (
        "tool message without id",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[user("hi"), common.ChatMessage(role=common.ROLE_TOOL, content="42")],
        ),
        "messages[1].tool_call_id",
    ),
    (
        "tool calls on a user message",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[
                common.ChatMessage(
                    role=common.ROLE_USER,
                    content="hi",
                    tool_calls=[common.ToolCall(id="c", name="f")],
                )
            ],
        ),
        "messages[0].tool_calls",
    ),
    (
        "bad image url",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[
                common.ChatMessage(
                    role=common.ROLE_USER,
                    parts=[common.ContentPart(image=common.ImagePart(url="file:///etc/passwd"))],
                )
            ],
        ),
        "messages[0].parts[0].image.url",
    ),
    (
        "temperature too high",
        pb.CompleteRequest(
            model=OK_MODEL, messages=[user("hi")], sampling=common.SamplingParams(temperature=2.5)
        ),
        "sampling.temperature",
    ),
    (
        "temperature NaN",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[user("hi")],
            sampling=common.SamplingParams(temperature=float("nan")),
        ),
        "sampling.temperature",
    ),
    (
        "top_p zero",
        pb.CompleteRequest(
            model=OK_MODEL, messages=[user("hi")], sampling=common.SamplingParams(top_p=0.0)
        ),
        "sampling.top_p",
    ),
    (
        "max_tokens zero",
        pb.CompleteRequest(
            model=OK_MODEL, messages=[user("hi")], sampling=common.SamplingParams(max_tokens=0)
        ),
        "sampling.max_tokens",
    ),
    (
        "too many stops",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[user("hi")],
            sampling=common.SamplingParams(stop=["a", "b", "c", "d", "e"]),
        ),
        "sampling.stop",
    ),
    (
        "penalty out of range",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[user("hi")],
            sampling=common.SamplingParams(presence_penalty=-3),
        ),
        "sampling.presence_penalty",
    ),
    (
        "bad tool name",
        pb.CompleteRequest(
            model=OK_MODEL, messages=[user("hi")], tools=[common.Tool(name="has space")]
        ),
        "tools[0].name",
    ),
    (
        "tool name with a trailing newline",
        pb.CompleteRequest(
            model=OK_MODEL, messages=[user("hi")], tools=[common.Tool(name="lookup\n")]
        ),
        "tools[0].name",
    ),
    (
        "duplicate tool",
        pb.CompleteRequest(model=OK_MODEL, messages=[user("hi")], tools=[TOOL, TOOL]),
        "tools[1].name",
    ),
    (
        "forced tool not offered",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[user("hi")],
            tools=[TOOL],
            tool_choice=common.ToolChoice(function_name="other"),
        ),
        "tool_choice.function_name",
    ),
    (
        "required without tools",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[user("hi")],
            tool_choice=common.ToolChoice(mode=common.TOOL_CHOICE_MODE_REQUIRED),
        ),
        "tool_choice.mode",
    ),
    (
        "json schema without schema",
        pb.CompleteRequest(
            model="openrouter/openai/gpt-4o",
            messages=[user("hi")],
            response_format=common.ResponseFormat(
                type=common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                json_schema=common.JsonSchemaFormat(name="x"),
            ),
        ),
        "response_format.json_schema.schema",
    ),
    (
        "effort and budget",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[user("hi")],
            reasoning=common.ReasoningOptions(effort=common.REASONING_EFFORT_LOW, max_tokens=10),
        ),
        "reasoning.max_tokens",
    ),
    (
        "zai model in openrouter fallbacks",
        pb.CompleteRequest(
            model="openrouter/openai/gpt-4o",
            messages=[user("hi")],
            openrouter=common.OpenRouterOptions(models=["zai/glm-4.7"]),
        ),
        "openrouter.models[0]",
    ),
    (
        "negative max price",
        pb.CompleteRequest(
            model="openrouter/openai/gpt-4o",
            messages=[user("hi")],
            openrouter=common.OpenRouterOptions(
                provider=common.ProviderPreferences(max_price=common.MaxPrice(prompt=-1))
            ),
        ),
        "openrouter.provider.max_price.prompt",
    ),
    (
        "zai: two stop words",
        pb.CompleteRequest(
            model=OK_MODEL, messages=[user("hi")], sampling=common.SamplingParams(stop=["a", "b"])
        ),
        "sampling.stop",
    ),
    (
        "zai: json schema",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[user("hi")],
            response_format=common.ResponseFormat(
                type=common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
                json_schema=common.JsonSchemaFormat(name="x", schema=OBJECT_SCHEMA),
            ),
        ),
        "response_format.type",
    ),
    (
        "zai: short user id",
        pb.CompleteRequest(model=OK_MODEL, messages=[user("hi")], user="u1"),
        "user",
    ),
    (
        "reasoning off with an effort",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[user("hi")],
            reasoning=common.ReasoningOptions(enabled=False, effort=common.REASONING_EFFORT_HIGH),
        ),
        "reasoning.enabled",
    ),
    (
        "alias in openrouter fallbacks",
        pb.CompleteRequest(
            model="openrouter/openai/gpt-4o",
            messages=[user("hi")],
            openrouter=common.OpenRouterOptions(models=["fast"]),
        ),
        "openrouter.models[0]",
    ),
    (
        "zai: image in a system message",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[
                common.ChatMessage(
                    role=common.ROLE_SYSTEM,
                    parts=[common.ContentPart(image=common.ImagePart(url="https://x.test/a.png"))],
                ),
                user("hi"),
            ],
        ),
        "messages[0].parts",
    ),
    (
        "reasoning details on a user message",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[
                common.ChatMessage(
                    role=common.ROLE_USER,
                    content="hi",
                    reasoning_details=[THINKING_DETAIL],
                )
            ],
        ),
        "messages[0].reasoning_details",
    ),
    (
        "refusal on a tool message",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[
                user("hi"),
                common.ChatMessage(
                    role=common.ROLE_TOOL, content="42", tool_call_id="c1", refusal="no"
                ),
            ],
        ),
        "messages[1].refusal",
    ),
    (
        "reasoning detail without its provider",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[
                user("hi"),
                common.ChatMessage(
                    role=common.ROLE_ASSISTANT,
                    content="ok",
                    reasoning_details=[
                        common.ReasoningDetail(
                            kind=common.REASONING_DETAIL_KIND_THINKING, signature="s"
                        )
                    ],
                ),
                user("go on"),
            ],
        ),
        "messages[1].reasoning_details[0].provider",
    ),
    (
        "route: task from the future",
        pb.CompleteRequest(
            model=ROUTE, messages=[user("hi")], routing=rpb.RoutingHints(task=FUTURE_TASK)
        ),
        "routing.task",
    ),
    (
        "route: cost tier from the future",
        pb.CompleteRequest(
            model=ROUTE, messages=[user("hi")], routing=rpb.RoutingHints(cost_tier=FUTURE_TIER)
        ),
        "routing.cost_tier",
    ),
    (
        "route: session id too long",
        pb.CompleteRequest(
            model=ROUTE, messages=[user("hi")], routing=rpb.RoutingHints(session_id="s" * 129)
        ),
        "routing.session_id",
    ),
    (
        "route: session id with a line feed",
        pb.CompleteRequest(
            model=ROUTE, messages=[user("hi")], routing=rpb.RoutingHints(session_id="a\nb")
        ),
        "routing.session_id",
    ),
    (
        "zai: only a system message",
        pb.CompleteRequest(
            model=OK_MODEL,
            messages=[common.ChatMessage(role=common.ROLE_SYSTEM, content="be terse")],
        ),
        "messages",
    ),
]


@pytest.mark.parametrize(("name", "request_", "field"), CASES, ids=[c[0] for c in CASES])
async def test_invalid_requests_name_the_field(stub, fake, name, request_, field):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(request_, timeout=10)
    found = violations(caught.value)
    assert field in found, f"{name}: expected a violation on {field}, got {found}"
    assert rich_status(caught.value).info.reason == "INVALID_REQUEST"
    assert field in (caught.value.details() or "")
    assert fake.requests == [], "nothing may reach the upstream"


async def test_stream_validation_fails_before_any_event(stub, fake):
    request = pb.StreamCompleteRequest(model=OK_MODEL)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in stub.StreamComplete(request, timeout=10):
            pytest.fail("no event may precede a validation error")
    assert "messages" in violations(caught.value)
    assert fake.requests == []


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4o",
        "openrouter/gpt-4o",
        "zai",
        "zai/a/b",
        "mistral/x",
        "openai/a/b",
        "anthropic/claude/sonnet",
        "gemini/a/b",
    ],
)
async def test_unknown_model_names_explain_naming(stub, model):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Complete(pb.CompleteRequest(model=model, messages=[user("hi")]), timeout=10)
    status = rich_status(caught.value)
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert status.info.reason == "UNKNOWN_MODEL"
    assert "openrouter/<vendor>/<model>" in status.message
    for form in ("zai", "openai", "anthropic", "gemini", "groq", "ollama"):
        assert f"'{form}/<model>'" in status.message, form
    assert "fast" in status.message  # configured aliases are listed


async def test_oversized_request_is_refused_with_the_limit(settings, fake):
    small = dataclasses.replace(settings, max_request_bytes=1000)
    async with gateway_stub(small) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Complete(
                pb.CompleteRequest(model=OK_MODEL, messages=[user("x" * 5000)]), timeout=10
            )
    assert "at most 1000" in violations(caught.value)["messages"]
    assert fake.requests == []


async def test_oversized_request_names_the_field_that_makes_it_big(settings, fake):
    small = dataclasses.replace(settings, max_request_bytes=1000)
    big_tool = common.Tool(name="lookup", description="d" * 5000)
    async with gateway_stub(small) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Complete(
                pb.CompleteRequest(model=OK_MODEL, messages=[user("hi")], tools=[big_tool]),
                timeout=10,
            )
    assert "at most 1000" in violations(caught.value)["tools"]
    assert fake.requests == []


async def test_missing_key_fails_only_that_provider(settings, fake):
    no_zai = dataclasses.replace(settings, zai=dataclasses.replace(settings.zai, api_key=None))
    async with gateway_stub(no_zai) as stub:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Complete(
                pb.CompleteRequest(model=OK_MODEL, messages=[user("hi")]), timeout=10
            )
        working = await stub.Complete(
            pb.CompleteRequest(model="openrouter/openai/gpt-4o", messages=[user("hi")]),
            timeout=10,
        )
    status = rich_status(caught.value)
    assert status.code == grpc.StatusCode.FAILED_PRECONDITION
    assert status.info.reason == "PROVIDER_NOT_CONFIGURED"
    assert "ZAI_API_KEY" in status.message
    assert status.info.metadata["variable"] == "ZAI_API_KEY"
    assert working.content
    assert [r.provider for r in fake.requests] == ["openrouter"]


def test_secret_is_never_printed():
    secret = Secret("sk-or-v1-should-not-leak")
    assert "should-not-leak" not in repr(secret)
    assert "should-not-leak" not in str(secret)


# Real names: slugs from OpenRouter's catalog and the recorded captures, Z.AI's
# models, and the aliases of the test configuration.
GOOD_MODEL_NAMES = [
    "openrouter/meta-llama/llama-3.1-8b-instruct:free",
    "openrouter/openai/gpt-4o-2024-08-06",
    "openrouter/openai/gpt-5.4-nano-20260317",
    "openrouter/anthropic/claude-4.5-haiku-20251001",
    "openrouter/google/gemini-2.0-flash-exp:free",
    "openrouter/minimax/minimax-m2:free",
    "openrouter/z-ai/glm-5-turbo-20260315",
    "openrouter/moonshotai/kimi-k2.5-0127",
    "openrouter/x-ai/grok-4",
    "openrouter/openai/gpt-4o:nitro",
    "openrouter/openrouter/auto",
    "openrouter/~anthropic/claude-sonnet-latest",
    "openrouter/mistralai/mistral_nemo",
    "zai/glm-4.5-air",
    "zai/glm-4.7",
    "zai/glm-4-32b-0414-128k",
    "zai/glm-5.1",
    "fast",
    "coder",
]

BAD_MODEL_NAMES = [
    ("zai/glm\r\nX-Injected: 1", "U+000D (carriage return)"),
    ("zai/glm\nx", "U+000A (line feed)"),
    ("openrouter/../../x", "'..'"),
    ("openrouter/openai/./gpt-4o", "'.'"),
    ("zai/glm?x=1#", "'?'"),
    ("zai/glm#frag", "'#'"),
    ("zai/glm%0d%0a", "'%'"),
    ("zai/glm\x00", "U+0000 (NUL)"),
    ("zai/glm\u202egpt", "U+202E (right-to-left override)"),
    ("zai/glm\u2066x", "U+2066 (left-to-right isolate)"),
    ("zai/glm\u200bx", "U+200B (zero width space)"),
    ("zai/glm\u2028x", "U+2028 (line separator)"),
    ("zai/\x1b[31mglm", "U+001B (escape)"),
    ("zai/glm\x85", "U+0085"),
    ("zai/glm\x7f", "U+007F (delete)"),
    ("zai/glm 4.7", "' '"),
    ("zai/glm\t4.7", "U+0009 (tab)"),
    ("zai/glm\u00a04.7", "U+00A0 (no-break space)"),
    ("zai/glm\\x", "'\\\\'"),
    ("zai/glm;x", "';'"),
    ("zai/gl\u043c", "U+043C (cyrillic small letter em)"),
    ("/zai/glm-4.7", "leading, trailing or doubled '/'"),
    ("zai/glm-4.7/", "leading, trailing or doubled '/'"),
    ("zai/", "leading, trailing or doubled '/'"),
    ("openrouter//gpt-4o", "leading, trailing or doubled '/'"),
    ("zai/.glm", "must start with a letter or digit"),
    ("zai/-glm", "must start with a letter or digit"),
    ("zai/glm~1", "must start with a letter or digit"),
    ("z" * 257, "at most 256 characters"),
]


@pytest.mark.parametrize("name", GOOD_MODEL_NAMES)
def test_real_model_names_are_accepted(name):
    assert model_name_problem(name) is None


@pytest.mark.parametrize(
    ("name", "why"), BAD_MODEL_NAMES, ids=[repr(n[:40]) for n, _ in BAD_MODEL_NAMES]
)
def test_hostile_model_names_are_refused_saying_why(name, why):
    problem = model_name_problem(name)
    assert problem is not None
    assert why in problem
    # The explanation is safe to log and to show: plain printable ASCII.
    assert problem.isascii()
    assert problem.isprintable()


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("end-user-42", None),
        ("ünïcödé user 名前", None),
        ("user\r\nX: 1", "\r"),
        ("a\u202eb", "\u202e"),
        ("a\x9bb", "\x9b"),
        ("a\u2029b", "\u2029"),
    ],
)
def test_first_invisible_finds_control_and_format_characters(text, found):
    assert first_invisible(text) == found


HOSTILE_REQUESTS = [
    ("model", pb.CompleteRequest(model="zai/glm\r\nX-Injected: 1", messages=[user("hi")])),
    ("model", pb.CompleteRequest(model="openrouter/../../x", messages=[user("hi")])),
    ("model", pb.CompleteRequest(model="zai/glm?x=1#", messages=[user("hi")])),
    ("model", pb.CompleteRequest(model="zai/glm\x00", messages=[user("hi")])),
    ("model", pb.CompleteRequest(model="zai/glm\u202e7.4", messages=[user("hi")])),
    (
        "openrouter.models[2]",
        pb.CompleteRequest(
            model="openrouter/openai/gpt-4o",
            messages=[user("hi")],
            openrouter=common.OpenRouterOptions(
                models=["openai/gpt-4o-mini", "anthropic/claude-haiku-4.5", "openai/x\r\nY: 1"]
            ),
        ),
    ),
    (
        "openrouter.provider.order[0]",
        pb.CompleteRequest(
            model="openrouter/openai/gpt-4o",
            messages=[user("hi")],
            openrouter=common.OpenRouterOptions(
                provider=common.ProviderPreferences(order=["anthropic\r\nX-Injected: 1"])
            ),
        ),
    ),
    (
        "openrouter.provider.order[1]",
        pb.CompleteRequest(
            model="openrouter/openai/gpt-4o",
            messages=[user("hi")],
            openrouter=common.OpenRouterOptions(
                provider=common.ProviderPreferences(order=["anthropic", "open\u202eai"])
            ),
        ),
    ),
    ("user", pb.CompleteRequest(model=OK_MODEL, messages=[user("hi")], user="user-42\r\nX: 1")),
]


@pytest.mark.parametrize(
    ("field", "request_"),
    HOSTILE_REQUESTS,
    ids=[f"{f}:{i}" for i, (f, _) in enumerate(HOSTILE_REQUESTS)],
)
@pytest.mark.parametrize("method", ["Complete", "StreamComplete"])
async def test_hostile_names_are_refused_before_any_upstream_request(
    stub, fake, method, field, request_
):
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        if method == "Complete":
            await stub.Complete(request_, timeout=10)
        else:
            streamed = pb.StreamCompleteRequest.FromString(request_.SerializeToString())
            async for _ in stub.StreamComplete(streamed, timeout=10):
                pytest.fail("no event may precede a validation error")
    found = violations(caught.value)
    assert field in found, f"expected a violation on {field}, got {found}"
    assert rich_status(caught.value).info.reason == "INVALID_REQUEST"
    assert fake.requests == [], "an invalid request must cost no upstream round trip"


async def test_valid_provider_order_and_fallbacks_still_reach_the_upstream(stub, fake):
    answer = await stub.Complete(
        pb.CompleteRequest(
            model="openrouter/meta-llama/llama-3.1-8b-instruct:free",
            messages=[user("hi")],
            user="end-user-42",
            openrouter=common.OpenRouterOptions(
                models=["openai/gpt-4o-2024-08-06"],
                provider=common.ProviderPreferences(order=["google-vertex", "Together"]),
            ),
        ),
        timeout=10,
    )
    assert answer.content
    assert len(fake.requests) == 1


@pytest.mark.parametrize("alias", ["my fast", "fast\r\nX: 1", "../fast", "fast?", "fa\u202est"])
def test_an_alias_name_callers_could_not_send_is_refused_at_start_up(alias, tmp_path):
    config = tmp_path / "gateway.toml"
    config.write_text(f'[aliases]\n"{alias.encode("unicode_escape").decode()}" = "zai/glm-4.7"\n')
    with pytest.raises(ConfigError, match="cannot be an alias name"):
        Settings.load({}, config)


def assistant_turn(**fields: object) -> pb.CompleteRequest:
    """A conversation whose assistant turn carries `fields`."""
    return pb.CompleteRequest(
        model="anthropic/claude-sonnet-4-5",
        messages=[
            user("hi"),
            common.ChatMessage(role=common.ROLE_ASSISTANT, content="hello", **fields),  # type: ignore[arg-type]
            user("again"),
        ],
    )


def fields_refused(request: pb.CompleteRequest) -> dict[str, str]:
    return {v.field: v.description for v in validate(request, 64 * 1024 * 1024)}


def test_an_assistant_turn_may_carry_its_reasoning_details_and_refusal():
    details = [
        THINKING_DETAIL,
        common.ReasoningDetail(
            provider=common.PROVIDER_ANTHROPIC,
            kind=common.REASONING_DETAIL_KIND_REDACTED_THINKING,
            signature="opaque",
            index=1,
        ),
        common.ReasoningDetail(
            provider=common.PROVIDER_GEMINI,
            kind=common.REASONING_DETAIL_KIND_THOUGHT_SIGNATURE,
            signature="CiQB",
            tool_call_id="call_1",
        ),
        common.ReasoningDetail(
            provider=common.PROVIDER_OPENROUTER,
            kind=common.REASONING_DETAIL_KIND_OPENROUTER,
            raw_json='{"type": "reasoning.text", "text": "hm"}',
        ),
    ]
    request = assistant_turn(reasoning_details=details, refusal="I can't help with that.")
    assert fields_refused(request) == {}


def test_an_assistant_turn_may_be_only_a_refusal_as_openai_answers_one():
    refusal_only = common.ChatMessage(role=common.ROLE_ASSISTANT, refusal="I can't help with that.")
    empty = common.ChatMessage(role=common.ROLE_ASSISTANT)
    request = pb.CompleteRequest(model="openai/gpt-4o", messages=[user("hi"), refusal_only])
    assert fields_refused(request) == {}
    request = pb.CompleteRequest(model="openai/gpt-4o", messages=[user("hi"), empty])
    assert "content, tool_calls or a refusal" in fields_refused(request)["messages[1].content"]


@pytest.mark.parametrize(
    ("detail", "field"),
    [
        (
            common.ReasoningDetail(provider=common.PROVIDER_ANTHROPIC, signature="s"),
            "messages[1].reasoning_details[0].kind",
        ),
        (
            common.ReasoningDetail(
                provider=common.PROVIDER_ANTHROPIC,
                kind=cast("common.ReasoningDetailKind.ValueType", 99),
                signature="s",
            ),
            "messages[1].reasoning_details[0].kind",
        ),
        (
            common.ReasoningDetail(
                provider=cast("common.Provider.ValueType", 99),
                kind=common.REASONING_DETAIL_KIND_THINKING,
            ),
            "messages[1].reasoning_details[0].provider",
        ),
        (
            common.ReasoningDetail(
                provider=common.PROVIDER_ANTHROPIC,
                kind=common.REASONING_DETAIL_KIND_THINKING,
                raw_json="{}",
            ),
            "messages[1].reasoning_details[0].raw_json",
        ),
    ],
    ids=["no kind", "unknown kind", "unknown provider", "raw_json off OPENROUTER"],
)
def test_a_malformed_reasoning_detail_is_refused_by_field(detail, field):
    assert field in fields_refused(assistant_turn(reasoning_details=[detail]))


def test_at_most_64_reasoning_details_per_message():
    assert fields_refused(assistant_turn(reasoning_details=[THINKING_DETAIL] * 64)) == {}
    found = fields_refused(assistant_turn(reasoning_details=[THINKING_DETAIL] * 65))
    assert "at most 64" in found["messages[1].reasoning_details"]


@pytest.mark.parametrize("name", ["text", "signature", "raw_json"])
def test_each_reasoning_detail_field_is_at_most_one_mib(name):
    detail = common.ReasoningDetail(
        provider=common.PROVIDER_OPENROUTER, kind=common.REASONING_DETAIL_KIND_OPENROUTER
    )
    setattr(detail, name, "a" * MAX_DETAIL_FIELD_BYTES)
    assert fields_refused(assistant_turn(reasoning_details=[detail])) == {}
    # Counted in UTF-8 bytes: 2-byte characters reach the limit at half the length.
    setattr(detail, name, "é" * (MAX_DETAIL_FIELD_BYTES // 2 + 1))
    found = fields_refused(assistant_turn(reasoning_details=[detail]))
    assert "at most 1048576 bytes" in found[f"messages[1].reasoning_details[0].{name}"]


def test_a_refusal_is_at_most_one_mib():
    assert fields_refused(assistant_turn(refusal="n" * MAX_DETAIL_FIELD_BYTES)) == {}
    found = fields_refused(assistant_turn(refusal="n" * (MAX_DETAIL_FIELD_BYTES + 1)))
    assert "at most 1048576 bytes" in found["messages[1].refusal"]


@pytest.mark.parametrize(
    "slug",
    ["gemini/gemini-2.5-flash", "groq/llama-3.3-70b-versatile", "ollama/llama3.2", "zai/glm-4.7"],
)
def test_openrouter_fallbacks_naming_another_providers_model_are_refused(slug):
    request = pb.CompleteRequest(
        model="openrouter/openai/gpt-4o",
        messages=[user("hi")],
        openrouter=common.OpenRouterOptions(models=[slug]),
    )
    found = fields_refused(request)
    assert "configure an alias" in found["openrouter.models[0]"]


@pytest.mark.parametrize(
    "slug",
    ["openai/gpt-4o-mini", "anthropic/claude-haiku-4.5", "openrouter/google/gemini-2.5-flash"],
)
def test_openrouter_fallbacks_may_name_openai_and_anthropic_slugs(slug):
    # OpenRouter's own vendors share these prefixes with the gateway's providers.
    request = pb.CompleteRequest(
        model="openrouter/openai/gpt-4o",
        messages=[user("hi")],
        openrouter=common.OpenRouterOptions(models=[slug]),
    )
    assert fields_refused(request) == {}


# -- routing hints ----------------------------------------------------------------------


def routed(model: str = ROUTE, **hints: object) -> pb.CompleteRequest:
    return pb.CompleteRequest(
        model=model,
        messages=[user("hi")],
        routing=rpb.RoutingHints(**hints),  # type: ignore[arg-type]
    )


BAD_HINTS: list[dict[str, object]] = [
    {"task": FUTURE_TASK},
    {"cost_tier": FUTURE_TIER},
    {"session_id": "s" * 129},
    {"session_id": "turn\u202e1"},
]


@pytest.mark.parametrize("hints", BAD_HINTS)
def test_hints_are_never_read_for_a_named_model_or_alias(hints):
    # D3: adding hints can never break a call that names a model.
    for model in ("zai/glm-4.7", "openrouter/openai/gpt-4o", "fast"):
        assert fields_refused(routed(model, **hints)) == {}


def test_route_hints_are_checked_naming_each_field():
    refused = fields_refused(routed(task=FUTURE_TASK, cost_tier=FUTURE_TIER, session_id="x" * 129))
    assert refused == {
        "routing.task": (
            "unknown task value 9; known: TASK_UNSPECIFIED, TASK_CHAT, TASK_CODE, "
            "TASK_REASONING, TASK_EXTRACTION, TASK_SUMMARIZATION, TASK_TRANSLATION, "
            "TASK_AGENT, TASK_VISION, TASK_AUTO (a newer client than this gateway?)"
        ),
        "routing.cost_tier": (
            "unknown cost tier value 7; known: COST_TIER_UNSPECIFIED, COST_TIER_LOW, "
            "COST_TIER_MEDIUM, COST_TIER_HIGH"
        ),
        "routing.session_id": "at most 128 characters",
    }
    escaped = fields_refused(routed(session_id="a\x1b[31m"))
    assert escaped == {"routing.session_id": "must not contain U+001B (escape)"}


@pytest.mark.parametrize("task", rpb.Task.values())
def test_every_known_task_and_tier_is_accepted_on_a_route(task):
    for tier in rpb.CostTier.values():
        hints = {"task": task, "cost_tier": tier, "session_id": "s" * 128, "explain": True}
        assert fields_refused(routed(**hints)) == {}


@given(st.text(max_size=200))
def test_a_session_id_is_refused_exactly_when_too_long_or_invisible(session_id):
    refused = "routing.session_id" in fields_refused(routed(session_id=session_id))
    assert refused == (len(session_id) > 128 or first_invisible(session_id) is not None)


def test_a_prefix_names_fields_inside_another_message():
    # ExplainRoute validates its inner `request` and reports `request.<field>`.
    request = routed(task=FUTURE_TASK)
    del request.messages[:]
    found = {v.field for v in validate(request, 64 * 1024 * 1024, prefix="request.")}
    assert found == {"request.messages", "request.routing.task"}
    big = {v.field for v in validate(routed(), 10, prefix="request.")}
    assert big == {"request.messages"}


_SUB_MESSAGES = ("sampling", "tool_choice", "response_format", "reasoning", "openrouter")


@given(
    model=st.sampled_from([OK_MODEL, "openrouter/openai/gpt-4o", "bad model", "", ROUTE]),
    present=st.sets(st.sampled_from(_SUB_MESSAGES)),
    temperature=st.none() | st.floats(allow_nan=True, allow_infinity=True),
    stop=st.lists(st.text(max_size=300), max_size=6),
    effort=st.integers(min_value=0, max_value=9),
    fallbacks=st.lists(st.sampled_from(["openai/gpt-4o", "zai/glm-4.7", "x", "a b"]), max_size=10),
    mode=st.integers(min_value=0, max_value=9),
    format_type=st.integers(min_value=0, max_value=9),
)
def test_an_unset_sub_message_is_judged_as_an_empty_one(
    model, present, temperature, stop, effort, fallbacks, mode, format_type
):
    # Validation skips the sub-messages a request leaves unset (the common
    # request sets none of them): the answer must be the one the same request
    # gets with each of them present and empty.
    request = pb.CompleteRequest(model=model, messages=[user("hi")])
    if "sampling" in present:
        if temperature is not None:
            request.sampling.temperature = temperature
        request.sampling.stop.extend(stop)
    if "reasoning" in present:
        request.reasoning.effort = cast("common.ReasoningEffort.ValueType", effort)
    if "openrouter" in present:
        request.openrouter.models.extend(fallbacks)
    if "tool_choice" in present:
        request.tool_choice.mode = cast("common.ToolChoiceMode.ValueType", mode)
    if "response_format" in present:
        request.response_format.type = cast("common.ResponseFormatType.ValueType", format_type)
    spelled_out = pb.CompleteRequest()
    spelled_out.CopyFrom(request)
    for name in _SUB_MESSAGES:
        getattr(spelled_out, name).SetInParent()
    assert validate(request, 1 << 20) == validate(spelled_out, 1 << 20)
