"""`llmgateway chat` and `llmgateway models`: the gateway from a terminal."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from google.protobuf import json_format

from llmgateway.client.errors import GatewayError, UnauthenticatedError
from llmgateway.client.hints import COST_TIERS, TASKS, routing
from llmgateway.client.messages import message
from llmgateway.client.render import StreamPrinter, decision_lines, dim
from llmgateway.client.sync_client import CompletionClient
from llmgateway.v1 import completion_pb2 as common

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

    from google.protobuf.message import Message

    from llmgateway.v1 import routing_pb2 as rpb


DEFAULT_TARGET = "localhost:50051"
TARGET_VARIABLE = "LLMGATEWAY_TARGET"


def default_target(environ: Mapping[str, str] = os.environ) -> str:
    """Where `chat` and `models` call without `--target`: $LLMGATEWAY_TARGET, else
    localhost:50051 (where `llmgateway demo --keep-running` and `serve` listen)."""
    return environ.get(TARGET_VARIABLE) or DEFAULT_TARGET


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `chat` and `models` on the llmgateway command."""
    chat = commands.add_parser("chat", help="send a prompt to a gateway and print the answer")
    _connection_arguments(chat)
    chat.add_argument(
        "model",
        help="e.g. zai/glm-4.7, openrouter/openai/gpt-4o, anthropic/claude-sonnet-4-5, "
        "gemini/gemini-2.5-flash, groq/llama-3.3-70b-versatile, ollama/llama3.2, "
        "or a configured route such as route/default",
    )
    chat.add_argument("prompt", nargs="?", help="the prompt (default: read from stdin)")
    chat.add_argument("--system", help="a system message to send first")
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--max-tokens", type=int)
    chat.add_argument("--no-stream", action="store_true", help="one unary call, then print")
    chat.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object per event (or the response) instead of text",
    )
    chat.add_argument(
        "--reasoning",
        choices=["on", "off"],
        help="ask the model to reason, or not (default: the model's own choice)",
    )
    chat.add_argument(
        "--hide-reasoning",
        action="store_true",
        help="do not print the model's reasoning (shown on stderr by default)",
    )
    chat.add_argument("--usage", action="store_true", help="print usage and cost to stderr")
    _routing_arguments(chat)
    models = commands.add_parser("models", help="list the models a gateway routes to")
    _connection_arguments(models)
    models.add_argument("--json", action="store_true", help="print the response as JSON")


def _routing_arguments(chat: argparse.ArgumentParser) -> None:
    routes = chat.add_argument_group(
        "routing", "hints for a route/<name> model (a model named directly ignores them)"
    )
    routes.add_argument(
        "--task", choices=TASKS, help="what the work is (default: the gateway infers it)"
    )
    routes.add_argument("--cost-tier", choices=COST_TIERS, help="the cost band to route within")
    routes.add_argument(
        "--session", metavar="ID", help="keep this conversation's turns on one target"
    )
    routes.add_argument(
        "--explain",
        action="store_true",
        help="print the route's decision after the answer, to stderr",
    )
    routes.add_argument(
        "--explain-only",
        action="store_true",
        help="print the decision the call would get (a dry run: no completion, no spend)",
    )


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target",
        default=default_target(),
        help=f"the gateway's HOST:PORT (default: {TARGET_VARIABLE}, else {DEFAULT_TARGET})",
    )
    parser.add_argument("--tls", action="store_true", help="connect with TLS (system roots)")
    parser.add_argument("--ca-file", type=Path, help="TLS with this CA certificate file")
    parser.add_argument(
        "--tls-cert",
        type=Path,
        help="TLS with this client certificate (PEM), for a gateway that requires mutual TLS",
    )
    parser.add_argument("--tls-key", type=Path, help="the private key (PEM) of --tls-cert")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("LLMGATEWAY_API_KEY"),
        help="sent as authorization: Bearer (default: LLMGATEWAY_API_KEY)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")


def run(
    args: argparse.Namespace,
    stdin: TextIO = sys.stdin,
    stdout: TextIO = sys.stdout,
    stderr: TextIO = sys.stderr,
    client: CompletionClient | None = None,
) -> int:
    """Run `chat` or `models`; the exit code. `client` replaces the one built from args."""
    if client is None:
        problem = _tls_file_problem(args)
        if problem:
            print(f"error: {problem}", file=stderr)
            return 2
        client = CompletionClient(
            args.target,
            tls=args.tls,
            ca_file=args.ca_file,
            cert_file=args.tls_cert,
            key_file=args.tls_key,
            api_key=args.api_key,
            timeout=args.timeout,
        )
    printer = StreamPrinter(
        stdout, stderr, show_reasoning=not getattr(args, "hide_reasoning", False)
    )
    try:
        if args.command == "models":
            return _models(client, args, stdout)
        return _chat(client, args, stdin, stdout, stderr, printer)
    except GatewayError as error:
        stdout.flush()
        if printer.mid_line:
            # End the cut-short line on the terminal; stdout keeps exactly what arrived.
            stderr.write("\n")
        # The status once, the reason only when it adds to it, then the message;
        # then each field's problem the message does not already say.
        hint = _CLI_HINTS.get(type(error), "")
        print(f"error: {error}{hint}", file=stderr)
        for field, problem in error.field_violations.items():
            if problem not in error.message:
                print(f"  {field}: {problem}", file=stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly, as other tools do.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), stdout.fileno())
        return 141
    finally:
        client.close()


