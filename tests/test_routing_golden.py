"""Golden routing decisions over the README's example config.

Each row is a request (by feature), the caller's hints and key, the state of
the gateway (providers without keys, breakers open, a session's target), and
the decision expected of it: entry, task, source, rule, plan in try order and
every target passed over with its reason, or the error. The catalogue is a
fixed snapshot (tests/routing_fixtures.py: the built-in tables plus the fake
upstream's three OpenRouter models). A row per entry of every route in the
example, then each skip reason, tiers, thresholds, CJK, long input, and the
two errors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from llmgateway.server.errors import GatewayError
from llmgateway.server.routing.decide import decide
from llmgateway.server.routing.sticky import StickySessions, sticky_key
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import routing_pb2 as rpb
from tests.readme import readme_example_toml
from tests.routing_fixtures import FakeView, caller_key, load_settings, make_request, route_table

if TYPE_CHECKING:
    from llmgateway.server.config import RoutingSettings
    from llmgateway.server.routing.routes import RouteTable

R = rpb  # the skip reasons read better short in the table
CALLER, RULE, DEFAULT = rpb.TASK_SOURCE_CALLER, rpb.TASK_SOURCE_RULE, rpb.TASK_SOURCE_ROUTE_DEFAULT
FENCE = "Why does this fail?\n```python\nprint(1\n```"
HAN = "今天天气很好，我们一起去公园散步，然后吃晚饭吧。"
JAPANESE = "今日はとても良い天気ですね。公園に散歩に行きましょう。"
CODE = ["zai/glm-4.7@coding", "openrouter/z-ai/glm-4.7", "openrouter/anthropic/claude-sonnet-4.5"]
AGENT = ["anthropic/claude-sonnet-4-5", "openrouter/anthropic/claude-sonnet-4.5", "zai/glm-4.7"]
VISION = ["gemini/gemini-2.5-flash", "openai/gpt-4o"]
SMART = ["openrouter/anthropic/claude-sonnet-4.5", "openrouter/openai/gpt-4o"]
# An 810 KB paste (203,528 tokens with the answer's reserve) over route/default:
# default's 131,072 window is too small, so every target of the route that can
# take it, longest window first, and those that cannot, in route order (the
# entries in the order default, code, extraction, summarization, translation,
# agent, vision, chinese); gemini is first listed in `extraction`.
PASTE = "lorem ipsum " * 67_500
LONGEST = [
    "gemini/gemini-2.5-flash",
    "openrouter/anthropic/claude-sonnet-4.5",
    "zai/glm-4.7@coding",
    "zai/glm-4.7",
]
LONGEST_SKIPPED = [
    ("zai/glm-4.5-flash", rpb.SKIP_REASON_CONTEXT_WINDOW),
    ("openrouter/z-ai/glm-4.7", rpb.SKIP_REASON_CONTEXT_WINDOW),
    ("openai/gpt-4o-mini", rpb.SKIP_REASON_CONTEXT_WINDOW),
    ("openrouter/openai/gpt-4o", rpb.SKIP_REASON_CONTEXT_WINDOW),
    ("anthropic/claude-sonnet-4-5", rpb.SKIP_REASON_CONTEXT_WINDOW),
    ("openai/gpt-4o", rpb.SKIP_REASON_CONTEXT_WINDOW),
]


@dataclass(frozen=True)
class Row:
    id: str
    request: dict[str, Any]
    # Expected: entry, task, source, rule, plan, passed over.
    entry: str = ""
    task: str = ""
    source: rpb.TaskSource.ValueType = RULE
    rule: str = ""
    plan: tuple[str, ...] = ()
    passed_over: tuple[tuple[str, rpb.SkipReason.ValueType], ...] = ()
    # State.
    route: str = "route/default"
    key: tuple[str, ...] | None = None
    unconfigured: frozenset[common.Provider.ValueType] = frozenset()
    open_breakers: frozenset[str] = frozenset()
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_call_usd: dict[str, float] = field(default_factory=dict)
    min_confidence: float | None = None
    session_target: str | None = None
    # Expected besides.
    sticky: bool = False
    below_threshold: bool = False
    signals: dict[str, str] = field(default_factory=dict)
    # An error instead: (code, reason, BadRequest fields).
    error: tuple[grpc.StatusCode, pb.ErrorReason.ValueType, tuple[str, ...]] | None = None


def row(name: str, text: str = "hello there", **fields: Any) -> Row:
    """A row; `request` holds make_request's other arguments, lists become tuples."""
    request = {"text": text, **fields.pop("request", {})}
    for key in ("plan", "passed_over"):
        if key in fields:
            fields[key] = tuple(fields[key])
    return Row(name, request, **fields)


