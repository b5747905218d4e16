"""The fake's Gemini wire: generateContent, streamGenerateContent, the models list and faults.

Renders as the real API does (what the recorded captures show): `alt=sse`
chunks each a whole GenerateContentResponse with no terminator, usageMetadata
on every chunk (cumulative, and not monotonic in promptTokenCount), thought
parts when thinking, function calls whole and in one chunk with a
thoughtSignature on the first, `responseId` and `modelVersion`; one JSON array
when a stream is asked for without `alt=sse`; errors as
`{"error": {code, message, status, details}}`.

It refuses what the real API refuses and the gateway must never send: no
`x-goog-api-key` (403), the key in the URL (a 400 here: the gateway must
never put it there), unknown fields, and, for models named `gemini-3*`, a
model turn whose first function call lacks the thoughtSignature this fake
issued for it (signatures are an HMAC of the call, so any change shows).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import urllib.parse
from typing import TYPE_CHECKING, Any

import orjson

from llmgateway.testing.fake_upstream.answers import Answer, ToolCallPlan, plan_answer
from llmgateway.testing.fake_upstream.http import Response, StreamResponse
from llmgateway.testing.fake_upstream.shared import fault_of, json_response, paced, transport_fault

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from llmgateway.testing.fake_upstream.app import FakeUpstream
    from llmgateway.testing.fake_upstream.http import Request, Result

JSON = dict[str, Any]

# The fake's secret for thought signatures (made up; it signs nothing real).
SIGNATURE_SECRET = b"fake-gemini-thought-signature-secret"
# `retry-info` / `retry-in-message`: the delay Gemini asks for, in seconds.
RETRY_DELAY = 7
# `rate-limited-once`: the Retry-After of the one 429 before the answer.
RATE_LIMITED_ONCE_RETRY_AFTER = 1
# `oversized`: above gRPC's default 4 MiB message limit (as app.OVERSIZED_BYTES).
OVERSIZED_BYTES = 5 * 1024 * 1024
# Every streamed chunk but the last reports this many more prompt tokens than
# the last: real streams were seen to go down (2304 -> 2301) as well as up.
PROMPT_WOBBLE = 3
# The google.rpc status name for each HTTP status the fake answers with.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
MISSING_SIGNATURE = (
    "Function call is missing a thought_signature in functionCall parts. This is required "
    "for tools to work correctly."
)
CORRUPTED_SIGNATURE = "Corrupted thought signature."
UNREGISTERED_CALLER = (
    "Method doesn't allow unregistered callers (callers without established identity). "
    "Please use API Key or other form of API consumer identity to call this API."
)
_ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"
_RETRY_INFO = "type.googleapis.com/google.rpc.RetryInfo"
_TOP_LEVEL = frozenset(
    {
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "generationConfig",
        "safetySettings",
        "cachedContent",
    }
)
_GENERATION_CONFIG = frozenset(
    {
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "stopSequences",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "thinkingConfig",
        "candidateCount",
    }
)
_PART_KINDS = frozenset({"text", "inlineData", "functionCall", "functionResponse", "fileData"})
_MODELS_PAGES: list[list[JSON]] = [
    [
        {
            "name": "models/gemini-2.5-flash",
            "displayName": "Gemini 2.5 Flash",
            "inputTokenLimit": 1048576,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        },
        {
            "name": "models/gemini-2.5-pro",
            "displayName": "Gemini 2.5 Pro",
            "inputTokenLimit": 1048576,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        },
        {
            "name": "models/text-embedding-004",
            "displayName": "Text Embedding 004",
            "inputTokenLimit": 2048,
            "supportedGenerationMethods": ["embedContent"],
        },
    ],
    [
        {
            "name": "models/gemini-3-pro-preview",
            "displayName": "Gemini 3 Pro Preview",
            "inputTokenLimit": 1048576,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        },
    ],
]


async def handle(fake: FakeUpstream, request: Request, path: str) -> Result:
    """Answer one request under /gemini; `path` is what follows it."""
    route, _, query = path.partition("?")
    params = urllib.parse.parse_qs(query)
    if "key" in params:
        return error_response(400, "the fake refuses an API key in the URL: send x-goog-api-key")
    key = request.headers.get("x-goog-api-key")
    if not key:
        return error_response(403, UNREGISTERED_CALLER)
    if key != fake.keys["gemini"]:
        return error_response(
            400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"
        )
    if route == "/v1beta/models" and request.method == "GET":
        return _models_page(params)
    prefix = "/v1beta/models/"
    if request.method != "POST" or not route.startswith(prefix) or ":" not in route:
        return error_response(404, f"no route {request.method} {route}")
    model, _, method = urllib.parse.unquote(route.removeprefix(prefix)).rpartition(":")
    if method not in ("generateContent", "streamGenerateContent"):
        return error_response(404, f"unknown method {method}")
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return error_response(400, "Invalid JSON payload received.")
    if not isinstance(body, dict):
        return error_response(400, "Invalid JSON payload received: not an object.")
    fake.record_request("gemini", "gemini", request, body)
    rejection = validate(model, body)
    if rejection is not None:
        return rejection
    stream = method == "streamGenerateContent"
    return _answer(fake, model, body, stream, sse=params.get("alt") == ["sse"], sent=key)


def _models_page(params: dict[str, list[str]]) -> Response:
    page = 1 if params.get("pageToken") == ["page-2"] else 0
    document: JSON = {"models": _MODELS_PAGES[page]}
    if page == 0:
        document["nextPageToken"] = "page-2"
    return json_response(200, document)


# -- validation --------------------------------------------------------------------


def validate(model: str, body: JSON) -> Response | None:
    """The real API's 400s for what the gateway must never send."""
    unknown = set(body) - _TOP_LEVEL
    if unknown:
        return _unknown_field(min(unknown))
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return error_response(400, "* GenerateContentRequest.contents: contents is not specified")
    unknown = set(body.get("generationConfig") or {}) - _GENERATION_CONFIG
    if unknown:
        return _unknown_field(f"generation_config.{min(unknown)}")
    for i, content in enumerate(contents):
        problem = _content_problem(i, content)
        if problem is not None:
            return error_response(400, problem)
    for tool in body.get("tools") or []:
        for declaration in tool.get("functionDeclarations") or []:
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                return error_response(
                    400, "parameters and parameters_json_schema are mutually exclusive"
                )
    if model.startswith("gemini-3"):
        return _signature_problem(contents)
    return None


