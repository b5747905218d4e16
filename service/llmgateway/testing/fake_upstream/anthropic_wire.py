"""The fake's Anthropic wire: the Messages API as its docs and recorded traffic show it.

Strict where the real API is strict about what a gateway must get right
(headers, `max_tokens`, alternating roles, tool results answering the call
before them, thinking blocks replayed byte for byte), so a gateway that breaks
the wire fails here as it would against Anthropic. Thinking is signed with the
fake's own secret: a thinking block comes back valid only if its text and
signature are exactly what this fake issued.

Faults (model `anthropic/fault-<name>`): the generic ones every wire has
(http-NNN, hang, reset, close-before-headers, redirect, truncated,
reset-midstream, stall, slow, bad-chunking, malformed-body, malformed-event,
midstream-error, no-done, no-finish, no-usage, oversized, flaky,
flaky-<status>-<percent>, rate-limited-once, leak-answer, leak-midstream,
leak-tail, leak-middle, leak-text-body, leak-long-message, echo-auth) in
Anthropic's envelopes and framing, and Anthropic's own: overloaded,
overloaded-first, overloaded-midstream, api-error-event, credit-balance,
prompt-too-long, rate-limited, refusal, pause-turn, max-tokens,
unknown-event, kimi-input, noargs-tool, redacted-thinking, empty-thinking,
padded.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import TYPE_CHECKING, Any

import orjson

from llmgateway.testing.fake_upstream.answers import Answer, ToolCallPlan, plan_answer
from llmgateway.testing.fake_upstream.http import Response, StreamResponse
from llmgateway.testing.fake_upstream.shared import (
    fault_of,
    json_response,
    paced,
    sse_event,
    transport_fault,
)

if TYPE_CHECKING:
    from llmgateway.testing.fake_upstream.app import FakeUpstream
    from llmgateway.testing.fake_upstream.http import Request, Result

JSON = dict[str, Any]

# Signs the fake's thinking blocks; a block comes back valid only with this
# fake's HMAC of its exact text.
SIGNING_SECRET = b"fake-anthropic-thinking-secret"
# The `data` of the fake's redacted thinking blocks.
REDACTED_DATA = base64.b64encode(
    hmac.new(SIGNING_SECRET, b"redacted thinking", hashlib.sha256).digest() * 3
).decode()
# `rate-limited`, `http-429`, `http-503`: the Retry-After they carry, in seconds.
RETRY_AFTER = 7
# `rate-limited-once`: the Retry-After of the one 429 before the answer.
RATE_LIMITED_ONCE_RETRY_AFTER = 1
# `oversized`: above gRPC's default 4 MiB limit on a message a caller accepts.
OVERSIZED_BYTES = 5 * 1024 * 1024
# Padding that puts a quoted key across the points where a gateway that cuts
# before it redacts would cut (200 and 500 characters).
LEAK_TEXT_PADDING = 173
LEAK_STRING_PADDING = 470
# Cache writes the fake reports when the request has a system prompt.
CACHE_WRITE_TOKENS = 3
CREDIT_BALANCE_MESSAGE = (
    "Your credit balance is too low to access the Anthropic API. "
    "Please go to Plans & Billing to upgrade or purchase credits."
)
PROMPT_TOO_LONG_MESSAGE = "prompt is too long: 250000 tokens > 200000 maximum"
INVALID_SIGNATURE = "Invalid signature in thinking block"
# What the fake's GET /v1/models lists, two to a page.
MODELS: list[JSON] = [
    {
        "id": "claude-sonnet-4-5-20250929",
        "display_name": "Claude Sonnet 4.5",
        "max_input_tokens": 200000,
    },
    {"id": "claude-opus-4-6", "display_name": "Claude Opus 4.6", "max_input_tokens": 1000000},
    {"id": "claude-haiku-4-5-20251001", "display_name": "Claude Haiku 4.5"},
    {"id": "claude-3-haiku-20240307", "display_name": "Claude Haiku 3"},
]
_MODELS_PER_PAGE = 2

_STATUS_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_STOP_REASONS = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}
_FAULT_STOP_REASONS = {"refusal": "refusal", "pause-turn": "pause_turn", "max-tokens": "max_tokens"}
# The Messages API's top-level fields; anything else is a 400.
_FIELDS = frozenset(
    {
        "model",
        "max_tokens",
        "messages",
        "system",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "tools",
        "tool_choice",
        "thinking",
        "metadata",
        "service_tier",
    }
)
_BLOCK_TYPES = {
    "user": frozenset({"text", "image", "tool_result", "document"}),
    "assistant": frozenset({"text", "tool_use", "thinking", "redacted_thinking"}),
}


def sign(thinking: str) -> str:
    """The fake's signature for a thinking block's text."""
    digest = hmac.new(SIGNING_SECRET, thinking.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def error_body(kind: str, message: str, request_id: str = "req_fake") -> JSON:
    """Anthropic's error envelope."""
    return {"type": "error", "error": {"type": kind, "message": message}, "request_id": request_id}


