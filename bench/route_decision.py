"""The cost of one routing decision: python -m bench.route_decision.

Times `decide()` end to end (the prompt estimate, task inference, the
capability filter and each provider's check for every candidate, the key and
breaker checks, stickiness, building the plan) over the README example's
`route/default`, for requests from a short chat to the 8 MiB request limit,
and `decide()` followed by `to_proto(explain=True)` (the decision as
ExplainRoute returns it). Prints median, p99 and fastest microseconds per
call (the fastest is the decision's own cost on a quiet core). A
benchmark that prints figures; tests/test_routing_cost.py only guards a
generous bound so a slip from linear to quadratic is caught.

The view is tests/routing_fixtures.py's FakeView (the built-in capability
tables and the fake upstream's OpenRouter catalogue, every provider
configured, no breaker open): what the gateway's view answers from memory.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench.routing_eval import percentile, readme_route
from llmgateway.server.errors import GatewayError
from llmgateway.server.routing.decide import RouteDecision, decide
from llmgateway.server.routing.sticky import StickySessions, sticky_key
from llmgateway.v1 import completion_pb2 as common
from tests.routing_fixtures import FakeView, make_request

if TYPE_CHECKING:
    from collections.abc import Callable

    from llmgateway.server.config import RoutingSettings
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest
    from llmgateway.server.routing.routes import CompiledRoute
    from llmgateway.v1 import routing_pb2 as rpb

SESSION = "bench-session"
# A conversation about code: fences in the history and in the last turn.
_FUNCTION = (
    "```python\ndef first_three(limit):\n    for x in range(limit):\n        if x == 3:\n"
    "            return x\n```"
)
_CODE_TURNS = (
    "Why does this loop never end?\n```python\ni = 0\nwhile i < 10:\n    print(i)\n```",
    "You never increment `i`: add `i += 1` inside the loop.",
    "Thanks. And this one?\n```python\nfor x in range(10):\n    if x = 3:\n        break\n```",
    "`x = 3` is an assignment; the comparison is `x == 3`.",
    "Can you make it a function that takes the limit?",
    _FUNCTION,
    "Now add a docstring and type hints to it:\n" + _FUNCTION,
)


@dataclass(frozen=True)
class Case:
    name: str
    request: AnyCompletionRequest
    # A session whose earlier turn the gateway remembers (the sticky path).
    sticky: bool = False
    # No target's window fits: the decision is NO_ELIGIBLE_TARGET.
    refused: bool = False


def conversation() -> AnyCompletionRequest:
    """Eight messages: a system prompt, then seven turns about code."""
    request = make_request(_CODE_TURNS[0], system="You are a careful Python reviewer.")
    request.routing.session_id = SESSION
    for index, text in enumerate(_CODE_TURNS[1:], start=1):
        role = common.ROLE_USER if index % 2 == 0 else common.ROLE_ASSISTANT
        request.messages.add(role=role, content=text)
    return request


def cases() -> list[Case]:
    sentence = "请把下面这段话翻译成英文并保持原来的语气。"  # 3 bytes a character
    chinese = (sentence * 1_000)[: 40_000 // 3]
    paste = "The committee reviewed the submissions and agreed to meet again. " * 6_154
    # Just under the gateway's 8 MiB request limit once serialized.
    huge = "word " * (8 * 1024 * 1024 // 5 - 200)
    return [
        Case("short chat", make_request("Any tips for a rainy Sunday with two kids?")),
        Case("tools (agent, 3 targets)", make_request("What's the weather in Lima?", tools=2)),
        Case("JSON schema (extraction)", make_request("Name and age: Ana, 31.", json_schema=True)),
        Case("8-message conversation with code, sticky", conversation(), sticky=True),
        Case(f"{len(chinese.encode()) / 1000:.0f} KB of Chinese", make_request(chinese)),
        Case(f"{len(paste) / 1000:.0f} KB paste (long input)", make_request(paste)),
        Case(f"{len(huge) / 2**20:.1f} MiB request", make_request(huge), refused=True),
    ]


def time_calls(call: Callable[[], object], *, budget_s: float, at_least: int) -> list[float]:
    """Microseconds per call, for at least `at_least` calls and about
    `budget_s` seconds, after one warm-up call."""
    call()
    timings: list[float] = []
    deadline = time.perf_counter() + budget_s
    gc.disable()  # a collection landing in one call is not the decision's cost
    try:
        while len(timings) < at_least or time.perf_counter() < deadline:
            start = time.perf_counter_ns()
            call()
            timings.append((time.perf_counter_ns() - start) / 1000)
            if len(timings) % 200 == 0:
                gc.collect()
    finally:
        gc.enable()
    return timings


def decision_calls(
    case: Case, route: CompiledRoute, settings: RoutingSettings
) -> tuple[Callable[[], RouteDecision | GatewayError], Callable[[], rpb.RoutingDecision]]:
    """`decide()` alone, and `decide()` then `to_proto(explain=True)`."""
    view = FakeView()
    sticky = StickySessions(settings.sticky_ttl, settings.sticky_max_sessions)
    if case.sticky:
        first = decide(case.request, route, key=None, view=view, sticky=None, settings=settings)
        key = sticky_key(None, route.name, case.request.routing.session_id)
        sticky.served(key, first.plan.routes[0].target)

    def decision() -> RouteDecision | GatewayError:
        try:
            return decide(
                case.request, route, key=None, view=view, sticky=sticky, settings=settings
            )
        except GatewayError as error:
            if not case.refused:
                raise
            return error

    def explained() -> rpb.RoutingDecision:
        made = decide(case.request, route, key=None, view=view, sticky=sticky, settings=settings)
        return made.to_proto(chosen=made.plan.routes[0].target, explain=True)

    return decision, explained


def figures(timings: list[float]) -> str:
    """Median, p99 and fastest, as table cells."""
    return (
        f"{statistics.median(timings):,.1f} | {percentile(timings, 0.99):,.1f} | "
        f"{min(timings):,.1f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time spent per case and mode")
    parser.add_argument("--at-least", type=int, default=50, help="calls per case and mode")
    args = parser.parse_args()

    route, settings = readme_route()
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}")
    print(f"decide() over the README example's {route.name}, FakeView\n")
    print(
        "| request | entry | decide() median µs | p99 µs | fastest µs "
        "| + to_proto(explain) median µs | p99 µs | fastest µs |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for case in cases():
        decision, explained = decision_calls(case, route, settings)
        outcome = decision()
        entry = outcome.entry if isinstance(outcome, RouteDecision) else "none (refused)"
        plain = time_calls(decision, budget_s=args.seconds, at_least=args.at_least)
        if case.refused:
            print(f"| {case.name} | {entry} | {figures(plain)} | n/a | n/a | n/a |")
            continue
        full = time_calls(explained, budget_s=args.seconds, at_least=args.at_least)
        print(f"| {case.name} | {entry} | {figures(plain)} | {figures(full)} |")


if __name__ == "__main__":
    main()
