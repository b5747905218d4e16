"""The hostile-input run: python -m faults.hostile.

Starts a gateway against the fake upstream and sends it what an attacker, or
a badly built client, would: bytes protobuf cannot decode (random, invalid
UTF-8, nesting past protobuf's depth limit, truncated), requests over the
size limit, 2,048 field violations at once, and model names built to escape
a URL, a header or a log line (CR/LF, `..`, `?` and `#`, NUL, bidi
overrides, ANSI escapes), in the model and in `openrouter.models` and
`openrouter.provider.order`. Each case says the status it must get. The run
prints a faults-style table and summary: requests tried, outcomes by status,
tracebacks logged (must be 0), upstream requests made for invalid requests
(must be 0, counted by the fake upstream), and the largest error trailer.
tests/test_hostile_inputs.py runs the same cases.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2

from llmgateway.server.config import Settings
from llmgateway.server.process.server import start_gateway
from llmgateway.testing.fake_upstream import FakeUpstream
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from google.protobuf.message import Message

# Small, so the oversized cases stay cheap; gRPC's own ceiling sits 1 MiB above.
MAX_REQUEST_BYTES = 64 * 1024
CALL_TIMEOUT = 10.0
# gRPC C core clients refuse a random share of trailers past 8 KiB (their soft limit).
TRAILER_LIMIT = 8 * 1024
_COMPLETION = "/llmgateway.v1.CompletionService/"
_NEVER = ("UNKNOWN", "INTERNAL")


@dataclass(frozen=True)
class Case:
    """One hostile request and the status it must get."""

    id: str
    method: str  # the full method path
    payload: bytes
    expected: str  # a status code name
    # Valid requests go upstream; every other case must cost no upstream request.
    valid: bool = False
    streaming: bool = False


@dataclass(slots=True)
class Result:
    """What one case got."""

    case: Case
    status: str = ""
    reason: str = ""
    message: str = ""
    upstream_requests: int = 0
    trailer_bytes: int = 0

    @property
    def problems(self) -> list[str]:
        """What is wrong with the outcome (empty: as it must be)."""
        found = []
        if self.status != self.case.expected:
            found.append(f"got {self.status} {self.reason}, expected {self.case.expected}")
        if self.status in _NEVER:
            found.append(f"{self.status} is never a right answer to bad input")
        if not self.case.valid and self.upstream_requests:
            found.append(f"{self.upstream_requests} upstream request(s) for an invalid request")
        if self.trailer_bytes > TRAILER_LIMIT:
            found.append(f"{self.trailer_bytes} bytes of trailers: default clients refuse them")
        return found


@dataclass(slots=True)
class Summary:
    """The whole run."""

    results: list[Result]
    tracebacks: int
    log_lines: int
    seconds: float
    wrong: list[Result] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.wrong = [r for r in self.results if r.problems]

    @property
    def outcomes(self) -> Counter[str]:
        """Results by status code."""
        return Counter(r.status for r in self.results)

    @property
    def invalid_upstream_requests(self) -> int:
        """Upstream requests made for requests that were not valid."""
        return sum(r.upstream_requests for r in self.results if not r.case.valid)

    def line(self) -> str:
        """The summary line."""
        outcomes = ", ".join(f"{code} {n}" for code, n in sorted(self.outcomes.items()))
        largest = max((r.trailer_bytes for r in self.results), default=0)
        return (
            f"hostile requests tried {len(self.results)}; outcomes: {outcomes}; tracebacks "
            f"logged {self.tracebacks}; upstream requests for invalid requests "
            f"{self.invalid_upstream_requests}; UNKNOWN/INTERNAL "
            f"{sum(self.outcomes[c] for c in _NEVER)}; largest error trailer "
            f"{largest} bytes; log lines {self.log_lines}; wrong {len(self.wrong)}; "
            f"{self.seconds:.1f} s"
        )


# -- the cases --------------------------------------------------------------------


def _user(text: str) -> common.ChatMessage:
    return common.ChatMessage(role=common.ROLE_USER, content=text)


def _complete(model: str = "zai/glm-4.7", **fields: Any) -> pb.CompleteRequest:
    fields.setdefault("messages", [_user("hi")])
    return pb.CompleteRequest(model=model, **fields)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field, encoded by hand (to encode what protobuf would not)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def deeply_nested(depth: int) -> bytes:
    """A CompleteRequest whose tool schema (a Struct) nests `depth` levels deep."""
    struct = b""
    for _ in range(depth):
        value = _field(5, struct)  # Value.struct_value
        struct = _field(1, _field(1, b"a") + _field(2, value))  # Struct.fields["a"]
    tool = _field(1, b"f") + _field(3, struct)  # Tool.name, Tool.parameters
    return _field(1, b"zai/glm-4.7") + _field(2, _field(2, b"hi")) + _field(4, tool)


def random_garbage(message: type[Message], seed: int, size: int = 64) -> bytes:
    """Random bytes that `message` cannot decode (the first such draw from `seed`)."""
    draw = random.Random(seed)  # noqa: S311  # reproducible garbage, not secrets
    while True:
        data = draw.randbytes(size)
        try:
            message.FromString(data)
        except DecodeError:
            return data


def _with_bad_utf8(model: bytes) -> bytes:
    """A CompleteRequest whose model (field 1) holds bytes that are not UTF-8."""
    return _field(1, model) + _field(2, _field(2, b"hi"))


# Model names built to escape a URL path, a header or a log line.
HOSTILE_MODELS = {
    "model with CR/LF": "zai/glm\r\nX-Injected: 1",
    "model with a path traversal": "openrouter/../../x",
    "model with a query and fragment": "zai/glm?x=1#",
    "model with NUL": "zai/glm\x00-4.7",
    "model with a bidi override": "zai/glm-\u202e7.4",
    "model with ANSI escapes": "zai/\x1b[31mglm\x1b[0m",
    "model with a tab": "openrouter/openai/gpt-4o\tx",
}


def cases() -> list[Case]:
    """Every hostile case, with the status it must get."""
    found: list[Case] = []

    def add(
        label: str,
        method: str,
        payload: bytes | Message,
        expected: str = "INVALID_ARGUMENT",
        **flags: bool,
    ) -> None:
        data = payload if isinstance(payload, bytes) else payload.SerializeToString()
        streaming = method == "StreamComplete"
        path = method if method.startswith("/") else _COMPLETION + method
        found.append(Case(label, path, data, expected, streaming=streaming, **flags))

    # A valid call of each kind: the yardstick that upstream requests are counted.
    add("valid (control)", "Complete", _complete(), "OK", valid=True)
    add("valid (control)", "StreamComplete", _complete(), "OK", valid=True)
    # Bytes protobuf cannot decode.
    requests: dict[str, type[Message]] = {
        "Complete": pb.CompleteRequest,
        "StreamComplete": pb.StreamCompleteRequest,
        "ListModels": pb.ListModelsRequest,
        "GetUsage": pb.GetUsageRequest,
        "/grpc.health.v1.Health/Check": health_pb2.HealthCheckRequest,
        "/grpc.health.v1.Health/Watch": health_pb2.HealthCheckRequest,
    }
    for method, message in requests.items():
        add("random bytes", method, random_garbage(message, seed=11))
    for method in ("Complete", "StreamComplete"):
        add("invalid UTF-8 in the model", method, _with_bad_utf8(b"zai/glm-\xc3\x28"))
        add(
            "invalid UTF-8 in a message",
            method,
            _field(1, b"zai/glm-4.7") + _field(2, _field(2, b"\xff\xfe")),
        )
        add("nested past protobuf's depth limit", method, deeply_nested(200))
        add("truncated", method, _complete().SerializeToString()[:-3])
    add("invalid UTF-8 in the service name", "/grpc.health.v1.Health/Check", _field(1, b"\xc3\x28"))
    # Size.
    add(
        "over max_request_bytes",
        "Complete",
        _complete(messages=[_user("x" * (MAX_REQUEST_BYTES + 1))]),
    )
    add(
        "over gRPC's receive limit",
        "Complete",
        _complete(messages=[_user("x" * (MAX_REQUEST_BYTES + 1024 * 1024 + 1))]),
        "RESOURCE_EXHAUSTED",
    )
    bad_roles = [common.ChatMessage(role=99, content="x") for _ in range(2048)]  # type: ignore[arg-type]
    for method in ("Complete", "StreamComplete"):
        add("2,048 field violations", method, _complete(messages=bad_roles))
    # Names built to escape a URL, a header or a log line.
    for label, model in HOSTILE_MODELS.items():
        for method in ("Complete", "StreamComplete"):
            add(label, method, _complete(model))
    crlf = "openai/gpt-4o\r\nX-Injected: 1"
    add(
        "openrouter.models with CR/LF",
        "Complete",
        _complete(
            "openrouter/openai/gpt-4o-mini", openrouter=common.OpenRouterOptions(models=[crlf])
        ),
    )
    add(
        "openrouter.provider.order with CR/LF",
        "Complete",
        _complete(
            "openrouter/openai/gpt-4o-mini",
            openrouter=common.OpenRouterOptions(
                provider=common.ProviderPreferences(order=["OpenAI\r\nX-Injected: 1"])
            ),
        ),
    )
    # Reasoning details and refusals (passed back on assistant turns): bounded,
    # typed, assistant-only. Each must be refused before any upstream request.
    signed = common.ReasoningDetail(
        provider=common.PROVIDER_ANTHROPIC,
        kind=common.REASONING_DETAIL_KIND_THINKING,
        text="hm",
        signature="c2ln",
    )

    def turn(**fields: Any) -> pb.CompleteRequest:
        assistant = common.ChatMessage(role=common.ROLE_ASSISTANT, content="ok", **fields)
        return _complete(
            "anthropic/claude-sonnet-4-5", messages=[_user("hi"), assistant, _user("go")]
        )

    add("65 reasoning details on one turn", "Complete", turn(reasoning_details=[signed] * 65))
    add(
        "a signature over 1 MiB",
        "Complete",
        turn(
            reasoning_details=[
                common.ReasoningDetail(
                    provider=common.PROVIDER_ANTHROPIC,
                    kind=common.REASONING_DETAIL_KIND_THINKING,
                    signature="s" * (1024 * 1024 + 1),
                )
            ]
        ),
    )
    add(
        "an unknown reasoning-detail kind",
        "Complete",
        turn(
            reasoning_details=[
                common.ReasoningDetail(provider=common.PROVIDER_ANTHROPIC, kind=99)  # type: ignore[arg-type]
            ]
        ),
    )
    add(
        "reasoning details on a user message",
        "Complete",
        _complete(
            "anthropic/claude-sonnet-4-5",
            messages=[
                common.ChatMessage(role=common.ROLE_USER, content="hi", reasoning_details=[signed])
            ],
        ),
    )
    add(
        "OpenRouter raw_json that is not JSON",
        "Complete",
        _complete(
            "openrouter/openai/gpt-4o-mini",
            messages=[
                _user("hi"),
                common.ChatMessage(
                    role=common.ROLE_ASSISTANT,
                    content="ok",
                    reasoning_details=[
                        common.ReasoningDetail(
                            provider=common.PROVIDER_OPENROUTER,
                            kind=common.REASONING_DETAIL_KIND_OPENROUTER,
                            raw_json="{not json",
                        )
                    ],
                ),
                _user("go"),
            ],
        ),
    )
    add("a refusal over 1 MiB", "Complete", turn(refusal="n" * (1024 * 1024 + 1)))
    return found


# -- running them -----------------------------------------------------------------


class _LogCounter(logging.Handler):
    """Counts the log records of a run, and those carrying a traceback."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records = 0
        self.tracebacks = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.records += 1
        if record.exc_info or "Traceback (most recent call last)" in record.getMessage():
            self.tracebacks += 1


