"""The standard health service, per provider as well as for the whole gateway.

Besides "" and the CompletionService, each breaker group has a health
service name, `provider/<group>` (`provider/openrouter`, `provider/zai`,
`provider/zai-coding`, `provider/openai`, `provider/anthropic`,
`provider/gemini`, `provider/groq`, `provider/ollama`): NOT_SERVING while
the provider as a whole is failing (its calls across every model over the
window have all but stopped succeeding, see
`llmgateway.server.resilience.circuit.ProviderVerdict`: a failing model among
working ones does not make it so), or while the gateway has no API key for it
(Ollama needs none: it is SERVING on a gateway with no keys at all);
SERVING otherwise. A model's own open circuit shows in its calls' errors.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from grpc_health.v1 import health_pb2

if TYPE_CHECKING:
    from collections.abc import Iterable

    from grpc_health.v1 import health

PREFIX = "provider/"
_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class ProviderHealth:
    """Mirrors the providers' verdicts into the health service."""

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

    def on_circuit_change(self, name: str, serving: bool) -> None:
        """A provider started or stopped failing (called from the event loop,
        synchronously)."""
        serving = serving and name not in self._unconfigured
        task = asyncio.get_running_loop().create_task(
            self._servicer.set(PREFIX + name, _SERVING if serving else _NOT_SERVING)
        )
        self._updates.add(task)
        task.add_done_callback(self._updates.discard)
