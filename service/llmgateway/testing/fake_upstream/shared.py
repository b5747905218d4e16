"""What every wire of the fake shares: JSON responses, paced streams, fault names.

The OpenRouter and Z.AI routes live in app.py; each direct provider's wire
(openai_wire.py, anthropic_wire.py, gemini_wire.py, groq_wire.py,
ollama_wire.py) answers its own paths through `handle(fake, request, path)`
and renders its own envelopes and framing, using these pieces.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import orjson

from llmgateway.testing.fake_upstream.http import CloseConnection, Hang, Response, Result

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

FAULT_PREFIX = "fault-"


def fault_of(model: str) -> str:
    """The fault a model name asks for: its last `/` segment after `fault-`, else ""."""
    last = model.rsplit("/", 1)[-1]
    return last[len(FAULT_PREFIX) :] if last.startswith(FAULT_PREFIX) else ""


def json_response(status: int, value: object, headers: dict[str, str] | None = None) -> Response:
    """A JSON body with its content type."""
    return Response(
        status, orjson.dumps(value), {"Content-Type": "application/json", **(headers or {})}
    )


def transport_fault(fault: str) -> Result | None:
    """Faults below any wire format: never answer, reset, hang up, redirect."""
    if fault == "hang":
        return Hang()
    if fault == "reset":
        return CloseConnection(reset=True)
    if fault == "close-before-headers":
        return CloseConnection(reset=False)
    if fault == "redirect":
        return Response(301, b"", {"Location": "https://api.example.test/v1/elsewhere"})
    return None


async def paced(
    frames: list[bytes], delay: float, stall: bool = False, keepalive: bytes = b""
) -> AsyncIterator[bytes]:
    """`frames` `delay` seconds apart; then, when `stall`, only `keepalive` forever."""
    for frame in frames:
        yield frame
        await asyncio.sleep(delay)
    while stall:
        # Hand control back so the server notices a hang-up.
        await asyncio.sleep(0.05)
        yield keepalive


def sse_event(name: str | None, payload: Any) -> bytes:
    """One SSE event, named or not."""
    head = f"event: {name}\n".encode() if name else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"
