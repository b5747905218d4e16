"""Logging: text or JSON lines, each carrying the request id of the call it belongs to.

`Calls.open` puts a call's request id into `REQUEST_ID`; the handler installed
by `configure` stamps it on every record logged inside that call (the retry
and fallback notes, errors, the access line), so one id finds every line of a
call and matches the `x-request-id` the caller received.

`AccessLog` writes one line per finished call to the `llmgateway.access`
logger: who, what, how it ended, how long, how much. Never the prompt, the
answer or a key; only the caller key's id.

A line's structured fields travel as `extra={"fields": {...}}`: JSON lines
carry them as members, text lines as trailing key=value pairs.

Text lines cannot be forged from outside: whatever a caller sent (a model
name, a key) may hold CR/LF, ANSI escapes or bidi overrides, so every
control, format and line-separator character in a text line is written as an
escape (`\r`, `\x1b`, `\u202e`), values holding spaces, quotes or `=` are
quoted logfmt-style, and the continuation lines of a traceback are indented:
a text record starts at column 0, and only there. JSON lines need none of it
(JSON escapes every control character).

Calls refused before the caller was let in (no live key, or the database
could not tell during an outage) can arrive by the thousand per second from
anyone; `AccessLog` writes the first of them of each status in each
`REFUSAL_LOG_INTERVAL` in full and then only a count of the rest. Calls of
callers that were let in are always written in full.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
import time
import unicodedata
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmgateway.server.observability.observe import CallRecord

# The request id of the call the current task is serving; None outside calls.
REQUEST_ID: ContextVar[str | None] = ContextVar("llmgateway_request_id", default=None)

LOG_FORMATS = ("text", "json")
ACCESS_LOGGER = "llmgateway.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"
# At most one full line per this many seconds for each status a flood of
# callers who were not let in can produce; the others are counted.
REFUSAL_LOG_INTERVAL = 1.0
# Characters a text line writes escaped: C0 and C1 controls, DEL, format
# characters (bidi embeddings, overrides and isolates, zero-width ones), line
# and paragraph separators, lone surrogates.
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})
_SHORT_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_NEEDS_QUOTES = re.compile(r'[\s"=]')


def escape_text(text: str) -> str:
    """`text` with every control, format and separator character escaped, so
    it can neither end a log line nor restyle or reorder the terminal
    showing it. Printable text (the common case) comes back as it is."""
    if text.isprintable():
        return text
    return "".join(_escape_char(char) for char in text)


def _escape_char(char: str) -> str:
    if unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char  # printable, only not by isprintable's rule (e.g. U+00A0)
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


class RequestIdFilter(logging.Filter):
    """Stamps records with the current call's request id (an explicit
    `extra={"request_id": ...}` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "request_id" not in record.__dict__:
            record.request_id = REQUEST_ID.get()
        return True


