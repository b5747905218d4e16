"""What the gateway tells its observers (ledger, metrics, logs) about each call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(slots=True)
class CallRecord:
    """One Complete or StreamComplete call, filled in as it runs.

    Never holds prompts, completions or keys: only who, what, how much, how
    long and how it ended.
    """

    request_id: str
    method: str
    requested_model: str = ""
    # The caller key's id and name; empty while the gateway runs open.
    key_id: str = ""
    key_name: str = ""
    # Whether the caller was let in (a live key, or a gateway running open).
    # Lines about calls that were not are sampled: anyone can send those.
    authenticated: bool = False
    served_model: str = ""
    # The provider id ("openrouter", "zai", "openai", "anthropic", "gemini",
    # "groq", "ollama"); empty when no provider answered.
    provider: str = ""
    # prompt_tokens includes cached_tokens (read from the provider's prompt
    # cache) and cache_write_tokens (written to it); completion_tokens
    # includes reasoning_tokens.
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float | None = None
    # The upstream's id for the generation (OpenRouter `gen-...`), when known.
    generation_id: str = ""
    # Wall-clock start (epoch seconds), and monotonic durations in seconds.
    started_at: float = 0.0
    latency: float = 0.0
    # Until the first content reached the caller (for unary calls: the answer).
    time_to_first_token: float | None = None
    # A gRPC status code name ("OK", "CANCELLED", ...) and an ErrorReason name.
    status: str = "OK"
    reason: str = ""
    attempts: int = 0
    fallbacks: int = 0
    # (provider, ErrorReason name) of each failed upstream attempt.
    upstream_errors: list[tuple[str, str]] = field(default_factory=list)
    # Set only when the caller named a route (`route/default`): which route, the
    # task it served ("code") and where the task came from ("caller",
    # "rule:<id>", "default"). For a named model with a caller-set task, `task`
    # and `task_source="caller"` are filled too (the ledger's label only).
    route: str = ""
    task: str = ""
    task_source: str = ""
    # The route table entry used ("code", "chinese", "default").
    route_entry: str = ""
    # The task_rules id that fired ("code-fences"), also when it was below the
    # confidence threshold and the default entry served; "" for a caller's task.
    route_rule: str = ""
    # The session's earlier target was kept; the call moved once to a larger
    # context window after UPSTREAM_CONTEXT_LENGTH_EXCEEDED.
    sticky: bool = False
    escalated: bool = False
    # The target that served, gateway naming (`zai/glm-4.7@coding`).
    route_target: str = ""
    # How many targets were passed over (before the call and at run time), and
    # the stable id of each ("no-vision", "failed", ...) for the skips counter.
    route_skips: int = 0
    route_skip_ids: tuple[str, ...] = ()
    # Microseconds spent deciding (span attribute only).
    route_decision_us: float = 0.0


class CallObserver(Protocol):
    """Something that watches calls: the ledger, the metrics."""

    def call_started(self, record: CallRecord) -> None:
        """A call passed validation and authentication and is about to go upstream."""

    def call_finished(self, record: CallRecord) -> None:
        """A call ended, whichever way; `record` is complete."""
