"""The standard health service, per provider as well as for the whole gateway.

Besides "" and the CompletionService, each circuit breaker has a health
service name, `provider/<breaker>` (`provider/openrouter`, `provider/zai`,
`provider/zai-coding`): NOT_SERVING while its circuit is open or half-open,
or while the gateway has no API key for the provider; SERVING otherwise.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from grpc_health.v1 import health_pb2

from service.circuit import CircuitState

if TYPE_CHECKING:
    from collections.abc import Iterable

    from grpc_health.v1 import health

PREFIX = "provider/"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ProviderHealth:
    """Mirrors circuit breaker states into the health service."""

    def __init__(self, servicer: health.aio.HealthServicer) -> None:
        self._servicer = servicer
        self._unconfigured: set[str] = set()
        # Strong references: the event loop keeps only weak ones to tasks.
        self._updates: set[asyncio.Task[None]] = set()

    async def start(self, configured: Iterable[str], unconfigured: Iterable[str]) -> None:
        """Report every breaker's provider: SERVING if it has a key."""
        self._unconfigured = set(unconfigured)
        for name in configured:
            await self._servicer.set(PREFIX + name, _SERVING)
        for name in self._unconfigured:
            await self._servicer.set(PREFIX + name, _NOT_SERVING)

    def on_circuit_change(self, name: str, state: CircuitState) -> None:
        """A breaker changed state (called from the event loop, synchronously)."""
        serving = state is CircuitState.CLOSED and name not in self._unconfigured
        task = asyncio.get_running_loop().create_task(
            self._servicer.set(PREFIX + name, _SERVING if serving else _NOT_SERVING)
        )
        self._updates.add(task)
        task.add_done_callback(self._updates.discard)
