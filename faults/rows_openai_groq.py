"""The fault suite's rows for OpenAI and Groq: the generic set on each wire, and their own shapes.

Both speak OpenAI's wire: `{"error": {message, type, param, code}}`, where the
code decides before the HTTP status (OpenAI's 429 `insufficient_quota` is a
spent account, never retried; its 429 `rate_limit_exceeded` is retried).
Groq adds its own: the model's rejected tool call (`tool_use_failed`, a 400 or
mid-stream), a full flex tier (498), a request over the tokens-per-minute limit
(413) and a 429 that says when to retry only in `x-ratelimit-reset-*`.
"""

from __future__ import annotations

from faults.row import (
    AUTH_FAILED,
    FAKE_RETRY_AFTER,
    FIRST_BYTE_TIMEOUT,
    MALFORMED,
    MAX_ATTEMPTS,
    RATE_LIMITED,
    REJECTED,
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
from llmgateway.testing.fake_upstream.groq_wire import RATELIMIT_RESET_SECONDS
from llmgateway.testing.fake_upstream.openai_wire import (
    OVERSIZED_BYTES,
    RATE_LIMITED_ONCE_RETRY_AFTER,
)

OAI = "openai/fault-"
GROQ = "groq/x/fault-"
OVERLOADED = "UPSTREAM_OVERLOADED"
INVALID_TOOL_CALL = "UPSTREAM_INVALID_TOOL_CALL"
_WIRES = (("OpenAI", OAI, "openai"), ("Groq", GROQ, "groq"))

# Fallback chains these rows use (config-file aliases), merged into row.ALIASES.
ALIASES: dict[str, list[str]] = {
    # 498 capacity_exceeded, retried, then served by another provider.
    "chain-groq-capacity": [GROQ + "capacity-exceeded", "openai/gpt-4o-mini"],
}


def _generic(name: str, prefix: str, provider: str) -> list[Fault]:
    """The rows every wire has, in this wire's envelope and framing."""
    return [
        *_both(Fault(f"{name} HTTP 400", prefix + "http-400", S.INVALID_ARGUMENT, REJECTED)),
        *_both(Fault(f"{name} HTTP 401", prefix + "http-401", S.FAILED_PRECONDITION, AUTH_FAILED)),
        *_both(
            Fault(f"{name} HTTP 404", prefix + "http-404", S.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND")
        ),
        *_both(
            Fault(
                f"{name} HTTP 429, Retry-After 7 s",
                prefix + "http-429",
                S.RESOURCE_EXHAUSTED,
                RATE_LIMITED,
                retry_after=FAKE_RETRY_AFTER,
            )
        ),
        *_both(Fault(f"{name} HTTP 500", prefix + "http-500", S.UNAVAILABLE, UNAVAILABLE, RETRIED)),
        *_both(
            Fault(
                f"{name} HTTP 503, Retry-After 7 s",
                prefix + "http-503",
                S.UNAVAILABLE,
                UNAVAILABLE,
                retry_after=FAKE_RETRY_AFTER,
            )
        ),
        *_both(
            Fault(
                f"{name} 429 once, Retry-After {RATE_LIMITED_ONCE_RETRY_AFTER} s",
                prefix + "rate-limited-once",
                S.OK,
                None,
                2,
                at_least=RATE_LIMITED_ONCE_RETRY_AFTER,
                within=RATE_LIMITED_ONCE_RETRY_AFTER + SLACK,
            )
        ),
        *_both(Fault(f"{name} two 502s, then OK", prefix + "flaky", S.OK, None, 3)),
        *_both(
            Fault(
                f"{name} reset before headers",
                prefix + "reset",
                S.UNAVAILABLE,
                UNREACHABLE,
                RETRIED,
            )
        ),
        *_both(
            Fault(
                f"{name} closed before headers",
                prefix + "close-before-headers",
                S.UNAVAILABLE,
                UNREACHABLE,
                RETRIED,
            )
        ),
        *_both(Fault(f"{name} redirect", prefix + "redirect", S.UNAVAILABLE, MALFORMED)),
        Fault(f"{name} malformed JSON body", prefix + "malformed-body", S.UNAVAILABLE, MALFORMED),
        *_both(
            Fault(
                f"{name} oversized answer ({OVERSIZED_BYTES // 2**20} MiB)",
                prefix + "oversized",
                S.RESOURCE_EXHAUSTED,
                "UPSTREAM_RESPONSE_TOO_LARGE",
            )
        ),
        _stream(
            Fault(
                f"{name} never answers",
                prefix + "hang",
                S.DEADLINE_EXCEEDED,
                TIMEOUT,
                within=FIRST_BYTE_TIMEOUT + SLACK,
                at_least=FIRST_BYTE_TIMEOUT,
            )
        ),
        # -- streams that break after output reached the caller (never retried) -----
        *[
            _stream(
                Fault(f"{name} {label}", prefix + fault, S.UNAVAILABLE, reason, output_first=True)
            )
            for label, fault, reason in (
                ("event: error mid-stream", "midstream-error", UNAVAILABLE),
                ("cut off mid-stream (FIN)", "truncated", TRUNCATED),
                ("reset mid-stream (RST)", "reset-midstream", TRUNCATED),
                ("no [DONE]", "no-done", TRUNCATED),
                ("[DONE] without a finish chunk", "no-finish", TRUNCATED),
                ("malformed SSE event", "malformed-event", MALFORMED),
                ("broken chunked framing", "bad-chunking", TRUNCATED),
            )
        ],
        _stream(
            Fault(
                f"{name} stall mid-stream",
                prefix + "stall",
                S.DEADLINE_EXCEEDED,
                TIMEOUT,
                within=STREAM_IDLE_TIMEOUT + SLACK,
                at_least=STREAM_IDLE_TIMEOUT,
                output_first=True,
            )
        ),
        *_both(Fault(f"{name} no usage", prefix + "no-usage", S.OK, None)),
        # -- the provider key quoted back (the runner checks none of it arrives) -------
        *_both(
            Fault(f"{name} key quoted in a 400", prefix + "echo-auth", S.INVALID_ARGUMENT, REJECTED)
        ),
        Fault(
            f"{name} key in a 200 holding an error",
            prefix + "leak-midstream",
            S.UNAVAILABLE,
            UNAVAILABLE,
            RETRIED,
        ),
        _stream(
            Fault(
                f"{name} key in a mid-stream error event",
                prefix + "leak-midstream",
                S.UNAVAILABLE,
                UNAVAILABLE,
                output_first=True,
            )
        ),
        *_both(
            Fault(
                f"{name} key as a 200 answer's id and model",
                prefix + "leak-answer",
                S.OK,
                None,
                served_model=f"{provider}/Bearer {REDACTED}",
            )
        ),
    ]


ROWS: list[Fault] = [
    *[row for name, prefix, provider in _WIRES for row in _generic(name, prefix, provider)],
    # -- OpenAI's own ------------------------------------------------------------------
    # A 429 like a rate limit, but the account is out of money: never retried.
    *_both(
        Fault(
            "OpenAI insufficient_quota (429)",
            OAI + "insufficient-quota",
            S.FAILED_PRECONDITION,
            "UPSTREAM_INSUFFICIENT_CREDITS",
        )
    ),
    *_both(
        Fault(
            "OpenAI context_length_exceeded",
            OAI + "context-length",
            S.INVALID_ARGUMENT,
            "UPSTREAM_CONTEXT_LENGTH_EXCEEDED",
        )
    ),
    # The other in-band form: `data: {"error": ...}` with no `event:` line.
    _stream(
        Fault(
            "OpenAI data: {error} mid-stream",
            OAI + "error-data",
            S.UNAVAILABLE,
            UNAVAILABLE,
            output_first=True,
        )
    ),
    *_both(Fault("OpenAI usage, then a usage: null chunk", OAI + "moderation-tail", S.OK, None)),
    # -- Groq's own ----------------------------------------------------------------------
    # The model's tool call failed Groq's own validation: sampling again usually works.
    *_both(
        Fault(
            "Groq tool_use_failed (400)",
            GROQ + "tool-use-failed",
            S.UNAVAILABLE,
            INVALID_TOOL_CALL,
            RETRIED,
        )
    ),
    _stream(
        Fault(
            "Groq tool_use_failed mid-stream",
            GROQ + "tool-use-failed-midstream",
            S.UNAVAILABLE,
            INVALID_TOOL_CALL,
            output_first=True,
        )
    ),
    *_both(
        Fault(
            "Groq 498 capacity_exceeded",
            GROQ + "capacity-exceeded",
            S.UNAVAILABLE,
            OVERLOADED,
            RETRIED,
        )
    ),
    *_both(
        Fault(
            "Groq 413 over the TPM limit (not retried: it never fits)",
            GROQ + "tpm-413",
            S.RESOURCE_EXHAUSTED,
            "UPSTREAM_QUOTA_EXCEEDED",
        )
    ),
    # Longer than the suite's max_retry_after (2 s): back to the caller at once, with RetryInfo.
    *_both(
        Fault(
            "Groq 429 with x-ratelimit-reset only",
            GROQ + "ratelimit-reset",
            S.RESOURCE_EXHAUSTED,
            RATE_LIMITED,
            retry_after=RATELIMIT_RESET_SECONDS,
        )
    ),
    *_both(Fault("Groq usage only in x_groq", GROQ + "x-groq-only", S.OK, None)),
    # -- fallback ----------------------------------------------------------------------
    *_both(
        Fault(
            "Groq 498 retried, then served by OpenAI",
            "chain-groq-capacity",
            S.OK,
            None,
            MAX_ATTEMPTS + 1,
            target="openai/gpt-4o-mini",
            fallbacks=1,
        )
    ),
]
