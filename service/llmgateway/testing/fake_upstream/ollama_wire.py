"""The fake's Ollama wire: /api/chat (NDJSON), /api/tags, /api/show, and its faults.

Rendered as Ollama's docs and recorded traffic show it: one JSON object per
line (`application/x-ndjson`, or `application/json` as hosted Ollama labels
it, for a model name holding `hosted`), the message's content, thinking and
tool calls (whole, `arguments` an object, with `id` and `index`), then a done
line with the counts and the timings in nanoseconds. Errors are
`{"error": "text"}`, with a status or, mid-stream, as a line of a 200.

Validation is stricter than Ollama, which ignores what it does not know: a
request the gateway should never send (no `options.num_ctx`, OpenAI-style
fields, string tool arguments, data URLs as images) is a 400 here, so a
gateway that breaks the wire fails its tests. No key is needed unless
`fake.keys["ollama"]` is set (hosted Ollama's Bearer key).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from typing import TYPE_CHECKING, Any

import orjson

from llmgateway.testing.fake_upstream.answers import Answer, plan_answer
from llmgateway.testing.fake_upstream.http import Response, StreamResponse
from llmgateway.testing.fake_upstream.shared import fault_of, json_response, paced, transport_fault

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from llmgateway.testing.fake_upstream.app import FakeUpstream
    from llmgateway.testing.fake_upstream.http import Request, Result

NDJSON = "application/x-ndjson"
# What the fake's server has pulled: name, architecture, context window (None:
# /api/show fails for it, so the catalogue must list it without one).
MODELS: tuple[tuple[str, str, int | None], ...] = (
    ("llama3.2:latest", "llama", 131072),
    ("gemma3:1b", "gemma3", 32768),
    ("qwen3:8b", "qwen3", 40960),
    ("broken-show:latest", "llama", None),
)
# /api/show's `capabilities` per model, as ollama.com/library tags them
# (gemma3:1b is the text-only size, no tools); a model not named here is
# shown without the list, as servers before it was added answer.
CAPABILITIES: dict[str, tuple[str, ...]] = {
    "llama3.2:latest": ("completion", "tools"),
    "gemma3:1b": ("completion",),
    "qwen3:8b": ("completion", "tools", "thinking"),
}
# `error-line`: Ollama's words for a failure mid-generation.
MIDSTREAM_ERROR = "an error was encountered while running the model"
CONTEXT_LENGTH_ERROR = "the input length exceeds the context length"
# The timings every done line carries (ns), as a local server reports them.
DURATIONS = {
    "total_duration": 246_778_792,
    "load_duration": 39_831_125,
    "prompt_eval_duration": 18_102_375,
    "eval_duration": 104_431_583,
}
# The top-level fields /api/chat takes; anything else (OpenAI's max_tokens,
# tool_choice, response_format...) Ollama would ignore silently: a 400 here.
_FIELDS = frozenset(
    {"model", "messages", "tools", "format", "options", "stream", "keep_alive", "think"}
)
_ROLES = frozenset({"system", "user", "assistant", "tool"})
_THINK_LEVELS = frozenset({"low", "medium", "high"})


async def handle(fake: FakeUpstream, request: Request, path: str) -> Result:
    """Answer one request under this wire's prefix; `path` is what follows it."""
    key = fake.keys.get("ollama")
    if key and request.headers.get("authorization") != f"Bearer {key}":
        return _error(401, "unauthorized")
    if request.method == "GET" and path == "/api/tags":
        return json_response(200, {"models": [_tag(name) for name, _, _ in MODELS]})
    if request.method == "POST" and path in ("/api/show", "/api/chat"):
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return _error(400, "invalid character in request body")
        if not isinstance(body, dict):
            return _error(400, "the request body is not a JSON object")
        if path == "/api/show":
            return _show(body)
        fake.record_request("ollama", "ollama", request, body)
        return await _chat(fake, request, body)
    # Go's mux answers an unknown path in plain text.
    return Response(404, b"404 page not found", {"Content-Type": "text/plain"})


