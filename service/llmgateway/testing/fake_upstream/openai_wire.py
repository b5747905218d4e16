"""The fake's OpenAI wire (Chat Completions), and the engine groq_wire.py shares.

`serve(fake, request, path, flavour)` answers one request for an OpenAI-style
direct provider: the Bearer check, a strict validator (the real API's 400s for
what a gateway must never send), the generic faults, the flavour's own faults,
then the answer rendered unary or as SSE. A Flavour says what differs: the
provider id, its model list, its validator, its rendering of usage and chunks,
and its own faults. OPENAI below is OpenAI's, as its docs and recorded traffic
show it:
- every chunk carries `usage: null` until the include_usage chunk, whose
  `choices` is empty (the `moderation-tail` fault adds another `choices: []`
  chunk with `usage: null` after it, as OpenAI's moderation does);
- a refusal is `message.refusal` / `delta.refusal` with `content: null`;
- reasoning models (o*, gpt-5*) return no reasoning text, only its token count,
  and refuse `max_tokens` (400 unsupported_parameter).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from llmgateway.testing.fake_upstream.answers import Answer, plan_answer
from llmgateway.testing.fake_upstream.http import Response, StreamResponse
from llmgateway.testing.fake_upstream.plan import DONE, StreamPlan, sse
from llmgateway.testing.fake_upstream.shared import fault_of, json_response, transport_fault

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from llmgateway.testing.fake_upstream.app import FakeUpstream
    from llmgateway.testing.fake_upstream.http import Request, Result

JSON = dict[str, Any]

# `refusal`: what the fake model says when it refuses.
REFUSAL_TEXT = "I'm sorry, but I can't help with that request."
# `drip`, `oversized`, `rate-limited-once`: as app.py's (the suite's rows share the timings).
DRIP_PAUSE = 0.3
DRIP_PAUSES = 3
OVERSIZED_BYTES = 5 * 1024 * 1024
RATE_LIMITED_ONCE_RETRY_AFTER = 1
# `http-NNN`: the Retry-After the fake sends with 429 and 503.
HTTP_RETRY_AFTER = 7
# Reasoning tokens a reasoning model reports per answer (no text: Chat Completions has none).
OPENAI_REASONING_TOKENS = 4
# Request fields Chat Completions takes; anything else is a 400, as on the real API.
_OPENAI_FIELDS = frozenset(
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
        "user",
        "n",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "metadata",
        "store",
        "service_tier",
        "prediction",
        "modalities",
        "audio",
        "verbosity",
        "web_search_options",
        "prompt_cache_key",
        "safety_identifier",
    }
)
_OPENAI_MESSAGE_FIELDS = frozenset(
    {"role", "content", "name", "tool_calls", "tool_call_id", "refusal", "audio"}
)
_REASONING_MODEL = re.compile(r"^(?:o\d|gpt-5)")
# The `code` the fake sends with each HTTP status of `http-NNN`.
_STATUS_CODES = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass(frozen=True, slots=True)
class Flavour:
    """What one OpenAI-style provider does differently on the fake."""

    provider: str
    id_prefix: str
    models: Callable[[], JSON]
    fields: frozenset[str]
    message_fields: frozenset[str]
    # Extra validation of a parsed body; a 400 Response or None.
    validate: Callable[[JSON], Response | None]
    # Whether the fake model thinks (and shows it) for this body.
    thinks: Callable[[JSON], bool]
    usage: Callable[[Answer, JSON], JSON]
    # Extra keys on the first and the finish chunk of a stream (Groq's x_groq).
    first_chunk_extra: Callable[[str], JSON] = lambda _: {}
    finish_chunk_extra: Callable[[str, JSON], JSON] = lambda _, __: {}
    # Whether the finish chunk carries top-level usage (Groq) even without include_usage.
    usage_on_finish: bool = False
    # The provider's own faults before any answer; a Result or None.
    own_fault: Callable[[str, JSON], Result | None] = lambda _, __: None
    # The provider's own stream faults: the frames to send instead, or None.
    stream_fault: Callable[[str, StreamPlan], list[bytes] | None] = lambda _, __: None
    # Mid-stream error event for `midstream-error`.
    midstream_error: Callable[[], bytes] = lambda: b""
    reasoning_key: str = "reasoning"


def error_body(message: str, kind: str, code: str | None, param: str | None = None) -> JSON:
    """OpenAI's error envelope (Groq's is the same)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error(
    status: int,
    message: str,
    kind: str,
    code: str | None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> Response:
    """An error response in OpenAI's envelope."""
    body = error_body(message, kind, code)
    body["error"].update(extra)
    return json_response(status, body, headers)


async def serve(fake: FakeUpstream, request: Request, path: str, flavour: Flavour) -> Result:
    """Answer one request under `flavour`'s prefix; `path` is what follows it."""
    sent = request.headers.get("authorization", "")
    if sent != f"Bearer {fake.keys.get(flavour.provider, '')}":
        return error(
            401,
            "Incorrect API key provided. You can find your API key in your account settings.",
            "invalid_request_error",
            "invalid_api_key",
        )
    if path == "/models" and request.method == "GET":
        return json_response(200, flavour.models())
    if path != "/chat/completions" or request.method != "POST":
        return error(
            404, f"Unknown request URL: {request.method} {path}", "invalid_request_error", None
        )
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return error(
            400, "We could not parse the JSON body of your request.", "invalid_request_error", None
        )
    if not isinstance(body, dict):
        return error(400, "The request body must be a JSON object.", "invalid_request_error", None)
    fake.record_request(flavour.provider, flavour.provider, request, body)
    rejection = _validate(body, flavour)
    if rejection is not None:
        return rejection
    model = str(body.get("model", ""))
    fault = fault_of(model)
    if fault == "echo-auth":
        return error(400, f"Invalid header Authorization: {sent}", "invalid_request_error", None)
    early = _early_fault(fake, model, fault, flavour, body)
    if early is not None:
        return early
    return _answer(fake, body, fault, sent, flavour)


def _validate(body: JSON, flavour: Flavour) -> Response | None:
    unknown = sorted(set(body) - flavour.fields)
    if unknown:
        return error(
            400,
            f"Unrecognized request argument supplied: {unknown[0]}",
            "invalid_request_error",
            "unknown_parameter",
        )
    if "stream_options" in body and not body.get("stream"):
        return error(
            400,
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "invalid_request_error",
            "invalid_value",
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return error(400, "'messages' must be a non-empty array", "invalid_request_error", None)
    called: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            return error(400, f"messages[{i}] must be an object", "invalid_request_error", None)
        extra = sorted(set(message) - flavour.message_fields)
        if extra:
            # Groq's words; OpenAI's are similar.
            return error(
                400,
                f"'messages.{i}' : for 'role:{message.get('role')}' the following must be "
                f"satisfied[('messages.{i}' : property '{extra[0]}' is unsupported)]",
                "invalid_request_error",
                None,
            )
        for call in message.get("tool_calls") or ():
            called.add(str(call.get("id")))
        if message.get("role") == "tool" and message.get("tool_call_id") not in called:
            return error(
                400,
                f"Invalid parameter: messages with role 'tool' must be a response to a preceeding "
                f"message with 'tool_calls' (messages[{i}].tool_call_id).",
                "invalid_request_error",
                None,
            )
    return flavour.validate(body)


def _early_fault(
    fake: FakeUpstream, model: str, fault: str, flavour: Flavour, body: JSON
) -> Result | None:
    count = fake.count_request(model)
    if fault == "flaky" and count <= 2:
        return error(502, "upstream briefly unavailable", "server_error", None)
    flaky = fake.flaky_fails(model, fault)
    if flaky is not None:
        return status_error(flaky)
    if fault == "rate-limited-once" and count == 1:
        return error(
            429,
            "Rate limit reached for requests",
            "requests",
            "rate_limit_exceeded",
            {"Retry-After": str(RATE_LIMITED_ONCE_RETRY_AFTER)},
        )
    transport = transport_fault(fault)
    if transport is not None:
        return transport
    if fault.startswith("http-") and fault[5:].isdigit():
        status = int(fault[5:])
        headers = {"Retry-After": str(HTTP_RETRY_AFTER)} if status in (429, 503) else {}
        return status_error(status, headers)
    return flavour.own_fault(fault, body)


def status_error(status: int, headers: dict[str, str] | None = None) -> Response:
    """The error `http-NNN` answers with."""
    kind, code = _STATUS_CODES.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None)
    )
    return error(status, f"fake upstream returned HTTP {status}", kind, code, headers)


