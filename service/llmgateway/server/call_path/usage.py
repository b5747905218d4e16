"""GetUsage: the ledger's aggregates, for callers allowed to see them."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING

import grpc

from llmgateway.server.errors import GatewayError
from llmgateway.server.state.ledger import Grouping, usage
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from llmgateway.server.state.db import Database
    from llmgateway.server.state.keys import CallerKey
    from llmgateway.server.state.ledger import Ledger

DEFAULT_WINDOW = 30 * 86400.0
_GROUPINGS: dict[pb.UsageGrouping.ValueType, Grouping] = {
    pb.USAGE_GROUPING_UNSPECIFIED: "model",
    pb.USAGE_GROUPING_MODEL: "model",
    pb.USAGE_GROUPING_KEY: "key",
    pb.USAGE_GROUPING_DAY: "day",
    pb.USAGE_GROUPING_ROUTE: "route",
    pb.USAGE_GROUPING_TASK: "task",
}


class UsageReader:
    """Answers GetUsage from the ledger."""

    def __init__(self, db: Database, ledger: Ledger) -> None:
        self._db = db
        self._ledger = ledger

    async def get_usage(
        self, request: pb.GetUsageRequest, caller: CallerKey | None
    ) -> pb.GetUsageResponse:
        """Aggregates over the requested window; a key without usage access sees
        only itself."""
        until = request.end_time.ToSeconds() if request.HasField("end_time") else time.time()
        since = (
            request.start_time.ToSeconds()
            if request.HasField("start_time")
            else until - DEFAULT_WINDOW
        )
        if since >= until:
            raise GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT,
                pb.ERROR_REASON_INVALID_REQUEST,
                "start_time must be before end_time",
            )
        grouping = _GROUPINGS.get(request.group_by)
        if grouping is None:
            raise GatewayError(
                grpc.StatusCode.INVALID_ARGUMENT,
                pb.ERROR_REASON_INVALID_REQUEST,
                f"group_by {request.group_by} is not a UsageGrouping value",
            )
        key_id: str | None = request.key_id or None
        if caller is not None and not caller.usage_reader:
            if key_id not in (None, caller.id):
                raise GatewayError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    pb.ERROR_REASON_USAGE_NOT_ALLOWED,
                    f"key {caller.name!r} may read its own usage only; ask the operator for "
                    "a key with usage access to every key",
                    metadata={"keyId": caller.id},
                )
            key_id = caller.id
        # This worker's latest calls first, so a caller sees its own last call.
        await self._ledger.flush()
        rows = await usage(self._db, grouping, since, until, None if key_id is None else [key_id])
        # The ledger's rows have the contract's fields, name for name.
        return pb.GetUsageResponse(rows=[pb.UsageRow(**dataclasses.asdict(row)) for row in rows])
