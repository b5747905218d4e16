"""The fault suite's rows for Gemini: the generic set on Gemini's wire, and its own failure shapes.

Gemini's errors are `{"error": {code, message, status, details}}`; the
google.rpc `status` (and ErrorInfo's reason for a bad key) decides the
reason, not only the HTTP status. Its stream has no terminator, so every cut
is judged by the missing finishReason.
"""

from __future__ import annotations

from faults.row import (
    AUTH_FAILED,
    DRIP_SECONDS,
    FAKE_RETRY_AFTER,
    FIRST_BYTE_TIMEOUT,
    MALFORMED,
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
from llmgateway.testing.fake_upstream.gemini_wire import (
    OVERSIZED_BYTES,
    RATE_LIMITED_ONCE_RETRY_AFTER,
    RETRY_DELAY,
)

GEM = "gemini/fault-"
CONTENT_FLAGGED = "UPSTREAM_CONTENT_FLAGGED"
INVALID_TOOL_CALL = "UPSTREAM_INVALID_TOOL_CALL"

# Fallback chains these rows use (config-file aliases), merged into row.ALIASES.
ALIASES: dict[str, list[str]] = {
    # RESOURCE_EXHAUSTED with RetryInfo 7 s: left at once for a provider that answers.
    "chain-gemini-429": [GEM + "retry-info", "openai/gpt-4o-mini"],
}

ROWS: list[Fault] = [
    # -- HTTP statuses in Gemini's envelope ------------------------------------
    *_both(Fault("Gemini HTTP 400", GEM + "http-400", S.INVALID_ARGUMENT, REJECTED)),
    *_both(Fault("Gemini HTTP 401", GEM + "http-401", S.FAILED_PRECONDITION, AUTH_FAILED)),
    *_both(
        Fault(
            "Gemini HTTP 403", GEM + "http-403", S.PERMISSION_DENIED, "UPSTREAM_PERMISSION_DENIED"
        )
    ),
    *_both(Fault("Gemini HTTP 404", GEM + "http-404", S.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND")),
    *_both(
        Fault(
            "Gemini HTTP 429, Retry-After 7 s",
            GEM + "http-429",
            S.RESOURCE_EXHAUSTED,
            RATE_LIMITED,
            retry_after=FAKE_RETRY_AFTER,
        )
    ),
    *_both(Fault("Gemini HTTP 500", GEM + "http-500", S.UNAVAILABLE, UNAVAILABLE, RETRIED)),
    *_both(
        Fault(
            "Gemini HTTP 503, Retry-After 7 s",
            GEM + "http-503",
            S.UNAVAILABLE,
            UNAVAILABLE,
            retry_after=FAKE_RETRY_AFTER,
        )
    ),
    *_both(Fault("Gemini HTTP 500 twice, then OK", GEM + "flaky", S.OK, None, RETRIED)),
    *_both(
        Fault(
            "Gemini HTTP 429, Retry-After 1 s, then OK",
            GEM + "rate-limited-once",
            S.OK,
            None,
            2,
            at_least=RATE_LIMITED_ONCE_RETRY_AFTER,
            within=RATE_LIMITED_ONCE_RETRY_AFTER + PROMPTLY,
        )
    ),
    *_both(Fault("Gemini HTTP 301 redirect", GEM + "redirect", S.UNAVAILABLE, MALFORMED)),
    # -- Gemini's own shapes -----------------------------------------------------
    # RetryInfo.retryDelay decides the caller's RetryInfo, not a header.
    *_both(
        Fault(
            "Gemini 429 RESOURCE_EXHAUSTED, RetryInfo 7 s",
            GEM + "retry-info",
            S.RESOURCE_EXHAUSTED,
            RATE_LIMITED,
            retry_after=float(RETRY_DELAY),
        )
    ),
    *_both(
        Fault(
            "Gemini 429, 'retry in 7.0s' in the message only",
            GEM + "retry-in-message",
            S.RESOURCE_EXHAUSTED,
            RATE_LIMITED,
            retry_after=float(RETRY_DELAY),
        )
    ),
    # HTTP 400 INVALID_ARGUMENT, but ErrorInfo API_KEY_INVALID: the gateway's key.
    *_both(
        Fault(
            "Gemini 400 API_KEY_INVALID",
            GEM + "api-key-invalid",
            S.FAILED_PRECONDITION,
            AUTH_FAILED,
        )
    ),
    # A 200 whose body is `[{"error": …}]` (the array form): the error inside.
    *_both(
        Fault(
            "Gemini 200 holding [{error}]", GEM + "array-error", S.UNAVAILABLE, UNAVAILABLE, RETRIED
        )
    ),
    # HTTP 200, promptFeedback.blockReason and no candidates: the prompt's fault.
    *_both(
        Fault("Gemini blocked prompt", GEM + "blocked-prompt", S.PERMISSION_DENIED, CONTENT_FLAGGED)
    ),
    # The model's call was refused by Gemini itself: retried.
    *_both(
        Fault(
            "Gemini MALFORMED_FUNCTION_CALL",
            GEM + "malformed-function-call",
            S.UNAVAILABLE,
            INVALID_TOOL_CALL,
            RETRIED,
        )
    ),
    # A SAFETY stop is an answer (empty: the runner's unary check wants content,
    # so only the stream row; tests/test_gemini_e2e.py covers the unary one).
    _stream(Fault("Gemini SAFETY finish (an answer)", GEM + "safety", S.OK, None)),
    *_both(Fault("Gemini RECITATION finish (an answer)", GEM + "recitation", S.OK, None)),
    *_both(Fault("Gemini usage not monotonic", GEM + "usage-nonmonotonic", S.OK, None)),
    # -- the connection ----------------------------------------------------------
    *_both(
        Fault("Gemini reset before headers", GEM + "reset", S.UNAVAILABLE, UNREACHABLE, RETRIED)
    ),
    *_both(
        Fault(
            "Gemini closed before headers",
            GEM + "close-before-headers",
            S.UNAVAILABLE,
            UNREACHABLE,
            RETRIED,
        )
    ),
    Fault("Gemini malformed JSON body", GEM + "malformed-body", S.UNAVAILABLE, MALFORMED),
    *_both(
        Fault(
            f"Gemini oversized answer ({OVERSIZED_BYTES // 2**20} MiB)",
            GEM + "oversized",
            S.RESOURCE_EXHAUSTED,
            "UPSTREAM_RESPONSE_TOO_LARGE",
        )
    ),
    # -- streams that break after output reached the caller ----------------------
    *[
        _stream(Fault(label, GEM + name, S.UNAVAILABLE, reason, output_first=True))
        for label, name, reason in (
            ("Gemini in-band error chunk", "midstream-error", UNAVAILABLE),
            ("Gemini cut off mid-stream (FIN)", "truncated", TRUNCATED),
            ("Gemini reset mid-stream (RST)", "reset-midstream", TRUNCATED),
            ("Gemini stream without its finishReason chunk", "no-finish", TRUNCATED),
            ("Gemini malformed SSE event", "malformed-event", MALFORMED),
            ("Gemini broken chunked framing", "bad-chunking", TRUNCATED),
        )
    ],
    # -- time ----------------------------------------------------------------------
    _stream(
        Fault(
            "Gemini stall mid-stream",
            GEM + "stall",
            S.DEADLINE_EXCEEDED,
            TIMEOUT,
            within=STREAM_IDLE_TIMEOUT + SLACK,
            at_least=STREAM_IDLE_TIMEOUT,
            output_first=True,
        )
    ),
    _stream(
        Fault(
            "Gemini slow drip",
            GEM + "drip",
            S.OK,
            None,
            at_least=DRIP_SECONDS,
            within=DRIP_SECONDS + PROMPTLY,
        )
    ),
    Fault(
        "Gemini hang",
        GEM + "hang",
        S.DEADLINE_EXCEEDED,
        TIMEOUT,
        within=REQUEST_TIMEOUT + SLACK,
        at_least=REQUEST_TIMEOUT,
    ),
    _stream(
        Fault(
            "Gemini hang",
            GEM + "hang",
            S.DEADLINE_EXCEEDED,
            TIMEOUT,
            within=FIRST_BYTE_TIMEOUT + SLACK,
            at_least=FIRST_BYTE_TIMEOUT,
        )
    ),
    # -- the key quoted back (x-goog-api-key) --------------------------------------
    *_both(Fault("Gemini key echoed in a 400", GEM + "echo-auth", S.INVALID_ARGUMENT, REJECTED)),
    *_both(Fault("Gemini key as error.status", GEM + "leak-code", S.INVALID_ARGUMENT, REJECTED)),
    *_both(
        Fault(
            "Gemini key as ErrorInfo reason", GEM + "leak-error-info", S.INVALID_ARGUMENT, REJECTED
        )
    ),
    *_both(
        Fault(
            "Gemini key across the cut of a text page",
            GEM + "leak-text-body",
            S.UNAVAILABLE,
            UNAVAILABLE,
            RETRIED,
        )
    ),
    Fault(
        "Gemini key in a 200's error", GEM + "leak-midstream", S.UNAVAILABLE, UNAVAILABLE, RETRIED
    ),
    _stream(
        Fault(
            "Gemini key in a mid-stream error chunk",
            GEM + "leak-midstream",
            S.UNAVAILABLE,
            UNAVAILABLE,
            output_first=True,
        )
    ),
    *_both(Fault("Gemini key as a 200 answer's responseId", GEM + "leak-answer", S.OK, None)),
    # -- fallback ----------------------------------------------------------------------
    *_both(
        Fault(
            "fallback after Gemini's RetryInfo 429",
            "chain-gemini-429",
            S.OK,
            None,
            2,
            target="openai/gpt-4o-mini",
            fallbacks=1,
        )
    ),
]
