"""Z.AI's wire, as its docs and recorded traffic show it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llmgateway.testing.fake_upstream.plan import StreamPlan, sse

if TYPE_CHECKING:
    from llmgateway.testing.fake_upstream.answers import Answer


def usage(answer: Answer) -> dict[str, Any]:
    """Usage as Z.AI reports it (no cost)."""
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": answer.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": len(answer.reasoning)},
    }


def _tool_calls(answer: Answer) -> list[dict[str, Any]]:
    return [
        {
            "id": c.id,
            "index": i,
            "type": "function",
            "function": {"name": c.name, "arguments": c.arguments},
        }
        for i, c in enumerate(answer.tool_calls)
    ]


def unary_body(answer: Answer, request_id: str) -> dict[str, Any]:
    """A non-streaming response; `id` equals `request_id`, as on the wire."""
    message: dict[str, Any] = {
        "role": "assistant",
        # Z.AI returns "\n\n" as content when the model only calls a tool.
        "content": "".join(answer.content) if not answer.tool_calls else "\n\n",
    }
    if answer.reasoning:
        message["reasoning_content"] = "".join(answer.reasoning)
    if answer.tool_calls:
        message["tool_calls"] = _tool_calls(answer)
    return {
        "id": request_id,
        "request_id": request_id,
        "created": int(time.time()),
        "model": answer.model,
        "object": "chat.completion",
        "choices": [{"index": 0, "finish_reason": answer.finish_reason, "message": message}],
        "usage": usage(answer),
    }


def stream_plan(answer: Answer, request_id: str) -> StreamPlan:
    """The SSE frames Z.AI sends: no finish_reason key until the end, usage last."""
    base = {"id": request_id, "created": int(time.time()), "model": answer.model}

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        choice: dict[str, Any] = {"index": 0, "delta": {"role": "assistant", **delta}}
        if finish is not None:
            choice["finish_reason"] = finish
        return sse({**base, "choices": [choice], **extra})

    plan = StreamPlan()
    plan.deltas.extend(chunk({"reasoning_content": r}) for r in answer.reasoning)
    plan.deltas.extend(chunk({"content": c, "reasoning_content": ""}) for c in answer.content)
    final_usage = usage(answer)
    if answer.tool_calls:
        # Without tool_stream the whole call arrives in one chunk that already
        # carries finish_reason; the usage chunk repeats it.
        plan.deltas.append(chunk({"tool_calls": _tool_calls(answer)}, "tool_calls"))
    plan.closing = [chunk({"content": ""}, answer.finish_reason, usage=final_usage)]
    plan.closing_without_finish = [chunk({"content": ""}, usage=final_usage)]
    return plan


def error_body(code: str, message: str) -> dict[str, Any]:
    """Z.AI's error envelope: the business code is a string."""
    return {"error": {"code": code, "message": message}}
