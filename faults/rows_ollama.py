"""The fault suite's rows for Ollama: the generic failures on its wire, and its own.

Ollama's own shapes (service/llmgateway/testing/fake_upstream/ollama_wire.py):
`{"error": "text"}` with a status, or as an NDJSON line of a 200 (mid-stream,
or the only line); a stream that ends without its done line; the errors whose
words alone say what went wrong (context length, no tools, model not found);
hosted Ollama's `application/json` label on an NDJSON stream; a done line
without timings or without a prompt count (a prompt-cache hit); and a local
server that is down (connection refused), with a fallback chain past it.

No key rows: a local Ollama is sent no key, so there is none to leak (the
leak faults are tested against a hosted-style fake in tests/test_ollama_e2e.py).
"""

from __future__ import annotations

from faults.row import (
    FAKE_RETRY_AFTER,
    FIRST_BYTE_TIMEOUT,
    MALFORMED,
    MAX_ATTEMPTS,
    PROMPTLY,
    RATE_LIMITED,
    REJECTED,
    REQUEST_TIMEOUT,
    RETRIED,
    SLACK,
    STREAM_IDLE_TIMEOUT,
    TIMEOUT,
    TRUNCATED,
    UNAVAILABLE,
    UNREACHABLE,
    Fault,
    S,
    _both,
    _stream,
)
from llmgateway.testing.fake_upstream.app import OVERSIZED_BYTES, RATE_LIMITED_ONCE_RETRY_AFTER

OLL = "ollama/fault-"
CONTEXT_LENGTH = "UPSTREAM_CONTEXT_LENGTH_EXCEEDED"
MODEL_NOT_FOUND = "UPSTREAM_MODEL_NOT_FOUND"

# Fallback chains these rows use (config-file aliases), merged into row.ALIASES.
ALIASES: dict[str, list[str]] = {
    # A local Ollama that is down, then a provider that answers.
    "chain-ollama-down": ["ollama/llama3.2", "zai/glm-4.7"],
}

