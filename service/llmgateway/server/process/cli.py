"""The `llmgateway` command: `serve` runs the gateway, `demo` shows it working with no keys,
`keys`, `usage` and `migrate` manage caller keys, read the ledger and migrate the state
database's schema, `chat` and `models` call a gateway,
`health` checks one (for container health checks and Kubernetes probes)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from llmgateway.server.process import health_probe

if TYPE_CHECKING:
    from llmgateway.server.config import Settings


# What `demo` streams from unless --model says: one model of each provider.
DEMO_MODELS = (
    "zai/glm-4.7",
    "openrouter/openai/gpt-4o-mini",
    "openai/gpt-4o-mini",
    "anthropic/claude-sonnet-4-5",
    "gemini/gemini-2.5-flash",
    "groq/llama-3.3-70b-versatile",
    "ollama/llama3.2",
)
# A kept demo listens where every example and `chat`/`models` look by default.
KEPT_DEMO_ADDRESS = "127.0.0.1:50051"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    arguments = sys.argv[1:] if argv is None else argv
    if arguments[:1] == ["health"]:
        # A probe runs every few seconds: skip building the client and admin
        # commands, which import the client, protobuf messages and the state layer.
        return health_probe.main(arguments[1:])
    from llmgateway.server.config import ConfigError

    args = build_parser().parse_args(arguments)
    if args.command == "health":  # after a global option; usually the fast path above
        return health_probe.run(args)
    if args.command in ("chat", "models"):
        from llmgateway.client.cli import run

        return run(args)
    if args.command in ("keys", "usage", "migrate"):
        from llmgateway.server.process import admin_cli

        return admin_cli.run(args)
    from llmgateway.server.observability import logs

    try:
        if args.command == "serve":
            return _run_serve(args)
        logs.configure(args.log_level)
        from llmgateway.server.process.demo import run_demo

        models = args.model or list(DEMO_MODELS)
        import asyncio

        from llmgateway.server.process.ports import ListenError

        try:
            return asyncio.run(run_demo(args.prompt, models, demo_address(args), args.keep_running))
        except ListenError as exc:
            # start_gateway probes the port before it opens anything.
            raise ListenError(
                f"{exc} (is another gateway or demo running there? choose one with --address)"
            ) from exc
    except ConfigError as exc:
        from llmgateway.server.process.ports import ListenError

        kind = "" if isinstance(exc, ListenError) else "configuration error: "
        print(f"llmgateway: {kind}{exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def demo_address(args: argparse.Namespace) -> str:
    """Where `demo` listens: --address; else, kept running, where the examples
    look; else a free loopback port (a one-off demo must not collide with anything)."""
    if args.address:
        return str(args.address)
    return KEPT_DEMO_ADDRESS if args.keep_running else "127.0.0.1:0"


def build_parser() -> argparse.ArgumentParser:
    """The `llmgateway` command line, every subcommand included."""
    from llmgateway.server.process.version import version_text

    parser = argparse.ArgumentParser(prog="llmgateway", description=__doc__)
    parser.add_argument("--version", action="version", version=version_text())
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC gateway")
    serve.add_argument(
        "--address", help="HOST:PORT to listen on (default 0.0.0.0:50051, or LLMGATEWAY_ADDRESS)"
    )
    serve.add_argument("--config", type=Path, help="TOML config file (or LLMGATEWAY_CONFIG)")
    serve.add_argument(
        "--db",
        help="state database: SQLite path or postgresql:// URL (default: LLMGATEWAY_DB, the "
        "config file's [state] db, else the user's data directory)",
    )
    serve.add_argument(
        "--workers",
        type=int,
        help="worker processes sharing the port (default: LLMGATEWAY_WORKERS, else one per core)",
    )
    # Set by the parent of several workers; not for direct use.
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)
    serve.add_argument("--log-level", default="INFO")
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        help="log lines as text or one JSON object each (default: LLMGATEWAY_LOG_FORMAT, "
        "else text)",
    )
    serve.add_argument(
        "--metrics-address",
        help="HOST:PORT serving Prometheus metrics at /metrics (default: "
        "LLMGATEWAY_METRICS_ADDRESS, else none)",
    )

    demo = commands.add_parser(
        "demo", help="start a fake upstream and the gateway, then stream a completion"
    )
    demo.add_argument("prompt", nargs="?", default="Say hello to a new user of llmgateway.")
    demo.add_argument(
        "--model",
        action="append",
        help="model to stream from (repeatable; default: one of each provider)",
    )
    demo.add_argument(
        "--address",
        help=f"HOST:PORT for the demo gateway (default: {KEPT_DEMO_ADDRESS} with --keep-running, "
        "where the README's examples and the client commands look; else a free loopback port)",
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="keep the gateway and fake upstream up afterwards, for the examples and grpcurl",
    )
    demo.add_argument("--log-level", default="WARNING")

    from llmgateway.client.cli import add_commands
    from llmgateway.server.process import admin_cli

    add_commands(commands)
    admin_cli.add_commands(commands)
    health_probe.add_command(commands)
    return parser


def _run_serve(args: argparse.Namespace) -> int:
    """`llmgateway serve`: one process, or a parent of several workers."""
    from llmgateway.server.config import ConfigError, Settings
    from llmgateway.server.observability import logs

    settings = Settings.load(os.environ, args.config)
    if args.address:
        settings = _with_address(settings, args.address)
    if args.db:
        # Workers read their settings from the environment, as this process did.
        os.environ["LLMGATEWAY_DB"] = args.db
        settings = Settings.load(os.environ, args.config)
        if args.address:
            settings = _with_address(settings, args.address)
    settings = _with_observability(settings, args)
    logs.configure(args.log_level, settings.log_format)
    if not args.reuse_port:  # said once, by the parent, not again by each worker
        import logging

        for warning in settings.environment_warnings:
            logging.getLogger("llmgateway.server.config").warning(warning)
    workers = args.workers if args.workers is not None else _workers_from_env()
    if workers < 1:
        raise ConfigError(f"--workers must be 1 or more, got {workers}")
    if workers > 1:
        from llmgateway.server.process.restart_policy import RestartPolicy
        from llmgateway.server.process.workers import run_workers

        return run_workers(
            settings.address,
            workers,
            args.config,
            args.log_level,
            log_format=settings.log_format,
            metrics_address=settings.metrics_address,
            restart_policy=RestartPolicy(
                crash_limit=settings.worker_crash_limit,
                crash_window=settings.worker_crash_window,
            ),
            shutdown_seconds=settings.shutdown_delay + settings.shutdown_grace,
        )
    if args.reuse_port:
        from llmgateway.server.process.workers import die_with_parent

        die_with_parent()
    # asyncio is imported here, not at the top: the parent of several
    # workers never runs an event loop and stays ~7 MB smaller without it.
    import asyncio

    asyncio.run(_serve(settings, reuse_port=args.reuse_port))
    return 0


async def _serve(settings: Settings, *, reuse_port: bool) -> None:
    from llmgateway.server.process.server import serve

    # A worker of several leaves /metrics to its parent, which sums them all.
    await serve(settings, reuse_port=reuse_port, serve_metrics=not reuse_port)


def _workers_from_env() -> int:
    from llmgateway.server.config import ConfigError
    from llmgateway.server.process.workers import default_workers

    raw = os.environ.get("LLMGATEWAY_WORKERS")
    if not raw:
        return default_workers()
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"LLMGATEWAY_WORKERS must be a whole number, got {raw!r}") from exc


def _with_address(settings: Settings, address: str) -> Settings:
    import dataclasses

    return dataclasses.replace(settings, address=address)


def _with_observability(settings: Settings, args: argparse.Namespace) -> Settings:
    """`settings` with --log-format and --metrics-address, when given."""
    import dataclasses

    from llmgateway.server.config import metrics_address

    if args.log_format:
        settings = dataclasses.replace(settings, log_format=args.log_format)
    if args.metrics_address is not None:
        address = metrics_address(args.metrics_address)
        settings = dataclasses.replace(settings, metrics_address=address)
    return settings


if __name__ == "__main__":
    raise SystemExit(main())
