"""OpenRouter's wire, as its docs and real captures show it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from llmgateway.testing.fake_upstream.plan import StreamPlan, sse

if TYPE_CHECKING:
    from llmgateway.testing.fake_upstream.answers import Answer

PROCESSING = b": OPENROUTER PROCESSING\n\n"
_NATIVE_FINISH = {
    "anthropic": {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}
}
_PROVIDERS = {
    "openai": "OpenAI",
    "anthropic": "Anthropic",
    "google": "Google AI Studio",
    "z-ai": "Z.AI",
}


def upstream_provider(model: str) -> str:
    """The provider name OpenRouter reports for a model slug."""
    vendor = model.split("/", 1)[0]
    return _PROVIDERS.get(vendor, vendor.title())


def native_finish(model: str, finish: str) -> str:
    """The raw finish reason the serving provider would report."""
    return _NATIVE_FINISH.get(model.split("/", 1)[0], {}).get(finish, finish)


def cost(answer: Answer) -> float:
    """What the fake charges: 1 USD per million prompt tokens, 2 per million completion."""
    return round(answer.prompt_tokens * 1e-6 + answer.completion_tokens * 2e-6, 9)


def usage(answer: Answer) -> dict[str, Any]:
    """Usage with OpenRouter's inline cost, unless the answer withholds it."""
    out: dict[str, Any] = {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": answer.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": len(answer.reasoning)},
        "is_byok": False,
    }
    if answer.reports_cost:
        out["cost"] = cost(answer)
    return out


def generation(answer: Answer, generation_id: str) -> dict[str, Any]:
    """The `GET /generation?id=` document for a finished answer."""
    return {
        "data": {
            "id": generation_id,
            "model": answer.model,
            "provider_name": upstream_provider(answer.model),
            "total_cost": cost(answer),
            "tokens_prompt": answer.prompt_tokens,
            "tokens_completion": answer.completion_tokens,
            "native_tokens_cached": answer.cached_tokens,
            "native_tokens_reasoning": len(answer.reasoning),
            "finish_reason": answer.finish_reason,
            "streamed": False,
            "cancelled": False,
        }
    }


def unary_body(answer: Answer, generation_id: str) -> dict[str, Any]:
    """A non-streaming chat.completion."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(answer.content) if answer.content or not answer.tool_calls else None,
        "reasoning": "".join(answer.reasoning) or None,
        "refusal": None,
    }
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in answer.tool_calls
        ]
    return {
        "id": generation_id,
        "provider": upstream_provider(answer.model),
        "model": answer.model,
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [
            {
                "index": 0,
                "finish_reason": answer.finish_reason,
                "native_finish_reason": native_finish(answer.model, answer.finish_reason),
                "logprobs": None,
                "message": message,
            }
        ],
        "usage": usage(answer),
    }


def stream_plan(answer: Answer, generation_id: str) -> StreamPlan:
    """The SSE frames OpenRouter sends for `answer`."""
    base = {
        "id": generation_id,
        "provider": upstream_provider(answer.model),
        "model": answer.model,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return sse(
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", **delta},
                        "finish_reason": finish,
                        "native_finish_reason": native_finish(answer.model, finish)
                        if finish
                        else None,
                        "logprobs": None,
                    }
                ],
            }
        )

    plan = StreamPlan(preamble=[PROCESSING, PROCESSING])
    plan.deltas.append(chunk({"content": ""}))
    plan.deltas.extend(chunk({"content": "", "reasoning": r}) for r in answer.reasoning)
    plan.deltas.extend(chunk({"content": c}) for c in answer.content)
    for i, call in enumerate(answer.tool_calls):
        # Fragmented the way OpenAI-style providers stream: id and name first.
        half = len(call.arguments) // 2
        plan.deltas.append(
            chunk(
                {
                    "content": None,
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ],
                }
            )
        )
        for piece in (call.arguments[:half], call.arguments[half:]):
            plan.deltas.append(
                chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
            )
    usage_chunk = sse({**base, "choices": [], "usage": usage(answer)})
    plan.closing = [chunk({"content": ""}, answer.finish_reason), usage_chunk]
    plan.closing_without_finish = [usage_chunk]
    return plan


def error_body(code: int | str, message: str, **extra: Any) -> dict[str, Any]:
    """OpenRouter's error envelope."""
    return {"error": {"code": code, "message": message, **extra}}
