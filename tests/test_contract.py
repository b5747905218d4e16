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