def error(
    status: int, message: str, kind: str = "", headers: dict[str, str] | None = None
) -> Response:
    """An error response as Anthropic sends it: envelope, request id in body and header."""
    kind = kind or _STATUS_TYPES.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    return json_response(
        status,
        error_body(kind, message, "req_fake_error"),
        {"request-id": "req_fake_error", **(headers or {})},
    )


async def handle(fake: FakeUpstream, request: Request, path: str) -> Result:
    """Answer one request under /anthropic; `path` is what follows it."""
    key = fake.keys.get("anthropic", "")
    sent = request.headers.get("x-api-key", "")
    if request.headers.get("authorization"):
        return error(
            401, "the Authorization header is not how Anthropic takes its key; use x-api-key"
        )
    if not sent or sent != key:
        return error(401, "invalid x-api-key")
    if not request.headers.get("anthropic-version"):
        return error(400, "anthropic-version: header is required")
    route, _, query = path.partition("?")
    if request.method == "GET" and route == "/v1/models":
        return _models(query)
    if request.method != "POST" or route != "/v1/messages":
        return error(404, f"Not found: {request.method} {path}", "not_found_error")
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return error(400, "the request body is not valid JSON")
    if not isinstance(body, dict):
        return error(400, "the request body must be a JSON object")
    fake.record_request("anthropic", "anthropic", request, body)
    problem = validate(body)
    if problem is not None:
        return error(400, problem)
    model = str(body.get("model", ""))
    fault = fault_of(model)
    early = _early_fault(fake, model, fault, sent)
    if early is not None:
        return early
    answer = _answer(body, fault)
    number = fake.next_number()
    message_id = f"msg_fake{number:012d}"
    headers = {"request-id": f"req_fake{number:012d}"}
    if fault == "leak-answer":
        # A 200 answer whose id, model and stop reason all quote the key.
        message_id = answer.model = sent
    if fake.stream_chunks is not None and not answer.tool_calls:
        answer.content = ["tok "] * fake.stream_chunks
        answer.reasoning = []
    blocks = _blocks(answer, fault, message_id)
    stop_reason = sent if fault == "leak-answer" else _stop_reason(answer, fault)
    usage = _usage(answer, body)
    if not body.get("stream"):
        return _unary(message_id, answer.model, blocks, stop_reason, usage, fault, headers, sent)
    return _stream(fake, message_id, answer.model, blocks, stop_reason, usage, fault, headers, sent)


# -- validation ---------------------------------------------------------------------


def validate(body: JSON) -> str | None:
    """The 400 the real API gives for a request a gateway must never send, else None."""
    extra = sorted(set(body) - _FIELDS)
    if extra:
        return f"{extra[0]}: Extra inputs are not permitted"
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        return "max_tokens: Field required (a positive integer)"
    if not isinstance(body.get("model"), str) or not body["model"]:
        return "model: Field required"
    temperature = body.get("temperature")
    if temperature is not None and not 0 <= temperature <= 1:
        return "temperature: Input should be less than or equal to 1"
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            return "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024"
        if max_tokens <= budget:
            return "`max_tokens` must be greater than `thinking.budget_tokens`"
        if (body.get("tool_choice") or {}).get("type") in ("any", "tool"):
            return "Thinking may not be enabled when tool_choice forces tool use."
    for i, tool in enumerate(body.get("tools") or []):
        if not isinstance(tool, dict) or not tool.get("name") or "input_schema" not in tool:
            return f"tools.{i}: a tool needs a name and an input_schema"
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        return "system: Input should be a valid string or list"
    return _validate_messages(body.get("messages"))


