"""The fake's Groq wire: OpenAI's shapes (openai_wire.serve) with Groq's differences.

As Groq's docs and recorded traffic show it:
- usage on the finish chunk twice over, in `x_groq.usage` (with queue and
  timing fields) and top-level `usage`, even without include_usage; with it, a
  `choices: []` chunk repeats the same counts (the `x-groq-only` fault sends
  usage only in `x_groq`);
- reasoning models (gpt-oss, qwen3) stream `reasoning` deltas with a `channel`;
- assistant messages refuse any field beyond OpenAI's basic ones
  ("property 'reasoning' is unsupported");
- its own failures: `tool-use-failed` (400 with `failed_generation`),
  `tool-use-failed-midstream` (reasoning, then `event: error` with
  `status_code` 400), `capacity-exceeded` (498), `tpm-413` (413
  rate_limit_exceeded), `ratelimit-reset` (429 with x-ratelimit-reset-* and no
  retry-after).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from llmgateway.testing.fake_upstream.openai_wire import (
    Flavour,
    error,
    error_body,
    serve,
)
from llmgateway.testing.fake_upstream.plan import sse
from llmgateway.testing.fake_upstream.shared import json_response

if TYPE_CHECKING:
    from llmgateway.testing.fake_upstream.answers import Answer
    from llmgateway.testing.fake_upstream.app import FakeUpstream
    from llmgateway.testing.fake_upstream.http import Request, Response, Result
    from llmgateway.testing.fake_upstream.plan import StreamPlan

JSON = dict[str, Any]

# `ratelimit-reset`: the reset Groq's header gives, the Retry-After the gateway must report.
RATELIMIT_RESET_SECONDS = 2.5
FAILED_GENERATION = '{"name": "get_weather", "arguments": {"town": "Boston"}}'
TOOL_USE_FAILED = (
    "Tool call validation failed: parameters for tool get_weather did not match schema: "
    "errors: [missing properties: 'location']"
)
_FIELDS = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "reasoning_effort",
        "reasoning_format",
        "include_reasoning",
        "user",
        "n",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "metadata",
        "service_tier",
    }
)
_MESSAGE_FIELDS = frozenset({"role", "content", "name", "tool_calls", "tool_call_id"})
_REASONING_MODELS = ("openai/gpt-oss", "qwen/qwen3")


def _models() -> JSON:
    def entry(model_id: str, owner: str, window: int, active: bool = True) -> JSON:
        return {
            "id": model_id,
            "object": "model",
            "created": 1_700_000_000,
            "owned_by": owner,
            "active": active,
            "context_window": window,
            "public_apps": None,
            "max_completion_tokens": 32768,
        }

    return {
        "object": "list",
        "data": [
            entry("llama-3.3-70b-versatile", "Meta", 131072),
            entry("llama-3.1-8b-instant", "Meta", 131072),
            entry("openai/gpt-oss-120b", "OpenAI", 131072),
            entry("moonshotai/kimi-k2-instruct-0905", "Moonshot AI", 262144),
            entry("whisper-large-v3", "OpenAI", 448),
            entry("gemma2-9b-it", "Google", 8192, active=False),
        ],
    }


def _validate(body: JSON) -> Response | None:
    if "reasoning_format" in body and "include_reasoning" in body:
        return json_response(
            400,
            error_body(
                "reasoning_format and include_reasoning cannot be used together",
                "invalid_request_error",
                None,
            ),
        )
    return None


def _is_reasoning_model(body: JSON) -> bool:
    return str(body.get("model", "")).startswith(_REASONING_MODELS)


def _thinks(body: JSON) -> bool:
    return (
        _is_reasoning_model(body)
        and body.get("reasoning_effort") != "none"
        and body.get("include_reasoning") is not False
        and body.get("reasoning_format") != "hidden"
    )


def _usage(answer: Answer, body: JSON) -> JSON:
    del body
    completion = answer.completion_tokens
    return {
        "queue_time": 0.05,
        "prompt_tokens": answer.prompt_tokens,
        "prompt_time": 0.01,
        "completion_tokens": completion,
        "completion_time": 0.02,
        "total_tokens": answer.prompt_tokens + completion,
        "total_time": 0.03,
        "prompt_tokens_details": {"cached_tokens": answer.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": len(answer.reasoning)},
    }


def _request_id(upstream_id: str) -> str:
    return "req_" + upstream_id.removeprefix("chatcmpl-")


def _own_fault(fault: str, body: JSON) -> Result | None:
    # A unary request meets the mid-stream fault as the 400 it is before any output.
    if fault == "tool-use-failed" or (
        fault == "tool-use-failed-midstream" and not body.get("stream")
    ):
        return error(
            400,
            TOOL_USE_FAILED,
            "invalid_request_error",
            "tool_use_failed",
            failed_generation=FAILED_GENERATION,
        )
    if fault == "capacity-exceeded":
        return error(
            498,
            "Flex tier capacity exceeded. This model is currently experiencing high demand.",
            "capacity_exceeded",
            "capacity_exceeded",
        )
    if fault == "tpm-413":
        return error(
            413,
            "Request too large for model in organization on tokens per minute (TPM): "
            "Limit 6000, Requested 9000, please reduce your message size and try again.",
            "tokens",
            "rate_limit_exceeded",
        )
    if fault == "ratelimit-reset":
        return error(
            429,
            "Rate limit reached for model in organization on requests per minute (RPM): "
            "Limit 30, Used 30, Requested 1.",
            "requests",
            "rate_limit_exceeded",
            {
                "x-ratelimit-limit-requests": "30",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": f"{RATELIMIT_RESET_SECONDS}s",
                "x-ratelimit-remaining-tokens": "5000",
                "x-ratelimit-reset-tokens": "7.66s",
            },
        )
    return None


def _midstream_error() -> bytes:
    return b"event: error\n" + sse(
        {
            "error": {
                "message": "Internal Server Error",
                "type": "internal_server_error",
                "status_code": 500,
            }
        }
    )


def _stream_fault(fault: str, plan: StreamPlan) -> list[bytes] | None:
    """`tool-use-failed-midstream`: reasoning deltas, then Groq's in-band
    tool_use_failed, no finish chunk and no [DONE] (as recorded)."""
    if fault != "tool-use-failed-midstream":
        return None
    head = orjson.loads(plan.deltas[0].removeprefix(b"data: "))
    reasoning = [
        sse({**head, "choices": [{"index": 0, "delta": {"reasoning": r, "channel": "analysis"}}]})
        for r in ("We need ", "to call ", "the tool.")
    ]
    return [
        plan.deltas[0],
        *reasoning,
        b"event: error\n"
        + sse(
            {
                "error": {
                    "message": TOOL_USE_FAILED,
                    "type": "invalid_request_error",
                    "code": "tool_use_failed",
                    "failed_generation": FAILED_GENERATION,
                    "status_code": 400,
                }
            }
        ),
    ]


GROQ = Flavour(
    provider="groq",
    id_prefix="chatcmpl-fakegroq",
    models=_models,
    fields=_FIELDS,
    message_fields=_MESSAGE_FIELDS,
    validate=_validate,
    thinks=_thinks,
    usage=_usage,
    first_chunk_extra=lambda upstream_id: {"x_groq": {"id": _request_id(upstream_id)}},
    finish_chunk_extra=lambda upstream_id, usage: {
        "x_groq": {"id": _request_id(upstream_id), **({"usage": usage} if usage else {})}
    },
    usage_on_finish=True,
    own_fault=_own_fault,
    stream_fault=_stream_fault,
    midstream_error=_midstream_error,
)


async def handle(fake: FakeUpstream, request: Request, path: str) -> Result:
    """Answer one request under this wire's prefix; `path` is what follows it."""
    return await serve(fake, request, path, GROQ)
