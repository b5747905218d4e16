"""Routes, auth, provider quirks and faults of the fake upstream."""

from __future__ import annotations

import asyncio
import itertools
import random
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import orjson

from llmgateway.testing.fake_upstream import (
    anthropic_wire,
    gemini_wire,
    groq_wire,
    ollama_wire,
    openai_wire,
    openrouter_wire,
    zai_wire,
)
from llmgateway.testing.fake_upstream.answers import Answer, plan_answer
from llmgateway.testing.fake_upstream.http import (
    CloseConnection,
    ConnectionStats,
    Hang,
    HTTPServer,
    Request,
    Response,
    Result,
    StreamResponse,
)
from llmgateway.testing.fake_upstream.plan import StreamPlan, sse

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from types import TracebackType

# The fake's own keys: made up, accepted only by this fake.
DEFAULT_OPENROUTER_KEY = "sk-or-v1-fake-test-key"
DEFAULT_ZAI_KEY = "fake-zai-id.fake-zai-secret"
OPENROUTER_PREFIX = "/openrouter/api/v1"
ZAI_GENERAL_PREFIX = "/zai/api/paas/v4"
ZAI_CODING_PREFIX = "/zai/api/coding/paas/v4"
FAULT_PREFIX = "fault-"
# The direct providers: each under its own prefix, answered by its own wire module.
OPENAI_PREFIX = "/openai/v1"
ANTHROPIC_PREFIX = "/anthropic"
GEMINI_PREFIX = "/gemini"
GROQ_PREFIX = "/groq/openai/v1"
OLLAMA_PREFIX = "/ollama"
# Made up, shaped like the real keys so the gateway's key-shape redaction is exercised.
DEFAULT_OPENAI_KEY = "sk-proj-fakeopenai0000000000000000"
DEFAULT_ANTHROPIC_KEY = "sk-ant-api03-fakeanthropic000000000000"
DEFAULT_GEMINI_KEY = "AIzaFakeGeminiKey0000000000000000000000"
DEFAULT_GROQ_KEY = "gsk_fakegroq00000000000000000000"
# The wire that answers under each prefix, with the environment variables that point a gateway there.
_WIRES = (
    (OPENAI_PREFIX, openai_wire, "OPENAI"),
    (ANTHROPIC_PREFIX, anthropic_wire, "ANTHROPIC"),
    (GEMINI_PREFIX, gemini_wire, "GEMINI"),
    (GROQ_PREFIX, groq_wire, "GROQ"),
    (OLLAMA_PREFIX, ollama_wire, "OLLAMA"),
)
# `drip`: the stream arrives in DRIP_PAUSES + 1 bursts, DRIP_PAUSE seconds apart;
# a gateway whose stream idle timeout exceeds DRIP_PAUSE must deliver it whole.
DRIP_PAUSE = 0.3
DRIP_PAUSES = 3
# `oversized`: an answer this big, in one unary body or one stream event; above
# gRPC's default 4 MiB limit on a message a caller's channel accepts.
OVERSIZED_BYTES = 5 * 1024 * 1024
# `rate-limited-once`: the Retry-After, in seconds, of the one 429 before the answer.
RATE_LIMITED_ONCE_RETRY_AFTER = 1
# `flaky-<status>-<percent>`: that share of a model's requests fail with that HTTP
# status (no Retry-After), in a pseudo-random pattern seeded by the fault's name,
# so every model with the same fault (and every run) sees the same sequence.
_FLAKY_SHARE = re.compile(r"flaky-([1-5][0-9][0-9])-([0-9]{1,3})")