def _tag(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": name,
        "modified_at": "2026-01-05T10:00:00Z",
        "size": 2_019_393_189,
        "digest": "a80c4f17acd55265feec403c7aef86be0c25983ab279d83f3bcd3abbcb5b8b72",
        "details": {"format": "gguf", "family": "llama", "parameter_size": "3.2B"},
    }


def _show(body: dict[str, Any]) -> Result:
    wanted = str(body.get("model", ""))
    for name, architecture, context in MODELS:
        if wanted in (name, name.removesuffix(":latest")):
            if context is None:
                return _error(500, "failed to read the model's metadata")
            shown: dict[str, Any] = {
                "model_info": {
                    "general.architecture": architecture,
                    f"{architecture}.context_length": context,
                    f"{architecture}.embedding_length": 3072,
                },
            }
            if name in CAPABILITIES:
                shown["capabilities"] = list(CAPABILITIES[name])
            return json_response(200, shown)
    return _error(404, f"model '{wanted}' not found")


async def _chat(fake: FakeUpstream, request: Request, body: dict[str, Any]) -> Result:
    model = str(body.get("model", ""))
    fault = fault_of(model)
    sent = request.headers.get("authorization", "")
    rejection = validate(body)
    if rejection is not None:
        return rejection
    early = _early_fault(fake, model, fault, sent)
    if early is not None:
        return early
    answer = plan_answer(to_chat(body), thinks=_thinks(body))
    if fault == "oversized":
        from llmgateway.testing.fake_upstream.app import OVERSIZED_BYTES

        answer.content, answer.reasoning = ["x" * OVERSIZED_BYTES], []
    if fault == "leak-answer":
        answer.model = sent
    lines = _lines(answer, fault)
    if body.get("stream") is False:
        return _unary(lines, fault, sent)
    if fake.stream_chunks is not None and not answer.tool_calls:
        answer.content, answer.reasoning = ["tok "] * fake.stream_chunks, []
        lines = _lines(answer, fault)
    return _stream(fake, model, lines, fault, sent)


def validate(body: dict[str, Any]) -> Response | None:
    """A 400 for what the gateway must never send (see the module docstring)."""
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        return _error(400, f"unknown field(s) {unknown}: Ollama would ignore them")
    options = body.get("options")
    if not isinstance(options, dict) or not _positive_int(options.get("num_ctx")):
        return _error(400, "options.num_ctx is required: without it Ollama truncates the prompt")
    if "stream" in body and not isinstance(body["stream"], bool):
        return _error(400, "stream must be a boolean")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return _error(400, "messages must be a non-empty list")
    for i, message in enumerate(messages):
        problem = _message_problem(message)
        if problem:
            return _error(400, f"messages[{i}]: {problem}")
    think = body.get("think")
    if think is not None and not isinstance(think, bool) and think not in _THINK_LEVELS:
        return _error(400, f"invalid think value {think!r}")
    fmt = body.get("format")
    if fmt is not None and fmt != "json" and not isinstance(fmt, dict):
        return _error(400, f"invalid format {fmt!r}")
    for tool in body.get("tools") or ():
        if not isinstance(tool, dict) or not isinstance(tool.get("function"), dict):
            return _error(400, "a tool is not {type, function}")
    return None


def _message_problem(message: object) -> str | None:
    if not isinstance(message, dict):
        return "not an object"
    if message.get("role") not in _ROLES:
        return f"invalid role {message.get('role')!r}"
    if not isinstance(message.get("content", ""), str):
        return "content must be a string (Ollama has no content parts)"
    for image in message.get("images") or ():
        # Ollama takes raw base64; a data URL or a link is "illegal base64 data".
        try:
            base64.b64decode(str(image), validate=True)
        except (binascii.Error, ValueError):
            return "illegal base64 data in images"
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("arguments"), dict):
            return "tool_calls[].function.arguments must be an object"
    if "tool_name" in message and not isinstance(message["tool_name"], str):
        return "tool_name must be a string"
    return None


