"""ollama0"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmgateway.server.providers.core import DEFAULT_MAX_RESPONSE_BYTES, UpstreamProvider
from llmgateway.v1 import completion_pb2 as common

if TYPE_CHECKING:
    import httpx

    from llmgateway.server.config import OllamaSettings, Timeouts
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest
    from llmgateway.server.routing.router import Route


class OllamaProvider(UpstreamProvider):
    """ollama/<model>."""

    kind = common.PROVIDER_OLLAMA
    provider_id = "ollama"
    display_name = "Ollama"
    key_env = "OLLAMA_API_KEY"
    base_url_env = "OLLAMA_BASE_URL"

    def __init__(
        self,
        settings: OllamaSettings,
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

    @property
    def configured(self) -> bool:
        # A local Ollama needs no key; OLLAMA_API_KEY is only for hosted Ollama.
        return True