def _validate_messages(messages: object) -> str | None:
    if not isinstance(messages, list) or not messages:
        return "messages: Field required (at least one message)"
    previous_role = ""
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in _BLOCK_TYPES:
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        role = message["role"]
        if role == previous_role:
            return "messages: roles must alternate between 'user' and 'assistant'"
        previous_role = role
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not isinstance(blocks, list):
            return f"messages.{i}.content: Input should be a valid string or list"
        problem = _validate_blocks(i, role, blocks, open_calls)
        if problem is not None:
            return problem
        if role == "assistant":
            open_calls = {b["id"] for b in blocks if b.get("type") == "tool_use"}
        else:
            open_calls = set()
    return None


def _validate_blocks(i: int, role: str, blocks: list[Any], open_calls: set[str]) -> str | None:
    answered: set[str] = set()
    for j, block in enumerate(blocks):
        where = f"messages.{i}.content.{j}"
        if not isinstance(block, dict) or block.get("type") not in _BLOCK_TYPES[role]:
            kind = block.get("type") if isinstance(block, dict) else block
            return f"{where}: a {role} message cannot hold a {kind!r} block"
        kind = block["type"]
        if kind == "text" and not block.get("text"):
            return f"{where}: text content blocks must be non-empty"
        if kind == "thinking" and block.get("signature") != sign(str(block.get("thinking"))):
            return f"{where}: {INVALID_SIGNATURE}"
        if kind == "redacted_thinking":
            if not block.get("data"):
                return f"{where}.data: Field required"
            if block["data"] != REDACTED_DATA:
                return f"{where}: Invalid data in redacted_thinking block"
        if kind == "tool_use" and (
            not block.get("id") or not block.get("name") or not isinstance(block.get("input"), dict)
        ):
            return f"{where}: a tool_use block needs an id, a name and an input object"
        if kind == "image" and _image_problem(block.get("source")):
            return f"{where}.source: {_image_problem(block.get('source'))}"
        if kind == "tool_result":
            call_id = block.get("tool_use_id")
            if call_id not in open_calls:
                return (
                    f"{where}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{call_id}. Each `tool_result` block must have a corresponding "
                    "`tool_use` block in the previous message."
                )
            answered.add(call_id)
    missing = open_calls - answered
    if missing:
        return (
            f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
            f"immediately after: {', '.join(sorted(missing))}"
        )
    return None


def _image_problem(source: object) -> str:
    if not isinstance(source, dict):
        return "Field required"
    if source.get("type") == "base64":
        if not source.get("media_type") or not source.get("data"):
            return "a base64 image needs media_type and data"
        return ""
    if source.get("type") == "url":
        return "" if str(source.get("url", "")).startswith("https://") else "the url must be https"
    return "Input tag does not match 'base64' or 'url'"


# -- the answer ---------------------------------------------------------------------


def to_chat(body: JSON) -> JSON:
    """The request in the OpenAI shape answers.plan_answer reads."""
    messages: list[JSON] = []
    for message in body.get("messages") or []:
        content = message.get("content")
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        texts = [b.get("text", "") for b in blocks if b.get("type") == "text"]
        messages.extend(
            {"role": "tool", "content": _result_text(block.get("content"))}
            for block in blocks
            if block.get("type") == "tool_result"
        )
        if texts or message.get("role") == "assistant":
            messages.append({"role": message.get("role"), "content": " ".join(texts)})
    tools = [
        {
            "type": "function",
            "function": {"name": t.get("name"), "parameters": t.get("input_schema")},
        }
        for t in body.get("tools") or []
    ]
    choice = (body.get("tool_choice") or {}).get("type")
    return {
        "model": body.get("model"),
        "messages": messages,
        "tools": tools,
        "tool_choice": "none" if choice == "none" else "auto",
        "max_tokens": body.get("max_tokens"),
    }


def _result_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict))
    return ""