def _unknown_field(name: str) -> Response:
    return error_response(
        400, f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.'
    )


def _content_problem(i: int, content: object) -> str | None:
    if not isinstance(content, dict) or content.get("role") not in ("user", "model"):
        return f"* GenerateContentRequest.contents[{i}].role: must be user or model"
    parts = content.get("parts")
    if not isinstance(parts, list) or not parts:
        return f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty"
    for j, part in enumerate(parts):
        kinds = set(part) & _PART_KINDS if isinstance(part, dict) else set()
        if len(kinds) != 1:
            return f"* GenerateContentRequest.contents[{i}].parts[{j}]: one data field required"
        response = part.get("functionResponse")
        if response is not None and (
            not response.get("name") or not isinstance(response.get("response"), dict)
        ):
            return f"* GenerateContentRequest.contents[{i}].parts[{j}].function_response: invalid"
    return None


def _signature_problem(contents: list[JSON]) -> Response | None:
    """Gemini 3: the first function call of every model turn carries the
    signature issued for it, unchanged."""
    for content in contents:
        if content["role"] != "model":
            continue
        calls = [p for p in content["parts"] if "functionCall" in p]
        if not calls:
            continue
        first = calls[0]
        signature = first.get("thoughtSignature")
        if not signature:
            return error_response(400, MISSING_SIGNATURE)
        call = first["functionCall"]
        if signature != thought_signature(str(call.get("name")), call.get("args") or {}):
            return error_response(400, CORRUPTED_SIGNATURE)
    return None


