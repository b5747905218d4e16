"""What the reference servers leave out of the gateway's contract."""

from __future__ import annotations

import grpc

from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

_CONTEXT = grpc.aio.ServicerContext[object, object]


class CompletionsOnly(pb_grpc.CompletionServiceServicer):
    """The service with only Complete and StreamComplete: the rest is UNIMPLEMENTED
    (the benchmark calls only those two)."""

    async def ListModels(  # noqa: N802  # gRPC's method name
        self, request: pb.ListModelsRequest, context: _CONTEXT
    ) -> pb.ListModelsResponse:
        """Not part of a reference server."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in a reference server")

    async def GetUsage(  # noqa: N802  # gRPC's method name
        self, request: pb.GetUsageRequest, context: _CONTEXT
    ) -> pb.GetUsageResponse:
        """Not part of a reference server."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in a reference server")

    async def ExplainRoute(  # noqa: N802  # gRPC's method name
        self, request: pb.ExplainRouteRequest, context: _CONTEXT
    ) -> pb.ExplainRouteResponse:
        """Not part of a reference server."""
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in a reference server")
