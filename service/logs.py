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
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from service.observe import CallRecord

# The request id of the call the current task is serving; None outside calls.
REQUEST_ID: ContextVar[str | None] = ContextVar("llmgateway_request_id", default=None)

LOG_FORMATS = ("text", "json")
ACCESS_LOGGER = "llmgateway.access"
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"


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
    request id as key=value (empty fields left out)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802  # logging's name
        line = super().formatMessage(record)
        fields = _fields(record)
        pairs = (
            [f"{key}={_text_value(value)}" for key, value in fields.items() if value or value == 0]
            if fields
            else []
        )
        request_id = record.__dict__.get("request_id")
        if request_id is not None:
            pairs.append(f"request_id={request_id}")
        return f"{line} {' '.join(pairs)}" if pairs else line


def _text_value(value: object) -> str:
    text = str(value)
    return f'"{text}"' if " " in text else text


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


class AccessLog:
    """A CallObserver writing one INFO line per finished call."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._logger = logger or logging.getLogger(ACCESS_LOGGER)

    def call_started(self, record: CallRecord) -> None:
        """Nothing to say until the call ends."""

    def call_finished(self, record: CallRecord) -> None:
        """Log the finished call (nothing is built when INFO is off)."""
        logger = self._logger
        if not logger.isEnabledFor(logging.INFO):
            return
        logger.info(
            "call finished",
            extra={"request_id": record.request_id, "fields": _access_fields(record)},
        )


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
        "reasoning_tokens": record.reasoning_tokens,
        "cost_usd": record.cost_usd,
        "attempts": record.attempts,
        "fallbacks": record.fallbacks,
        "upstream_errors": ",".join(f"{p}:{r}" for p, r in record.upstream_errors),
        "key_id": record.key_id,
    }
