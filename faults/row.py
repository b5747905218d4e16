"""What a fault-suite row is: the Fault dataclass, the suite's timings, and shorthands.

The rows themselves are in table.py (OpenRouter, Z.AI, fallback chains) and in one
module per direct provider (faults/rows_<provider>.py), which table.py gathers.

The README's error table says the same in prose; keep the two in step. Faults are
chosen by model name (`…/fault-<name>`, see service/llmgateway/testing/fake_upstream/app.py), except
`refused`, which points the gateway at a port nothing listens on. Rows whose
model is one of ALIASES go through a fallback chain; rows whose model is
`route/<name>` go through a route of ROUTES (its default entry).

Timings are the suite's own, short so the whole table runs in seconds; the
runner passes them to the gateway through its documented environment variables
(and ALIASES and ROUTES through a config file).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import grpc

from llmgateway.testing.fake_upstream.app import (
    DRIP_PAUSE,
    DRIP_PAUSES,
)

S = grpc.StatusCode
Rpc = Literal["unary", "stream"]
# "refused": every provider's base URL points at a port nothing listens on;
# "refused-ollama": only Ollama's (a local Ollama that is down), so a chain
# can fall back to a provider that answers.
Upstream = Literal["fake", "refused", "refused-ollama"]

# The gateway's settings for the suite.
CONNECT_TIMEOUT = 1.0
REQUEST_TIMEOUT = 1.5
# In the same order as the defaults (60 s, 300 s, 1800 s), so each is the one
# that ends its fault: a stream that never begins, one that stalls, one kept
# alive by comments alone.
FIRST_BYTE_TIMEOUT = 0.3
STREAM_IDLE_TIMEOUT = 0.5
MAX_STREAM_DURATION = 1.5
MAX_ATTEMPTS = 3
# Waited out by the gateway itself: the fake's one-off 429 (1 s). Not its usual
# Retry-After of 7 s, which goes back to the caller at once, in RetryInfo.
MAX_RETRY_AFTER = 2.0
FAKE_RETRY_AFTER = 7.0

# The caller's gRPC deadline, unless a row sets its own.
CALLER_DEADLINE = 10.0
# Shorter than every gateway timeout above, so the caller's deadline is what ends a hang.
SHORT_CALLER_DEADLINE = 0.2
# Bound for a failure the upstream states at once: retries and their backoff
# (at most 0.02 s each in the suite) included.
PROMPTLY = 1.0
# Allowance on top of a timeout for the status to travel back to the caller.
SLACK = 1.0
DRIP_SECONDS = DRIP_PAUSE * DRIP_PAUSES

# Fallback chains (config-file aliases) for the rows that fall back. Each
# failing target is on a different provider from the one after it, and fails
# fewer times than opens a circuit (5 by default).
ALIASES = {
    "chain-after-502": ["openrouter/x/fault-http-502", "zai/glm-4.7"],
    "chain-after-429": ["openrouter/x/fault-http-429", "zai/glm-4.7"],
    "chain-after-hang": ["openrouter/x/fault-hang", "zai/glm-4.7"],
    "chain-after-400": ["openrouter/x/fault-http-400", "zai/glm-4.7"],
    "chain-after-truncated": ["openrouter/x/fault-truncated", "zai/glm-4.7"],
    "chain-all-failing": ["openrouter/x/fault-http-502", "zai/fault-zai-1234"],
}
# Routes (`[routes.<name>]`, called as `route/<name>`) for the routed rows, by
# their default entry's targets; the task does not matter to a fault. A route
# table needs `default`.
ROUTES = {
    "default": ["zai/glm-4.7"],
    "after-503": ["openrouter/x/fault-http-503", "zai/glm-4.7"],
    # The fault's window is unknown: the escalation goes to the first later
    # target whose known window holds the estimated prompt and answer.
    "escalate": ["openrouter/x/fault-context-length", "zai/glm-4.7"],
}


@dataclass(frozen=True, slots=True)
class Fault:
    """One fault, one RPC kind, and everything the caller must observe."""

    label: str
    model: str
    code: grpc.StatusCode
    # ErrorInfo.reason; None for OK, or for a status gRPC sets without ErrorInfo.
    reason: str | None
    # Upstream requests the call makes: 1 unless the failure is transient and
    # nothing reached the caller yet (then up to MAX_ATTEMPTS).
    attempts: int = 1
    # The call must end within this many seconds, and not before `at_least`
    # (a fault that works by taking time must have taken it).
    within: float = PROMPTLY
    at_least: float = 0.0
    rpc: Rpc = "unary"
    deadline: float = CALLER_DEADLINE
    upstream: Upstream = "fake"
    # Stream rows: whether output reached the caller before the error.
    output_first: bool = False
    # RetryInfo the caller must get, in seconds; None: no RetryInfo.
    retry_after: float | None = None
    # The caller's deadline and the gateway's own timeout (derived from that
    # deadline) expire together: either status may reach the caller first.
    deadline_race: bool = False
    # For an alias: the target that serves, or whose failure the caller gets,
    # and how many targets were passed over before it.
    target: str | None = None
    fallbacks: int = 0
    # The model an OK answer must name, when it is not `served_by` (an upstream
    # that quotes the key as its model name is named redacted).
    served_model: str | None = None
    # For a route: the stable ids of the targets its answer's decision says
    # were passed over ("failed"), and whether the call escalated.
    passed_over: tuple[str, ...] = ()
    escalated: bool = False

    @property
    def served_by(self) -> str:
        """The model that answers or fails last: the target, or the model itself."""
        return self.target or self.model

    @property
    def provider(self) -> str:
        """`openrouter` or `zai`: the provider of `served_by`."""
        return self.served_by.split("/", 1)[0]

    @property
    def id(self) -> str:
        """A unique, stable name for the row (the pytest id)."""
        suffix = f"@{self.upstream}" if self.upstream != "fake" else ""
        if self.deadline != CALLER_DEADLINE:
            suffix += f"@deadline={self.deadline:g}s"
        return f"{self.rpc}:{self.model}{suffix}"

    @property
    def routed(self) -> bool:
        """Whether the row names a route (`route/<name>`)."""
        return self.model.startswith("route/")

    @property
    def ok(self) -> bool:
        """Whether the call must succeed."""
        return self.code == S.OK


def _stream(row: Fault) -> Fault:
    return dataclasses.replace(row, rpc="stream")


def _both(row: Fault) -> list[Fault]:
    return [row, _stream(row)]


OR = "openrouter/x/fault-"
ZAI = "zai/fault-"
REJECTED = "UPSTREAM_REJECTED_REQUEST"
UNAVAILABLE = "UPSTREAM_UNAVAILABLE"
UNREACHABLE = "UPSTREAM_UNREACHABLE"
TIMEOUT = "UPSTREAM_TIMEOUT"
MALFORMED = "UPSTREAM_MALFORMED_RESPONSE"
TRUNCATED = "UPSTREAM_STREAM_TRUNCATED"
RATE_LIMITED = "UPSTREAM_RATE_LIMITED"
AUTH_FAILED = "UPSTREAM_AUTH_FAILED"
RETRIED = MAX_ATTEMPTS
