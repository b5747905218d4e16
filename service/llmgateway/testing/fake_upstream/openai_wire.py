"""The fake's openai wire: routes, auth, rendering, validation and faults. (To be written.)"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmgateway.testing.fake_upstream.shared import json_response

if TYPE_CHECKING:
    from llmgateway.testing.fake_upstream.app import FakeUpstream
    from llmgateway.testing.fake_upstream.http import Request, Result


async def handle(fake: FakeUpstream, request: Request, path: str) -> Result:
    """Answer one request under this wire's prefix; `path` is what follows it."""
    del fake
    return json_response(501, {"error": f"not implemented: {request.method} {path}"})