def thought_signature(name: str, args: object) -> str:
    """The signature this fake issues for a call: an HMAC of its name and arguments."""
    message = name.encode() + b"\n" + orjson.dumps(args, option=orjson.OPT_SORT_KEYS)
    return base64.b64encode(hmac.new(SIGNATURE_SECRET, message, hashlib.sha256).digest()).decode()


# -- answers ---------------------------------------------------------------------------


def to_chat(model: str, body: JSON) -> JSON:
    """The request in the OpenAI shape answers.plan_answer reads."""
    messages: list[JSON] = []
    system = body.get("systemInstruction")
    if isinstance(system, dict):
        messages.append({"role": "system", "content": _texts(system.get("parts"))})
    for content in body["contents"]:
        responses = [p["functionResponse"] for p in content["parts"] if "functionResponse" in p]
        if responses:
            messages.extend(
                {"role": "tool", "content": orjson.dumps(r["response"]).decode()} for r in responses
            )
            continue
        role = "assistant" if content["role"] == "model" else "user"
        messages.append({"role": role, "content": _texts(content["parts"])})
    chat: JSON = {"model": model, "messages": messages}
    tools = [
        {
            "type": "function",
            "function": {
                "name": d.get("name"),
                "description": d.get("description", ""),
                "parameters": d.get("parametersJsonSchema") or d.get("parameters") or {},
            },
        }
        for tool in body.get("tools") or []
        for d in tool.get("functionDeclarations") or []
    ]
    if tools:
        chat["tools"] = tools
    mode = ((body.get("toolConfig") or {}).get("functionCallingConfig") or {}).get("mode")
    if mode == "NONE":
        chat["tool_choice"] = "none"
    config = body.get("generationConfig") or {}
    if "maxOutputTokens" in config:
        chat["max_tokens"] = config["maxOutputTokens"]
    if config.get("responseMimeType") == "application/json":
        chat["response_format"] = {"type": "json_object"}
    return chat


def _thinks(body: JSON) -> bool:
    thinking = (body.get("generationConfig") or {}).get("thinkingConfig") or {}
    return bool(thinking.get("includeThoughts")) and thinking.get("thinkingBudget") != 0


def _texts(parts: object) -> str:
    if not isinstance(parts, list):
        return ""
    return "".join(p["text"] for p in parts if isinstance(p, dict) and "text" in p)


def _answer(
    fake: FakeUpstream, model: str, body: JSON, stream: bool, *, sse: bool, sent: str
) -> Result:
    fault = fault_of(model)
    seen = fake.count_request(model)
    if fault == "flaky" and seen <= 2:
        return error_response(500, "An internal error has occurred.")
    flaky = fake.flaky_fails(model, fault)
    if flaky is not None:
        return error_response(flaky, f"fake upstream returned HTTP {flaky}")
    if fault == "rate-limited-once" and seen == 1:
        return error_response(
            429,
            "Resource has been exhausted (e.g. check quota).",
            headers={"Retry-After": str(RATE_LIMITED_ONCE_RETRY_AFTER)},
        )
    if fault == "echo-auth":
        return error_response(400, f"Invalid header x-goog-api-key: {sent}")
    early = transport_fault(fault) or _error_fault(fault, sent)
    if early is not None:
        return early
    answer = plan_answer(to_chat(model, body), thinks=_thinks(body))
    if fault == "parallel":
        _add_parallel_call(answer, body)
    if fault == "oversized":
        answer.content, answer.reasoning = ["x" * OVERSIZED_BYTES], []
    if fake.stream_chunks is not None and not answer.tool_calls:
        answer.content, answer.reasoning = ["tok "] * fake.stream_chunks, []
    response_id = sent if fault == "leak-answer" else f"fakegem{fake.next_number():010d}"
    chunks = _chunks(answer, model, response_id, fault)
    if not stream:
        return _unary(merge_chunks(chunks), fault, sent)
    if not sse:
        # What the real endpoint does without alt=sse: one JSON array.
        return json_response(200, chunks)
    return _stream(fake, chunks, fault, sent)