def _fields(record: logging.LogRecord) -> dict[str, object] | None:
    fields = record.__dict__.get("fields")
    return fields if isinstance(fields, dict) else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message,
    pid, request_id inside a call, then the record's fields and any
    exception's traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        request_id = record.__dict__.get("request_id")
        if request_id is not None:
            out["request_id"] = request_id
        fields = _fields(record)
        if fields:
            for key, value in fields.items():
                out.setdefault(key, value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """The classic one-line format, followed by the record's fields and the
    request id as key=value (empty fields left out). Everything is escaped
    (see the module's docstring); tracebacks follow on indented lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        # Not logging.Formatter.format: it would reuse a traceback another
        # handler cached on the record, unescaped.
        record.message = record.getMessage()
        record.asctime = self.formatTime(record, self.datefmt)
        line = self.formatMessage(record)
        if record.exc_info:
            line += "\n" + _continuation(self.formatException(record.exc_info))
        elif record.exc_text:
            line += "\n" + _continuation(record.exc_text)
        if record.stack_info:
            line += "\n" + _continuation(self.formatStack(record.stack_info))
        return line

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802  # logging's name
        line = escape_text(super().formatMessage(record))
        fields = _fields(record)
        pairs = _text_pairs(fields) if fields else []
        request_id = record.__dict__.get("request_id")
        if request_id is not None:
            pairs.append(f"request_id={_text_value(request_id)}")
        return f"{line} {' '.join(pairs)}" if pairs else line


def _text_pairs(fields: dict[str, object]) -> list[str]:
    """`key=value` for each field with something to say (0 and False do;
    None and "" do not). An access line has about twenty fields per call, most
    of them numbers: the str() of an int, float or bool is plain ASCII with no
    space, quote or '=', so it is written as it is, without the escaping and
    quoting every other value goes through."""
    pairs = []
    for key, value in fields.items():
        kind = value.__class__
        if kind is int or kind is float or kind is bool:
            pairs.append(f"{escape_text(str(key))}={value!s}")
        elif value or value == 0:
            pairs.append(f"{escape_text(str(key))}={_text_value(value)}")
    return pairs


def _text_value(value: object) -> str:
    text = escape_text(str(value))
    if not _NEEDS_QUOTES.search(text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _continuation(text: str) -> str:
    """A traceback's lines, escaped and indented under the line they follow."""
    return "\n".join("    " + escape_text(line) for line in text.splitlines())


def make_handler(log_format: str, stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler (stderr by default) in `log_format`, stamping request ids."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {LOG_FORMATS}, got {log_format!r}")
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    return handler


def configure(level: str, log_format: str = "text") -> None:
    """Set up the root logger once (a no-op if something already did)."""
    logging.basicConfig(level=level.upper(), handlers=[make_handler(log_format)])
    # httpx logs every request URL at INFO; that is noise at our INFO level.
    logging.getLogger("httpx").setLevel(logging.WARNING)


class LogSampler:
    """Lets through the first event of each `interval` and counts the rest.

    `admit()` says whether to log this event and, when it does, how many
    were held back since the last one logged. With an event loop running, a
    count still held when the interval ends is handed to `on_suppressed`
    then, so a flood that stops is still reported."""

    def __init__(
        self,
        interval: float,
        on_suppressed: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._on_suppressed = on_suppressed
        self._clock = clock
        self._window_start: float | None = None
        self._suppressed = 0
        self._flush: asyncio.TimerHandle | None = None
        # The loop `_flush` is scheduled on: a sampler can outlive it (a
        # module-level one across tests or a restarted server), and a timer
        # on a closed loop never fires.
        self._flush_loop: asyncio.AbstractEventLoop | None = None

    def admit(self) -> tuple[bool, int]:
        """(log this event, events suppressed before it)."""
        now = self._clock()
        start = self._window_start
        if start is None or now - start >= self._interval:
            self._window_start = now
            suppressed, self._suppressed = self._suppressed, 0
            self._cancel_flush()
            return True, suppressed
        self._suppressed += 1
        if self._on_suppressed is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return False, 0
            if self._flush_loop is not loop:
                self._cancel_flush()  # none yet, or on a loop that is not running now
                self._flush = loop.call_later(start + self._interval - now, self.flush)
                self._flush_loop = loop
        return False, 0

    def _cancel_flush(self) -> None:
        flush, loop = self._flush, self._flush_loop
        self._flush = self._flush_loop = None
        if flush is not None and loop is not None and not loop.is_closed():
            flush.cancel()

    def flush(self) -> None:
        """Report the events held back (if any) now."""
        self._cancel_flush()
        if self._suppressed and self._on_suppressed is not None:
            suppressed, self._suppressed = self._suppressed, 0
            self._on_suppressed(suppressed)
        self._window_start = None


class SampledLog:
    """INFO lines about calls that a flood can multiply: lines marked
    `sampled` (about callers that were not let in) are sampled per status
    (one per `interval`, carrying `suppressed`, the count held back before
    it; a count left at the end of an interval gets a line of its own),
    every other line is written."""

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval: float = REFUSAL_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        # One per status seen: gRPC status names, a fixed small set.
        self._samplers: dict[str, LogSampler] = {}

    def info(
        self,
        status: str,
        message: str,
        *args: object,
        sampled: bool,
        fields: dict[str, object] | Callable[[], dict[str, object]] | None = None,
        request_id: str | None = None,
    ) -> None:
        """Log `message % args` at INFO with `fields` (built only when the
        line is written, if a callable), unless sampling holds it back."""
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        suppressed = None
        if sampled:
            sampler = self._samplers.get(status)
            if sampler is None:
                sampler = LogSampler(self._interval, self._reporter(status), self._clock)
                self._samplers[status] = sampler
            admitted, suppressed = sampler.admit()
            if not admitted:
                return
        built = fields() if callable(fields) else dict(fields or {})
        if suppressed is not None:
            built["suppressed"] = suppressed
        extra: dict[str, object] = {"fields": built}
        if request_id is not None:
            extra["request_id"] = request_id
        # logger.info would first walk the stack to find the caller's file and
        # line (findCaller), on every call's access line; neither format shows
        # them, and for these lines they would always name this function.
        record = logger.makeRecord(
            logger.name, logging.INFO, "(unknown file)", 0, message, args, None, extra=extra
        )
        logger.handle(record)

    def flush(self) -> None:
        """Write the counts held back now (at shutdown)."""
        for sampler in self._samplers.values():
            sampler.flush()

    def _reporter(self, status: str) -> Callable[[int], None]:
        def report(count: int) -> None:
            self._logger.info(
                "%d more %s lines in the last %g s were not written one by one",
                count,
                status,
                self._interval,
                extra={"request_id": None, "fields": {"status": status, "suppressed": count}},
            )

        return report


class AccessLog:
    """A CallObserver writing one INFO line per finished call; of calls whose
    caller was not let in, one per status per `refusal_interval`, and a count."""

    def __init__(
        self,
        logger: logging.Logger | None = None,
        *,
        refusal_interval: float = REFUSAL_LOG_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = SampledLog(
            logger or logging.getLogger(ACCESS_LOGGER), interval=refusal_interval, clock=clock
        )

    def call_started(self, record: CallRecord) -> None:
        """Nothing to say until the call ends."""

    def call_finished(self, record: CallRecord) -> None:
        """Log the finished call (nothing is built when INFO is off)."""
        self._log.info(
            record.status,
            "call finished",
            sampled=not record.authenticated,
            fields=lambda: _access_fields(record),
            request_id=record.request_id,
        )

    def flush(self) -> None:
        """Write the counts of refusals not yet reported."""
        self._log.flush()


def _access_fields(record: CallRecord) -> dict[str, object]:
    ttft = record.time_to_first_token
    return {
        "method": record.method,
        "model": record.requested_model,
        "served_model": record.served_model,
        "provider": record.provider,
        "status": record.status,
        "reason": record.reason,
        "latency_ms": round(record.latency * 1000, 3),
        "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
        "prompt_tokens": record.prompt_tokens,
        "completion_tokens": record.completion_tokens,
        "cached_tokens": record.cached_tokens,
        "cache_write_tokens": record.cache_write_tokens,
        "reasoning_tokens": record.reasoning_tokens,
        "cost_usd": record.cost_usd,
        "attempts": record.attempts,
        "fallbacks": record.fallbacks,
        "upstream_errors": ",".join(f"{p}:{r}" for p, r in record.upstream_errors),
        "key_id": record.key_id,
        # Only when there is something to say: lines of calls that name a model
        # stay as they were (a caller's task on one is the ledger's label).
        **_routing_fields(record),
    }


def _routing_fields(record: CallRecord) -> dict[str, object]:
    if record.route:
        return {
            "route": record.route,
            "task": record.task,
            "task_source": record.task_source,
            "sticky": record.sticky,
            "escalated": record.escalated,
        }
    if record.task:
        return {"task": record.task, "task_source": record.task_source}
    return {}