# Z.AI business codes and the HTTP status each usually arrives with.
ZAI_CODES = {
    "1000": (401, "Authentication failed"),
    "1113": (429, "Insufficient balance or no resource package. Please recharge."),
    "1210": (400, "Invalid API parameter, please check the documentation."),
    "1211": (400, "Model does not exist"),
    "1214": (400, "temperature参数非法。请检查文档。"),
    "1231": (400, "Duplicate request_id"),
    "1234": (500, "网络错误，错误id：2026022610，请联系客服。"),
    "1261": (400, "Prompt too long"),
    "1301": (400, "Unsafe or sensitive content detected"),
    "1302": (429, "Rate limit reached for requests"),
    "1305": (429, "该模型当前访问量过大，请您稍后再试"),
    "1308": (429, "已达到 5 小时的使用上限。您的限额将在 2026-08-25 07:41:44 重置。"),
    "1313": (429, "Fair use policy violated"),
    "500": (500, "Internal error"),
}
# The business code Z.AI pairs with a bare HTTP status.
_ZAI_CODE_FOR_STATUS = {400: "1210", 401: "1000", 429: "1302", 500: "500"}
# OpenRouter's /models entries, with the fields its catalogue publishes
# capabilities in (`supported_parameters`, `architecture.input_modalities`)
# as openrouter.ai lists these models; GLM 4.7 takes no images and no JSON
# schema there, as the gateway's built-in table has it.
_TOOLS_AND_JSON = ["tools", "tool_choice", "response_format", "structured_outputs"]
_SAMPLING = ["max_tokens", "temperature", "top_p", "stop", "seed"]
_MODELS = [
    {
        "id": "openai/gpt-4o-mini",
        "name": "OpenAI: GPT-4o-mini",
        "context_length": 128000,
        "architecture": {
            "modality": "text+image->text",
            "input_modalities": ["text", "image", "file"],
            "output_modalities": ["text"],
        },
        "pricing": {
            "prompt": "0.00000015",
            "completion": "0.0000006",
            "input_cache_read": "0.000000075",
        },
        "supported_parameters": [*_SAMPLING, *_TOOLS_AND_JSON],
    },
    {
        "id": "anthropic/claude-sonnet-4.5",
        "name": "Anthropic: Claude Sonnet 4.5",
        "context_length": 1000000,
        "architecture": {
            "modality": "text+image->text",
            "input_modalities": ["text", "image", "file"],
            "output_modalities": ["text"],
        },
        "pricing": {"prompt": "0.000003", "completion": "0.000015"},
        "supported_parameters": [*_SAMPLING, *_TOOLS_AND_JSON, "reasoning"],
    },
    {
        "id": "z-ai/glm-4.7",
        "name": "Z.AI: GLM 4.7",
        "context_length": 202752,
        "architecture": {
            "modality": "text->text",
            "input_modalities": ["text"],
            "output_modalities": ["text"],
        },
        "pricing": {"prompt": "0.0000004", "completion": "0.0000015"},
        "supported_parameters": [
            *_SAMPLING,
            "tools",
            "tool_choice",
            "response_format",
            "reasoning",
        ],
    },
]


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the fake received, for tests to inspect."""

    provider: str  # "openrouter", "zai", "openai", "anthropic", "gemini", "groq", "ollama"
    endpoint: str  # "general" or "coding" for Z.AI; else the provider's id
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def environment_for(
    base_url: str,
    openrouter_key: str = DEFAULT_OPENROUTER_KEY,
    zai_key: str = DEFAULT_ZAI_KEY,
    keys: dict[str, str] | None = None,
) -> dict[str, str]:
    """Environment variables that point a gateway at a fake listening on `base_url`.
    `keys`: the direct providers' keys by id ("openai"...), defaults where absent.
    Ollama gets no key, as a local Ollama needs none."""
    direct = {**DIRECT_KEYS, **(keys or {})}
    environment = {
        "OPENROUTER_API_KEY": openrouter_key,
        "OPENROUTER_BASE_URL": base_url + OPENROUTER_PREFIX,
        "ZAI_API_KEY": zai_key,
        "ZAI_BASE_URL": base_url + ZAI_GENERAL_PREFIX,
        "ZAI_CODING_BASE_URL": base_url + ZAI_CODING_PREFIX,
    }
    for prefix, _, variable in _WIRES:
        environment[f"{variable}_BASE_URL"] = base_url + prefix
        key = direct.get(variable.lower())
        if key:
            environment[f"{variable}_API_KEY"] = key
    return environment


# The direct providers' default keys by provider id (Ollama: none).
DIRECT_KEYS = {
    "openai": DEFAULT_OPENAI_KEY,
    "anthropic": DEFAULT_ANTHROPIC_KEY,
    "gemini": DEFAULT_GEMINI_KEY,
    "groq": DEFAULT_GROQ_KEY,
}


class FakeUpstream:
    """All seven providers on one loopback port, under path prefixes."""

    def __init__(
        self,
        *,
        openrouter_key: str = DEFAULT_OPENROUTER_KEY,
        zai_key: str = DEFAULT_ZAI_KEY,
        keys: dict[str, str] | None = None,
        chunk_delay: float = 0.0,
        slow_chunk_delay: float = 0.02,
        stream_chunks: int | None = None,
    ) -> None:
        self.openrouter_key = openrouter_key
        self.zai_key = zai_key
        # The direct providers' keys by id; "ollama" only when a hosted Ollama's
        # Bearer key is to be required (a local Ollama takes none).
        self.keys = {**DIRECT_KEYS, **(keys or {})}
        # Pause between streamed chunks for every stream (0: as fast as possible).
        self.chunk_delay = chunk_delay
        self.slow_chunk_delay = slow_chunk_delay
        # When set, every streamed answer is exactly this many content chunks (benchmarks).
        self.stream_chunks = stream_chunks
        self.requests: list[RecordedRequest] = []
        self.record = True
        self._http = HTTPServer(self.handle)
        # Requests seen per model, for faults that fail the first few.
        self._seen: dict[str, int] = {}
        # Per model, the pattern a `flaky-<status>-<percent>` fault follows.
        self._flaky: dict[str, random.Random] = {}
        self._ids = itertools.count(1)
        # OpenRouter generation id -> its /generation document, and how often
        # each was looked up (the first look-up 404s, like OpenRouter's lag).
        self._generations: dict[str, dict[str, Any]] = {}
        self.generation_lookups: dict[str, int] = {}
        self._html_generations: set[str] = set()
        self.port = 0

    @property
    def stats(self) -> ConnectionStats:
        """Connection statistics (open connections, abandoned streams)."""
        return self._http.stats

    @property
    def base_url(self) -> str:
        """http://127.0.0.1:PORT"""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openrouter_base_url(self) -> str:
        """Value for OPENROUTER_BASE_URL."""
        return self.base_url + OPENROUTER_PREFIX

    @property
    def zai_base_url(self) -> str:
        """Value for ZAI_BASE_URL."""
        return self.base_url + ZAI_GENERAL_PREFIX

    @property
    def zai_coding_base_url(self) -> str:
        """Value for ZAI_CODING_BASE_URL."""
        return self.base_url + ZAI_CODING_PREFIX

    def environment(self) -> dict[str, str]:
        """Environment variables that point a gateway at this fake."""
        return environment_for(self.base_url, self.openrouter_key, self.zai_key, self.keys)

    # -- for the wire modules -------------------------------------------------

    def record_request(
        self, provider: str, endpoint: str, request: Request, body: dict[str, Any]
    ) -> None:
        """Keep a request for tests to inspect (unless recording is off)."""
        if self.record:
            self.requests.append(
                RecordedRequest(provider, endpoint, request.path, request.headers, body)
            )

    def count_request(self, model: str) -> int:
        """How many requests `model` has had, this one included."""
        self._seen[model] = self._seen.get(model, 0) + 1
        return self._seen[model]

    def flaky_fails(self, model: str, fault: str) -> int | None:
        """For `flaky-<status>-<percent>`: the status this request fails with, or None."""
        share = _FLAKY_SHARE.fullmatch(fault)
        if share is None:
            return None
        pattern = self._flaky.setdefault(model, random.Random(fault))  # noqa: S311  # a test pattern
        return int(share[1]) if pattern.random() * 100 < int(share[2]) else None

    def next_number(self) -> int:
        """A fresh number for response ids."""
        return next(self._ids)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on host:port (0: any free port)."""
        self.port = await self._http.start(host, port)

    async def close(self) -> None:
        """Stop and drop every connection."""
        await self._http.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def handle(self, request: Request) -> Result:
        """Answer one HTTP request."""
        for prefix, wire, _ in _WIRES:
            if request.path.startswith(prefix + "/"):
                result: Result = await wire.handle(self, request, request.path[len(prefix) :])
                return result
        if request.path == f"{OPENROUTER_PREFIX}/models" and request.method == "GET":
            return _json(200, {"data": _MODELS})
        if (
            request.path.startswith(f"{OPENROUTER_PREFIX}/generation?id=")
            and request.method == "GET"
        ):
            return self._generation(request)
        routes = {
            f"{OPENROUTER_PREFIX}/chat/completions": ("openrouter", "openrouter"),
            f"{ZAI_GENERAL_PREFIX}/chat/completions": ("zai", "general"),
            f"{ZAI_CODING_PREFIX}/chat/completions": ("zai", "coding"),
        }
        if request.method != "POST" or request.path not in routes:
            return _json(404, {"error": {"code": 404, "message": f"no route {request.path}"}})
        provider, endpoint = routes[request.path]
        key = self.openrouter_key if provider == "openrouter" else self.zai_key
        if request.headers.get("authorization") != f"Bearer {key}":
            return _error(provider, 401, "1000", "Invalid API key")
        try:
            body = orjson.loads(request.body)
        except orjson.JSONDecodeError:
            return _error(provider, 400, "1210", "Request body is not valid JSON")
        if self.record:
            self.requests.append(
                RecordedRequest(provider, endpoint, request.path, request.headers, body)
            )
        if provider == "zai":
            rejection = _zai_quirks(body)
            if rejection is not None:
                return rejection
        model = str(body.get("model", ""))
        fault = model.rsplit("/", 1)[-1]
        fault = fault[len(FAULT_PREFIX) :] if fault.startswith(FAULT_PREFIX) else ""
        # Some upstreams (or proxies in front of them) quote what they were sent,
        # anywhere at all; the gateway must redact it wherever it appears.
        sent = request.headers.get("authorization", "")
        if fault == "echo-auth":
            return _error(provider, 400, "1210", f"Invalid header Authorization: {sent}")
        leak = _leak_fault(provider, fault, sent)
        if leak is not None:
            return leak
        return await self._answer(provider, body, fault, sent)

    async def _answer(
        self, provider: str, body: dict[str, Any], fault: str, sent: str = ""
    ) -> Result:
        model = str(body.get("model", ""))
        self._seen[model] = self._seen.get(model, 0) + 1
        if fault == "flaky" and self._seen[model] <= 2:
            # The first two requests for this model fail as an overloaded provider would.
            return _error(provider, 502, "1234", "upstream briefly unavailable")
        share = _FLAKY_SHARE.fullmatch(fault)
        if share is not None:
            pattern = self._flaky.setdefault(model, random.Random(fault))  # noqa: S311  # a test pattern
            if pattern.random() * 100 < int(share[2]):
                status = int(share[1])
                code = _ZAI_CODE_FOR_STATUS.get(status, str(status))
                return _error(provider, status, code, f"fake upstream returned HTTP {status}")
        if fault == "rate-limited-once" and self._seen[model] == 1:
            # A short Retry-After the gateway can wait out itself, then the answer.
            return _error(
                provider,
                429,
                "1302",
                "Rate limit reached for requests",
                {"Retry-After": str(RATE_LIMITED_ONCE_RETRY_AFTER)},
            )
        early = _early_fault(provider, fault)
        if early is not None:
            return early
        answer = plan_answer(body, thinks=_thinks(provider, body))
        if fault == "fallback" and body.get("models"):
            answer.model = str(body["models"][0])
        finishes = {
            "sensitive": "sensitive",
            "network-error": "network_error",
            "context-window": "model_context_window_exceeded",
            "content-filter": "content_filter",
        }
        if fault in finishes:
            answer.finish_reason = finishes[fault]
        if fault == "oversized":
            answer.content = ["x" * OVERSIZED_BYTES]
            answer.reasoning = []
        number = next(self._ids)
        wire = openrouter_wire if provider == "openrouter" else zai_wire
        upstream_id = (
            f"gen-{number:010d}" if provider == "openrouter" else f"2026112610{number:08d}"
        )
        if fault == "leak-answer":
            # A 200 answer whose id, model, serving provider and finish reason
            # all quote the Authorization header.
            upstream_id = sent
            answer.model = sent
            answer.finish_reason = sent
        headers = {"X-Generation-Id": upstream_id} if provider == "openrouter" else {}
        if provider == "openrouter":
            answer.reports_cost = fault not in ("no-cost", "generation-html")
            self._generations[upstream_id] = openrouter_wire.generation(answer, upstream_id)
            if fault == "generation-html":
                # Its /generation record comes back as a proxy's HTML page.
                self._html_generations.add(upstream_id)
        if not body.get("stream"):
            payload = wire.unary_body(answer, upstream_id)
            if fault == "leak-answer" and provider == "openrouter":
                payload["provider"] = sent
            if fault == "leak-midstream":
                # The unary form: an error in the choice of a 200 answer.
                payload["choices"][0]["finish_reason"] = "error"
                payload["choices"][0]["error"] = _leaking_error_object(sent)
            return self._unary(provider, payload, fault, headers)
        if self.stream_chunks is not None and not answer.tool_calls:
            answer.content = ["tok "] * self.stream_chunks
            answer.reasoning = []
        plan = wire.stream_plan(answer, upstream_id)
        if fault == "leak-answer" and provider == "openrouter":
            plan = _with_served_by(plan, openrouter_wire.upstream_provider(answer.model), sent)
        if fault == "leak-midstream":
            plan.closing = [_leaking_error(provider, sent)]
        return self._stream(provider, plan, answer, fault, headers)

    def _generation(self, request: Request) -> Result:
        if request.headers.get("authorization") != f"Bearer {self.openrouter_key}":
            return _error("openrouter", 401, "1000", "Invalid API key")
        generation_id = request.path.split("?id=", 1)[1]
        seen = self.generation_lookups.get(generation_id, 0) + 1
        self.generation_lookups[generation_id] = seen
        document = self._generations.get(generation_id)
        if document is None or seen == 1:
            return _error("openrouter", 404, "404", f"Generation {generation_id} not found")
        if generation_id in self._html_generations:
            return Response(
                200, b"<html><body>Please sign in</body></html>", {"Content-Type": "text/html"}
            )
        return _json(200, document)

    def _unary(
        self, provider: str, payload: dict[str, Any], fault: str, headers: dict[str, str]
    ) -> Result:
        if fault == "malformed-body":
            return Response(
                200,
                b"<html>upstream proxy error</html>",
                {"Content-Type": "application/json", **headers},
            )
        if fault == "finish-error":
            payload["choices"][0]["finish_reason"] = "error"
            payload["choices"][0]["error"] = {
                "code": 502,
                "message": "Provider returned error",
                "metadata": {"error_type": "provider_unavailable"},
            }
        if fault == "no-usage":
            payload.pop("usage", None)
        if fault == "bad-types":
            payload["choices"][0]["message"]["tool_calls"] = 5
        return _json(200, payload, headers)

    def _stream(
        self, provider: str, plan: StreamPlan, answer: Answer, fault: str, headers: dict[str, str]
    ) -> Result:
        frames = plan.frames()
        abort_after = False
        raw_tail = b""
        stall = False
        keepalive = b""
        reset_after = False
        if fault == "truncated":
            frames, abort_after = [*plan.preamble, *plan.deltas[:3]], True
        elif fault == "reset-midstream":
            frames, reset_after = [*plan.preamble, *plan.deltas[:3]], True
        elif fault == "drip":
            return StreamResponse(
                _dripped(frames, DRIP_PAUSES, DRIP_PAUSE),
                headers={"Content-Type": "text/event-stream; charset=utf-8", **headers},
            )
        elif fault == "no-done":
            frames = [*plan.preamble, *plan.deltas, *plan.closing]
        elif fault == "no-finish":
            frames = [
                *plan.preamble,
                *plan.deltas,
                *plan.closing_without_finish,
                b"data: [DONE]\n\n",
            ]
        elif fault == "malformed-event":
            frames = [*plan.preamble, *plan.deltas[:3], b'data: {"id": "x", "choices": [\n\n']
        elif fault in ("midstream-error", "finish-error"):
            frames = [
                *plan.preamble,
                *plan.deltas[:3],
                _midstream_error(provider, answer),
                b"data: [DONE]\n\n",
            ]
        elif fault == "stall":
            frames, stall = [*plan.preamble, *plan.deltas[:2]], True
        elif fault == "no-usage":
            frames = [f for f in frames if b'"usage"' not in f]
        elif fault == "done-no-blank":
            frames = [*frames[:-1], b"data: [DONE]\n"]
        elif fault == "keepalive-forever":
            frames, stall, keepalive = [*plan.preamble], True, openrouter_wire.PROCESSING
        elif fault == "bad-chunking":
            # A chunk-size line that is not hex: broken HTTP framing mid-body.
            frames, raw_tail = [*plan.preamble, *plan.deltas[:3]], b"zz\r\nnot a chunk\r\n"
        elif fault == "linger":
            frames = [*frames, *[b""] * 600]  # 30 s of silence after [DONE] at 0.05 s a step
        delay = self.slow_chunk_delay if fault == "slow" else self.chunk_delay
        if fault in ("keepalive-forever", "linger"):
            delay = 0.05
        if fault == "slow":
            frames = [*frames[:-2], *_slow_content(provider, 200), *frames[-2:]]
        return StreamResponse(
            _paced(frames, delay, stall, keepalive),
            headers={"Content-Type": "text/event-stream; charset=utf-8", **headers},
            abort_after=abort_after,
            reset_after=reset_after,
            raw_tail=raw_tail,
        )


async def _paced(
    frames: list[bytes], delay: float, stall: bool, keepalive: bytes = b""
) -> AsyncIterator[bytes]:
    for frame in frames:
        yield frame
        if delay:
            await asyncio.sleep(delay)
        else:
            await asyncio.sleep(0)
    while stall:
        # Send only `keepalive` (possibly nothing), handing control back so
        # the server notices a hang-up.
        await asyncio.sleep(0.05)
        yield keepalive


async def _dripped(frames: list[bytes], pauses: int, pause: float) -> AsyncIterator[bytes]:
    """`frames` in `pauses + 1` bursts with `pause` seconds of silence between them."""
    per_burst = -(-len(frames) // (pauses + 1))
    for start in range(0, len(frames), per_burst):
        if start:
            await asyncio.sleep(pause)
        yield b"".join(frames[start : start + per_burst])


def _slow_content(provider: str, count: int) -> list[bytes]:
    if provider == "openrouter":
        return [
            sse(
                {
                    "id": "gen-slow",
                    "model": "slow",
                    "provider": "Slow",
                    "choices": [{"index": 0, "delta": {"content": f"{i} "}, "finish_reason": None}],
                }
            )
            for i in range(count)
        ]
    return [
        sse(
            {
                "id": "slow",
                "model": "slow",
                "choices": [{"index": 0, "delta": {"content": f"{i} "}}],
            }
        )
        for i in range(count)
    ]


# `provider-returned-error`: OpenRouter's words, and those of the provider behind it.
PROVIDER_RETURNED_ERROR = "Provider returned error"
PROVIDER_BEHIND = "ExampleCloud"
PROVIDER_RAW_REASON = (
    "x/fault-provider-returned-error is temporarily rate-limited upstream. Please retry shortly."
)
# `leak-text-body`, `leak-string-error`: padding that puts the quoted key across
# the point where a gateway that cuts before it redacts would cut (200 and 500),
# so such a gateway would pass on the first 20 or so characters of the key.
LEAK_TEXT_PADDING = 173
LEAK_STRING_PADDING = 470


def _leak_fault(provider: str, fault: str, sent: str) -> Result | None:
    """Errors quoting the Authorization header (`sent`) in every place an upstream
    or a proxy has been seen to, or could: code, metadata, raw bodies."""
    if fault == "leak-code":
        return _json(400, {"error": {"code": sent, "message": "the request was refused"}})
    if fault == "leak-error-type":
        return _json(
            400,
            {
                "error": {
                    "code": 400,
                    "message": "the request was refused",
                    "metadata": {"error_type": sent},
                    "error_type": sent,
                }
            },
        )
    if fault == "leak-raw":
        # OpenRouter's "Provider returned error", its reason in metadata.raw.
        return _json(
            429,
            openrouter_wire.error_body(
                429,
                "Provider returned error",
                metadata={"provider_name": sent, "raw": f"upstream refused {sent}"},
            ),
        )
    if fault == "leak-escaped-raw":
        # metadata.raw as JSON text in a string, the key's dashes \u-escaped:
        # the escaped key matches no plain search for it.
        quoted = orjson.dumps({"error": {"message": f"upstream refused {sent}"}}).decode()
        return _json(
            429,
            openrouter_wire.error_body(
                429, "Provider returned error", metadata={"raw": quoted.replace("-", "\\u002d")}
            ),
        )
    key = sent.removeprefix("Bearer ")
    if fault == "leak-tail":
        # Only the key's end, as a log line cut at its start would show it.
        return _error(provider, 401, "1000", f"invalid key ...{key[len(key) // 3 :]}")
    if fault == "leak-middle":
        return _error(
            provider, 401, "1000", f"invalid key ...{key[len(key) // 5 : len(key) * 4 // 5]}..."
        )
    if fault == "leak-zai-secret":
        # Z.AI's `<id>.<secret>`: only the secret half, quoted on its own.
        return _error(provider, 401, "1000", f"invalid secret {key.rpartition('.')[2][-16:]}")
    if fault == "leak-text-body":
        page = "<html><body>502 Bad Gateway: ".ljust(LEAK_TEXT_PADDING, ".")
        return Response(
            502,
            f"{page}{sent} was not accepted</body></html>".encode(),
            {"Content-Type": "text/html"},
        )
    if fault == "leak-bare-string":
        return _json_value(400, f"invalid credentials: {sent}")
    if fault == "leak-string-error":
        return _json(400, {"error": "x" * LEAK_STRING_PADDING + f" {sent} was refused"})
    if fault == "leak-long-message":
        message = "y" * LEAK_STRING_PADDING + f" {sent} was refused"
        return _error(provider, 400, "1210", message)
    return None


def _leaking_error(provider: str, sent: str) -> bytes:
    """A mid-stream error event quoting `sent` in its code, message and metadata."""
    error = _leaking_error_object(sent)
    if provider == "openrouter":
        return sse({"id": "gen-err", "error": error, "choices": []})
    return b"event: error\n" + sse({"error": error})


def _leaking_error_object(sent: str) -> dict[str, Any]:
    return {"code": sent, "message": f"lost {sent}", "metadata": {"error_type": sent}}


def _with_served_by(plan: StreamPlan, served_by: str, replacement: str) -> StreamPlan:
    """`plan` with OpenRouter's `provider` field replaced in every frame."""
    old, new = orjson.dumps(served_by), orjson.dumps(replacement)

    def swap(frames: list[bytes]) -> list[bytes]:
        return [frame.replace(b'"provider":' + old, b'"provider":' + new) for frame in frames]

    return StreamPlan(
        preamble=plan.preamble,
        deltas=swap(plan.deltas),
        closing=swap(plan.closing),
        closing_without_finish=swap(plan.closing_without_finish),
    )