@contextlib.contextmanager
def _counting_logs() -> Iterator[_LogCounter]:
    counter = _LogCounter()
    root = logging.getLogger()
    root.addHandler(counter)
    try:
        yield counter
    finally:
        root.removeHandler(counter)


def hostile_settings(fake: FakeUpstream, state_dir: Path) -> Settings:
    """The run's gateway: the fake upstream, its own state database, small requests."""
    loaded = Settings.load({**fake.environment(), "LLMGATEWAY_DB": str(state_dir / "state.db")})
    return dataclasses.replace(loaded, max_request_bytes=MAX_REQUEST_BYTES)


async def run(
    selected: list[Case] | None = None, on_result: Callable[[Result], None] | None = None
) -> Summary:
    """Start a gateway and the fake upstream, send every case, judge what came back."""
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory() as scratch, _counting_logs() as logs:
        async with FakeUpstream() as fake:
            gateway = await start_gateway(
                hostile_settings(fake, Path(scratch)), address="127.0.0.1:0"
            )
            try:
                async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
                    for case in selected if selected is not None else cases():
                        before = len(fake.requests)
                        result = await _send(channel, case)
                        result.upstream_requests = len(fake.requests) - before
                        results.append(result)
                        if on_result is not None:
                            on_result(result)
            finally:
                await gateway.stop(grace=1)
    return Summary(results, logs.tracebacks, logs.records, time.monotonic() - started)