def to_chat(body: dict[str, Any]) -> dict[str, Any]:
    """The request as the OpenAI-shaped body answers.plan_answer reads."""
    options = body.get("options") or {}
    chat: dict[str, Any] = {
        "model": body.get("model", ""),
        "messages": [
            {"role": m.get("role"), "content": m.get("content", "")} for m in body["messages"]
        ],
    }
    if body.get("tools"):
        chat["tools"] = body["tools"]
    if isinstance(options.get("num_predict"), int):
        chat["max_tokens"] = options["num_predict"]
    fmt = body.get("format")
    if fmt == "json":
        chat["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        chat["response_format"] = {"type": "json_schema"}
    return chat


def _thinks(body: dict[str, Any]) -> bool:
    think = body.get("think")
    return think is True or think in _THINK_LEVELS


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


# -- rendering ---------------------------------------------------------------


class _Lines:
    """One answer's NDJSON lines, in parts faults can cut."""

    def __init__(self, deltas: list[bytes], done: bytes, final: dict[str, Any]) -> None:
        self.deltas = deltas
        self.done = done
        # The unary form: the done line with the whole message.
        self.final = final

    def all(self) -> list[bytes]:
        return [*self.deltas, self.done]


def _line(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload) + b"\n"


def _lines(answer: Answer, fault: str) -> _Lines:
    created = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
    base = {"model": answer.model, "created_at": created}

    def line(message: dict[str, Any]) -> bytes:
        return _line({**base, "message": {"role": "assistant", **message}, "done": False})

    calls = [
        {
            **({} if fault == "no-call-ids" else {"id": call.id}),
            "function": {
                "index": i,
                "name": call.name,
                "arguments": json.loads(call.arguments or "{}"),
            },
        }
        for i, call in enumerate(answer.tool_calls)
    ]
    deltas = [line({"content": "", "thinking": r}) for r in answer.reasoning]
    deltas += [line({"content": c}) for c in answer.content]
    if calls:
        # Whole, after generation, in one line of their own.
        deltas.append(line({"content": "", "tool_calls": calls}))
    done: dict[str, Any] = {
        **base,
        "message": {"role": "assistant", "content": ""},
        "done_reason": "length" if answer.finish_reason == "length" else "stop",
        "done": True,
    }
    if fault == "load":
        done["done_reason"] = "load"
    if fault not in ("no-usage",):
        done["prompt_eval_count"] = answer.prompt_tokens
        done["eval_count"] = answer.completion_tokens
    if fault == "cache-hit":
        # The whole prompt came from Ollama's prompt cache: no prompt count at all.
        del done["prompt_eval_count"]
    if fault != "no-durations":
        done.update(DURATIONS)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(answer.content)}
    if answer.reasoning:
        message["thinking"] = "".join(answer.reasoning)
    if calls:
        message["tool_calls"] = calls
    return _Lines(deltas, _line(done), {**done, "message": message})


def _unary(lines: _Lines, fault: str, sent: str) -> Result:
    if fault == "malformed-body":
        return Response(
            200, b"<html>upstream proxy error</html>", {"Content-Type": "application/json"}
        )
    if fault in ("midstream-error", "error-line"):
        # A unary call that failed while running: a 500 with the error.
        return _error(500, MIDSTREAM_ERROR)
    if fault == "error-only":
        # As a proxy in front of hosted Ollama has been seen to: a 200 holding an error.
        return json_response(200, error_body(MIDSTREAM_ERROR))
    if fault == "no-done":
        return json_response(200, {**lines.final, "done": False})
    if fault == "leak-midstream":
        # The unary form: a 200 holding an error that quotes the Authorization header.
        return json_response(200, error_body(f"lost the session of {sent}"))
    return json_response(200, lines.final)