def _answer(fake: FakeUpstream, body: JSON, fault: str, sent: str, flavour: Flavour) -> Result:
    chat = dict(body)
    if "max_completion_tokens" in chat:
        chat["max_tokens"] = chat["max_completion_tokens"]
    answer = plan_answer(chat, thinks=flavour.thinks(body))
    if fault == "content-filter":
        answer.finish_reason = "content_filter"
    if fault == "oversized":
        answer.content = ["x" * OVERSIZED_BYTES]
        answer.reasoning = []
    refusal = fault == "refusal"
    if refusal:
        answer.content = []
        answer.tool_calls = []
    upstream_id = f"{flavour.id_prefix}{fake.next_number():012d}"
    if fault == "leak-answer":
        upstream_id = sent
        answer.model = sent
        answer.finish_reason = sent
    # `no-usage`: the upstream reports none, anywhere.
    usage = {} if fault == "no-usage" else flavour.usage(answer, body)
    if not body.get("stream"):
        return _unary(answer, upstream_id, usage, fault, sent, flavour, refusal)
    if fake.stream_chunks is not None and not answer.tool_calls:
        answer.content = ["tok "] * fake.stream_chunks
        answer.reasoning = []
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    plan = stream_plan(answer, upstream_id, usage, flavour, include_usage, refusal, fault)
    return _stream(fake, plan, fault, sent, flavour)


