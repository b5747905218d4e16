"""One row per upstream fault and RPC kind: the status, reason, attempts and time bound.

The README's error table says the same in prose; keep the two in step. Faults are
chosen by model name (`…/fault-<name>`, see service/llmgateway/testing/fake_upstream/app.py), except
`refused`, which points the gateway at a port nothing listens on. Rows whose
model is one of ALIASES go through a fallback chain, and rows whose model is
`route/<name>` through a route of ROUTES. What a row is, and the
suite's timings, are in row.py; the direct providers' rows are in
rows_<provider>.py, gathered at the end of this module.
"""

from __future__ import annotations

from faults import rows_anthropic, rows_gemini, rows_ollama, rows_openai_groq
from faults.row import (
    ALIASES,
    AUTH_FAILED,
    CALLER_DEADLINE,
    CONNECT_TIMEOUT,
    DRIP_SECONDS,
    FAKE_RETRY_AFTER,
    FIRST_BYTE_TIMEOUT,
    MALFORMED,
    MAX_ATTEMPTS,
    MAX_RETRY_AFTER,
    MAX_STREAM_DURATION,
    OR,
    PROMPTLY,
    RATE_LIMITED,
    REJECTED,
    REQUEST_TIMEOUT,
    RETRIED,
    ROUTES,
    SHORT_CALLER_DEADLINE,
    SLACK,
    STREAM_IDLE_TIMEOUT,
    TIMEOUT,
    TRUNCATED,
    UNAVAILABLE,
    UNREACHABLE,
    ZAI,
    Fault,
    Rpc,
    S,
    Upstream,
    _both,
    _stream,
)
from llmgateway.testing.fake_upstream.app import (
    OVERSIZED_BYTES,
    RATE_LIMITED_ONCE_RETRY_AFTER,
)

__all__ = [
    "ALIASES",
    "AUTH_FAILED",
    "CALLER_DEADLINE",
    "CONNECT_TIMEOUT",
    "DRIP_SECONDS",
    "FAKE_RETRY_AFTER",
    "FAULTS",
    "FIRST_BYTE_TIMEOUT",
    "MALFORMED",
    "MAX_ATTEMPTS",
    "MAX_RETRY_AFTER",
    "MAX_STREAM_DURATION",
    "OR",
    "PROMPTLY",
    "RATE_LIMITED",
    "REJECTED",
    "REQUEST_TIMEOUT",
    "RETRIED",
    "ROUTES",
    "SHORT_CALLER_DEADLINE",
    "SLACK",
    "STREAM_IDLE_TIMEOUT",
    "TIMEOUT",
    "TRUNCATED",
    "UNAVAILABLE",
    "UNREACHABLE",
    "ZAI",
    "Fault",
    "Rpc",
    "S",
    "Upstream",
]