def _answer(body: JSON, fault: str) -> Answer:
    thinking = body.get("thinking")
    thinks = isinstance(thinking, dict) and thinking.get("type") == "enabled"
    answer = plan_answer(to_chat(body), thinks=thinks)
    if fault in ("noargs-tool", "kimi-input") and not answer.tool_calls:
        # Called without tools (the fault suite): the model calls one anyway,
        # after a sentence, so a unary answer still has content.
        arguments = "{}" if fault == "noargs-tool" else '{"query": "hi"}'
        answer.content = ["Let me ", "look that up."]
        answer.tool_calls.append(ToolCallPlan("call_fake_0001", "lookup", arguments))
        answer.finish_reason = "tool_calls"
    if fault == "noargs-tool":
        for call in answer.tool_calls:
            call.arguments = "{}"
    if fault == "oversized":
        answer.content = ["x" * OVERSIZED_BYTES]
        answer.reasoning = []
    return answer


def _blocks(answer: Answer, fault: str, message_id: str) -> list[JSON]:
    """The answer's content blocks, in wire order, as a unary body holds them."""
    blocks: list[JSON] = []
    if answer.reasoning:
        text = "".join(answer.reasoning)
        blocks.append({"type": "thinking", "thinking": text, "signature": sign(text)})
    if fault == "empty-thinking":
        blocks.append({"type": "thinking", "thinking": "", "signature": sign("")})
    if fault == "redacted-thinking":
        blocks.append({"type": "redacted_thinking", "data": REDACTED_DATA})
    if answer.content:
        blocks.append({"type": "text", "text": "".join(answer.content)})
    for n, call in enumerate(answer.tool_calls):
        call_id = f"toolu_fake_{message_id[-6:]}_{n}"
        blocks.append(
            {
                "type": "tool_use",
                "id": call_id,
                "name": call.name,
                "input": orjson.loads(call.arguments),
            }
        )
    return blocks


def _stop_reason(answer: Answer, fault: str) -> str:
    return _FAULT_STOP_REASONS.get(fault) or _STOP_REASONS.get(answer.finish_reason, "end_turn")


def _usage(answer: Answer, body: JSON) -> JSON:
    cache_write = CACHE_WRITE_TOKENS if body.get("system") else 0
    return {
        "input_tokens": answer.prompt_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": answer.cached_tokens,
        "output_tokens": answer.completion_tokens,
    }


# -- rendering ------------------------------------------------------------------------


def _unary(
    message_id: str,
    model: str,
    blocks: list[JSON],
    stop_reason: str,
    usage: JSON,
    fault: str,
    headers: dict[str, str],
    sent: str,
) -> Result:
    if fault == "malformed-body":
        return Response(
            200, b"<html>upstream proxy error</html>", {"Content-Type": "application/json"}
        )
    in_band = {
        "overloaded-first": ("overloaded_error", "Overloaded"),
        "overloaded-midstream": ("overloaded_error", "Overloaded"),
        "api-error-event": ("api_error", "Internal server error"),
        "midstream-error": ("api_error", "Internal server error"),
        "leak-midstream": ("api_error", f"lost {sent}"),
    }
    if fault in in_band:
        # The unary form of a stream's error event: a 200 whose body is an error.
        return json_response(200, error_body(*in_band[fault]), headers)
    payload: JSON = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": blocks,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": usage,
    }
    if fault == "no-usage":
        del payload["usage"]
    if fault == "padded":
        return Response(
            200, orjson.dumps(payload) + b"   \n", {"Content-Type": "application/json", **headers}
        )
    return json_response(200, payload, headers)