def _stream(fake: FakeUpstream, model: str, lines: _Lines, fault: str, sent: str) -> Result:
    content_type = "application/json; charset=utf-8" if "hosted" in model else NDJSON
    frames = lines.all()
    abort_after = reset_after = stall = False
    raw_tail = b""
    if fault == "truncated":
        frames, abort_after = lines.deltas[:3], True
    elif fault == "reset-midstream":
        frames, reset_after = lines.deltas[:3], True
    elif fault in ("no-done",):
        frames = lines.deltas
    elif fault == "malformed-event":
        frames = [*lines.deltas[:3], b'{"model": "x", "message": {"content": \n']
    elif fault == "malformed-body":
        frames = [b"<html>upstream proxy error</html>\n"]
    elif fault in ("error-line", "midstream-error"):
        frames = [*lines.deltas[:2], _line({"error": MIDSTREAM_ERROR})]
    elif fault == "error-only":
        frames = [_line({"error": MIDSTREAM_ERROR})]
    elif fault == "leak-midstream":
        frames = [*lines.deltas[:2], _line({"error": f"lost the session of {sent}"})]
    elif fault == "stall":
        frames, stall = lines.deltas[:2], True
    elif fault == "crlf":
        frames = [f.replace(b"\n", b"\r\n") for f in frames]
    elif fault == "no-final-newline":
        frames = [*frames[:-1], frames[-1].rstrip(b"\n")]
    elif fault == "bad-chunking":
        frames, raw_tail = lines.deltas[:3], b"zz\r\nnot a chunk\r\n"
    if fault == "drip":
        from llmgateway.testing.fake_upstream.app import DRIP_PAUSE, DRIP_PAUSES

        chunks = _dripped(frames, DRIP_PAUSES, DRIP_PAUSE)
    else:
        delay = fake.slow_chunk_delay if fault == "slow" else fake.chunk_delay
        if fault == "slow":
            slow = [
                _line({"model": model, "message": {"content": f"{i} "}, "done": False})
                for i in range(200)
            ]
            frames = [*frames[:-1], *slow, frames[-1]]
        chunks = paced(frames, delay, stall)
    return StreamResponse(
        chunks,
        headers={"Content-Type": content_type},
        abort_after=abort_after,
        reset_after=reset_after,
        raw_tail=raw_tail,
    )


async def _dripped(frames: list[bytes], pauses: int, pause: float) -> AsyncIterator[bytes]:
    per_burst = -(-len(frames) // (pauses + 1))
    for start in range(0, len(frames), per_burst):
        if start:
            await asyncio.sleep(pause)
        yield b"".join(frames[start : start + per_burst])


# -- faults and errors ---------------------------------------------------------


def _early_fault(fake: FakeUpstream, model: str, fault: str, sent: str) -> Result | None:
    """Faults that replace the whole response."""
    from llmgateway.testing.fake_upstream.app import RATE_LIMITED_ONCE_RETRY_AFTER

    seen = fake.count_request(model)
    transport = transport_fault(fault)
    if transport is not None:
        return transport
    if fault == "flaky" and seen <= 2:
        return _error(502, "upstream briefly unavailable")
    flaky = fake.flaky_fails(model, fault)
    if flaky is not None:
        return _error(flaky, f"fake upstream returned HTTP {flaky}")
    if fault == "rate-limited-once" and seen == 1:
        return _error(429, "too many requests", {"Retry-After": str(RATE_LIMITED_ONCE_RETRY_AFTER)})
    if fault.startswith("http-"):
        status = int(fault.removeprefix("http-"))
        headers = {"Retry-After": "7"} if status in (429, 503) else {}
        return _error(status, f"fake upstream returned HTTP {status}", headers)
    if fault == "echo-auth":
        return _error(400, f"invalid header Authorization: {sent}")
    if fault == "context-length":
        return _error(400, CONTEXT_LENGTH_ERROR)
    if fault == "no-tools":
        return _error(400, f"registry.ollama.ai/library/{model} does not support tools")
    if fault == "no-thinking":
        return _error(400, f'"{model}" does not support thinking')
    if fault == "model-not-found":
        return _error(404, f"model '{model}' not found")
    return None


def error_body(message: str) -> dict[str, Any]:
    """Ollama's error envelope: the message alone."""
    return {"error": message}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return json_response(status, error_body(message), headers)
