"""Server reflection as both grpc.reflection.v1 and grpc.reflection.v1alpha.

grpcio-reflection (1.85) ships only v1alpha, and newer tools (grpcurl, Postman,
grpcui) ask for v1 first. The two protos are the same messages under another
package, field for field, so v1 is served by the v1alpha implementation. Its
messages are grpcio-reflection's own v1 ones when a release ships them;
until then, its file descriptor is derived from v1alpha's (renamed, type
references rewritten) and added to the default pool, so v1 lists itself and
describes itself too.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any, cast

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator, Iterable
    from types import ModuleType

    from google.protobuf.descriptor import FileDescriptor
    from google.protobuf.message import Message

V1ALPHA_SERVICE_NAME: str = reflection.SERVICE_NAME
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
_V1_FILE = "grpc/reflection/v1/reflection.proto"
# Where grpcio-reflection would publish the v1 messages (1.85 does not).
PUBLISHED_V1_MODULE = "grpc_reflection.v1.reflection_pb2"
_METHOD = "ServerReflectionInfo"


def add_reflection(registrar: Any, service_names: Iterable[str]) -> None:
    """Serve reflection of `service_names` (and of both reflection services) on
    `registrar` (a grpc.aio.Server or a stand-in for one)."""
    request_type, response_type = _v1_messages()
    names = (*service_names, V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)
    servicer = reflection.aio.ReflectionServicer(names)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, registrar)  # type: ignore[no-untyped-call]

    async def info(requests: AsyncIterable[Message], context: Any) -> AsyncIterator[Message]:
        # An async generator; its published stubs type it as a coroutine.
        replies = cast(
            "AsyncIterable[reflection_pb2.ServerReflectionResponse]",
            servicer.ServerReflectionInfo(_as_v1alpha(requests), context),
        )
        async for reply in replies:
            yield response_type.FromString(reply.SerializeToString())

    handler = grpc.stream_stream_rpc_method_handler(
        info,
        request_deserializer=request_type.FromString,
        response_serializer=response_type.SerializeToString,
    )
    registrar.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE_NAME, {_METHOD: handler}),)
    )


async def _as_v1alpha(
    requests: AsyncIterable[Message],
) -> AsyncIterator[reflection_pb2.ServerReflectionRequest]:
    async for request in requests:
        yield reflection_pb2.ServerReflectionRequest.FromString(request.SerializeToString())


def _v1_messages() -> tuple[type[Message], type[Message]]:
    """The v1 request and response classes: the published ones, else derived."""
    published = published_v1()
    if published is not None:
        return published.ServerReflectionRequest, published.ServerReflectionResponse
    file = _derived_v1_file()
    return (
        message_factory.GetMessageClass(file.message_types_by_name["ServerReflectionRequest"]),
        message_factory.GetMessageClass(file.message_types_by_name["ServerReflectionResponse"]),
    )


def published_v1() -> ModuleType | None:
    """grpcio-reflection's own v1 messages, if this release ships them. Then the
    derived file must not be added: the published module, imported by anyone
    later, would fail on a second grpc/reflection/v1/reflection.proto."""
    try:
        if importlib.util.find_spec(PUBLISHED_V1_MODULE) is None:
            return None
    except ModuleNotFoundError:  # no grpc_reflection.v1 package at all
        return None
    return importlib.import_module(PUBLISHED_V1_MODULE)


def _derived_v1_file() -> FileDescriptor:
    """grpc/reflection/v1/reflection.proto, derived from v1alpha's, in the
    default pool (added once)."""
    pool = descriptor_pool.Default()
    try:
        return pool.FindFileByName(_V1_FILE)
    except KeyError:
        pass
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    old, new = f".{proto.package}.", f".{V1_PACKAGE}."
    proto.name, proto.package = _V1_FILE, V1_PACKAGE
    # As the published v1 file says them (v1alpha's are marked deprecated).
    proto.options.Clear()
    proto.options.java_package = "io.grpc.reflection.v1"
    proto.options.java_outer_classname = "ServerReflectionProto"
    proto.options.java_multiple_files = True
    proto.options.go_package = "google.golang.org/grpc/reflection/grpc_reflection_v1"
    for message in proto.message_type:
        for field in message.field:
            if field.type_name.startswith(old):
                field.type_name = new + field.type_name.removeprefix(old)
    for service in proto.service:
        for method in service.method:
            method.input_type = new + method.input_type.removeprefix(old)
            method.output_type = new + method.output_type.removeprefix(old)
    pool.AddSerializedFile(proto.SerializeToString())
    return pool.FindFileByName(_V1_FILE)