def _stream(
    fake: FakeUpstream,
    message_id: str,
    model: str,
    blocks: list[JSON],
    stop_reason: str,
    usage: JSON,
    fault: str,
    headers: dict[str, str],
    sent: str,
) -> Result:
    message: JSON = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
    }
    delta: JSON = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
    }
    if fault != "no-usage":
        # Input counts at the start; message_delta repeats them with the final output count.
        message["usage"] = {**usage, "output_tokens": 1}
        delta["usage"] = usage
    if fault == "no-finish":
        delta["delta"]["stop_reason"] = None
    preamble = [
        _event("message_start", {"type": "message_start", "message": message}, fault),
        _event("ping", {"type": "ping"}, fault),
    ]
    deltas = [
        frame for index, block in enumerate(blocks) for frame in _block_frames(index, block, fault)
    ]
    if fault == "unknown-event":
        deltas.insert(
            1,
            _event(
                "content_block_future", {"type": "content_block_future", "novel": [1, 2]}, fault
            ),
        )
    closing = [
        _event("message_delta", delta, fault),
        _event("message_stop", {"type": "message_stop"}, fault),
    ]
    frames = [*preamble, *deltas, *closing]
    stall = abort_after = reset_after = False
    raw_tail = b""
    overloaded = _event("error", error_body("overloaded_error", "Overloaded"), fault)
    if fault == "truncated":
        frames, abort_after = [*preamble, *deltas[:3]], True
    elif fault == "reset-midstream":
        frames, reset_after = [*preamble, *deltas[:3]], True
    elif fault == "bad-chunking":
        frames, raw_tail = [*preamble, *deltas[:3]], b"zz\r\nnot a chunk\r\n"
    elif fault == "no-done":
        frames = [*preamble, *deltas, closing[0]]
    elif fault == "malformed-event":
        frames = [
            *preamble,
            *deltas[:3],
            b'event: content_block_delta\ndata: {"type": "content_bl\n\n',
        ]
    elif fault == "overloaded-first":
        frames = [*preamble, overloaded]
    elif fault == "overloaded-midstream":
        frames = [*preamble, *_first_text_deltas(deltas, 2), overloaded]
    elif fault in ("midstream-error", "api-error-event"):
        frames = [
            *preamble,
            *deltas[:3],
            _event("error", error_body("api_error", "Internal server error"), fault),
        ]
    elif fault == "leak-midstream":
        frames = [
            *preamble,
            *deltas[:3],
            _event("error", error_body("api_error", f"lost {sent}", sent), fault),
        ]
    elif fault == "stall":
        frames, stall = [*preamble, *deltas[:2]], True
    delay = fake.slow_chunk_delay if fault == "slow" else fake.chunk_delay
    if fault == "slow":
        frames = [*frames[:-2], *_slow_text(len(blocks), 200), *frames[-2:]]
    return StreamResponse(
        paced(frames, delay, stall),
        headers={"Content-Type": "text/event-stream; charset=utf-8", **headers},
        abort_after=abort_after,
        reset_after=reset_after,
        raw_tail=raw_tail,
    )


def _block_frames(index: int, block: JSON, fault: str) -> list[bytes]:
    kind = block["type"]
    frames: list[bytes] = []

    def start(content_block: JSON) -> None:
        frames.append(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": content_block},
                fault,
            )
        )

    def delta(payload: JSON) -> None:
        frames.append(
            _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": payload},
                fault,
            )
        )

    if kind == "thinking":
        start({"type": "thinking", "thinking": "", "signature": ""})
        for piece in _pieces(block["thinking"]):
            delta({"type": "thinking_delta", "thinking": piece})
        delta({"type": "signature_delta", "signature": block["signature"]})
    elif kind == "redacted_thinking":
        start(block)
    elif kind == "text":
        start({"type": "text", "text": ""})
        for piece in _pieces(block["text"]):
            delta({"type": "text_delta", "text": piece})
    elif kind == "tool_use":
        if fault == "kimi-input":
            # Anthropic-compatible upstreams (Kimi) send the whole input here, and no deltas.
            start(block)
        else:
            start({"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}})
            for piece in awkward_cuts(
                orjson.dumps(block["input"]).decode() if block["input"] else ""
            ):
                delta({"type": "input_json_delta", "partial_json": piece})
    frames.append(
        _event("content_block_stop", {"type": "content_block_stop", "index": index}, fault)
    )
    return frames


def awkward_cuts(text: str) -> list[str]:
    """`text` as Anthropic streams tool input: a first "", then pieces cut
    anywhere (inside keys, strings and escapes); a tool without arguments
    sends only the ""."""
    return ["", *(text[i : i + 3] for i in range(0, len(text), 3))]


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]] if text else []