def _unary(
    answer: Answer,
    upstream_id: str,
    usage: JSON,
    fault: str,
    sent: str,
    flavour: Flavour,
    refusal: bool,
) -> Result:
    if fault == "malformed-body":
        return Response(
            200, b"<html>upstream proxy error</html>", {"Content-Type": "application/json"}
        )
    if fault == "leak-midstream":
        # The unary form: a 200 whose body is only an error quoting the key.
        return json_response(200, {"error": leaking_error(sent)})
    message: JSON = {
        "role": "assistant",
        "content": None
        if refusal or (answer.tool_calls and not answer.content)
        else "".join(answer.content),
    }
    if flavour.provider == "openai":
        message["refusal"] = REFUSAL_TEXT if refusal else None
        message["annotations"] = []
    if answer.reasoning:
        message[flavour.reasoning_key] = "".join(answer.reasoning)
    if answer.tool_calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in answer.tool_calls
        ]
    payload: JSON = {
        "id": upstream_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": answer.finish_reason,
            }
        ],
        "usage": usage,
        **flavour.finish_chunk_extra(upstream_id, {}),
    }
    if fault == "no-usage":
        payload.pop("usage", None)
    return json_response(200, payload)


def stream_plan(
    answer: Answer,
    upstream_id: str,
    usage: JSON,
    flavour: Flavour,
    include_usage: bool,
    refusal: bool,
    fault: str,
) -> StreamPlan:
    """The SSE frames for `answer` in `flavour`'s shape."""
    base: JSON = {
        "id": upstream_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": answer.model,
        "system_fingerprint": "fp_fake",
    }
    openai = flavour.provider == "openai"
    # OpenAI: `usage: null` on every chunk until the usage chunk (with include_usage).
    nulls: JSON = {"usage": None} if openai and include_usage else {}

    def chunk(delta: JSON, finish: str | None = None, **extra: Any) -> bytes:
        return sse(
            {
                **base,
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
                ],
                **nulls,
                **extra,
            }
        )

    plan = StreamPlan()
    first: JSON = {"role": "assistant", "content": ""}
    if openai:
        first["refusal"] = None
    plan.deltas.append(chunk(first, **flavour.first_chunk_extra(upstream_id)))
    plan.deltas.extend(
        chunk({flavour.reasoning_key: r, "channel": "analysis"}) for r in answer.reasoning
    )
    if refusal:
        words = REFUSAL_TEXT.split(" ")
        plan.deltas.extend(
            chunk({"refusal": w + ("" if i == len(words) - 1 else " ")})
            for i, w in enumerate(words)
        )
    plan.deltas.extend(chunk({"content": c}) for c in answer.content)
    for i, call in enumerate(answer.tool_calls):
        # id and name in the first fragment only; the arguments in pieces, keyed by index.
        half = len(call.arguments) // 2
        plan.deltas.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": ""},
                        }
                    ]
                }
            )
        )
        for piece in (call.arguments[:half], call.arguments[half:]):
            plan.deltas.append(
                chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
            )
    groq_only = fault == "x-groq-only"
    finish_extra = flavour.finish_chunk_extra(upstream_id, usage)
    if flavour.usage_on_finish and usage and not groq_only:
        finish_extra["usage"] = usage
    usage_chunk = sse(
        {**base, "choices": [], "usage": usage, **({} if openai else {"service_tier": "on_demand"})}
    )
    plan.closing = [chunk({}, answer.finish_reason, **finish_extra)]
    plan.closing_without_finish = [chunk({}, None, **finish_extra)]
    if include_usage and usage and not groq_only:
        plan.closing.append(usage_chunk)
        plan.closing_without_finish.append(usage_chunk)
    if fault == "moderation-tail":
        plan.closing.append(sse({**base, "choices": [], "usage": None}))
    return plan