async def _send(channel: grpc.aio.Channel, case: Case) -> Result:
    """One case over a real channel, with the raw bytes as its request."""
    result = Result(case)
    try:
        if case.streaming or case.method.endswith("/Watch"):
            stream = channel.unary_stream(case.method, _raw, _raw)
            async for _ in stream(case.payload, timeout=CALL_TIMEOUT):
                if not case.streaming:
                    break  # a healthy Watch streams until cancelled
        else:
            await channel.unary_unary(case.method, _raw, _raw)(case.payload, timeout=CALL_TIMEOUT)
    except grpc.aio.AioRpcError as error:
        _note_error(result, error)
    else:
        result.status = "OK"
    return result


def _raw(data: bytes) -> bytes:
    """Requests and answers as bytes: the cases are encoded by hand."""
    return data


def _note_error(result: Result, error: grpc.aio.AioRpcError) -> None:
    result.status = error.code().name
    result.message = error.details() or ""
    trailers = tuple(error.trailing_metadata() or ())
    result.trailer_bytes = (
        sum(
            len(key) + len(value) + 32 for key, value in trailers if isinstance(value, (str, bytes))
        )
        + len((result.message).encode())
        + 32
    )
    raw = dict(trailers).get("grpc-status-details-bin")
    if isinstance(raw, bytes):
        for detail in status_pb2.Status.FromString(raw).details:
            info = error_details_pb2.ErrorInfo()
            if detail.Unpack(info):
                result.reason = info.reason


