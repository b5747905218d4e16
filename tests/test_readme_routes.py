"""The README's Routes section, as a new user meets it: a gateway started from
the README's example config file (`serve --config` with the fake upstream's
environment), then what the section shows, checked against what the gateway
answers over gRPC: its config blocks, its Python snippet's printed lines, its
"Reading a decision" block, a route for each task (named by the caller and
inferred), the `llmgateway.route.*` attributes a real routed call leaves on
its server span, and the figures its limits paragraph quotes from
docs/routing.md's generated section.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import subprocess
import sys
import tomllib
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import text_format
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from llmgateway.server.config import RoutingSettings, Settings
from llmgateway.server.process.server import start_gateway
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from llmgateway.v1 import routing_pb2 as rpb
from tests.readme import README, readme_example_toml
from tests.routing_fixtures import make_request

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from llmgateway.testing.fake_upstream import FakeUpstream, RecordedRequest

SECTION_TITLE = "### Routes: the gateway picks the model by task"
HAN = "今天天气很好，我们一起去公园散步，然后吃晚饭吧。"


def routes_section() -> str:
    """The README's Routes section, up to the next heading of its level or above."""
    text = README.read_text(encoding="utf-8")
    body = text.split(SECTION_TITLE, 1)[1]
    return re.split(r"\n#{1,3} ", body, maxsplit=1)[0]


def blocks(language: str) -> list[str]:
    """The section's fenced blocks opened with ```language (bare ``` for "")."""
    found: list[str] = []
    opened: str | None = None
    lines: list[str] = []
    for line in routes_section().splitlines():
        if opened is None and line.startswith("```"):
            opened, lines = line.removeprefix("```"), []
        elif opened is not None and line == "```":
            if opened == language:
                found.append("\n".join(lines) + "\n")
            opened = None
        elif opened is not None:
            lines.append(line)
    return found


@dataclasses.dataclass
class Readme:
    """A gateway started from the README's example config over the fake."""

    port: int
    stub: pb_grpc.CompletionServiceAsyncStub
    fake: FakeUpstream
    spans: InMemorySpanExporter

    def sent(self) -> list[tuple[str, str, str]]:
        """(provider, endpoint, model) of every request the fake received."""
        return [_upstream(r) for r in self.fake.requests]


def _upstream(request: RecordedRequest) -> tuple[str, str, str]:
    model = request.body.get("model")
    if not isinstance(model, str):
        # Gemini names the model in the path: /v1beta/models/<model>:generateContent
        model = request.path.rsplit("/", 1)[-1].split(":", 1)[0]
    return request.provider, request.endpoint, model