def _midstream_error(provider: str, answer: Answer) -> bytes:
    if provider == "openrouter":
        # As OpenRouter's streaming docs show it: status already 200, so the
        # error arrives as a chunk with finish_reason "error".
        return sse(
            {
                "id": "gen-err",
                "object": "chat.completion.chunk",
                "model": answer.model,
                "provider": "OpenAI",
                "error": {
                    "code": 502,
                    "message": "Provider disconnected",
                    "metadata": {"error_type": "provider_unavailable"},
                },
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
            }
        )
    return b"event: error\n" + sse(zai_wire.error_body("1234", "Network error, error id: 42"))


def _early_fault(provider: str, fault: str) -> Result | None:
    """Faults that replace the whole response."""
    if fault == "hang":
        return Hang()
    if fault == "redirect":
        return Response(301, b"", {"Location": "https://api.example.test/v1/chat/completions"})
    if fault == "reset":
        return CloseConnection(reset=True)
    if fault == "close-before-headers":
        return CloseConnection(reset=False)
    if fault.startswith("http-"):
        status = int(fault.removeprefix("http-"))
        headers = {"Retry-After": "7"} if status in (429, 503) else {}
        return _error(
            provider,
            status,
            _ZAI_CODE_FOR_STATUS.get(status, str(status)),
            f"fake upstream returned HTTP {status}",
            headers,
        )
    if fault.startswith("zai-"):
        code = fault.removeprefix("zai-")
        status, message = ZAI_CODES.get(code, (400, "Unknown error"))
        return _json(status, zai_wire.error_body(code, message))
    if provider == "openrouter":
        return _openrouter_fault(fault)
    return None