# -- the report ---------------------------------------------------------------------


def _cell(text: str, width: int) -> str:
    text = text.encode("unicode_escape").decode("ascii")  # never a raw control character
    return text[:width].ljust(width)


def row(result: Result) -> str:
    """One line of the table."""
    method = result.case.method.rsplit("/", 1)[-1]
    got = f"{result.status} {result.reason}".strip()
    line = (
        f"{_cell(result.case.id, 38)} {_cell(method, 14)} {_cell(got, 36)} "
        f"{_cell(result.case.expected, 18)} {result.upstream_requests:>8} "
        f"{result.trailer_bytes:>8}"
    )
    return f"{line}  WRONG: {'; '.join(result.problems)}" if result.problems else line


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", metavar="TEXT", help="run only cases whose label contains TEXT")
    args = parser.parse_args()
    # The gateway's own lines (its start-up, each refusal) go to the log counter, not the table.
    logging.getLogger().setLevel(logging.INFO)
    selected = [c for c in cases() if args.only is None or args.only in c.id]
    if not selected:
        parser.error(f"no case's label contains {args.only!r}")
    header = (
        f"{_cell('case', 38)} {_cell('method', 14)} {_cell('got', 36)} "
        f"{_cell('expected', 18)} {'upstream':>8} {'trailer':>8}"
    )
    print(header)
    summary = asyncio.run(run(selected, on_result=lambda r: print(row(r), flush=True)))
    print()
    print(summary.line())
    sys.exit(1 if summary.wrong or summary.tracebacks else 0)


if __name__ == "__main__":
    main()