ROWS: list[Row] = [
    # -- every entry of every route in the example -------------------------------------
    # No rule fired: confidence 0, so below any threshold.
    row(
        "default: no signal",
        entry="default",
        task="chat",
        source=DEFAULT,
        rule="no-signal",
        below_threshold=True,
        plan=["zai/glm-4.5-flash"],
    ),
    row("code: fences", FENCE, entry="code", task="code", rule="code-fences", plan=CODE),
    row(
        "agent: tools",
        "What's the weather in Lima?",
        request={"tools": 2},
        entry="agent",
        task="agent",
        rule="tools-present",
        plan=AGENT,
    ),
    row(
        "vision: an image",
        "What is in this picture?",
        request={"images": 1},
        entry="vision",
        task="vision",
        rule="image-parts",
        plan=VISION,
    ),
    row(
        "extraction: a schema",
        "Ana is 31.",
        request={"json_schema": True},
        entry="extraction",
        task="extraction",
        rule="json-schema",
        plan=["openai/gpt-4o-mini", "gemini/gemini-2.5-flash"],
    ),
    row(
        "extraction, high tier: its variant",
        "Ana is 31.",
        request={"json_schema": True, "cost_tier": rpb.COST_TIER_HIGH},
        entry="extraction",
        task="extraction",
        rule="json-schema",
        plan=["openai/gpt-4o"],
    ),
    row(
        "summarization: the verb",
        "Please summarize the following meeting notes: we agreed to "
        "ship on Friday and to move the review to Monday.",
        entry="summarization",
        task="summarization",
        rule="summarize-verb",
        plan=["gemini/gemini-2.5-flash"],
    ),
    row(
        "translation: the verb, through the smart alias",
        "Translate into French: good morning, my friends",
        entry="translation",
        task="translation",
        rule="translate-verb",
        plan=SMART,
    ),
    row(
        "chinese: Han text prefers the chinese entry",
        HAN,
        entry="chinese",
        task="translation",
        rule="cjk-text",
        plan=["zai/glm-4.7"],
        signals={"chinese": "true"},
    ),
    row(
        "cheap route: its default",
        route="route/cheap",
        entry="default",
        task="chat",
        source=DEFAULT,
        rule="no-signal",
        below_threshold=True,
        plan=["groq/llama-3.3-70b-versatile", "ollama/llama3.2"],
    ),
    # -- the caller's task --------------------------------------------------------------
    row(
        "caller task: trusted over the rules",
        FENCE,
        request={"task": rpb.TASK_SUMMARIZATION},
        entry="summarization",
        task="summarization",
        source=CALLER,
        plan=["gemini/gemini-2.5-flash"],
    ),
    row(
        "caller task without an entry: the default, still the caller's",
        FENCE,
        request={"task": rpb.TASK_REASONING},
        entry="default",
        task="reasoning",
        source=CALLER,
        plan=["zai/glm-4.5-flash"],
    ),
    row(
        "caller task translation on Han text: the chinese entry, still the caller's",
        HAN,
        request={"task": rpb.TASK_TRANSLATION},
        entry="chinese",
        task="translation",
        source=CALLER,
        plan=["zai/glm-4.7"],
        signals={"chinese": "true"},
    ),
    row(
        "caller task translation on Japanese: the translation entry",
        JAPANESE,
        request={"task": rpb.TASK_TRANSLATION},
        entry="translation",
        task="translation",
        source=CALLER,
        plan=SMART,
    ),
    row(
        "caller task chat with an image: the filter still applies (D13)",
        "hi",
        request={"task": rpb.TASK_CHAT, "images": 1},
        task="chat",
        source=CALLER,
        passed_over=[("zai/glm-4.5-flash", R.SKIP_REASON_NO_VISION)],
        error=(grpc.StatusCode.INVALID_ARGUMENT, pb.ERROR_REASON_NO_ELIGIBLE_TARGET, ("messages",)),
    ),
    # -- thresholds, CJK, long input ----------------------------------------------------------
    row(
        "one reasoning marker: below threshold, the default",
        "What is the probability of rain?",
        entry="default",
        task="reasoning",
        source=DEFAULT,
        rule="reasoning-markers",
        below_threshold=True,
        plan=["zai/glm-4.5-flash"],
    ),
    row(
        "code terms trusted at 0.6, not at 0.8",
        "How do I write a python function that reads a json file?",
        min_confidence=0.8,
        entry="default",
        task="code",
        source=DEFAULT,
        rule="code-terms",
        below_threshold=True,
        plan=["zai/glm-4.5-flash"],
    ),
    row(
        "Japanese: CJK but not Han-dominant, the translation entry",
        JAPANESE,
        entry="translation",
        task="translation",
        rule="cjk-text",
        plan=SMART,
    ),
    row(
        "long code paste: the longest window first",
        FENCE + "\n" + "x = 1\n" * 25_000,
        entry="code",
        task="code",
        rule="code-fences",
        plan=[CODE[2], CODE[0], CODE[1]],
        signals={"long_input": "true"},
    ),
    row(
        "an 810 KB paste no default target can take: the route's longest window",
        PASTE,
        entry="extraction",
        task="chat",
        source=DEFAULT,
        rule="long-input",
        below_threshold=True,
        plan=LONGEST,
        passed_over=LONGEST_SKIPPED,
        signals={"long_input": "true", "long_input_search": "route"},
    ),
    row(
        "an 810 KB paste, a caller's task without an entry: the route's longest window",
        PASTE,
        request={"task": rpb.TASK_REASONING},
        entry="extraction",
        task="reasoning",
        source=CALLER,
        plan=LONGEST,
        passed_over=LONGEST_SKIPPED,
        signals={"long_input": "true", "long_input_search": "route"},
    ),
    row(
        "a paste too long for every target of the route: NO_ELIGIBLE_TARGET",
        "lorem ipsum " * 400_000,
        task="chat",
        source=DEFAULT,
        rule="long-input",
        # Every target of the route, each once, in route order.
        passed_over=[
            (target, R.SKIP_REASON_CONTEXT_WINDOW)
            for target in (
                "zai/glm-4.5-flash",
                *CODE,
                "openai/gpt-4o-mini",
                "gemini/gemini-2.5-flash",
                "openrouter/openai/gpt-4o",
                "anthropic/claude-sonnet-4-5",
                "zai/glm-4.7",
                "openai/gpt-4o",
            )
        ],
        error=(
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.ERROR_REASON_NO_ELIGIBLE_TARGET,
            ("messages", "sampling.max_tokens"),
        ),
    ),
    # -- each reason a target is passed over ------------------------------------------------
    row(
        "key patterns",
        FENCE,
        key=("openrouter/*",),
        entry="code",
        task="code",
        rule="code-fences",
        plan=CODE[1:],
        passed_over=[("zai/glm-4.7@coding", R.SKIP_REASON_KEY_MODEL_PATTERNS)],
    ),
    row(
        "key granted the route: its choices are trusted (D6)",
        FENCE,
        key=("openrouter/*", "route/*"),
        entry="code",
        task="code",
        rule="code-fences",
        plan=CODE,
    ),
    row(
        "context window",
        "lorem ipsum " * 14_000,
        route="route/cheap",
        entry="default",
        task="chat",
        source=DEFAULT,
        rule="long-input",
        below_threshold=True,
        plan=["groq/llama-3.3-70b-versatile"],
        passed_over=[("ollama/llama3.2", R.SKIP_REASON_CONTEXT_WINDOW)],
        signals={"long_input": "true"},
    ),
    row(
        "no tools (an operator override)",
        "What's the weather in Lima?",
        request={"tools": 1, "task": rpb.TASK_VISION},
        overrides={"gemini/gemini-2.5-flash": {"tools": False}},
        entry="vision",
        task="vision",
        source=CALLER,
        plan=["openai/gpt-4o"],
        passed_over=[("gemini/gemini-2.5-flash", R.SKIP_REASON_NO_TOOLS)],
    ),
    row(
        "cannot force a tool",
        "Look it up.",
        request={"tools": 1, "tool_choice": "required"},
        entry="agent",
        task="agent",
        rule="tools-present",
        plan=AGENT[:2],
        passed_over=[("zai/glm-4.7", R.SKIP_REASON_CANNOT_FORCE_TOOL)],
    ),
    row(
        "no JSON schema",
        "Look it up.",
        request={"tools": 1, "json_schema": True},
        entry="agent",
        task="agent",
        rule="tools-present",
        plan=[AGENT[1]],
        passed_over=[
            (AGENT[0], R.SKIP_REASON_NO_JSON_SCHEMA),
            (AGENT[2], R.SKIP_REASON_NO_JSON_SCHEMA),
        ],
    ),
    row(
        "no JSON object",
        "Look it up.",
        request={"tools": 1, "json_object": True},
        entry="agent",
        task="agent",
        rule="tools-present",
        plan=AGENT[1:],
        passed_over=[(AGENT[0], R.SKIP_REASON_NO_JSON_OBJECT)],
    ),
    row(
        "no vision",
        FENCE,
        request={"images": 1, "task": rpb.TASK_CODE},
        entry="code",
        task="code",
        source=CALLER,
        plan=[CODE[2]],
        passed_over=[(CODE[0], R.SKIP_REASON_NO_VISION), (CODE[1], R.SKIP_REASON_NO_VISION)],
    ),
    row(
        "no image URLs",
        "What is in this picture?",
        request={"images": 1, "image_url": True},
        entry="vision",
        task="vision",
        rule="image-parts",
        plan=["openai/gpt-4o"],
        passed_over=[("gemini/gemini-2.5-flash", R.SKIP_REASON_NO_IMAGE_URLS)],
    ),
    row(
        "circuit open",
        "What is in this picture?",
        request={"images": 1},
        open_breakers=frozenset({"gemini/gemini-2.5-flash"}),
        entry="vision",
        task="vision",
        rule="image-parts",
        plan=["openai/gpt-4o"],
        passed_over=[("gemini/gemini-2.5-flash", R.SKIP_REASON_CIRCUIT_OPEN)],
    ),
    row(
        "circuit open on the last eligible target: it stays",
        "What is in this picture?",
        request={"images": 1},
        open_breakers=frozenset(VISION),
        entry="vision",
        task="vision",
        rule="image-parts",
        plan=["gemini/gemini-2.5-flash"],
        passed_over=[("openai/gpt-4o", R.SKIP_REASON_CIRCUIT_OPEN)],
    ),
    row(
        "circuit open on every target of the entry: the default's closed one serves",
        FENCE,
        open_breakers=frozenset(CODE),
        entry="default",
        task="code",
        source=DEFAULT,
        rule="code-fences",
        plan=["zai/glm-4.5-flash"],
        passed_over=[(target, R.SKIP_REASON_CIRCUIT_OPEN) for target in CODE],
    ),
    row(
        "circuit open on every target of the caller's entry: the default, still the caller's",
        FENCE,
        request={"task": rpb.TASK_CODE},
        open_breakers=frozenset(CODE),
        entry="default",
        task="code",
        source=CALLER,
        plan=["zai/glm-4.5-flash"],
        passed_over=[(target, R.SKIP_REASON_CIRCUIT_OPEN) for target in CODE],
    ),
    row(
        "circuit open on the entry and on the default: the entry's first stays",
        FENCE,
        open_breakers=frozenset({*CODE, "zai/glm-4.5-flash"}),
        entry="code",
        task="code",
        rule="code-fences",
        plan=[CODE[0]],
        passed_over=[(target, R.SKIP_REASON_CIRCUIT_OPEN) for target in CODE[1:]],
    ),
    row(
        "budget: the tier's ceiling",
        "Ana is 31.",
        request={"json_schema": True, "cost_tier": rpb.COST_TIER_LOW},
        max_call_usd={"low": 0.001},
        entry="extraction",
        task="extraction",
        rule="json-schema",
        plan=["openai/gpt-4o-mini"],
        passed_over=[("gemini/gemini-2.5-flash", R.SKIP_REASON_BUDGET)],
    ),
    row(
        "not configured",
        "Look it up.",
        request={"tools": 1},
        unconfigured=frozenset({common.PROVIDER_ANTHROPIC}),
        entry="agent",
        task="agent",
        rule="tools-present",
        plan=AGENT[1:],
        passed_over=[(AGENT[0], R.SKIP_REASON_NOT_CONFIGURED)],
    ),
    row(
        "provider refuses: Z.AI takes one stop sequence",
        FENCE,
        request={"stop": ("a", "b")},
        entry="code",
        task="code",
        rule="code-fences",
        plan=CODE[1:],
        passed_over=[(CODE[0], R.SKIP_REASON_PROVIDER_REFUSES)],
    ),
    # -- falling to the default entry, stickiness ------------------------------------------
    row(
        "every target of the entry excluded: the default entry",
        HAN,
        overrides={"zai/glm-4.7": {"context_window": 8}},
        entry="default",
        task="translation",
        source=DEFAULT,
        rule="cjk-text",
        plan=["zai/glm-4.5-flash"],
        passed_over=[("zai/glm-4.7", R.SKIP_REASON_CONTEXT_WINDOW)],
        signals={"chinese": "true"},
    ),
    row(
        "a session's target goes first",
        FENCE,
        request={"session_id": "s1"},
        session_target="openrouter/anthropic/claude-sonnet-4.5",
        entry="code",
        task="code",
        rule="code-fences",
        plan=[CODE[2], CODE[0], CODE[1]],
        sticky=True,
    ),
    row(
        "a session's target that cannot serve: decided afresh",
        "What is in this picture?",
        request={"session_id": "s1", "images": 1},
        session_target="zai/glm-4.5-flash",
        entry="vision",
        task="vision",
        rule="image-parts",
        plan=VISION,
        signals={"sticky_broken": "no-vision"},
    ),
    # -- the errors ---------------------------------------------------------------------------
    row(
        "nothing eligible: NO_ELIGIBLE_TARGET with the fields",
        HAN,
        request={"stop": ("a", "b")},
        task="translation",
        source=DEFAULT,
        rule="cjk-text",
        passed_over=[
            ("zai/glm-4.7", R.SKIP_REASON_PROVIDER_REFUSES),
            ("zai/glm-4.5-flash", R.SKIP_REASON_PROVIDER_REFUSES),
        ],
        error=(
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.ERROR_REASON_NO_ELIGIBLE_TARGET,
            ("sampling.stop",),
        ),
    ),
    row(
        "only key patterns: MODEL_NOT_ALLOWED",
        key=("groq/*",),
        task="chat",
        source=DEFAULT,
        rule="no-signal",
        passed_over=[("zai/glm-4.5-flash", R.SKIP_REASON_KEY_MODEL_PATTERNS)],
        error=(grpc.StatusCode.PERMISSION_DENIED, pb.ERROR_REASON_MODEL_NOT_ALLOWED, ()),
    ),
]


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> tuple[RouteTable, RoutingSettings]:
    settings = load_settings(tmp_path_factory.mktemp("readme"), readme_example_toml())
    return route_table(settings), settings.routing