ROWS: list[Fault] = [
    # -- HTTP error statuses, in Ollama's envelope ----------------------------
    *_both(Fault("HTTP 400", OLL + "http-400", S.INVALID_ARGUMENT, REJECTED)),
    *_both(Fault("HTTP 401", OLL + "http-401", S.FAILED_PRECONDITION, "UPSTREAM_AUTH_FAILED")),
    *_both(Fault("HTTP 403", OLL + "http-403", S.PERMISSION_DENIED, "UPSTREAM_PERMISSION_DENIED")),
    *_both(Fault("HTTP 404", OLL + "http-404", S.NOT_FOUND, MODEL_NOT_FOUND)),
    *_both(
        Fault(
            "HTTP 429, Retry-After 7 s",
            OLL + "http-429",
            S.RESOURCE_EXHAUSTED,
            RATE_LIMITED,
            retry_after=FAKE_RETRY_AFTER,
        )
    ),
    *_both(
        Fault(
            "HTTP 429, Retry-After 1 s, then OK",
            OLL + "rate-limited-once",
            S.OK,
            None,
            2,
            at_least=RATE_LIMITED_ONCE_RETRY_AFTER,
            within=RATE_LIMITED_ONCE_RETRY_AFTER + PROMPTLY,
        )
    ),
    *_both(Fault("HTTP 500", OLL + "http-500", S.UNAVAILABLE, UNAVAILABLE, RETRIED)),
    *_both(
        Fault(
            "HTTP 503, Retry-After 7 s",
            OLL + "http-503",
            S.UNAVAILABLE,
            UNAVAILABLE,
            retry_after=FAKE_RETRY_AFTER,
        )
    ),
    *_both(Fault("HTTP 502 twice, then OK", OLL + "flaky", S.OK, None, RETRIED)),
    *_both(Fault("HTTP 301 redirect", OLL + "redirect", S.UNAVAILABLE, MALFORMED)),
    # -- Ollama's own errors: the words decide --------------------------------
    *_both(
        Fault(
            "400 the input length exceeds the context length",
            OLL + "context-length",
            S.INVALID_ARGUMENT,
            CONTEXT_LENGTH,
        )
    ),
    *_both(
        Fault("400 model does not support tools", OLL + "no-tools", S.INVALID_ARGUMENT, REJECTED)
    ),
    *_both(
        Fault(
            "400 model does not support thinking", OLL + "no-thinking", S.INVALID_ARGUMENT, REJECTED
        )
    ),
    *_both(Fault("404 model not found", OLL + "model-not-found", S.NOT_FOUND, MODEL_NOT_FOUND)),
    # A 200 whose only line is an error: nothing reached the caller, so it is retried.
    *_both(
        Fault(
            "200 holding only an error line",
            OLL + "error-only",
            S.UNAVAILABLE,
            UNAVAILABLE,
            RETRIED,
        )
    ),
    # Unary: the failure mid-generation comes back as a 500 before any answer.
    Fault(
        "500 error while running the model", OLL + "error-line", S.UNAVAILABLE, UNAVAILABLE, RETRIED
    ),
    # -- the connection ----------------------------------------------------------
    *_both(
        Fault(
            "connection refused (local Ollama down)",
            "ollama/llama3.2",
            S.UNAVAILABLE,
            UNREACHABLE,
            RETRIED,
            upstream="refused",
        )
    ),
    *_both(
        Fault(
            "fallback past a local Ollama that is down",
            "chain-ollama-down",
            S.OK,
            None,
            MAX_ATTEMPTS + 1,
            upstream="refused-ollama",
            target="zai/glm-4.7",
            fallbacks=1,
        )
    ),
    *_both(Fault("reset before headers (RST)", OLL + "reset", S.UNAVAILABLE, UNREACHABLE, RETRIED)),
    *_both(
        Fault(
            "closed before headers (FIN)",
            OLL + "close-before-headers",
            S.UNAVAILABLE,
            UNREACHABLE,
            RETRIED,
        )
    ),
    # -- bodies that are not what they claim -------------------------------------
    *_both(Fault("malformed body", OLL + "malformed-body", S.UNAVAILABLE, MALFORMED)),
    Fault("unary answer without done: true", OLL + "no-done", S.UNAVAILABLE, MALFORMED),
    *_both(
        Fault(
            f"oversized answer ({OVERSIZED_BYTES // 2**20} MiB)",
            OLL + "oversized",
            S.RESOURCE_EXHAUSTED,
            "UPSTREAM_RESPONSE_TOO_LARGE",
        )
    ),
    # -- streams that break after output reached the caller (never retried) ------
    *[
        _stream(Fault(label, OLL + name, S.UNAVAILABLE, reason, output_first=True))
        for label, name, reason in (
            ("error line after content", "error-line", UNAVAILABLE),
            ("in-band error line", "midstream-error", UNAVAILABLE),
            ("cut off mid-stream (FIN)", "truncated", TRUNCATED),
            ("reset mid-stream (RST)", "reset-midstream", TRUNCATED),
            ("no done line", "no-done", TRUNCATED),
            ("malformed NDJSON line", "malformed-event", MALFORMED),
            ("broken chunked framing", "bad-chunking", TRUNCATED),
        )
    ],
    # -- answers that are right, in Ollama's variations ---------------------------
    _stream(
        Fault("hosted: NDJSON labelled application/json", "ollama/hosted/llama3.2", S.OK, None)
    ),
    *_both(Fault("done line without timings", OLL + "no-durations", S.OK, None)),
    *_both(Fault("prompt-cache hit: no prompt_eval_count", OLL + "cache-hit", S.OK, None)),
    _stream(Fault("CRLF line endings", OLL + "crlf", S.OK, None)),
    _stream(Fault("last line without its newline", OLL + "no-final-newline", S.OK, None)),
    # -- time ----------------------------------------------------------------------
    _stream(
        Fault(
            "stall mid-stream",
            OLL + "stall",
            S.DEADLINE_EXCEEDED,
            TIMEOUT,
            within=STREAM_IDLE_TIMEOUT + SLACK,
            at_least=STREAM_IDLE_TIMEOUT,
            output_first=True,
        )
    ),
    Fault(
        "hang",
        OLL + "hang",
        S.DEADLINE_EXCEEDED,
        TIMEOUT,
        within=REQUEST_TIMEOUT + SLACK,
        at_least=REQUEST_TIMEOUT,
    ),
    _stream(
        Fault(
            "hang",
            OLL + "hang",
            S.DEADLINE_EXCEEDED,
            TIMEOUT,
            within=FIRST_BYTE_TIMEOUT + SLACK,
            at_least=FIRST_BYTE_TIMEOUT,
        )
    ),
]
