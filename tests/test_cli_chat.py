"""`llmgateway chat` and `models`: scripted with grpcio-testing, and once for real."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import io
import json
import os
import subprocess
import sys
import threading
import time

import grpc
import grpc_testing
import pytest
from google.rpc import error_details_pb2, status_pb2

from bench.processes import free_port
from llmgateway.client.cli import add_commands, run
from llmgateway.client.render import decision_lines
from llmgateway.client.sync_client import CompletionClient
from llmgateway.server.config import Settings
from llmgateway.server.process.server import start_gateway
from llmgateway.server.state.db import Database
from llmgateway.server.state.keys import KeyStore
from llmgateway.server.state.schema import migrate
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import routing_pb2 as rpb

SERVICE = pb.DESCRIPTOR.services_by_name["CompletionService"]
_CLI_VARIABLES = ("LLMGATEWAY_TARGET", "LLMGATEWAY_API_KEY")


def parse(*argv):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


class Scripted:
    """Runs the CLI in a thread against a grpc_testing channel the test answers."""

    def __init__(self, *argv, stdin=""):
        self.channel = grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())
        self.stdout, self.stderr = io.StringIO(), io.StringIO()
        args = parse("chat", "--target", "scripted", *argv)
        client = CompletionClient(channel=self.channel, timeout=10)
        self.code = None

        def main():
            self.code = run(args, io.StringIO(stdin), self.stdout, self.stderr, client=client)

        self.thread = threading.Thread(target=main)
        self.thread.start()

    def finish(self):
        self.thread.join(timeout=10)
        assert not self.thread.is_alive()
        return self.code


def event(**kwargs):
    return pb.StreamCompleteResponse(**kwargs)


def test_chat_streams_answer_to_stdout_and_the_rest_to_stderr():
    cli = Scripted(
        "zai/glm-4.7",
        "--usage",
        "--system",
        "Be terse.",
        "--temperature",
        "0.2",
        stdin="What is 2+2?",
    )
    _, request, rpc = cli.channel.take_unary_stream(SERVICE.methods_by_name["StreamComplete"])
    assert [(m.role, m.content) for m in request.messages] == [
        (common.ROLE_SYSTEM, "Be terse."),
        (common.ROLE_USER, "What is 2+2?"),
    ]
    assert request.sampling.temperature == 0.2
    rpc.send_response(event(reasoning_delta=pb.ReasoningDelta(text="Add them.")))
    rpc.send_response(event(content_delta=pb.ContentDelta(text="It is ")))
    rpc.send_response(event(content_delta=pb.ContentDelta(text="4.")))
    rpc.send_response(event(tool_call=common.ToolCall(id="c1", name="calc", arguments="{}")))
    rpc.send_response(
        event(
            done=pb.CompletionDone(
                model="zai/glm-4.7",
                finish_reason=common.FINISH_REASON_STOP,
                usage=common.Usage(
                    prompt_tokens=5, completion_tokens=3, total_tokens=8, cost_usd=0.0001
                ),
            )
        )
    )
    rpc.terminate((), grpc.StatusCode.OK, "")
    assert cli.finish() == 0
    assert cli.stdout.getvalue() == "It is 4.\n"
    errors = cli.stderr.getvalue()
    assert "[reasoning] Add them." in errors
    assert "[tool call] calc({})" in errors
    assert "[usage] zai/glm-4.7: 5 prompt (0 cached) + 3 completion" in errors
    assert "$0.000100" in errors


def test_chat_error_prints_status_reason_and_message_and_exits_non_zero():
    cli = Scripted("zai/glm-4.7", "hi")
    _, _, rpc = cli.channel.take_unary_stream(SERVICE.methods_by_name["StreamComplete"])
    rpc.send_response(event(content_delta=pb.ContentDelta(text="Half an ans")))
    # The text is printed as it arrives, before the stream ends.
    deadline = time.monotonic() + 10
    while cli.stdout.getvalue() != "Half an ans" and time.monotonic() < deadline:
        time.sleep(0.01)
    info = error_details_pb2.ErrorInfo(reason="UPSTREAM_STREAM_TRUNCATED", domain="llmgateway.v1")
    status = status_pb2.Status(code=grpc.StatusCode.UNAVAILABLE.value[0], message="cut short")
    status.details.add().Pack(info)
    rpc.terminate(
        (("grpc-status-details-bin", status.SerializeToString()),),
        grpc.StatusCode.UNAVAILABLE,
        "cut short",
    )
    assert cli.finish() == 1
    assert cli.stdout.getvalue() == "Half an ans"
    # The newline that ends the cut-short line goes to stderr, so stdout holds
    # exactly what arrived.
    assert cli.stderr.getvalue() == "\nerror: UNAVAILABLE (UPSTREAM_STREAM_TRUNCATED): cut short\n"


def test_field_problems_the_message_leaves_out_get_a_line_each():
    cli = Scripted("zai/glm-4.7", "hi")
    _, _, rpc = cli.channel.take_unary_stream(SERVICE.methods_by_name["StreamComplete"])
    info = error_details_pb2.ErrorInfo(reason="INVALID_REQUEST", domain="llmgateway.v1")
    bad = error_details_pb2.BadRequest()
    bad.field_violations.add(field="messages[0].role", description="must be set")
    bad.field_violations.add(field="model", description="must not be empty")
    message = "invalid request: model: must not be empty (and 1 more)"
    status = status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=message)
    status.details.add().Pack(info)
    status.details.add().Pack(bad)
    rpc.terminate(
        (("grpc-status-details-bin", status.SerializeToString()),),
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
    )
    assert cli.finish() == 1
    assert cli.stderr.getvalue() == (
        f"error: INVALID_ARGUMENT (INVALID_REQUEST): {message}\n  messages[0].role: must be set\n"
    )


def test_chat_no_stream_and_json():
    cli = Scripted("openrouter/openai/gpt-4o", "hi", "--no-stream", "--json")
    _, request, rpc = cli.channel.take_unary_unary(SERVICE.methods_by_name["Complete"])
    assert request.model == "openrouter/openai/gpt-4o"
    rpc.terminate(
        pb.CompleteResponse(content="Hello", model="openrouter/openai/gpt-4o"),
        (),
        grpc.StatusCode.OK,
        "",
    )
    assert cli.finish() == 0
    assert '"content": "Hello"' in cli.stdout.getvalue()


def test_models_table():
    channel = grpc_testing.channel([SERVICE], grpc_testing.strict_real_time())
    stdout = io.StringIO()
    args = argparse.Namespace(command="models", json=False)
    client = CompletionClient(channel=channel, timeout=10)
    result: dict[str, int] = {}
    thread = threading.Thread(
        target=lambda: result.update(
            code=run(args, io.StringIO(), stdout, io.StringIO(), client=client)
        )
    )
    thread.start()
    _, _, rpc = channel.take_unary_unary(SERVICE.methods_by_name["ListModels"])
    reply = pb.ListModelsResponse(
        models=[
            pb.ModelInfo(
                name="zai/glm-4.7",
                provider=common.PROVIDER_ZAI,
                context_length=204800,
                pricing=pb.ModelPricing(prompt_per_million=0.6, completion_per_million=2.2),
                available=True,
            )
        ]
    )
    rpc.terminate(reply, (), grpc.StatusCode.OK, "")
    thread.join(timeout=10)
    assert result["code"] == 0
    lines = stdout.getvalue().splitlines()
    assert lines[0].split()[:2] == ["MODEL", "CONTEXT"]
    assert lines[1].split() == ["zai/glm-4.7", "204800", "0.6", "2.2", "yes"]


async def _run_cli(*argv, stdin="", env=None):
    # The CLI reads its target and key from the environment: only what a test sets counts.
    inherited = {k: v for k, v in os.environ.items() if k not in _CLI_VARIABLES}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmgateway.server.process.cli",
        *argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**inherited, **(env or {})},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
    return process.returncode, stdout.decode(), stderr.decode()


async def test_chat_against_a_real_gateway(gateway):
    # The gateway runs in this test's event loop, so the CLI must not block it.
    target = f"127.0.0.1:{gateway.port}"
    code, out, err = await _run_cli(
        "chat", "--target", target, "zai/glm-4.7", stdin="Hello from stdin"
    )
    assert code == 0, err
    assert out == "Hello from the fake upstream! You said: Hello from stdin\n"
    code, out, err = await _run_cli("chat", "--target", target, "nonsense", "hi")
    assert code == 1
    assert err.startswith("error: INVALID_ARGUMENT (UNKNOWN_MODEL): unknown model 'nonsense'")
    # The field violation says what the message already said: one line, not two.
    assert err.count("\n") == 1, err
    # Two problems: the message names both, so no line repeats them.
    code, out, err = await _run_cli(
        "chat", "--target", target, "--temperature", "9", "--max-tokens", "-1", "zai/glm-4.7", "hi"
    )
    assert code == 1
    assert err.count("\n") == 1, err
    assert "sampling.temperature: must be in [0.0, 2.0], got 9.0" in err
    assert "sampling.max_tokens: must be 1 to 1048576, got -1" in err


async def test_chat_and_models_take_their_target_from_the_environment(gateway):
    env = {"LLMGATEWAY_TARGET": f"127.0.0.1:{gateway.port}"}
    code, out, err = await _run_cli("chat", "zai/glm-4.7", "hi", env=env)
    assert code == 0, err
    assert out == "Hello from the fake upstream! You said: hi\n"
    code, out, err = await _run_cli("models", env=env)
    assert code == 0, err
    assert "zai/glm-4.7" in out.split()
    # --target still wins over the environment.
    dead = {"LLMGATEWAY_TARGET": f"127.0.0.1:{free_port()}"}
    code, out, err = await _run_cli(
        "models", "--target", f"127.0.0.1:{gateway.port}", "--json", env=dead
    )
    assert code == 0, err
    assert '"name": "zai/glm-4.7"' in out


def test_the_target_defaults_to_localhost_50051(monkeypatch):
    monkeypatch.delenv("LLMGATEWAY_TARGET", raising=False)
    assert parse("models").target == "localhost:50051"
    assert parse("chat", "zai/glm-4.7", "hi").target == "localhost:50051"
    monkeypatch.setenv("LLMGATEWAY_TARGET", "")  # set but empty: as if unset
    assert parse("models").target == "localhost:50051"
    monkeypatch.setenv("LLMGATEWAY_TARGET", "gateway.internal:443")
    assert parse("models").target == "gateway.internal:443"
    assert parse("models", "--target", "other:1").target == "other:1"


async def test_an_unreachable_gateway_is_named_with_the_status_once():
    target = f"127.0.0.1:{free_port()}"
    for argv in (("chat", "zai/glm-4.7", "hi"), ("models",)):
        code, out, err = await _run_cli(*argv, env={"LLMGATEWAY_TARGET": target})
        assert code == 1
        assert out == ""
        # One line, no blank line before it (nothing was cut short), no traceback.
        assert err.startswith(f"error: UNAVAILABLE: cannot reach the gateway at {target}: ")
        assert err.count("\n") == 1, err
        assert "UNAVAILABLE -" not in err


async def test_a_missing_key_says_unauthenticated_once(settings):
    db = Database(settings.db)
    migrate(db)
    KeyStore(db).create("alice")
    db.close()
    running = await start_gateway(settings, address="127.0.0.1:0")
    try:
        env = {"LLMGATEWAY_TARGET": f"127.0.0.1:{running.port}"}
        code, out, err = await _run_cli("chat", "zai/glm-4.7", "hi", env=env)
    finally:
        await running.stop(grace=0)
    assert code == 1
    assert out == ""
    assert err.startswith("error: UNAUTHENTICATED: "), err
    assert err.count("\n") == 1, err
    line = err.strip()
    assert "UNAUTHENTICATED UNAUTHENTICATED" not in line
    assert "(UNAUTHENTICATED)" not in line  # the reason repeats the status: said once
    assert "authorization: Bearer" in line  # the message says what to send
    assert line.endswith("(the CLI sends a key from --api-key or LLMGATEWAY_API_KEY)")


async def test_the_client_distribution_runs_chat_and_models_on_its_own(gateway):
    # `python -m llmgateway.client` needs nothing of the server: the same commands.
    env = {**os.environ, "LLMGATEWAY_TARGET": f"127.0.0.1:{gateway.port}"}
    for argv, expected in (
        (("chat", "zai/glm-4.7", "hi"), "You said: hi"),
        (("models",), "zai/glm-4.7"),
    ):
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "llmgateway.client",
            *argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout=60)
        assert process.returncode == 0, err
        assert expected in out.decode()


def _decision(**fields):
    base = {
        "route": "route/default",
        "task": rpb.TASK_CODE,
        "task_source": rpb.TASK_SOURCE_RULE,
        "rule": "code-fences",
        "confidence": 0.9,
        "entry": "code",
        "chosen": "openrouter/anthropic/claude-sonnet-4.5",
        "estimated_prompt_tokens": 1234,
        "passed_over": [
            rpb.PassedOver(
                target="zai/glm-4.7@coding",
                reason=rpb.SKIP_REASON_CONTEXT_WINDOW,
                detail="8,192 tokens < 1,234 estimated prompt + 8,000 max_tokens (config)",
                id="context-window",
            )
        ],
    }
    return rpb.RoutingDecision(**{**base, **fields})


def test_chat_sends_routing_hints_and_explains_the_decision_after_the_answer():
    cli = Scripted(
        "route/default", "fix it", "--task", "code", "--cost-tier", "low", "--session", "s-1",
        "--explain",
    )  # fmt: skip
    _, request, rpc = cli.channel.take_unary_stream(SERVICE.methods_by_name["StreamComplete"])
    assert request.model == "route/default"
    assert request.routing == rpb.RoutingHints(
        task=rpb.TASK_CODE, cost_tier=rpb.COST_TIER_LOW, session_id="s-1", explain=True
    )
    rpc.send_response(event(content_delta=pb.ContentDelta(text="Done.")))
    decision = _decision(
        task_source=rpb.TASK_SOURCE_CALLER,
        rule="",
        confidence=1.0,
        cost_tier=rpb.COST_TIER_LOW,
        sticky=True,
        plan=["openrouter/anthropic/claude-sonnet-4.5", "zai/glm-4.7"],
        signals={"scanned_chars": "6", "long_input": "false"},
    )
    rpc.send_response(event(done=pb.CompletionDone(model="x", routing=decision)))
    rpc.terminate((), grpc.StatusCode.OK, "")
    assert cli.finish() == 0
    assert cli.stdout.getvalue() == "Done.\n"  # the decision stays out of the answer
    assert cli.stderr.getvalue().splitlines() == [
        "[route] route/default chose openrouter/anthropic/claude-sonnet-4.5 (entry code)",
        "[route] task code: given by the caller",
        "[route] cost tier low",
        (
            "[route] passed over zai/glm-4.7@coding: context-window: "
            "8,192 tokens < 1,234 estimated prompt + 8,000 max_tokens (config)"
        ),
        "[route] sticky: the session's earlier target was kept",
        "[route] estimated prompt: 1,234 tokens",
        "[route] plan: openrouter/anthropic/claude-sonnet-4.5 > zai/glm-4.7",
        "[route] signals: long_input=false, scanned_chars=6",
    ]


def test_chat_without_routing_flags_sends_no_hints():
    cli = Scripted("route/default", "hi")
    _, request, rpc = cli.channel.take_unary_stream(SERVICE.methods_by_name["StreamComplete"])
    assert not request.HasField("routing")
    rpc.send_response(event(done=pb.CompletionDone(model="x", routing=_decision())))
    rpc.terminate((), grpc.StatusCode.OK, "")
    assert cli.finish() == 0
    assert cli.stderr.getvalue() == ""  # a decision is shown only when asked for


def test_explain_on_a_named_model_says_there_was_no_route():
    cli = Scripted("zai/glm-4.7", "hi", "--no-stream", "--explain")
    _, request, rpc = cli.channel.take_unary_unary(SERVICE.methods_by_name["Complete"])
    assert request.routing.explain
    rpc.terminate(pb.CompleteResponse(content="Hello"), (), grpc.StatusCode.OK, "")
    assert cli.finish() == 0
    assert cli.stdout.getvalue() == "Hello\n"
    assert cli.stderr.getvalue() == (
        "[route] none: zai/glm-4.7 is not a route, so it was served as named\n"
    )


def test_no_stream_explain_prints_the_answers_decision():
    cli = Scripted("route/default", "hi", "--no-stream", "--explain")
    _, _, rpc = cli.channel.take_unary_unary(SERVICE.methods_by_name["Complete"])
    reply = pb.CompleteResponse(
        content="Hello", routing=_decision(escalated=True, escalated_from="zai/glm-4.7@coding")
    )
    rpc.terminate(reply, (), grpc.StatusCode.OK, "")
    assert cli.finish() == 0
    errors = cli.stderr.getvalue().splitlines()
    assert "[route] task code: inferred by rule code-fences (confidence 0.90)" in errors
    assert "[route] escalated from zai/glm-4.7@coding, which refused the prompt's length" in errors


def test_explain_only_asks_explain_route_and_prints_the_decision_not_an_answer():
    cli = Scripted("route/default", "--explain-only", "--max-tokens", "8000", stdin="```py\n```")
    _, request, rpc = cli.channel.take_unary_unary(SERVICE.methods_by_name["ExplainRoute"])
    assert request.request.model == "route/default"
    assert request.request.messages[0].content == "```py\n```"
    assert request.request.sampling.max_tokens == 8000
    assert request.request.routing.explain
    rpc.terminate(
        pb.ExplainRouteResponse(decision=_decision()), (), grpc.StatusCode.OK, ""
    )  # fmt: skip
    assert cli.finish() == 0
    assert cli.stdout.getvalue().splitlines()[:2] == [
        "route/default chose openrouter/anthropic/claude-sonnet-4.5 (entry code)",
        "task code: inferred by rule code-fences (confidence 0.90)",
    ]
    assert cli.stderr.getvalue() == ""


def test_explain_only_json_prints_the_decision_as_json():
    cli = Scripted("route/default", "hi", "--explain-only", "--json")
    _, _, rpc = cli.channel.take_unary_unary(SERVICE.methods_by_name["ExplainRoute"])
    rpc.terminate(pb.ExplainRouteResponse(decision=_decision()), (), grpc.StatusCode.OK, "")
    assert cli.finish() == 0
    printed = json.loads(cli.stdout.getvalue())
    assert printed["chosen"] == "openrouter/anthropic/claude-sonnet-4.5"
    assert printed["passed_over"][0]["id"] == "context-window"


@pytest.mark.parametrize(
    ("fields", "line"),
    [
        (
            {"task_source": rpb.TASK_SOURCE_ROUTE_DEFAULT, "below_threshold": True,
             "confidence": 0.4, "entry": "default"},
            ("task code: rule code-fences was not sure enough (confidence 0.40), "
             "so the route's default entry served"),
        ),
        (
            {"task_source": rpb.TASK_SOURCE_ROUTE_DEFAULT, "entry": "default"},
            ("task code: inferred by rule code-fences; the route has no entry for it, "
             "so its default served"),
        ),
        (
            {"task_source": rpb.TASK_SOURCE_ROUTE_DEFAULT, "rule": "", "entry": "default"},
            "task code: no rule fired, so the route's default entry served",
        ),
    ],
)  # fmt: skip
def test_a_default_served_decision_says_why(fields, line):
    assert decision_lines(_decision(**fields))[1] == line


def test_a_failed_target_without_an_id_is_named_by_its_reason():
    decision = _decision(
        passed_over=[rpb.PassedOver(target="zai/glm-4.7", reason=rpb.SKIP_REASON_FAILED)]
    )
    assert "passed over zai/glm-4.7: SKIP_REASON_FAILED" in decision_lines(decision)


def test_an_unknown_task_name_is_refused_by_the_command_line(capsys):
    with pytest.raises(SystemExit) as exited:
        parse("chat", "route/default", "hi", "--task", "cod")
    assert exited.value.code == 2
    problem = capsys.readouterr().err
    assert "argument --task: invalid choice: 'cod'" in problem
    assert "'code'" in problem or " code," in problem  # argparse quotes choices before 3.12.8


_ROUTES = """
[routes.default]
default = "fast"
code = [{ model = "zai/glm-4.7", zai_endpoint = "coding" }, "openrouter/anthropic/claude-sonnet-4.5"]
"""


async def test_chat_routes_explains_and_explains_only_against_a_real_gateway(
    settings, fake, tmp_path
):
    config = tmp_path / "routes.toml"
    config.write_text(_ROUTES, encoding="utf-8")
    routed = dataclasses.replace(settings, routes=Settings.load({}, config).routes)
    running = await start_gateway(routed, address="127.0.0.1:0")
    try:
        target = f"127.0.0.1:{running.port}"
        code, out, err = await _run_cli(
            "chat", "--target", target, "--task", "code", "--explain", "route/default", "hi"
        )
        assert code == 0, err
        assert out == "Hello from the fake upstream! You said: hi\n"
        # After the reasoning (the fake's glm-4.7 reasons), on lines of their own.
        assert [line for line in err.splitlines() if line.startswith("[route]")][:2] == [
            "[route] route/default chose zai/glm-4.7@coding (entry code)",
            "[route] task code: given by the caller",
        ]
        assert "[route] plan: zai/glm-4.7@coding > openrouter/anthropic/claude-sonnet-4.5" in err
        assert len(fake.requests) == 1
        code, out, err = await _run_cli(
            "chat", "--target", target, "route/default", "--explain-only",
            stdin="```py\nprint(1)\n```",
        )  # fmt: skip
        assert code == 0, err
        lines = out.splitlines()
        assert lines[0] == "route/default chose zai/glm-4.7@coding (entry code)"
        assert lines[1].startswith("task code: inferred by rule code-fences (confidence 0.")
        assert len(fake.requests) == 1  # the dry run sent nothing upstream
    finally:
        await running.stop(grace=0)
