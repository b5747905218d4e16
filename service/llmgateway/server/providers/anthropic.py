"""anthropic0"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmgateway.server.providers.core import DEFAULT_MAX_RESPONSE_BYTES, UpstreamProvider
from llmgateway.v1 import completion_pb2 as common

if TYPE_CHECKING:
    import httpx

    from llmgateway.server.config import AnthropicSettings, Timeouts
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest
    from llmgateway.server.routing.router import Route


class AnthropicProvider(UpstreamProvider):
    """anthropic/<model>."""

    kind = common.PROVIDER_ANTHROPIC
    provider_id = "anthropic"
    display_name = "Anthropic"
    key_env = "ANTHROPIC_API_KEY"
    base_url_env = "ANTHROPIC_BASE_URL"

    def __init__(
        self,
        settings: AnthropicSettings,
        timeouts: Timeouts,
        *,
        max_connections: int = 1000,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(
            settings.api_key,
            timeouts,
            max_connections=max_connections,
            max_response_bytes=max_response_bytes,
            transport=transport,
        )
        self.settings = settings

    def url(self, request: AnyCompletionRequest, route: Route, *, stream: bool) -> str:
        raise NotImplementedError