# The gateway's messages speak of gRPC metadata; a CLI user needs the option.
_CLI_HINTS: dict[type[GatewayError], str] = {
    UnauthenticatedError: " (the CLI sends a key from --api-key or LLMGATEWAY_API_KEY)",
}


def _tls_file_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with the TLS file options, if anything."""
    if (args.tls_cert is None) != (args.tls_key is None):
        return "--tls-cert and --tls-key go together: a client certificate needs its key"
    for option, path in (
        ("--ca-file", args.ca_file),
        ("--tls-cert", args.tls_cert),
        ("--tls-key", args.tls_key),
    ):
        if path is not None and not path.is_file():
            return f"{option} {path} is not a readable file"
    return None


def _chat(
    client: CompletionClient,
    args: argparse.Namespace,
    stdin: TextIO,
    stdout: TextIO,
    stderr: TextIO,
    printer: StreamPrinter,
) -> int:
    # A prompt piped in ends with the newline of its last line; that is not part of it.
    prompt = args.prompt if args.prompt is not None else stdin.read().rstrip("\n")
    messages = [message("user", prompt)]
    if args.system:
        messages.insert(0, message("system", args.system))
    fields: dict[str, Any] = {}
    if args.temperature is not None or args.max_tokens is not None:
        fields["sampling"] = common.SamplingParams(
            temperature=args.temperature, max_tokens=args.max_tokens
        )
    if args.reasoning is not None:
        fields["reasoning"] = common.ReasoningOptions(enabled=args.reasoning == "on")
    explain_only = getattr(args, "explain_only", False)
    explain = getattr(args, "explain", False) or explain_only
    hints = (
        getattr(args, "task", None),
        getattr(args, "cost_tier", None),
        getattr(args, "session", None),
    )
    if explain or any(hint is not None for hint in hints):
        fields["routing"] = routing(*hints, explain=explain)
    if explain_only:
        decision = client.explain_route(args.model, messages, **fields)
        if args.json:
            print(_json(decision), file=stdout)
        else:
            for line in decision_lines(decision):
                print(line, file=stdout)
        return 0
    if args.no_stream:
        response = client.complete(args.model, messages, **fields)
        if args.json:
            print(_json(response), file=stdout)
        else:
            if response.reasoning and not args.hide_reasoning:
                print(dim(f"[reasoning] {response.reasoning}", stderr), file=stderr)
            for call in response.tool_calls:
                print(f"[tool call] {call.name}({call.arguments})", file=stderr)
            print(response.content, file=stdout)
        if args.usage:
            _print_usage(
                response.usage if response.HasField("usage") else None, response.model, stderr
            )
        if explain:
            _print_decision(
                response.routing if response.HasField("routing") else None, args.model, stderr
            )
        return 0
    for event in client.stream(args.model, messages, **fields):
        if args.json:
            print(_json(event), file=stdout, flush=True)
            if event.HasField("done"):
                printer.done = event.done
        else:
            printer.show(event)
    printer.end()
    if not args.json:
        stdout.write("\n")
    done = printer.done
    if args.usage and done is not None:
        _print_usage(done.usage if done.HasField("usage") else None, done.model, stderr)
    if explain and done is not None:
        _print_decision(done.routing if done.HasField("routing") else None, args.model, stderr)
    return 0


def _models(client: CompletionClient, args: argparse.Namespace, stdout: TextIO) -> int:
    reply = client.list_models()
    if args.json:
        print(_json(reply), file=stdout)
        return 0
    rows = [("MODEL", "CONTEXT", "PROMPT $/M", "COMPLETION $/M", "AVAILABLE")]
    for model in reply.models:
        name = f"{model.name} -> {model.alias_of}" if model.alias_of else model.name
        context = str(model.context_length) if model.HasField("context_length") else "-"
        pricing = model.pricing
        rows.append(
            (
                name,
                context,
                f"{pricing.prompt_per_million:g}"
                if pricing.HasField("prompt_per_million")
                else "-",
                f"{pricing.completion_per_million:g}"
                if pricing.HasField("completion_per_million")
                else "-",
                "yes" if model.available else "no (no API key)",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)),
            file=stdout,
        )
    for provider in reply.incomplete_providers:
        print(
            f"({common.Provider.Name(provider)}'s catalogue could not be fetched just now)",
            file=stdout,
        )
    return 0


def _print_usage(usage: common.Usage | None, model: str, stderr: TextIO) -> None:
    if usage is None:
        print(f"[usage] {model}: not reported", file=stderr)
        return
    cost = f", ${usage.cost_usd:.6f}" if usage.HasField("cost_usd") else ""
    print(
        f"[usage] {model}: {usage.prompt_tokens} prompt ({usage.cached_tokens} cached) + "
        f"{usage.completion_tokens} completion ({usage.reasoning_tokens} reasoning) = "
        f"{usage.total_tokens} tokens{cost}",
        file=stderr,
    )


def _print_decision(decision: rpb.RoutingDecision | None, model: str, stderr: TextIO) -> None:
    if decision is None:
        # Only a route decides; a model or alias named directly is served as named.
        print(f"[route] none: {model} is not a route, so it was served as named", file=stderr)
        return
    for line in decision_lines(decision):
        print(f"[route] {line}", file=stderr)


def _json(message_: Message) -> str:
    return json_format.MessageToJson(message_, indent=None, preserving_proto_field_name=True)