def _openrouter_fault(fault: str) -> Result | None:
    if fault == "moderation":
        return _json(
            403,
            openrouter_wire.error_body(
                403,
                "Input was flagged by moderation",
                metadata={
                    "reasons": ["harassment"],
                    "flagged_input": "...",
                    "provider_name": "OpenAI",
                    "model_slug": "openai/gpt-4o",
                },
            ),
        )
    if fault == "context-length":
        return _json(
            400,
            openrouter_wire.error_body(
                400,
                "This endpoint's maximum context length is 8192 tokens",
                metadata={"error_type": "context_length_exceeded", "provider_code": "context"},
            ),
        )
    if fault == "no-endpoints":
        return _json(
            404,
            openrouter_wire.error_body(
                404,
                "No endpoints found for the model",
                availability={"code": "no_endpoints", "retryable": False},
            ),
        )
    if fault == "error-in-200":
        return _json(
            200,
            {
                "error": {
                    "code": 429,
                    "message": "Rate limit exceeded: free-models-per-day",
                    "metadata": {"headers": {"X-RateLimit-Limit": "50"}},
                },
                "user_id": "user_fake",
            },
        )
    if fault == "credits":
        return _json(402, openrouter_wire.error_body(402, "Insufficient credits"))
    if fault == "provider-returned-error":
        # As recorded OpenRouter traffic shows it: a message that says nothing,
        # the serving provider's own words in metadata.raw, and its name.
        return _json(
            429,
            openrouter_wire.error_body(
                429,
                PROVIDER_RETURNED_ERROR,
                metadata={"provider_name": PROVIDER_BEHIND, "raw": PROVIDER_RAW_REASON},
            ),
        )
    if fault == "provider-returned-error-object":
        # metadata.raw may also be the provider's whole error object.
        return _json(
            502,
            openrouter_wire.error_body(
                502,
                PROVIDER_RETURNED_ERROR,
                metadata={
                    "provider_name": PROVIDER_BEHIND,
                    "raw": {"error": {"type": "server_error", "message": "backend crashed"}},
                },
            ),
        )
    return None