def _add_parallel_call(answer: Answer, body: JSON) -> None:
    """`parallel`: a call to every declared tool (two at most), in one turn."""
    if not answer.tool_calls:
        return
    declarations = [d for t in body.get("tools") or [] for d in t.get("functionDeclarations") or []]
    for declaration in declarations[1:2]:
        answer.tool_calls.append(ToolCallPlan("", str(declaration.get("name")), "{}"))
    if len(declarations) < 2:
        answer.tool_calls.append(ToolCallPlan("", answer.tool_calls[0].name, "{}"))


def _error_fault(fault: str, sent: str) -> Result | None:  # one per fault
    if fault.startswith("http-") and fault.removeprefix("http-").isdigit():
        status = int(fault.removeprefix("http-"))
        headers = {"Retry-After": str(RETRY_DELAY)} if status in (429, 503) else {}
        return error_response(status, f"fake upstream returned HTTP {status}", headers=headers)
    if fault == "retry-info":
        return error_response(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            retry_delay=f"{RETRY_DELAY}s",
        )
    if fault == "retry-in-message":
        return error_response(
            429, f"Resource exhausted. Please retry in {RETRY_DELAY}.0s.", retry_delay=None
        )
    if fault == "api-key-invalid":
        return error_response(
            400, "API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID"
        )
    if fault == "array-error":
        return json_response(200, [error_body(503, "The model is overloaded. Try again later.")])
    if fault == "leak-code":
        return json_response(400, {"error": {"code": 400, "message": "refused", "status": sent}})
    if fault == "leak-text-body":
        page = "<html><body>502 Bad Gateway: ".ljust(173, ".")
        return Response(
            502,
            f"{page}{sent} was not accepted</body></html>".encode(),
            {"Content-Type": "text/html"},
        )
    if fault == "leak-error-info":
        return error_response(400, "the request was refused", reason=sent)
    return None