FAULTS: list[Fault] = [
    # -- HTTP error statuses ---------------------------------------------------
    *_both(Fault("HTTP 400", OR + "http-400", S.INVALID_ARGUMENT, REJECTED)),
    *_both(Fault("HTTP 401", OR + "http-401", S.FAILED_PRECONDITION, "UPSTREAM_AUTH_FAILED")),
    *_both(
        Fault("HTTP 402", OR + "http-402", S.FAILED_PRECONDITION, "UPSTREAM_INSUFFICIENT_CREDITS")
    ),
    *_both(
        Fault(
            "HTTP 402, credits",
            OR + "credits",
            S.FAILED_PRECONDITION,
            "UPSTREAM_INSUFFICIENT_CREDITS",
        )
    ),
    # The reason is in metadata.raw; the caller's message carries it (and the provider).
    *_both(
        Fault(
            "HTTP 429, Provider returned error",
            OR + "provider-returned-error",
            S.RESOURCE_EXHAUSTED,
            RATE_LIMITED,
            RETRIED,
        )
    ),
    *_both(Fault("HTTP 403", OR + "http-403", S.PERMISSION_DENIED, "UPSTREAM_PERMISSION_DENIED")),
    *_both(
        Fault(
            "HTTP 403, moderation",
            OR + "moderation",
            S.PERMISSION_DENIED,
            "UPSTREAM_CONTENT_FLAGGED",
        )
    ),
    *_both(Fault("HTTP 404", OR + "http-404", S.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND")),
    *_both(
        Fault(
            "HTTP 404, no endpoints", OR + "no-endpoints", S.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND"
        )
    ),
    *_both(Fault("HTTP 408", OR + "http-408", S.DEADLINE_EXCEEDED, TIMEOUT)),
    *_both(Fault("HTTP 409", OR + "http-409", S.UNAVAILABLE, UNAVAILABLE, RETRIED)),
    *_both(Fault("HTTP 413", OR + "http-413", S.INVALID_ARGUMENT, REJECTED)),
    *_both(Fault("HTTP 422", OR + "http-422", S.INVALID_ARGUMENT, REJECTED)),
    *_both(
        Fault(
            "HTTP 400, context length",
            OR + "context-length",
            S.INVALID_ARGUMENT,
            "UPSTREAM_CONTEXT_LENGTH_EXCEEDED",
        )
    ),
    # Retry-After beyond what the gateway waits out: back to the caller at once.
    *_both(
        Fault(
            "HTTP 429, Retry-After 7 s",
            OR + "http-429",
            S.RESOURCE_EXHAUSTED,
            RATE_LIMITED,
            retry_after=FAKE_RETRY_AFTER,
        )
    ),
    # A short Retry-After is waited out, and the next attempt answers.
    *_both(
        Fault(
            "HTTP 429, Retry-After 1 s, then OK",
            OR + "rate-limited-once",
            S.OK,
            None,
            2,
            at_least=RATE_LIMITED_ONCE_RETRY_AFTER,
            within=RATE_LIMITED_ONCE_RETRY_AFTER + PROMPTLY,
        )
    ),
    *_both(Fault("HTTP 500", OR + "http-500", S.UNAVAILABLE, UNAVAILABLE, RETRIED)),
    *_both(Fault("HTTP 502", OR + "http-502", S.UNAVAILABLE, UNAVAILABLE, RETRIED)),
    *_both(
        Fault(
            "HTTP 503, Retry-After 7 s",
            OR + "http-503",
            S.UNAVAILABLE,
            UNAVAILABLE,
            retry_after=FAKE_RETRY_AFTER,
        )
    ),
    *_both(Fault("HTTP 524", OR + "http-524", S.DEADLINE_EXCEEDED, TIMEOUT)),
    *_both(Fault("HTTP 529", OR + "http-529", S.UNAVAILABLE, "UPSTREAM_OVERLOADED", RETRIED)),
    *_both(Fault("HTTP 502 twice, then OK", OR + "flaky", S.OK, None, RETRIED)),
    *_both(Fault("HTTP 301 redirect", OR + "redirect", S.UNAVAILABLE, MALFORMED)),
    *_both(
        Fault(
            "HTTP 503, Retry-After 7 s",
            ZAI + "http-503",
            S.UNAVAILABLE,
            UNAVAILABLE,
            retry_after=FAKE_RETRY_AFTER,
        )
    ),
    # -- Z.AI business codes (they decide, not the HTTP status) ----------------
    *_both(Fault("Z.AI 1000", ZAI + "zai-1000", S.FAILED_PRECONDITION, "UPSTREAM_AUTH_FAILED")),
    *_both(
        Fault("Z.AI 1113", ZAI + "zai-1113", S.FAILED_PRECONDITION, "UPSTREAM_INSUFFICIENT_CREDITS")
    ),
    *_both(Fault("Z.AI 1210", ZAI + "zai-1210", S.INVALID_ARGUMENT, REJECTED)),
    *_both(Fault("Z.AI 1211", ZAI + "zai-1211", S.NOT_FOUND, "UPSTREAM_MODEL_NOT_FOUND")),
    *_both(Fault("Z.AI 1231", ZAI + "zai-1231", S.ALREADY_EXISTS, "UPSTREAM_DUPLICATE_REQUEST")),
    *_both(Fault("Z.AI 1234", ZAI + "zai-1234", S.UNAVAILABLE, UNAVAILABLE, RETRIED)),
    *_both(
        Fault("Z.AI 1261", ZAI + "zai-1261", S.INVALID_ARGUMENT, "UPSTREAM_CONTEXT_LENGTH_EXCEEDED")
    ),
    *_both(Fault("Z.AI 1301", ZAI + "zai-1301", S.PERMISSION_DENIED, "UPSTREAM_CONTENT_FLAGGED")),
    *_both(Fault("Z.AI 1302", ZAI + "zai-1302", S.RESOURCE_EXHAUSTED, RATE_LIMITED, RETRIED)),
    *_both(Fault("Z.AI 1305", ZAI + "zai-1305", S.UNAVAILABLE, "UPSTREAM_OVERLOADED", RETRIED)),
    *_both(Fault("Z.AI 1308", ZAI + "zai-1308", S.RESOURCE_EXHAUSTED, "UPSTREAM_QUOTA_EXCEEDED")),
    *_both(Fault("Z.AI 1313", ZAI + "zai-1313", S.PERMISSION_DENIED, "UPSTREAM_PERMISSION_DENIED")),
    *_both(Fault("Z.AI 500", ZAI + "zai-500", S.UNAVAILABLE, UNAVAILABLE, RETRIED)),
    # -- the connection ----------------------------------------------------------
    *_both(
        Fault(
            "connection refused",
            "openrouter/openai/gpt-4o-mini",
            S.UNAVAILABLE,
            UNREACHABLE,
            RETRIED,
            upstream="refused",
        )
    ),
    *_both(
        Fault(
            "connection refused",
            "zai/glm-4.7",
            S.UNAVAILABLE,
            UNREACHABLE,
            RETRIED,
            upstream="refused",
        )
    ),
    *_both(Fault("reset before headers (RST)", OR + "reset", S.UNAVAILABLE, UNREACHABLE, RETRIED)),
    *_both(Fault("reset before headers (RST)", ZAI + "reset", S.UNAVAILABLE, UNREACHABLE, RETRIED)),
    *_both(
        Fault(
            "closed before headers (FIN)",
            OR + "close-before-headers",
            S.UNAVAILABLE,
            UNREACHABLE,
            RETRIED,
        )
    ),
    # -- bodies that are not what they claim -----------------------------------
    Fault("malformed JSON body", OR + "malformed-body", S.UNAVAILABLE, MALFORMED),
    Fault("malformed JSON body", ZAI + "malformed-body", S.UNAVAILABLE, MALFORMED),
    Fault("fields of the wrong type", OR + "bad-types", S.UNAVAILABLE, MALFORMED),
    # A 200 whose body holds only an error (as OpenRouter sends it).
    *_both(
        Fault(
            "200 holding only an error",
            OR + "error-in-200",
            S.RESOURCE_EXHAUSTED,
            RATE_LIMITED,
            RETRIED,
        )
    ),
    # Unary: finish_reason "error" before anything was returned, so it is retried.
    Fault("finish_reason error", OR + "finish-error", S.UNAVAILABLE, UNAVAILABLE, RETRIED),
    # -- streams that break after output reached the caller (never retried) ----
    *[
        _stream(Fault(label, prefix + name, S.UNAVAILABLE, reason, output_first=True))
        for prefix in (OR, ZAI)
        for label, name, reason in (
            ("in-band error chunk", "midstream-error", UNAVAILABLE),
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
            "network_error finish",
            ZAI + "network-error",
            S.UNAVAILABLE,
            UNAVAILABLE,
            output_first=True,
        )
    ),
    # -- time ------------------------------------------------------------------
    *[
        _stream(
            Fault(
                "stall mid-stream",
                prefix + "stall",
                S.DEADLINE_EXCEEDED,
                TIMEOUT,
                within=STREAM_IDLE_TIMEOUT + SLACK,
                at_least=STREAM_IDLE_TIMEOUT,
                output_first=True,
            )
        )
        for prefix in (OR, ZAI)
    ],
    # Keep-alive comments reset the idle timer; the stream's maximum duration still ends it.
    _stream(
        Fault(
            "keep-alive comments forever",
            OR + "keepalive-forever",
            S.DEADLINE_EXCEEDED,
            TIMEOUT,
            within=MAX_STREAM_DURATION + SLACK,
            at_least=MAX_STREAM_DURATION,
        )
    ),
    # Slower in total than the idle timeout, but no gap as long: must succeed.
    *[
        _stream(
            Fault(
                "slow drip",
                prefix + "drip",
                S.OK,
                None,
                at_least=DRIP_SECONDS,
                within=DRIP_SECONDS + PROMPTLY,
            )
        )
        for prefix in (OR, ZAI)
    ],
    # 30 s of silence after [DONE]: the call ends at [DONE]. (The fake paces this
    # stream at 0.05 s an event, so it takes about 0.7 s to get there.)
    _stream(Fault("lingers after [DONE]", OR + "linger", S.OK, None, within=PROMPTLY + SLACK)),
    # No bytes at all: a unary call ends at the request timeout, a stream at the
    # first-byte timeout.
    *[
        Fault(
            "hang",
            prefix + "hang",
            S.DEADLINE_EXCEEDED,
            TIMEOUT,
            within=REQUEST_TIMEOUT + SLACK,
            at_least=REQUEST_TIMEOUT,
        )
        for prefix in (OR, ZAI)
    ],
    *[
        _stream(
            Fault(
                "hang",
                prefix + "hang",
                S.DEADLINE_EXCEEDED,
                TIMEOUT,
                within=FIRST_BYTE_TIMEOUT + SLACK,
                at_least=FIRST_BYTE_TIMEOUT,
            )
        )
        for prefix in (OR, ZAI)
    ],
    # ...and the caller's own deadline bounds it when that comes first.
    *_both(
        Fault(
            f"hang, caller deadline {SHORT_CALLER_DEADLINE:g} s",
            OR + "hang",
            S.DEADLINE_EXCEEDED,
            None,
            deadline=SHORT_CALLER_DEADLINE,
            within=SHORT_CALLER_DEADLINE + SLACK,
            deadline_race=True,
        )
    ),
    # -- size --------------------------------------------------------------------
    # An answer bigger than the gateway accepts (LLMGATEWAY_MAX_RESPONSE_BYTES,
    # 4 MiB by default), in one body or one event: the gateway stops reading at
    # the limit and says so, rather than buffering whatever the upstream sends.
    *_both(
        Fault(
            f"oversized answer ({OVERSIZED_BYTES // 2**20} MiB)",
            OR + "oversized",
            S.RESOURCE_EXHAUSTED,
            "UPSTREAM_RESPONSE_TOO_LARGE",
        )
    ),
    # -- provider keys quoted back ------------------------------------------------
    # The upstream (or a proxy) quotes the Authorization header it was sent; the
    # runner checks that no key, nor its start, reaches the caller anywhere.
    *[
        row
        for prefix in (OR, ZAI)
        for label, name, code, reason, attempts in (
            ("key quoted in error.code", "leak-code", S.INVALID_ARGUMENT, REJECTED, 1),
            ("key quoted in error_type", "leak-error-type", S.INVALID_ARGUMENT, REJECTED, 1),
            ("key across the cut of a text page", "leak-text-body", S.UNAVAILABLE, UNAVAILABLE, 3),
            ("key in a bare JSON string", "leak-bare-string", S.INVALID_ARGUMENT, REJECTED, 1),
            (
                "key across the cut of a string error",
                "leak-string-error",
                S.INVALID_ARGUMENT,
                REJECTED,
                1,
            ),
            (
                "key across the cut of a message",
                "leak-long-message",
                S.INVALID_ARGUMENT,
                REJECTED,
                1,
            ),
            # Not only a key's start: its end, its middle, Z.AI's secret half.
            ("key's last two thirds", "leak-tail", S.FAILED_PRECONDITION, AUTH_FAILED, 1),
            ("key's middle", "leak-middle", S.FAILED_PRECONDITION, AUTH_FAILED, 1),
            ("key's secret half alone", "leak-zai-secret", S.FAILED_PRECONDITION, AUTH_FAILED, 1),
        )
        for row in _both(Fault(label, prefix + name, code, reason, attempts))
    ],
    *_both(
        Fault(
            "key in metadata.raw and provider_name",
            OR + "leak-raw",
            S.RESOURCE_EXHAUSTED,
            RATE_LIMITED,
            RETRIED,
        )
    ),
    *_both(
        Fault(
            "key JSON-escaped in metadata.raw",
            OR + "leak-escaped-raw",
            S.RESOURCE_EXHAUSTED,
            RATE_LIMITED,
            RETRIED,
        )
    ),
    *[
        row
        for prefix in (OR, ZAI)
        for row in (
            Fault(
                "key in a choice's error",
                prefix + "leak-midstream",
                S.UNAVAILABLE,
                UNAVAILABLE,
                RETRIED,
            ),
            _stream(
                Fault(
                    "key in a mid-stream error event",
                    prefix + "leak-midstream",
                    S.UNAVAILABLE,
                    UNAVAILABLE,
                    output_first=True,
                )
            ),
        )
    ],
    *[
        row
        for prefix, provider in ((OR, "openrouter"), (ZAI, "zai"))
        for row in _both(
            Fault(
                "key as a 200 answer's id and model",
                prefix + "leak-answer",
                S.OK,
                None,
                served_model=f"{provider}/Bearer [redacted]",
            )
        )
    ],
    # -- fallback chains ---------------------------------------------------------
    # Retried on the first target, then served by the second.
    *_both(
        Fault(
            "fallback after HTTP 502 (3 tries)",
            "chain-after-502",
            S.OK,
            None,
            MAX_ATTEMPTS + 1,
            target="zai/glm-4.7",
            fallbacks=1,
        )
    ),
    # An upstream that asks for time is left at once when another target waits.
    *_both(
        Fault(
            "fallback after 429, Retry-After 7 s",
            "chain-after-429",
            S.OK,
            None,
            2,
            target="zai/glm-4.7",
            fallbacks=1,
        )
    ),
    Fault(
        "fallback after a hang",
        "chain-after-hang",
        S.OK,
        None,
        2,
        at_least=REQUEST_TIMEOUT,
        within=REQUEST_TIMEOUT + PROMPTLY,
        target="zai/glm-4.7",
        fallbacks=1,
    ),
    _stream(
        Fault(
            "fallback after a hang",
            "chain-after-hang",
            S.OK,
            None,
            2,
            at_least=FIRST_BYTE_TIMEOUT,
            within=FIRST_BYTE_TIMEOUT + PROMPTLY,
            target="zai/glm-4.7",
            fallbacks=1,
        )
    ),
    # The request's own fault: another target would refuse it too.
    *_both(
        Fault(
            "no fallback after HTTP 400",
            "chain-after-400",
            S.INVALID_ARGUMENT,
            REJECTED,
            target="openrouter/x/fault-http-400",
        )
    ),
    # Output reached the caller: falling back would repeat it.
    _stream(
        Fault(
            "no fallback once output was sent",
            "chain-after-truncated",
            S.UNAVAILABLE,
            TRUNCATED,
            output_first=True,
            target="openrouter/x/fault-truncated",
        )
    ),
    # Every target fails: the caller gets the last one's error, and the journey.
    *_both(
        Fault(
            "every target fails",
            "chain-all-failing",
            S.UNAVAILABLE,
            UNAVAILABLE,
            2 * MAX_ATTEMPTS,
            target="zai/fault-zai-1234",
            fallbacks=1,
        )
    ),
    # -- routes ------------------------------------------------------------------
    # A route's targets fall back as a chain does, and its decision says so
    # (the 503 asks for 7 s: left at once, as another target waits).
    *_both(
        Fault(
            "routed fallback after HTTP 503",
            "route/after-503",
            S.OK,
            None,
            2,
            target="zai/glm-4.7",
            fallbacks=1,
            passed_over=("failed",),
        )
    ),
    # The prompt exceeds the first target's window: once, to a larger one.
    *_both(
        Fault(
            "routed escalation, context length",
            "route/escalate",
            S.OK,
            None,
            2,
            target="zai/glm-4.7",
            fallbacks=1,
            passed_over=("failed",),
            escalated=True,
        )
    ),
]

# The direct providers' rows, and their fallback chains.
for _module in (rows_openai_groq, rows_anthropic, rows_gemini, rows_ollama):
    FAULTS.extend(_module.ROWS)
    ALIASES.update(_module.ALIASES)