def _zai_quirks(body: dict[str, Any]) -> Result | None:
    """Z.AI rejects what its docs and issue threads say it rejects."""
    choice = body.get("tool_choice")
    if choice is not None and choice != "auto":
        return _json(400, zai_wire.error_body("1210", "Tool choice must be auto"))
    stop = body.get("stop")
    if isinstance(stop, list) and len(stop) > 1:
        return _json(400, zai_wire.error_body("1210", "Only one stop word is supported"))
    # The strict legacy interval: 0 and 1 themselves were rejected with 1214.
    for name in ("temperature", "top_p"):
        value = body.get(name)
        if value is not None and not 0 < value < 1:
            return _json(400, zai_wire.error_body("1214", f"{name}参数非法。请检查文档。"))
    for message in body.get("messages", []):
        if message.get("role") != "user" and isinstance(message.get("content"), list):
            return _json(400, zai_wire.error_body("1214", "content must be a string"))
    user_id = body.get("user_id")
    if user_id is not None and not 6 <= len(user_id) <= 128:
        return _json(400, zai_wire.error_body("1214", "user_id must be 6 to 128 characters"))
    return None


def _thinks(provider: str, body: dict[str, Any]) -> bool:
    if provider == "zai":
        thinking = body.get("thinking") or {}
        return thinking.get("type") != "disabled" and not str(body.get("model")).startswith(
            "glm-4-"
        )
    reasoning = body.get("reasoning")
    if not isinstance(reasoning, dict):
        return False
    return (
        not reasoning.get("exclude")
        and reasoning.get("enabled") is not False
        and reasoning.get("effort") != "none"
    )


def _json(status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    return _json_value(status, payload, headers)


def _json_value(status: int, value: object, headers: dict[str, str] | None = None) -> Response:
    return Response(
        status, orjson.dumps(value), {"Content-Type": "application/json", **(headers or {})}
    )


def _error(
    provider: str, status: int, zai_code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    if provider == "openrouter":
        return _json(status, openrouter_wire.error_body(status, message), headers)
    return _json(status, zai_wire.error_body(zai_code, message), headers)