def _chunks(answer: Answer, model: str, response_id: str, fault: str) -> list[JSON]:
    """The answer as the chunks of an alt=sse stream (merge_chunks makes the unary body)."""
    gemini_3 = model.startswith("gemini-3")
    chunks: list[list[JSON]] = []
    if fault in ("blocked-prompt", "safety", "malformed-function-call"):
        pass
    else:
        chunks.extend([{"text": piece, "thought": True}] for piece in answer.reasoning)
        chunks.extend([{"text": piece}] for piece in answer.content)
        if gemini_3 and answer.content and not answer.tool_calls:
            # Gemini 3 signs text parts too (the gateway may send it back or not).
            chunks[-1][0]["thoughtSignature"] = thought_signature("", answer.content)
        if answer.tool_calls:
            chunks.append(_call_parts(answer, fault))
    finish = {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS"}.get(
        answer.finish_reason, "STOP"
    )
    finish = {
        "safety": "SAFETY",
        "recitation": "RECITATION",
        "malformed-function-call": "MALFORMED_FUNCTION_CALL",
    }.get(fault, finish)
    prompt = answer.prompt_tokens
    out: list[JSON] = []
    candidates = 0
    thoughts = 0
    for parts in chunks:
        if parts[0].get("thought"):
            thoughts += 1
        else:
            candidates += 1 if "text" in parts[0] else len(parts)
        usage = _usage(prompt + PROMPT_WOBBLE, candidates, thoughts, answer.cached_tokens)
        if fault == "usage-nonmonotonic":
            usage = _usage(max(1, prompt // 5), candidates, thoughts, answer.cached_tokens)
        out.append(_response([{"content": {"parts": parts, "role": "model"}, "index": 0}], usage))
    final: JSON = {"index": 0, "finishReason": finish}
    if fault == "malformed-function-call":
        final["finishMessage"] = "Malformed function call: call:weather{location:"
    elif fault == "safety":
        final["safetyRatings"] = [
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
        ]
    else:
        final["content"] = {"parts": [{"text": ""}], "role": "model"}
        if answer.tool_calls:
            final["finishMessage"] = "Model generated function call(s)."
    usage = _usage(prompt, candidates, thoughts, answer.cached_tokens)
    if fault == "blocked-prompt":
        last: JSON = {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage}
        out = [{**last, "modelVersion": model, "responseId": response_id}]
    else:
        out.append(_response([final], usage))
    for chunk in out:
        chunk["modelVersion"] = response_id if fault == "leak-answer" else model
        chunk["responseId"] = response_id
    return out


def _call_parts(answer: Answer, fault: str) -> list[JSON]:
    parts = []
    for n, call in enumerate(answer.tool_calls):
        args = orjson.loads(call.arguments or "{}")
        function: JSON = {"name": call.name, "args": args}
        if fault == "own-ids":
            function["id"] = f"fk{n:06d}"
        part: JSON = {"functionCall": function}
        if n == 0:
            # As Gemini does: only the first call of a turn is signed.
            part["thoughtSignature"] = thought_signature(call.name, args)
        parts.append(part)
    return parts


def _usage(prompt: int, candidates: int, thoughts: int, cached: int) -> JSON:
    usage: JSON = {
        "promptTokenCount": prompt,
        "candidatesTokenCount": candidates,
        "totalTokenCount": prompt + candidates + thoughts,
    }
    if thoughts:
        usage["thoughtsTokenCount"] = thoughts
    if cached:
        usage["cachedContentTokenCount"] = cached
    return usage


def _response(candidates: list[JSON], usage: JSON) -> JSON:
    return {"candidates": candidates, "usageMetadata": usage}


def merge_chunks(chunks: list[JSON]) -> JSON:
    """The unary body: every chunk's parts in one candidate, the last usage and finish."""
    last = chunks[-1]
    if "candidates" not in last:
        return last  # a blocked prompt
    parts: list[JSON] = []
    for chunk in chunks:
        content = chunk["candidates"][0].get("content") or {}
        parts.extend(p for p in content.get("parts", []) if p != {"text": ""})
    candidate = {k: v for k, v in last["candidates"][0].items() if k != "content"}
    if parts:
        candidate["content"] = {"parts": _joined(parts), "role": "model"}
    return {**last, "candidates": [candidate]}


def _joined(parts: list[JSON]) -> list[JSON]:
    """Adjacent text parts of the same kind as one, as a unary answer has them."""
    out: list[JSON] = []
    for part in parts:
        previous = out[-1] if out else None
        if (
            previous is not None
            and "text" in part
            and "text" in previous
            and bool(part.get("thought")) == bool(previous.get("thought"))
            and "thoughtSignature" not in previous
        ):
            out[-1] = {**previous, **part, "text": previous["text"] + part["text"]}
        else:
            out.append(dict(part))
    return out


def _unary(payload: JSON, fault: str, sent: str) -> Result:
    if fault == "malformed-body":
        return Response(
            200, b"<html>upstream proxy error</html>", {"Content-Type": "application/json"}
        )
    if fault == "no-usage":
        payload.pop("usageMetadata", None)
    if fault == "leak-midstream":
        return json_response(200, error_body(500, f"lost {sent}", reason=sent))
    return json_response(200, payload)


def _stream(fake: FakeUpstream, chunks: list[JSON], fault: str, sent: str) -> Result:
    frames = [sse_frame(c) for c in chunks]
    head, body_frames, last = frames[:1], frames[1:-1], frames[-1:]
    abort_after = reset_after = stall = False
    raw_tail = b""
    if fault == "truncated":
        frames, abort_after = [*head, *body_frames[:2]], True
    elif fault == "reset-midstream":
        frames, reset_after = [*head, *body_frames[:2]], True
    elif fault in ("no-done", "no-finish"):
        frames = [*head, *body_frames]
    elif fault == "malformed-event":
        frames = [*head, *body_frames[:2], b'data: {"candidates": [\r\n\r\n']
    elif fault == "midstream-error":
        error = error_body(503, "The model is overloaded. Please try again later.")
        frames = [*head, *body_frames[:2], sse_frame(error)]
    elif fault == "leak-midstream":
        error = {"error": {"code": 500, "message": f"lost {sent}", "status": sent}}
        frames = [*head, *body_frames[:2], sse_frame(error)]
    elif fault == "stall":
        frames, stall = [*head, *body_frames[:1]], True
    elif fault == "no-usage":
        frames = [sse_frame({k: v for k, v in c.items() if k != "usageMetadata"}) for c in chunks]
    elif fault == "bad-chunking":
        frames, raw_tail = [*head, *body_frames[:2]], b"zz\r\nnot a chunk\r\n"
    elif fault == "slow":
        filler = [
            sse_frame(_response([_text_candidate(f"{i} ")], chunks[0]["usageMetadata"]))
            for i in range(200)
        ]
        frames = [*head, *body_frames, *filler, *last]
    elif fault == "drip":
        return StreamResponse(_dripped(frames), headers=_SSE_HEADERS)
    delay = fake.slow_chunk_delay if fault == "slow" else fake.chunk_delay
    return StreamResponse(
        paced(frames, delay, stall),
        headers=_SSE_HEADERS,
        abort_after=abort_after,
        reset_after=reset_after,
        raw_tail=raw_tail,
    )


_SSE_HEADERS = {"Content-Type": "text/event-stream"}


def _text_candidate(text: str) -> JSON:
    return {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}


async def _dripped(frames: list[bytes]) -> AsyncIterator[bytes]:
    """`drip`: the stream in DRIP_PAUSES + 1 bursts DRIP_PAUSE apart (see app.py)."""
    # Imported here: app.py imports this module.
    from llmgateway.testing.fake_upstream.app import DRIP_PAUSE, DRIP_PAUSES

    bursts = DRIP_PAUSES + 1
    for n in range(bursts):
        if n:
            await asyncio.sleep(DRIP_PAUSE)
        # Near-equal groups: exactly `bursts` of them, however few the frames.
        yield b"".join(frames[n * len(frames) // bursts : (n + 1) * len(frames) // bursts])


def sse_frame(payload: object) -> bytes:
    """One `data:` event, ended with CRLF CRLF as Gemini's are."""
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


# -- errors -----------------------------------------------------------------------------


def error_body(
    status: int, message: str, *, reason: str | None = None, retry_delay: str | None = None
) -> JSON:
    """Gemini's error envelope, with ErrorInfo and RetryInfo details when given."""
    details: list[JSON] = []
    if reason is not None:
        details.append(
            {
                "@type": _ERROR_INFO,
                "reason": reason,
                "domain": "googleapis.com",
                "metadata": {"service": "generativelanguage.googleapis.com"},
            }
        )
    if retry_delay is not None:
        details.append({"@type": _RETRY_INFO, "retryDelay": retry_delay})
    error: JSON = {
        "code": status,
        "message": message,
        "status": STATUS_NAMES.get(status, "UNKNOWN"),
    }
    if details:
        error["details"] = details
    return {"error": error}


def error_response(
    status: int,
    message: str,
    *,
    reason: str | None = None,
    retry_delay: str | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An error response in Gemini's envelope."""
    return json_response(
        status, error_body(status, message, reason=reason, retry_delay=retry_delay), headers
    )