@pytest.fixture
async def readme(fake: FakeUpstream, tmp_path: Path) -> AsyncIterator[Readme]:
    config = tmp_path / "llmgateway.toml"
    config.write_text(readme_example_toml(), encoding="utf-8")
    settings = Settings.load(
        {**fake.environment(), "LLMGATEWAY_DB": str(tmp_path / "state.db")}, config
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    running = await start_gateway(settings, address="127.0.0.1:0", tracer_provider=provider)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Readme(running.port, pb_grpc.CompletionServiceStub(channel), fake, exporter)
    finally:
        await running.stop(grace=0)
        provider.shutdown()


# -- the section's config blocks ---------------------------------------------------------


def test_the_sections_routes_are_the_example_configs_routes():
    shown = tomllib.loads(blocks("toml")[0])
    example = tomllib.loads(readme_example_toml())
    assert shown["routes"] == example["routes"]


def test_the_optional_knobs_block_loads_and_shows_the_defaults(tmp_path):
    knobs = blocks("toml")[1]
    path = tmp_path / "knobs.toml"
    path.write_text(knobs, encoding="utf-8")
    loaded = Settings.load({}, path)
    defaults = RoutingSettings()
    # "Optional knobs, with their defaults" (max_call_usd has none: it is an example).
    assert loaded.routing.sticky_ttl == defaults.sticky_ttl
    assert loaded.routing.sticky_max_sessions == defaults.sticky_max_sessions
    assert loaded.routing.min_confidence == defaults.min_confidence
    assert dict(loaded.routing.max_call_usd) == {"low": 0.002, "medium": 0.02}
    override = loaded.capabilities["openrouter/x/my-finetune"]
    assert (override.context_window, override.tools, override.json_schema, override.vision) == (
        32768,
        True,
        False,
        False,
    )


# -- what the section prints -------------------------------------------------------------


def _printed_lines_the_snippet_promises(snippet: str) -> list[str]:
    """A `print(...)  # e.g. X` line promises X; a `print(...)` line followed by
    a line holding only `# X` promises X."""
    lines = snippet.splitlines()
    promised = []
    for index, line in enumerate(lines):
        if not line.strip().startswith("print("):
            continue
        if "# e.g. " in line:
            promised.append(line.split("# e.g. ", 1)[1].strip())
        elif index + 1 < len(lines) and lines[index + 1].strip().startswith("# "):
            promised.append(lines[index + 1].strip().removeprefix("# "))
    return promised


async def test_the_python_snippet_prints_what_its_comments_say(readme):
    (snippet,) = [b for b in blocks("python") if "routing=routing(" in b]
    promised = _printed_lines_the_snippet_promises(snippet)
    assert len(promised) == 2, promised
    script = snippet.replace('"localhost:50051"', f'"127.0.0.1:{readme.port}"')
    assert script != snippet
    # The sync client in a subprocess: a new user's script, not this event loop.
    done = await _run(script)
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    for line in promised:
        assert line in printed, (line, printed)
    # The call went to Z.AI's coding endpoint; the explanation sent nothing upstream.
    assert readme.sent() == [("zai", "coding", "glm-4.7")]


async def _run(script: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_the_decision_shown_is_the_one_a_url_image_gets(readme):
    (shown,) = [b for b in blocks("") if b.startswith('route: "route/default"')]
    expected = text_format.Parse(shown, rpb.RoutingDecision())
    request = make_request("What is in this picture?", images=1, image_url=True)
    assert isinstance(request, pb.CompleteRequest)
    answer = await readme.stub.Complete(request, timeout=10)
    assert answer.routing == expected
    explained = await readme.stub.ExplainRoute(pb.ExplainRouteRequest(request=request), timeout=10)
    # ExplainRoute adds the plan and the signals, and is otherwise the same.
    explained.decision.ClearField("plan")
    explained.decision.ClearField("signals")
    assert explained.decision == expected
    assert readme.sent() == [("openai", "openai", "gpt-4o")]


# -- a route for each task -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "entry", "sent"),
    [
        # No chat or reasoning entry: the caller's task, the default entry's targets.
        (rpb.TASK_CHAT, "default", ("zai", "general", "glm-4.5-flash")),
        (rpb.TASK_REASONING, "default", ("zai", "general", "glm-4.5-flash")),
        (rpb.TASK_CODE, "code", ("zai", "coding", "glm-4.7")),
        (rpb.TASK_EXTRACTION, "extraction", ("openai", "openai", "gpt-4o-mini")),
        (rpb.TASK_SUMMARIZATION, "summarization", ("gemini", "gemini", "gemini-2.5-flash")),
        (
            rpb.TASK_TRANSLATION,
            "translation",
            ("openrouter", "openrouter", "anthropic/claude-sonnet-4.5"),
        ),
        (rpb.TASK_AGENT, "agent", ("anthropic", "anthropic", "claude-sonnet-4-5")),
        (rpb.TASK_VISION, "vision", ("gemini", "gemini", "gemini-2.5-flash")),
    ],
    ids=[
        "chat",
        "reasoning",
        "code",
        "extraction",
        "summarization",
        "translation",
        "agent",
        "vision",
    ],
)
async def test_each_task_the_caller_names_is_served_by_its_entry(readme, task, entry, sent):
    request = make_request("hello", task=task)
    answer = await readme.stub.Complete(request, timeout=10)
    assert readme.sent() == [sent]
    decision = answer.routing
    assert (decision.task, decision.task_source, decision.entry) == (
        task,
        rpb.TASK_SOURCE_CALLER,
        entry,
    )
    assert decision.passed_over == []


@pytest.mark.parametrize(
    ("text", "task", "source", "rule", "entry", "sent"),
    [
        (
            "Please summarize the following meeting notes: we agreed to ship on Friday.",
            rpb.TASK_SUMMARIZATION,
            rpb.TASK_SOURCE_RULE,
            "summarize-verb",
            "summarization",
            ("gemini", "gemini", "gemini-2.5-flash"),
        ),
        # A confident rule whose task has no entry: the default entry, ROUTE_DEFAULT,
        # and the rule that fired still named.
        (
            "Prove that the square root of 2 is irrational, step by step.",
            rpb.TASK_REASONING,
            rpb.TASK_SOURCE_ROUTE_DEFAULT,
            "reasoning-markers",
            "default",
            ("zai", "general", "glm-4.5-flash"),
        ),
        # Han-dominant text: `chinese` before `translation`; [zai] coding_models
        # sends glm-4.7 to the coding endpoint.
        (
            HAN,
            rpb.TASK_TRANSLATION,
            rpb.TASK_SOURCE_RULE,
            "cjk-text",
            "chinese",
            ("zai", "coding", "glm-4.7"),
        ),
    ],
    ids=["summarization", "reasoning-without-entry", "chinese"],
)
async def test_an_inferred_task_is_served_as_the_section_says(
    readme, text, task, source, rule, entry, sent
):
    answer = await readme.stub.Complete(make_request(text), timeout=10)
    assert readme.sent() == [sent]
    decision = answer.routing
    assert (decision.task, decision.task_source, decision.rule, decision.entry) == (
        task,
        source,
        rule,
        entry,
    )
    assert not decision.below_threshold


# -- the span of a real routed call ----------------------------------------------------------


async def test_a_routed_calls_server_span_says_how_it_was_decided(readme):
    request = make_request("What is in this picture?", images=1, image_url=True)
    assert isinstance(request, pb.CompleteRequest)
    await readme.stub.Complete(request, timeout=10)
    (server,) = [s for s in readme.spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.attributes is not None
    routing = {k: v for k, v in server.attributes.items() if k.startswith("llmgateway.route")}
    decision_us = routing.pop("llmgateway.route.decision_us")
    assert isinstance(decision_us, float)
    assert decision_us > 0
    assert routing == {
        "llmgateway.route": "route/default",
        "llmgateway.route.task": "vision",
        "llmgateway.route.task_source": "rule:image-parts",
        "llmgateway.route.rule": "image-parts",
        "llmgateway.route.entry": "vision",
        "llmgateway.route.target": "openai/gpt-4o",
        "llmgateway.route.sticky": False,
        "llmgateway.route.escalated": False,
        "llmgateway.route.passed_over": 1,
    }


async def test_a_named_models_span_has_no_routing_attributes_whatever_its_hints(readme):
    request = make_request("hello", model="zai/glm-4.5-flash", task=rpb.TASK_CODE)
    assert isinstance(request, pb.CompleteRequest)
    answer = await readme.stub.Complete(request, timeout=10)
    assert not answer.HasField("routing")
    assert readme.sent() == [("zai", "general", "glm-4.5-flash")]
    (server,) = [s for s in readme.spans.get_finished_spans() if s.kind == SpanKind.SERVER]
    assert server.attributes is not None
    assert not [k for k in server.attributes if k.startswith("llmgateway.route")]


# -- the limits of inference -------------------------------------------------------------------


def test_the_limits_paragraph_quotes_the_generated_figures():
    """docs/routing.md's generated section is kept current by `bench.routing_eval
    --check` (lint); the README's paragraph quotes it and must move with it."""
    docs = (README.parent / "docs" / "routing.md").read_text(encoding="utf-8")
    accuracy = re.search(r"\*\*Accuracy: \d+ / (\d+) = ([\d.]+)%\.\*\*", docs)
    baseline = re.search(r"always-default baseline .*? scores \d+ / \d+ = ([\d.]+)%", docs)
    # The precision and recall table (the confusion matrix's rows hold counts).
    reasoning = re.search(r"\| reasoning \| \d\.\d\d \| (\d\.\d\d) \|", docs)
    assert accuracy
    assert baseline
    assert reasoning
    section = " ".join(routes_section().split())
    rows, rules = accuracy.groups()
    recall = round(float(reasoning.group(1)) * 100)
    assert f"labelled set of {rows} prompts" in section
    assert f"right {rules} % of the time, against {baseline.group(1)} %" in section
    assert f"reasoning is recalled {recall} % of the time" in section
