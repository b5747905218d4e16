"""`llmgateway health` and `llmgateway --version`, run as a user (or a probe) runs them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from importlib import metadata
from typing import TYPE_CHECKING

import pytest
from grpc_health.v1 import health_pb2

from bench.processes import free_port
from tests.test_tls_listener import listening
from tests.tls import CertificateFiles, make_certificates

if TYPE_CHECKING:
    from pathlib import Path

    from llmgateway.server.config import Settings
    from llmgateway.server.process.server import Gateway


@pytest.fixture
def files(tmp_path: Path) -> CertificateFiles:
    """A throwaway CA, the gateway's certificate for localhost and a client certificate."""
    return make_certificates().write(tmp_path / "ca")


async def health(*args: str, **env_extra: str) -> tuple[int, str, str]:
    """`llmgateway health ARGS` in a subprocess: (exit code, stdout, stderr). Async, so
    a gateway running on this test's event loop can answer it."""
    env = {k: v for k, v in os.environ.items() if k not in ("LLMGATEWAY_TARGET", "GRPC_VERBOSITY")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "llmgateway.server.process.cli",
        "health",
        *args,
        env={**env, **env_extra},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_health_of_a_serving_gateway_exits_0(gateway: Gateway) -> None:
    code, stdout, stderr = await health("--target", f"127.0.0.1:{gateway.port}")
    assert (code, stdout, stderr) == (0, "SERVING\n", "")


async def test_health_takes_its_target_from_the_environment(gateway: Gateway) -> None:
    code, stdout, _ = await health(LLMGATEWAY_TARGET=f"127.0.0.1:{gateway.port}")
    assert (code, stdout) == (0, "SERVING\n")


async def test_health_of_a_configured_provider_and_of_the_service(gateway: Gateway) -> None:
    target = f"127.0.0.1:{gateway.port}"
    for service in ("provider/zai", "llmgateway.v1.CompletionService"):
        code, stdout, _ = await health("--target", target, "--service", service)
        assert (code, stdout) == (0, "SERVING\n"), service


async def test_health_of_a_service_not_serving_exits_1(gateway: Gateway) -> None:
    await gateway.health.set("provider/zai", health_pb2.HealthCheckResponse.NOT_SERVING)
    code, stdout, stderr = await health(
        "--target", f"127.0.0.1:{gateway.port}", "--service", "provider/zai"
    )
    assert (code, stdout, stderr) == (1, "NOT_SERVING\n", "")


async def test_health_of_a_draining_gateway_exits_1(gateway: Gateway) -> None:
    await gateway.health.enter_graceful_shutdown()
    code, stdout, _ = await health("--target", f"127.0.0.1:{gateway.port}")
    assert (code, stdout) == (1, "NOT_SERVING\n")


async def test_health_of_an_unknown_service_exits_1(gateway: Gateway) -> None:
    code, stdout, stderr = await health(
        "--target", f"127.0.0.1:{gateway.port}", "--service", "provider/nobody"
    )
    assert code == 1
    assert stdout.startswith("SERVICE_UNKNOWN: ")
    assert "'provider/nobody'" in stdout
    assert stderr == ""


async def test_health_of_a_closed_port_exits_2_with_one_line() -> None:
    port = free_port()
    code, stdout, stderr = await health("--target", f"127.0.0.1:{port}")
    assert code == 2
    assert stdout == ""
    assert len(stderr.splitlines()) == 1
    assert stderr.startswith(f"llmgateway health: no answer from 127.0.0.1:{port}: ")
    assert "Traceback" not in stderr


async def test_health_over_tls_verified_with_a_ca_file(
    settings: Settings, files: CertificateFiles
) -> None:
    async with listening(settings, files, mutual=False) as tls_gateway:
        target = f"localhost:{tls_gateway.port}"
        code, stdout, _ = await health("--target", target, "--ca-file", str(files.ca_cert))
        assert (code, stdout) == (0, "SERVING\n")
        # Plaintext to a TLS listener: no answer, one line, no gRPC core log lines.
        code, stdout, stderr = await health("--target", target, "--timeout", "3")
        assert (code, stdout) == (2, "")
        assert len(stderr.splitlines()) == 1, stderr


async def test_health_checks_the_certificate_against_server_name(
    settings: Settings, tmp_path: Path
) -> None:
    """A Kubernetes exec probe dials its own pod (localhost) and checks the
    certificate issued for the Service's DNS name, not for localhost."""
    service = "llmgateway.default.svc.cluster.local"
    files = make_certificates(host=service).write(tmp_path / "ca")
    async with listening(settings, files, mutual=False) as tls_gateway:
        target = f"localhost:{tls_gateway.port}"
        ca = ("--ca-file", str(files.ca_cert), "--timeout", "3")
        code, stdout, _ = await health("--target", target, *ca, "--server-name", service)
        assert (code, stdout) == (0, "SERVING\n")
        # Checked, not skipped: the target's own name, or another, does not verify.
        for wrong in ((), ("--server-name", "other.example")):
            code, stdout, stderr = await health("--target", target, *ca, *wrong)
            assert (code, stdout) == (2, ""), wrong
            assert stderr.startswith(f"llmgateway health: no answer from {target}: "), stderr
            assert len(stderr.splitlines()) == 1, stderr


async def test_health_over_mtls_with_a_client_certificate(
    settings: Settings, files: CertificateFiles
) -> None:
    async with listening(settings, files, mutual=True) as mtls_gateway:
        target = f"localhost:{mtls_gateway.port}"
        ca = ("--ca-file", str(files.ca_cert))
        code, stdout, _ = await health(
            "--target",
            target,
            *ca,
            "--tls-cert",
            str(files.client_cert),
            "--tls-key",
            str(files.client_key),
        )
        assert (code, stdout) == (0, "SERVING\n")
        # The --cert-file/--key-file spellings name the same options.
        code, stdout, _ = await health(
            "--target",
            target,
            *ca,
            "--cert-file",
            str(files.client_cert),
            "--key-file",
            str(files.client_key),
        )
        assert (code, stdout) == (0, "SERVING\n")
        code, stdout, stderr = await health("--target", target, *ca, "--timeout", "3")
        assert (code, stdout) == (2, "")
        assert len(stderr.splitlines()) == 1, stderr


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--timeout", "0"], "--timeout: must be a number of seconds above 0"),
        (["--timeout", "soon"], "--timeout: must be a number of seconds above 0"),
        (["--ca-file", "/nonexistent/ca.pem"], "--ca-file: cannot read /nonexistent/ca.pem"),
        (["--tls-cert", "client.pem"], "--tls-cert and --tls-key go together"),
    ],
)
async def test_health_refuses_bad_options_with_exit_code_2(args: list[str], said: str) -> None:
    code, stdout, stderr = await health(*args)
    assert code == 2
    assert stdout == ""
    assert said in stderr
    assert "Traceback" not in stderr


def test_health_does_not_import_the_server_or_the_client() -> None:
    """What makes it quick to start, as a probe run every few seconds needs."""
    program = (
        "import sys\n"
        "from llmgateway.server.process import cli\n"
        "cli.main(['health', '--target', '127.0.0.1:1', '--timeout', '1'])\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(("
        "'llmgateway.server.config', 'llmgateway.server.state', 'llmgateway.client', "
        "'llmgateway.v1', 'llmgateway.server.process.server', 'httpx')))\n"
        "print(heavy)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout == "[]\n", done.stdout + done.stderr


def test_version_names_both_distributions_and_the_contract() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "llmgateway.server.process.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    server, client = metadata.version("llmgateway"), metadata.version("llmgateway-client")
    assert done.stdout == (
        f"llmgateway {server} (llmgateway-client {client}, contract llmgateway.v1)\n"
    )
    assert server == "0.4.0"
