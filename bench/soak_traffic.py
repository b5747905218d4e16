"""The soak's traffic: a weighted mix of calls, each with the outcome it must have.

Callers loop, each picking its next call from SCENARIOS by weight: healthy
unary and streamed calls to all seven providers, the fake upstream's faults (5xx,
429, reset, truncated, stalled, malformed, hanging), streams the caller
leaves early, unary calls it cancels, and deadlines that expire mid-call.
Every call ends in one of three outcomes:
- ok: it succeeded (a stream with its `done`), or the caller cancelled it as
  planned;
- expected error: the status (code and ErrorInfo reason) the README's error
  table gives for that fault;
- unexpected: any other status (INTERNAL above all), a success where a fault
  should have failed, a stream that ended without `done` or an error, or no
  answer within the call's bound.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmgateway.client import AsyncCompletionClient, GatewayError

if TYPE_CHECKING:
    from collections.abc import Sequence

PROMPT = "Say hello."
OK = "ok"
EXPECTED = "expected error"
UNEXPECTED = "unexpected"
OUTCOMES = (OK, EXPECTED, UNEXPECTED)
# Any call that reaches a provider may be refused while that provider's
# circuit breaker is open: the faults share their provider with healthy calls.
CIRCUIT_OPEN = "UNAVAILABLE UPSTREAM_CIRCUIT_OPEN"
# Slack on top of a call's deadline (or, without one, its whole bound) before
# the soak calls it a hang: room for a loaded 2-core machine, far below any
# timeout the gateway would fall back on (idle 1 s here, request 600 s).
HANG_SLACK = 5.0
UNBOUNDED_CALL_LIMIT = 15.0
# One gRPC channel (one HTTP/2 connection) per this many callers.
CALLERS_PER_CHANNEL = 12


@dataclass(frozen=True)
class Scenario:
    """One kind of call and what must come of it.

    `expect` holds "OK" or "CODE REASON" strings ("CODE *": any reason);
    `deadline` is the range the call's deadline is drawn from (None: 30 s, the
    bound being UNBOUNDED_CALL_LIMIT); `cancel_after` is how many events a
    stream reads before its caller leaves, or the range of seconds after which
    a unary call is cancelled.
    """

    kind: str
    model: str
    call: str  # "unary", "stream" or "models"
    weight: int
    expect: tuple[str, ...] = ("OK",)
    deadline: tuple[float, float] | None = None
    cancel_after: tuple[float, float] | None = None
    empty: bool = False  # send no messages (an invalid request)


def _faults(kind: str, call: str, expect: str, *models: str) -> list[Scenario]:
    return [Scenario(kind, model, call, 1, (expect,)) for model in models]


OPENROUTER = "openrouter/openai/gpt-4o-mini"
ZAI = "zai/glm-4.7"
# The direct providers, each on its own wire: (healthy model, fault prefix).
DIRECT = (
    ("openai/gpt-4o-mini", "openai/fault-"),
    ("anthropic/claude-sonnet-4-5", "anthropic/fault-"),
    ("gemini/gemini-2.5-flash", "gemini/fault-"),
    ("groq/llama-3.3-70b-versatile", "groq/x/fault-"),
    ("ollama/llama3.2", "ollama/fault-"),
)
SCENARIOS: tuple[Scenario, ...] = (
    Scenario("unary", OPENROUTER, "unary", 6),
    Scenario("unary", ZAI, "unary", 6),
    Scenario("stream", OPENROUTER, "stream", 6),
    Scenario("stream", ZAI, "stream", 6),
    *(Scenario("unary", model, "unary", 5) for model, _ in DIRECT),
    *(Scenario("stream", model, "stream", 5) for model, _ in DIRECT),
    # The caller leaves a slow stream, or cancels a hanging call, on every direct wire.
    *(
        Scenario("stream, caller leaves", fault + "slow", "stream", 1, cancel_after=(1, 5))
        for _, fault in DIRECT
    ),
    *(
        Scenario("unary, caller cancels", fault + "hang", "unary", 1, cancel_after=(0.05, 0.3))
        for _, fault in DIRECT
    ),
    # Each direct provider's own failure shapes.
    *_faults(
        "direct provider fault",
        "unary",
        "UNAVAILABLE UPSTREAM_OVERLOADED",
        "anthropic/fault-overloaded",
        "groq/x/fault-capacity-exceeded",
    ),
    *_faults(
        "direct provider fault",
        "unary",
        "RESOURCE_EXHAUSTED UPSTREAM_RATE_LIMITED",
        "gemini/fault-retry-info",
    ),
    *_faults(
        "direct provider fault",
        "unary",
        "FAILED_PRECONDITION UPSTREAM_INSUFFICIENT_CREDITS",
        "openai/fault-insufficient-quota",
    ),
    *_faults(
        "direct provider fault, mid-stream",
        "stream",
        "UNAVAILABLE UPSTREAM_UNAVAILABLE",
        "ollama/fault-error-line",
        "gemini/fault-midstream-error",
        "openai/fault-midstream-error",
    ),
    *_faults(
        "direct provider fault, mid-stream",
        "stream",
        "UNAVAILABLE UPSTREAM_OVERLOADED",
        "anthropic/fault-overloaded-midstream",
    ),
    *_faults(
        "direct provider fault, mid-stream",
        "stream",
        "UNAVAILABLE UPSTREAM_STREAM_TRUNCATED",
        *(fault + "truncated" for _, fault in DIRECT),
    ),
    Scenario("list models", "", "models", 1),
    # The caller leaves after 1-3 events: mid-stream for 20 chunks, or 200 slow ones.
    Scenario("stream, caller leaves", OPENROUTER, "stream", 4, cancel_after=(1, 3)),
    Scenario("stream, caller leaves", ZAI, "stream", 4, cancel_after=(1, 3)),
    Scenario(
        "stream, caller leaves", "openrouter/openai/fault-slow", "stream", 2, cancel_after=(1, 5)
    ),
    Scenario("stream, caller leaves", "zai/fault-slow", "stream", 2, cancel_after=(1, 5)),
    # An upstream that never answers; the caller cancels after 50-300 ms.
    Scenario(
        "unary, caller cancels", "openrouter/x/fault-hang", "unary", 2, cancel_after=(0.05, 0.3)
    ),
    Scenario("unary, caller cancels", "zai/fault-hang", "unary", 2, cancel_after=(0.05, 0.3)),
    # Deadlines that expire while the gateway waits on, or streams from, the upstream.
    *(
        Scenario(
            "unary, deadline expires",
            model,
            "unary",
            2,
            ("DEADLINE_EXCEEDED *",),
            deadline=(0.1, 0.5),
        )
        for model in ("openrouter/x/fault-hang", "zai/fault-hang")
    ),
    *(
        Scenario(
            "stream, deadline expires",
            model,
            "stream",
            weight,
            ("DEADLINE_EXCEEDED *",),
            deadline=span,
        )
        for model, weight, span in (
            ("openrouter/openai/fault-slow", 2, (0.2, 1.5)),
            ("zai/fault-slow", 2, (0.2, 1.5)),
            ("openrouter/x/fault-keepalive-forever", 1, (0.3, 1.0)),
            ("zai/fault-hang", 1, (0.1, 0.5)),
        )
    ),
    # Upstream errors before any answer (retried where transient).
    *_faults(
        "unary fault",
        "unary",
        "UNAVAILABLE UPSTREAM_UNAVAILABLE",
        "openrouter/x/fault-http-500",
        "openrouter/x/fault-http-503",
        "zai/fault-http-503",
    ),
    *_faults(
        "unary fault",
        "unary",
        "RESOURCE_EXHAUSTED UPSTREAM_RATE_LIMITED",
        "openrouter/x/fault-http-429",
        "zai/fault-zai-1302",
    ),
    *_faults("unary fault", "unary", "UNAVAILABLE UPSTREAM_OVERLOADED", "zai/fault-zai-1305"),
    *_faults(
        "unary fault",
        "unary",
        "UNAVAILABLE UPSTREAM_UNREACHABLE",
        "openrouter/x/fault-reset",
        "zai/fault-reset",
    ),
    *_faults(
        "unary fault",
        "unary",
        "UNAVAILABLE UPSTREAM_MALFORMED_RESPONSE",
        "openrouter/x/fault-malformed-body",
        "zai/fault-malformed-body",
    ),
    *_faults(
        "unary fault",
        "unary",
        "INVALID_ARGUMENT UPSTREAM_REJECTED_REQUEST",
        "openrouter/x/fault-http-400",
    ),
    *_faults(
        "unary fault",
        "unary",
        "FAILED_PRECONDITION UPSTREAM_INSUFFICIENT_CREDITS",
        "zai/fault-zai-1113",
    ),
    *_faults(
        "stream fault, before any event",
        "stream",
        "UNAVAILABLE UPSTREAM_UNAVAILABLE",
        "openrouter/x/fault-http-502",
    ),
    *_faults(
        "stream fault, before any event",
        "stream",
        "UNAVAILABLE UPSTREAM_UNREACHABLE",
        "zai/fault-reset",
    ),
    *_faults(
        "stream fault, before any event",
        "stream",
        "RESOURCE_EXHAUSTED UPSTREAM_RATE_LIMITED",
        "openrouter/x/fault-http-429",
    ),
    # Faults after some events reached the caller.
    *_faults(
        "stream fault, mid-stream",
        "stream",
        "UNAVAILABLE UPSTREAM_STREAM_TRUNCATED",
        "openrouter/openai/fault-truncated",
        "zai/fault-truncated",
        "openrouter/openai/fault-no-done",
    ),
    *_faults(
        "stream fault, mid-stream",
        "stream",
        "UNAVAILABLE UPSTREAM_MALFORMED_RESPONSE",
        "zai/fault-malformed-event",
    ),
    *_faults(
        "stream fault, mid-stream",
        "stream",
        "UNAVAILABLE UPSTREAM_UNAVAILABLE",
        "openrouter/openai/fault-midstream-error",
        "zai/fault-midstream-error",
    ),
    Scenario(
        "stream fault, mid-stream",
        "openrouter/openai/fault-bad-chunking",
        "stream",
        1,
        ("UNAVAILABLE *", "DEADLINE_EXCEEDED *"),
    ),
    # The body stays open 30 s after [DONE]: the call must end at once anyway.
    Scenario("stream fault, mid-stream", "openrouter/openai/fault-linger", "stream", 1),
    # Silence mid-stream: the gateway's idle timeout (1 s in the soak) ends it.
    *_faults(
        "stream stalls (idle timeout)",
        "stream",
        "DEADLINE_EXCEEDED UPSTREAM_TIMEOUT",
        "openrouter/openai/fault-stall",
        "zai/fault-stall",
    ),
    Scenario("invalid request", "no-such-model", "unary", 1, ("INVALID_ARGUMENT UNKNOWN_MODEL",)),
    Scenario("invalid request", ZAI, "unary", 1, ("INVALID_ARGUMENT INVALID_REQUEST",), empty=True),
)


class Unexpected(Exception):  # noqa: N818  # an outcome, not an error of the soak
    """A call ended in a way none of its expectations allow."""


@dataclass
class Tally:
    """Outcomes so far, by kind."""

    counts: collections.Counter[tuple[str, str]] = field(default_factory=collections.Counter)
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    slowest: dict[str, float] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        """Calls finished so far."""
        return sum(self.counts.values())

    @property
    def unexpected(self) -> int:
        """Calls with an unexpected outcome so far."""
        return sum(n for (_, outcome), n in self.counts.items() if outcome == UNEXPECTED)

    def add(self, scenario: Scenario, outcome: str, seconds: float, what: str = "") -> None:
        """Count one finished call."""
        self.counts[scenario.kind, outcome] += 1
        self.slowest[scenario.kind] = max(self.slowest.get(scenario.kind, 0.0), seconds)
        if outcome == EXPECTED:
            self.statuses[what] += 1
        elif outcome == UNEXPECTED and len(self.samples) < 20:
            self.samples.append(f"{scenario.kind}: {scenario.model or '-'}: {what}")

    def table(self) -> list[str]:
        """Calls by kind and outcome, with the slowest call of each kind."""
        kinds = list(dict.fromkeys(kind for kind, _ in self.counts))
        kinds.sort(key=[s.kind for s in SCENARIOS].index)
        width = max(len(k) for k in kinds)
        header = (
            f"{'kind':<{width}}  {'calls':>7}  {'ok':>7}  {'expected error':>14}  "
            f"{'unexpected':>10}  {'slowest s':>9}"
        )
        lines = [header]
        for kind in kinds:
            ok, expected, unexpected = (self.counts[kind, outcome] for outcome in OUTCOMES)
            lines.append(
                f"{kind:<{width}}  {ok + expected + unexpected:>7}  {ok:>7}  {expected:>14}  "
                f"{unexpected:>10}  {self.slowest.get(kind, 0.0):>9.2f}"
            )
        totals = [sum(self.counts[k, outcome] for k in kinds) for outcome in OUTCOMES]
        lines.append(
            f"{'all':<{width}}  {sum(totals):>7}  {totals[0]:>7}  {totals[1]:>14}  {totals[2]:>10}"
        )
        return lines


class Traffic:
    """Drives `scenarios` (all of SCENARIOS unless told) from `callers` concurrent callers."""

    def __init__(
        self,
        address: str,
        callers: int,
        seed: int,
        scenarios: Sequence[Scenario] = SCENARIOS,
    ) -> None:
        if not scenarios:
            raise ValueError("no scenarios to run")
        self._address = address
        self._callers = callers
        self._scenarios = tuple(scenarios)
        self._seeds = itertools.count(seed * 1_000_003)
        self.tally = Tally()

    async def run(self, seconds: float) -> None:
        """Call for `seconds`, then let every call in flight finish, then close
        the channels (so no client connection is open when the soak measures)."""
        channels = max(1, -(-self._callers // CALLERS_PER_CHANNEL))
        clients = [
            AsyncCompletionClient(self._address, timeout=30, max_attempts=1)
            for _ in range(channels)
        ]
        loop = asyncio.get_running_loop()
        stop_at = loop.time() + seconds
        # Seeded, so a run's mix can be repeated (not cryptography).
        rngs = [random.Random(next(self._seeds)) for _ in range(self._callers)]  # noqa: S311
        try:
            await asyncio.gather(
                *(self._caller(clients[i % channels], rng, stop_at) for i, rng in enumerate(rngs))
            )
        finally:
            for client in clients:
                await client.close()

    async def _caller(
        self, client: AsyncCompletionClient, rng: random.Random, stop_at: float
    ) -> None:
        loop = asyncio.get_running_loop()
        weights = [s.weight for s in self._scenarios]
        while loop.time() < stop_at:
            scenario = rng.choices(self._scenarios, weights)[0]
            await self._one(client, scenario, rng)

    async def _one(
        self, client: AsyncCompletionClient, scenario: Scenario, rng: random.Random
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = rng.uniform(*scenario.deadline) if scenario.deadline else None
        bound = (deadline + HANG_SLACK) if deadline else UNBOUNDED_CALL_LIMIT
        started = loop.time()
        try:
            async with asyncio.timeout(bound):
                await _call(client, scenario, rng, deadline)
        except GatewayError as error:
            # A deadline gRPC enforced itself carries no reason.
            status = f"{error.code.name} {error.reason or '(no reason)'}"
            seconds = loop.time() - started
            if _allows(scenario, status):
                self.tally.add(scenario, EXPECTED, seconds, status)
            else:
                self.tally.add(scenario, UNEXPECTED, seconds, f"{status}: {error.message[:200]}")
        except TimeoutError:
            self.tally.add(scenario, UNEXPECTED, bound, f"no answer within {bound:.1f} s (a hang)")
        except Unexpected as exc:
            self.tally.add(scenario, UNEXPECTED, loop.time() - started, str(exc))
        except Exception as exc:  # noqa: BLE001  # every failure is counted, none stops the soak
            self.tally.add(
                scenario, UNEXPECTED, loop.time() - started, f"{type(exc).__name__}: {exc}"
            )
        else:
            seconds = loop.time() - started
            if "OK" in scenario.expect:
                self.tally.add(scenario, OK, seconds)
            else:
                self.tally.add(
                    scenario, UNEXPECTED, seconds, f"succeeded; expected {scenario.expect}"
                )


def _allows(scenario: Scenario, status: str) -> bool:
    code = status.split(" ", 1)[0]
    if scenario.model and status == CIRCUIT_OPEN:
        return True
    return status in scenario.expect or f"{code} *" in scenario.expect


async def _call(
    client: AsyncCompletionClient, scenario: Scenario, rng: random.Random, deadline: float | None
) -> None:
    """Make one call; return if it went as a success should, raise otherwise."""
    timeout = deadline if deadline is not None else 30.0
    messages: Sequence[tuple[str, str]] = [] if scenario.empty else [("user", PROMPT)]
    if scenario.call == "models":
        listed = await client.list_models(timeout=timeout)
        if not listed.models:
            raise Unexpected("ListModels returned no models")
        if listed.incomplete_providers:
            # The fake serves every provider's catalogue: a gap is a bug.
            raise Unexpected(f"ListModels incomplete for {list(listed.incomplete_providers)}")
    elif scenario.call == "unary" and scenario.cancel_after:
        await _cancelled_unary(client, scenario, rng.uniform(*scenario.cancel_after))
    elif scenario.call == "unary":
        response = await client.complete(scenario.model, messages, timeout=timeout)
        if not response.content:
            raise Unexpected("a unary answer without content")
    else:
        leave_after = rng.randint(*map(int, scenario.cancel_after)) if scenario.cancel_after else 0
        await _stream(client, scenario.model, timeout, leave_after)


async def _cancelled_unary(client: AsyncCompletionClient, scenario: Scenario, after: float) -> None:
    call = asyncio.ensure_future(client.complete(scenario.model, PROMPT, timeout=30))
    await asyncio.sleep(after)
    if call.done():
        call.result()  # an error raises here and is judged as any other
        raise Unexpected("an upstream that never answers answered")
    call.cancel()
    try:
        await call
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # the soak itself is being cancelled, not just this call
        return
    raise Unexpected("a cancelled call completed")


async def _stream(
    client: AsyncCompletionClient, model: str, deadline: float, leave_after: int
) -> None:
    events = 0
    async with client.stream(model, PROMPT, timeout=deadline) as stream:
        async for event in stream:
            events += 1
            if event.WhichOneof("event") == "done":
                return
            if leave_after and events >= leave_after:
                return  # leaving the block cancels the call, and the upstream request
    raise Unexpected(f"the stream ended without `done` or an error after {events} events")