def leaking_error(sent: str) -> JSON:
    """An error object quoting `sent` in its message, code and type."""
    return {"message": f"lost {sent}", "type": sent, "param": None, "code": sent}


def _stream(
    fake: FakeUpstream, plan: StreamPlan, fault: str, sent: str, flavour: Flavour
) -> Result:
    frames = plan.frames()
    abort_after = reset_after = stall = False
    raw_tail = b""
    own = flavour.stream_fault(fault, plan)
    if own is not None:
        frames = own
    elif fault == "truncated":
        frames, abort_after = plan.deltas[:3], True
    elif fault == "reset-midstream":
        frames, reset_after = plan.deltas[:3], True
    elif fault == "no-done":
        frames = [*plan.deltas, *plan.closing]
    elif fault == "no-finish":
        frames = [*plan.deltas, *plan.closing_without_finish, DONE]
    elif fault == "malformed-event":
        frames = [*plan.deltas[:3], b'data: {"id": "x", "choices": [\n\n']
    elif fault == "midstream-error":
        frames = [*plan.deltas[:3], flavour.midstream_error()]
    elif fault == "error-data":
        # OpenAI's other in-band form: a data event holding an error, no `event:` line.
        frames = [
            *plan.deltas[:3],
            sse(
                error_body(
                    "The server had an error while processing your request.", "server_error", None
                )
            ),
        ]
    elif fault == "leak-midstream":
        frames = [*plan.deltas[:3], b"event: error\n" + sse({"error": leaking_error(sent)})]
    elif fault == "stall":
        frames, stall = plan.deltas[:2], True
    elif fault == "bad-chunking":
        frames, raw_tail = plan.deltas[:3], b"zz\r\nnot a chunk\r\n"
    elif fault == "slow":
        extra = [
            sse(
                {
                    "id": "slow",
                    "model": "slow",
                    "choices": [{"index": 0, "delta": {"content": f"{i} "}}],
                }
            )
            for i in range(200)
        ]
        frames = [*plan.deltas, *extra, *plan.closing, DONE]
    elif fault == "drip":
        return StreamResponse(_dripped(frames), headers=_SSE)
    delay = fake.slow_chunk_delay if fault == "slow" else fake.chunk_delay
    return StreamResponse(
        _paced(frames, delay, stall),
        headers=_SSE,
        abort_after=abort_after,
        reset_after=reset_after,
        raw_tail=raw_tail,
    )