def _decide(r: Row, routes: RouteTable, routing: RoutingSettings) -> Any:
    settings = dataclasses.replace(
        routing,
        max_call_usd=r.max_call_usd or routing.max_call_usd,
        min_confidence=r.min_confidence if r.min_confidence is not None else routing.min_confidence,
    )
    key = caller_key(*r.key) if r.key is not None else None
    sticky = StickySessions(ttl=60, max_sessions=10, clock=lambda: 0.0)
    if r.session_target is not None:
        sticky.served(sticky_key(key.id if key else None, r.route, "s1"), r.session_target)
    view = FakeView(
        unconfigured=r.unconfigured, open_breakers=r.open_breakers, overrides=r.overrides
    )
    return decide(
        make_request(**r.request, model=r.route),
        routes.resolve(r.route),
        key=key,
        view=view,
        sticky=sticky,
        settings=settings,
    )


@pytest.mark.parametrize("r", ROWS, ids=[r.id for r in ROWS])
def test_golden(r: Row, example: tuple[RouteTable, RoutingSettings]) -> None:
    routes, routing = example
    if r.error is not None:
        with pytest.raises(GatewayError) as caught:
            _decide(r, routes, routing)
        code, reason, fields = r.error
        error = caught.value
        assert (error.code, error.reason) == (code, reason)
        assert tuple(v.field for v in error.field_violations) == fields
        # The message names every target passed over.
        for target, _ in r.passed_over:
            assert target in error.message
        return
    decision = _decide(r, routes, routing)
    got = {
        "entry": decision.entry,
        "task": decision.task.value,
        "source": decision.source,
        "rule": decision.rule,
        "plan": tuple(route.target for route in decision.plan.routes),
        "passed_over": tuple((s.target, s.reason) for s in decision.passed_over),
        "sticky": decision.sticky,
        "below_threshold": decision.below_threshold,
    }
    want = {
        "entry": r.entry,
        "task": r.task,
        "source": r.source,
        "rule": r.rule,
        "plan": tuple(r.plan),
        "passed_over": tuple(r.passed_over),
        "sticky": r.sticky,
        "below_threshold": r.below_threshold,
    }
    assert got == want
    for name, value in r.signals.items():
        assert decision.signals.get(name) == value
    # Every plan route asks in the route's name.
    assert {route.requested for route in decision.plan.routes} == {r.route}


def test_the_rows_cover_every_entry_of_every_route_in_the_example(
    example: tuple[RouteTable, RoutingSettings],
) -> None:
    routes, _ = example
    configured = {(name, entry) for name in routes.names for entry in routes.resolve(name).entries}
    covered = {(r.route, r.entry) for r in ROWS if r.error is None}
    assert configured <= covered, configured - covered


def test_the_rows_cover_every_reason_the_decision_gives() -> None:
    decided = set(rpb.SkipReason.values()) - {
        rpb.SKIP_REASON_UNSPECIFIED,
        rpb.SKIP_REASON_FAILED,  # the dispatcher's, at run time
    }
    covered = {reason for r in ROWS for _, reason in r.passed_over}
    assert decided <= covered, [rpb.SkipReason.Name(v) for v in decided - covered]