def _first_text_deltas(frames: list[bytes], count: int) -> list[bytes]:
    """The frames up to and including the `count`-th text delta."""
    seen = 0
    for n, frame in enumerate(frames):
        if b'"text_delta"' in frame:
            seen += 1
            if seen == count:
                return frames[: n + 1]
    return frames


def _slow_text(index: int, count: int) -> list[bytes]:
    """`count` one-word text deltas in a block of their own (the `slow` fault)."""
    return [
        _event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            },
            "",
        ),
        *(
            _event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": index,
                    "delta": {"type": "text_delta", "text": f"{i} "},
                },
                "",
            )
            for i in range(count)
        ),
        _event("content_block_stop", {"type": "content_block_stop", "index": index}, ""),
    ]


def _event(name: str, payload: JSON, fault: str) -> bytes:
    """One named event; with `padded`, whitespace inside the data line, as the real API pads."""
    if fault == "padded":
        return f"event: {name}\n".encode() + b"data: " + orjson.dumps(payload) + b"          \n\n"
    return sse_event(name, payload)


# -- faults before any answer -------------------------------------------------------------


def _early_fault(fake: FakeUpstream, model: str, fault: str, sent: str) -> Result | None:
    """Faults that replace the whole response."""
    if fault == "echo-auth":
        return error(400, f"Invalid header x-api-key: {sent}")
    leak = _leak(fault, sent)
    if leak is not None:
        return leak
    seen = fake.count_request(model)
    if fault == "flaky" and seen <= 2:
        return error(529, "Overloaded")
    status = fake.flaky_fails(model, fault)
    if status is not None:
        return error(status, f"fake upstream returned HTTP {status}")
    if fault == "rate-limited-once" and seen == 1:
        return error(
            429,
            "Number of requests has exceeded your rate limit",
            headers={"retry-after": str(RATE_LIMITED_ONCE_RETRY_AFTER)},
        )
    transport = transport_fault(fault)
    if transport is not None:
        return transport
    if fault.startswith("http-"):
        status = int(fault.removeprefix("http-"))
        headers = {"retry-after": str(RETRY_AFTER)} if status in (429, 503) else {}
        return error(status, f"fake upstream returned HTTP {status}", headers=headers)
    if fault == "overloaded":
        return error(529, "Overloaded")
    if fault == "credit-balance":
        return error(400, CREDIT_BALANCE_MESSAGE)
    if fault == "prompt-too-long":
        return error(400, PROMPT_TOO_LONG_MESSAGE)
    if fault == "rate-limited":
        return error(
            429,
            "This request would exceed the rate limit for your organization of 50 requests per minute.",
            headers={"retry-after": str(RETRY_AFTER)},
        )
    return None


def _leak(fault: str, sent: str) -> Result | None:
    """Errors quoting the x-api-key the gateway sent, where proxies have been seen to."""
    if fault == "leak-tail":
        return error(401, f"invalid x-api-key ...{sent[len(sent) // 3 :]}")
    if fault == "leak-middle":
        return error(401, f"invalid x-api-key ...{sent[len(sent) // 5 : len(sent) * 4 // 5]}...")
    if fault == "leak-long-message":
        return error(400, "y" * LEAK_STRING_PADDING + f" {sent} was refused")
    if fault == "leak-text-body":
        page = "<html><body>502 Bad Gateway: ".ljust(LEAK_TEXT_PADDING, ".")
        return Response(
            502,
            f"{page}{sent} was not accepted</body></html>".encode(),
            {"Content-Type": "text/html"},
        )
    return None


def _models(query: str) -> Result:
    """GET /v1/models: pages of two, `has_more` and `last_id` as Anthropic pages them."""
    params = dict(part.partition("=")[::2] for part in query.split("&") if part)
    start = 0
    if params.get("after_id"):
        ids = [m["id"] for m in MODELS]
        if params["after_id"] not in ids:
            return error(400, f"after_id: unknown model {params['after_id']}")
        start = ids.index(params["after_id"]) + 1
    page = [
        {"type": "model", "created_at": "2025-09-29T00:00:00Z", **m}
        for m in MODELS[start : start + _MODELS_PER_PAGE]
    ]
    return json_response(
        200,
        {
            "data": page,
            "has_more": start + _MODELS_PER_PAGE < len(MODELS),
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
        },
    )