_SSE = {"Content-Type": "text/event-stream; charset=utf-8"}


async def _paced(frames: list[bytes], delay: float, stall: bool) -> AsyncIterator[bytes]:
    for frame in frames:
        yield frame
        await asyncio.sleep(delay)
    while stall:
        # Hand control back so the server notices a hang-up.
        await asyncio.sleep(0.05)
        yield b""


async def _dripped(frames: list[bytes]) -> AsyncIterator[bytes]:
    """`frames` in DRIP_PAUSES + 1 bursts, DRIP_PAUSE seconds of silence between them."""
    per_burst = -(-len(frames) // (DRIP_PAUSES + 1))
    for start in range(0, len(frames), per_burst):
        if start:
            await asyncio.sleep(DRIP_PAUSE)
        yield b"".join(frames[start : start + per_burst])


# -- OpenAI's flavour ---------------------------------------------------------------


def _openai_models() -> JSON:
    created = 1_700_000_000
    ids = (
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4o-2024-08-06",
        "gpt-4.1",
        "gpt-5",
        "gpt-5-mini",
        "o4-mini",
        "text-embedding-3-small",
        "whisper-1",
        "tts-1",
        "dall-e-3",
        "omni-moderation-latest",
    )
    return {
        "object": "list",
        "data": [
            {"id": i, "object": "model", "created": created, "owned_by": "system"} for i in ids
        ],
    }


def _openai_validate(body: JSON) -> Response | None:
    if _is_reasoning_model(body) and "max_tokens" in body:
        return json_response(
            400,
            error_body(
                "Unsupported parameter: 'max_tokens' is not supported with this model. "
                "Use 'max_completion_tokens' instead.",
                "invalid_request_error",
                "unsupported_parameter",
                "max_tokens",
            ),
        )
    effort = body.get("reasoning_effort")
    if effort is not None and effort not in ("none", "minimal", "low", "medium", "high", "xhigh"):
        return json_response(
            400,
            error_body(
                f"Invalid value: '{effort}'. Supported values are: 'minimal', 'low', 'medium', and 'high'.",
                "invalid_request_error",
                "invalid_value",
                "reasoning_effort",
            ),
        )
    return None


def _is_reasoning_model(body: JSON) -> bool:
    return bool(_REASONING_MODEL.match(str(body.get("model", ""))))


def _openai_usage(answer: Answer, body: JSON) -> JSON:
    reasoning = (
        OPENAI_REASONING_TOKENS
        if _is_reasoning_model(body) and body.get("reasoning_effort") != "none"
        else 0
    )
    completion = answer.completion_tokens + reasoning
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": answer.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": answer.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reasoning,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _openai_fault(fault: str, body: JSON) -> Result | None:
    del body
    if fault == "insufficient-quota":
        return error(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            "insufficient_quota",
        )
    if fault == "context-length":
        return error(
            400,
            "This model's maximum context length is 128000 tokens. However, your messages "
            "resulted in 130000 tokens. Please reduce the length of the messages.",
            "invalid_request_error",
            "context_length_exceeded",
        )
    return None


def _openai_midstream_error() -> bytes:
    return b"event: error\n" + sse(
        error_body("The server had an error while processing your request.", "server_error", None)
    )


OPENAI = Flavour(
    provider="openai",
    id_prefix="chatcmpl-fake",
    models=_openai_models,
    fields=_OPENAI_FIELDS,
    message_fields=_OPENAI_MESSAGE_FIELDS,
    validate=_openai_validate,
    # Chat Completions never returns reasoning text.
    thinks=lambda body: False,
    usage=_openai_usage,
    own_fault=_openai_fault,
    midstream_error=_openai_midstream_error,
)


async def handle(fake: FakeUpstream, request: Request, path: str) -> Result:
    """Answer one request under this wire's prefix; `path` is what follows it."""
    return await serve(fake, request, path, OPENAI)
