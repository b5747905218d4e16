"""The fault suite's rows for Anthropic: the generic set on Anthropic's wire, and its own shapes.

Anthropic's errors are `{"type": "error", "error": {type, message}}`; the
error type decides the reason (529 `overloaded_error` is retried), except
where Anthropic reuses `invalid_request_error` and only its words tell a spent
balance or an over-long prompt apart. After HTTP 200 errors arrive as
`event: error`: retried while nothing reached the caller, an UNAVAILABLE end
of the stream (never a `done`) after that.
"""

from __future__ import annotations

from faults.row import (
    AUTH_FAILED,
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
from llmgateway.server.providers.redaction import REDACTED
from llmgateway.testing.fake_upstream.anthropic_wire import (
    OVERSIZED_BYTES,
    RATE_LIMITED_ONCE_RETRY_AFTER,
    RETRY_AFTER,
)

ANT = "anthropic/fault-"
OVERLOADED = "UPSTREAM_OVERLOADED"

# Fallback chains these rows use (config-file aliases), merged into row.ALIASES.
ALIASES: dict[str, list[str]] = {
    # 529 overloaded, retried, then served by the next provider in the chain.
    "chain-anthropic-overloaded": [
        ANT + "overloaded",
        "openrouter/anthropic/claude-sonnet-4.5",
        "zai/glm-4.7",
    ],
}

ROWS: list[Fault] = [
    # -- HTTP statuses in Anthropic's envelope -------------------------------------
    *_both(Fault("Anthropic HTTP 400", ANT + "http-400", S.INVALID_ARGUMENT, REJECTED)),
    *_both(Fault("Anthropic HTTP 401", ANT + "http-401", S.FAILED_PRECONDITION, AUTH_FAILED)),
    *_both(
        Fault(
            "Anthropic HTTP 403",
            ANT + "http-403",
            S.PERMISSION_DENIED,
            "UPSTREAM_PERMISSION_DENIED",
        )
    ),
    *_both(Fault("Anthropic HTTP 404", ANT + "http-404", S.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND")),
    *_both(Fault("Anthropic HTTP 413", ANT + "http-413", S.INVALID_ARGUMENT, REJECTED)),
    *_both(
        Fault(
            "Anthropic HTTP 429, Retry-After 7 s",
            ANT + "http-429",
            S.RESOURCE_EXHAUSTED,
            RATE_LIMITED,
            retry_after=FAKE_RETRY_AFTER,
        )
    ),
    *_both(Fault("Anthropic HTTP 500", ANT + "http-500", S.UNAVAILABLE, UNAVAILABLE, RETRIED)),
    *_both(
        Fault(
            "Anthropic HTTP 503, Retry-After 7 s",
            ANT + "http-503",
            S.UNAVAILABLE,
            UNAVAILABLE,
            retry_after=FAKE_RETRY_AFTER,
        )
    ),
    *_both(Fault("Anthropic HTTP 529", ANT + "http-529", S.UNAVAILABLE, OVERLOADED, RETRIED)),
    *_both(Fault("Anthropic HTTP 529 twice, then OK", ANT + "flaky", S.OK, None, RETRIED)),
    *_both(
        Fault(
            "Anthropic HTTP 429, Retry-After 1 s, then OK",
            ANT + "rate-limited-once",
            S.OK,
            None,
            2,
            at_least=RATE_LIMITED_ONCE_RETRY_AFTER,
            within=RATE_LIMITED_ONCE_RETRY_AFTER + PROMPTLY,
        )
    ),
    *_both(Fault("Anthropic HTTP 301 redirect", ANT + "redirect", S.UNAVAILABLE, MALFORMED)),
    # -- Anthropic's own error shapes ----------------------------------------------
    *_both(
        Fault(
            "Anthropic 529 overloaded_error", ANT + "overloaded", S.UNAVAILABLE, OVERLOADED, RETRIED
        )
    ),
    *_both(
        Fault(
            "Anthropic 429 rate_limit_error, retry-after 7 s",
            ANT + "rate-limited",
            S.RESOURCE_EXHAUSTED,
            RATE_LIMITED,
            retry_after=float(RETRY_AFTER),
        )
    ),
    # invalid_request_error, told apart by its words.
    *_both(
        Fault(
            "Anthropic 400 'credit balance is too low'",
            ANT + "credit-balance",
            S.FAILED_PRECONDITION,
            "UPSTREAM_INSUFFICIENT_CREDITS",
        )
    ),
    *_both(
        Fault(
            "Anthropic 400 'prompt is too long'",
            ANT + "prompt-too-long",
            S.INVALID_ARGUMENT,
            "UPSTREAM_CONTEXT_LENGTH_EXCEEDED",
        )
    ),
    # An error after HTTP 200 and before any output: retried like a 529.
    *_both(
        Fault(
            "Anthropic overloaded_error before any output (HTTP 200)",
            ANT + "overloaded-first",
            S.UNAVAILABLE,
            OVERLOADED,
            RETRIED,
        )
    ),
    # Unary: a 200 whose body is the error; retried.
    Fault(
        "Anthropic 200 holding overloaded_error",
        ANT + "overloaded-midstream",
        S.UNAVAILABLE,
        OVERLOADED,
        RETRIED,
    ),
    Fault(
        "Anthropic 200 holding api_error",
        ANT + "api-error-event",
        S.UNAVAILABLE,
        UNAVAILABLE,
        RETRIED,
    ),
    # After output: the stream ends UNAVAILABLE, with no done and no retry.
    _stream(
        Fault(
            "Anthropic overloaded_error after output",
            ANT + "overloaded-midstream",
            S.UNAVAILABLE,
            OVERLOADED,
            output_first=True,
        )
    ),
    _stream(
        Fault(
            "Anthropic api_error event after output",
            ANT + "api-error-event",
            S.UNAVAILABLE,
            UNAVAILABLE,
            output_first=True,
        )
    ),
    # -- answers in Anthropic's less common shapes ---------------------------------------
    *[
        row
        for label, name in (
            ("stop_reason refusal (an answer)", "refusal"),
            ("stop_reason pause_turn (an answer)", "pause-turn"),
            ("stop_reason max_tokens (an answer)", "max-tokens"),
            ("an event type not known yet", "unknown-event"),
            ("tool input whole in content_block_start", "kimi-input"),
            ("a tool call without arguments", "noargs-tool"),
            ("a redacted_thinking block", "redacted-thinking"),
            ("an empty thinking block, signature only", "empty-thinking"),
            ("whitespace padding inside the data JSON", "padded"),
            ("no usage anywhere", "no-usage"),
        )
        for row in _both(Fault(f"Anthropic {label}", ANT + name, S.OK, None))
    ],
    # -- the connection --------------------------------------------------------------
    *_both(
        Fault("Anthropic reset before headers", ANT + "reset", S.UNAVAILABLE, UNREACHABLE, RETRIED)
    ),
    *_both(
        Fault(
            "Anthropic closed before headers",
            ANT + "close-before-headers",
            S.UNAVAILABLE,
            UNREACHABLE,
            RETRIED,
        )
    ),
    Fault("Anthropic malformed JSON body", ANT + "malformed-body", S.UNAVAILABLE, MALFORMED),
    *_both(
        Fault(
            f"Anthropic oversized answer ({OVERSIZED_BYTES // 2**20} MiB)",
            ANT + "oversized",
            S.RESOURCE_EXHAUSTED,
            "UPSTREAM_RESPONSE_TOO_LARGE",
        )
    ),
    # -- streams that break after output reached the caller -----------------------------
    *[
        _stream(Fault(f"Anthropic {label}", ANT + name, S.UNAVAILABLE, reason, output_first=True))
        for label, name, reason in (
            ("error event mid-stream", "midstream-error", UNAVAILABLE),
            ("cut off mid-stream (FIN)", "truncated", TRUNCATED),
            ("reset mid-stream (RST)", "reset-midstream", TRUNCATED),
            ("no message_stop", "no-done", TRUNCATED),
            ("message_stop without a stop_reason", "no-finish", TRUNCATED),
            ("malformed SSE event", "malformed-event", MALFORMED),
            ("broken chunked framing", "bad-chunking", TRUNCATED),
        )
    ],
    # -- time --------------------------------------------------------------------------
    _stream(
        Fault(
            "Anthropic stall mid-stream",
            ANT + "stall",
            S.DEADLINE_EXCEEDED,
            TIMEOUT,
            within=STREAM_IDLE_TIMEOUT + SLACK,
            at_least=STREAM_IDLE_TIMEOUT,
            output_first=True,
        )
    ),
    Fault(
        "Anthropic hang",
        ANT + "hang",
        S.DEADLINE_EXCEEDED,
        TIMEOUT,
        within=REQUEST_TIMEOUT + SLACK,
        at_least=REQUEST_TIMEOUT,
    ),
    _stream(
        Fault(
            "Anthropic hang",
            ANT + "hang",
            S.DEADLINE_EXCEEDED,
            TIMEOUT,
            within=FIRST_BYTE_TIMEOUT + SLACK,
            at_least=FIRST_BYTE_TIMEOUT,
        )
    ),
    # -- the key quoted back (x-api-key) -------------------------------------------------
    *_both(Fault("Anthropic key echoed in a 400", ANT + "echo-auth", S.INVALID_ARGUMENT, REJECTED)),
    *_both(
        Fault(
            "Anthropic key's last two thirds", ANT + "leak-tail", S.FAILED_PRECONDITION, AUTH_FAILED
        )
    ),
    *_both(
        Fault("Anthropic key's middle", ANT + "leak-middle", S.FAILED_PRECONDITION, AUTH_FAILED)
    ),
    *_both(
        Fault(
            "Anthropic key across the cut of a message",
            ANT + "leak-long-message",
            S.INVALID_ARGUMENT,
            REJECTED,
        )
    ),
    *_both(
        Fault(
            "Anthropic key across the cut of a text page",
            ANT + "leak-text-body",
            S.UNAVAILABLE,
            UNAVAILABLE,
            RETRIED,
        )
    ),
    Fault(
        "Anthropic key in a 200's error",
        ANT + "leak-midstream",
        S.UNAVAILABLE,
        UNAVAILABLE,
        RETRIED,
    ),
    _stream(
        Fault(
            "Anthropic key in a mid-stream error event",
            ANT + "leak-midstream",
            S.UNAVAILABLE,
            UNAVAILABLE,
            output_first=True,
        )
    ),
    *_both(
        Fault(
            "Anthropic key as a 200 answer's id, model and stop reason",
            ANT + "leak-answer",
            S.OK,
            None,
            served_model=f"anthropic/{REDACTED}",
        )
    ),
    # -- fallback ----------------------------------------------------------------------
    *_both(
        Fault(
            "fallback after Anthropic's 529 (3 tries)",
            "chain-anthropic-overloaded",
            S.OK,
            None,
            MAX_ATTEMPTS + 1,
            target="openrouter/anthropic/claude-sonnet-4.5",
            fallbacks=1,
        )
    ),
]
