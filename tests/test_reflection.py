"""Server reflection over a real channel, as grpc.reflection.v1 and v1alpha both.

The v1 and v1alpha messages are the same fields under two package names (the
published protos), so v1alpha's classes encode and decode v1 calls here; what
differs is the method path a tool calls, and that v1 describes its own package.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from llmgateway.server.process import reflection

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

SERVICE = "llmgateway.v1.CompletionService"
VERSIONS = ["grpc.reflection.v1", "grpc.reflection.v1alpha"]


async def ask(
    channel: grpc.aio.Channel, version: str, **kwargs: object
) -> reflection_pb2.ServerReflectionResponse:
    """One request to `version`'s ServerReflectionInfo; its one reply."""
    call = channel.stream_stream(
        f"/{version}.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    async def one() -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
        yield reflection_pb2.ServerReflectionRequest(**kwargs)  # type: ignore[arg-type]

    async for reply in call(one(), timeout=10):
        assert isinstance(reply, reflection_pb2.ServerReflectionResponse)
        return reply
    raise AssertionError(f"{version} sent no reply")


def files_of(
    reply: reflection_pb2.ServerReflectionResponse,
) -> list[descriptor_pb2.FileDescriptorProto]:
    assert reply.WhichOneof("message_response") == "file_descriptor_response", reply
    return [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in reply.file_descriptor_response.file_descriptor_proto
    ]


@pytest.mark.parametrize("version", VERSIONS)
async def test_each_version_lists_the_services(channel: grpc.aio.Channel, version: str) -> None:
    listed = await ask(channel, version, list_services="")
    names = {service.name for service in listed.list_services_response.service}
    assert names == {
        SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }


@pytest.mark.parametrize("version", VERSIONS)
async def test_each_version_describes_the_gateway(channel: grpc.aio.Channel, version: str) -> None:
    described = files_of(await ask(channel, version, file_containing_symbol=SERVICE))
    services = {f"{f.package}.{s.name}" for f in described for s in f.service}
    assert SERVICE in services
    # Its imports too, by file name, as grpcurl asks for them next.
    wanted = next(f for f in described if any(s.name == "CompletionService" for s in f.service))
    for dependency in wanted.dependency:
        assert files_of(await ask(channel, version, file_by_filename=dependency))


async def test_v1_describes_itself_in_its_own_package(channel: grpc.aio.Channel) -> None:
    (file,) = files_of(
        await ask(
            channel,
            "grpc.reflection.v1",
            file_containing_symbol="grpc.reflection.v1.ServerReflection",
        )
    )
    assert (file.name, file.package) == (
        "grpc/reflection/v1/reflection.proto",
        "grpc.reflection.v1",
    )
    (method,) = file.service[0].method
    assert (method.name, method.input_type, method.output_type) == (
        "ServerReflectionInfo",
        ".grpc.reflection.v1.ServerReflectionRequest",
        ".grpc.reflection.v1.ServerReflectionResponse",
    )
    assert method.client_streaming
    assert method.server_streaming
    for message in file.message_type:
        for field in message.field:
            assert "v1alpha" not in field.type_name, (message.name, field.name)
    assert not file.options.deprecated


async def test_v1_answers_an_unknown_symbol_with_not_found_in_the_reply(
    channel: grpc.aio.Channel,
) -> None:
    reply = await ask(channel, "grpc.reflection.v1", file_containing_symbol="no.such.Service")
    assert reply.error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
    assert reply.original_request.file_containing_symbol == "no.such.Service"


async def test_v1_refuses_an_undecodable_request_with_invalid_argument(
    channel: grpc.aio.Channel,
) -> None:
    reflect: grpc.aio.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
    )

    async def garbage() -> AsyncIterator[bytes]:
        yield b"\xff\xff\xff\xff"

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        async for _ in reflect(garbage(), timeout=10):
            pass
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# -- where the v1 messages come from (pure) ----------------------------------------------


def test_the_pinned_grpcio_reflection_ships_no_v1_so_the_gateway_derives_it() -> None:
    """When this fails, grpcio-reflection publishes grpc.reflection.v1: its module is
    used from then on, and the derivation in server/process/reflection.py (and this
    test) can go."""
    assert reflection.published_v1() is None, (
        f"{reflection.PUBLISHED_V1_MODULE} exists now: drop the derived v1 file"
    )
    request, response = reflection._v1_messages()
    derived = reflection._derived_v1_file()
    assert request.DESCRIPTOR.file is derived
    assert response.DESCRIPTOR.file is derived


def test_the_published_v1_messages_are_used_once_grpcio_reflection_ships_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    published = types.ModuleType(reflection.PUBLISHED_V1_MODULE)
    published.__spec__ = importlib.machinery.ModuleSpec(reflection.PUBLISHED_V1_MODULE, None)

    class ServerReflectionRequest:
        pass

    class ServerReflectionResponse:
        pass

    published.ServerReflectionRequest = ServerReflectionRequest  # type: ignore[attr-defined]
    published.ServerReflectionResponse = ServerReflectionResponse  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, reflection.PUBLISHED_V1_MODULE, published)
    assert reflection.published_v1() is published
    messages: tuple[object, ...] = reflection._v1_messages()
    assert messages == (ServerReflectionRequest, ServerReflectionResponse)
