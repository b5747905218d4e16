"""The contract callers compile against: RPC names, streaming flags, stable fields."""

from __future__ import annotations

from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb


def test_service_methods_and_streaming_flags():
    service = pb.DESCRIPTOR.services_by_name["CompletionService"]
    methods = {
        m.name: (m.input_type.name, m.output_type.name, m.client_streaming, m.server_streaming)
        for m in service.methods
    }
    assert methods == {
        "Complete": ("CompleteRequest", "CompleteResponse", False, False),
        "StreamComplete": ("StreamCompleteRequest", "StreamCompleteResponse", False, True),
        "ListModels": ("ListModelsRequest", "ListModelsResponse", False, False),
        "GetUsage": ("GetUsageRequest", "GetUsageResponse", False, False),
        "ExplainRoute": ("ExplainRouteRequest", "ExplainRouteResponse", False, False),
    }


def test_both_request_messages_share_fields_and_numbers():
    unary = {f.name: (f.number, f.type) for f in pb.CompleteRequest.DESCRIPTOR.fields}
    stream = {f.name: (f.number, f.type) for f in pb.StreamCompleteRequest.DESCRIPTOR.fields}
    assert unary == stream
    assert unary["model"][0] == 1
    assert unary["messages"][0] == 2


def test_message_fields_callers_rely_on():
    fields = {f.name: f.number for f in common.ChatMessage.DESCRIPTOR.fields}
    assert fields["role"] == 1
    assert fields["content"] == 2
    sampling = common.SamplingParams.DESCRIPTOR.fields_by_name
    for name in (
        "temperature",
        "top_p",
        "max_tokens",
        "seed",
        "presence_penalty",
        "frequency_penalty",
    ):
        assert sampling[name].has_presence, f"{name} must be proto3 optional"


def test_stream_event_is_a_oneof_with_a_final_done():
    oneof = pb.StreamCompleteResponse.DESCRIPTOR.oneofs_by_name["event"]
    assert [f.name for f in oneof.fields] == [
        "content_delta",
        "reasoning_delta",
        "tool_call",
        "done",
    ]


def test_every_provider_has_its_stable_number():
    assert dict(common.Provider.items()) == {
        "PROVIDER_UNSPECIFIED": 0,
        "PROVIDER_OPENROUTER": 1,
        "PROVIDER_ZAI": 2,
        "PROVIDER_OPENAI": 3,
        "PROVIDER_ANTHROPIC": 4,
        "PROVIDER_GEMINI": 5,
        "PROVIDER_GROQ": 6,
        "PROVIDER_OLLAMA": 7,
    }


def test_reasoning_details_and_refusal_travel_on_messages_and_answers():
    detail = {f.name: (f.number, f.type) for f in common.ReasoningDetail.DESCRIPTOR.fields}
    assert {name: number for name, (number, _) in detail.items()} == {
        "provider": 1,
        "kind": 2,
        "text": 3,
        "signature": 4,
        "tool_call_id": 5,
        "index": 6,
        "raw_json": 7,
    }
    assert dict(common.ReasoningDetailKind.items()) == {
        "REASONING_DETAIL_KIND_UNSPECIFIED": 0,
        "REASONING_DETAIL_KIND_THINKING": 1,
        "REASONING_DETAIL_KIND_REDACTED_THINKING": 2,
        "REASONING_DETAIL_KIND_THOUGHT_SIGNATURE": 3,
        "REASONING_DETAIL_KIND_OPENROUTER": 4,
    }
    for message, details, refusal in (
        (common.ChatMessage, 8, 9),
        (pb.CompleteResponse, 14, 15),
        (pb.CompletionDone, 11, 12),
    ):
        fields = message.DESCRIPTOR.fields_by_name
        assert fields["reasoning_details"].number == details, message.DESCRIPTOR.name
        assert fields["reasoning_details"].message_type is common.ReasoningDetail.DESCRIPTOR
        assert fields["refusal"].number == refusal, message.DESCRIPTOR.name


def test_cache_writes_are_counted_in_usage_and_usage_rows():
    assert common.Usage.DESCRIPTOR.fields_by_name["cache_write_tokens"].number == 7
    assert pb.UsageRow.DESCRIPTOR.fields_by_name["cache_write_tokens"].number == 9


def test_an_invalid_tool_call_has_its_reason():
    assert pb.ERROR_REASON_UPSTREAM_INVALID_TOOL_CALL == 30
