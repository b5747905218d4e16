"""`llmgateway health`: one grpc.health.v1 Check, as an exit code.

Made for a container's HEALTHCHECK and a Kubernetes exec probe, which run it
every few seconds: it imports grpc and the health messages only, not the
server or the client CLI, so it starts in a fraction of the time `serve` does.

Exit codes: 0 SERVING; 1 the gateway answered but the service is not serving
(NOT_SERVING, UNKNOWN, or SERVICE_UNKNOWN for a name it does not know);
2 no answer (unreachable, the deadline passed, not a gRPC health server, a bad
option or an unreadable certificate file).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

SERVING = 0
NOT_SERVING = 1
NO_ANSWER = 2

# The same default as `chat` and `models`: where `serve` and `demo --keep-running` listen.
TARGET_VARIABLE = "LLMGATEWAY_TARGET"
DEFAULT_TARGET = "localhost:50051"
DEFAULT_TIMEOUT_SECONDS = 5.0

DESCRIPTION = (
    "Ask a gateway's gRPC health service (grpc.health.v1.Health/Check) whether it serves. "
    "Prints the status; exits 0 when SERVING, 1 when NOT_SERVING, UNKNOWN or SERVICE_UNKNOWN, "
    "2 when there is no answer (unreachable, past the timeout, or bad options)."
)


def add_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `health` to the `llmgateway` command's subcommands."""
    configure(commands.add_parser("health", help="check a gateway's health (for probes)"))


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of `llmgateway health`."""
    parser.description = DESCRIPTION
    parser.add_argument(
        "--target",
        default=None,
        help=f"HOST:PORT of the gateway (default: ${TARGET_VARIABLE}, else {DEFAULT_TARGET})",
    )
    parser.add_argument(
        "--service",
        default="",
        help="service to check: empty for the whole gateway (default), "
        "llmgateway.v1.CompletionService, or provider/openrouter, provider/zai, ...",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT_SECONDS,
        help=f"seconds to wait for the answer (default {DEFAULT_TIMEOUT_SECONDS:g})",
    )
    parser.add_argument("--tls", action="store_true", help="connect over TLS (system CA roots)")
    parser.add_argument(
        "--ca-file",
        type=Path,
        help="PEM CA certificate(s) to verify the gateway with (implies --tls)",
    )
    # Spelled as `chat` and `models` spell them; --cert-file/--key-file also work.
    parser.add_argument(
        "--tls-cert",
        "--cert-file",
        dest="cert_file",
        type=Path,
        help="PEM client certificate, for a gateway that requires mTLS",
    )
    parser.add_argument(
        "--tls-key", "--key-file", dest="key_file", type=Path, help="PEM private key of --tls-cert"
    )
    parser.add_argument(
        "--server-name",
        metavar="NAME",
        help="the name the gateway's certificate is checked against, instead of --target's "
        "host (implies --tls): a probe on 127.0.0.1 of a certificate for the Service's DNS name",
    )


def main(argv: list[str]) -> int:
    """`llmgateway health ARGS`, parsed on its own (the fast path of the console script)."""
    parser = argparse.ArgumentParser(prog="llmgateway health")
    configure(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Check once; print the status (stdout) or why there is none (stderr); the exit code."""
    target = args.target or os.environ.get(TARGET_VARIABLE) or DEFAULT_TARGET
    # Before grpc is imported: gRPC core's own log lines (a failed TLS handshake,
    # say) would come on top of the one line this command prints. An operator's
    # GRPC_VERBOSITY wins.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")
    try:
        credentials = _credentials(args)
    except _UnusableOptionError as exc:
        print(f"llmgateway health: {exc}", file=sys.stderr)
        return NO_ANSWER

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    channel = (
        grpc.insecure_channel(target)
        if credentials is None
        else grpc.secure_channel(target, credentials, options=_name_options(args.server_name))
    )
    with channel:
        # Its published stubs leave Check out of HealthStub's type.
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(
                health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout
            )
        except grpc.RpcError as exc:
            return _report_error(exc, target, args)
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
    print(status)
    return SERVING if reply.status == health_pb2.HealthCheckResponse.SERVING else NOT_SERVING


def _report_error(exc: grpc.RpcError, target: str, args: argparse.Namespace) -> int:
    import grpc

    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = _one_line(exc.details() if isinstance(exc, grpc.Call) else str(exc))
    if code == grpc.StatusCode.NOT_FOUND:
        # What the health service answers for a name it does not serve.
        print(f"SERVICE_UNKNOWN: {target} serves no service named {args.service!r}")
        return NOT_SERVING
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        print(
            f"llmgateway health: no answer from {target} within {args.timeout:g} s",
            file=sys.stderr,
        )
    elif code == grpc.StatusCode.UNAVAILABLE:
        print(f"llmgateway health: no answer from {target}: {details}", file=sys.stderr)
    elif code == grpc.StatusCode.UNIMPLEMENTED:
        print(f"llmgateway health: {target} does not serve grpc.health.v1.Health", file=sys.stderr)
    else:
        print(f"llmgateway health: {target} answered {code.name}: {details}", file=sys.stderr)
    return NO_ANSWER


class _UnusableOptionError(Exception):
    """An option that cannot be used: said in one line, exit code 2."""


def _credentials(args: argparse.Namespace) -> grpc.ChannelCredentials | None:
    if (args.cert_file is None) != (args.key_file is None):
        raise _UnusableOptionError("--tls-cert and --tls-key go together")
    if not (args.tls or args.ca_file or args.cert_file or args.server_name):
        return None
    import grpc

    return grpc.ssl_channel_credentials(
        root_certificates=_read(args.ca_file, "--ca-file"),
        private_key=_read(args.key_file, "--tls-key"),
        certificate_chain=_read(args.cert_file, "--tls-cert"),
    )


def _name_options(server_name: str | None) -> list[tuple[str, str]]:
    """Check the certificate against `server_name`, and say it as the :authority,
    as a caller of that name would."""
    if not server_name:
        return []
    return [
        ("grpc.ssl_target_name_override", server_name),
        ("grpc.default_authority", server_name),
    ]


def _read(path: Path | None, option: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise _UnusableOptionError(f"{option}: cannot read {path}: {exc.strerror or exc}") from exc


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not (seconds > 0 and math.isfinite(seconds)):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, got {text!r}")
    return seconds


def _one_line(text: str | None) -> str:
    return " ".join((text or "").split())


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
