"""TLS and mutual TLS on the gateway's listener, end to end with a throwaway CA."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import logging
import signal
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.processes import free_port
from llmgateway.client import (
    AsyncCompletionClient,
    CompletionClient,
    GatewayUnreachableError,
    collect,
)
from llmgateway.server.config import ConfigError, Settings, TlsSettings
from llmgateway.server.process.server import start_gateway
from tests.test_cli_chat import parse
from tests.test_server import _exit_of, _serving
from tests.tls import CertificateFiles, make_certificates

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from llmgateway.server.process.server import Gateway


@pytest.fixture
def files(tmp_path: Path) -> CertificateFiles:
    """The server's CA, key and certificate, and a client key and certificate from the same CA."""
    return make_certificates().write(tmp_path / "ca")


@pytest.fixture
def stranger(tmp_path: Path) -> CertificateFiles:
    """Certificates from another CA, unknown to the gateway."""
    return make_certificates(ca_name="some other CA").write(tmp_path / "other")


def tls_env(files: CertificateFiles, *, mutual: bool) -> dict[str, str]:
    env = {
        "LLMGATEWAY_TLS_CERT": str(files.server_cert),
        "LLMGATEWAY_TLS_KEY": str(files.server_key),
    }
    if mutual:
        env["LLMGATEWAY_TLS_CLIENT_CA"] = str(files.ca_cert)
    return env


@contextlib.asynccontextmanager
async def listening(
    settings: Settings, files: CertificateFiles, *, mutual: bool
) -> AsyncIterator[Gateway]:
    """The test gateway, its TLS settings loaded from the environment as `serve` does."""
    tls = Settings.load(tls_env(files, mutual=mutual)).tls
    running = await start_gateway(dataclasses.replace(settings, tls=tls), address="127.0.0.1:0")
    try:
        yield running
    finally:
        await running.stop(grace=0)


def client(gateway: Gateway, **kwargs: Any) -> AsyncCompletionClient:
    # The server certificate names 127.0.0.1 as well as localhost.
    return AsyncCompletionClient(f"127.0.0.1:{gateway.port}", max_attempts=1, timeout=10, **kwargs)


async def refused(gateway: Gateway, **kwargs: Any) -> GatewayUnreachableError:
    async with client(gateway, **kwargs) as rejected:
        with pytest.raises(GatewayUnreachableError) as error:
            await rejected.complete("zai/glm-4.7", "hi")
    return error.value


# -- TLS ---------------------------------------------------------------------------------


async def test_tls_serves_a_client_that_trusts_the_ca(settings, files, fake):
    async with listening(settings, files, mutual=False) as gateway:
        async with client(gateway, ca_file=files.ca_cert) as trusting:
            response = await trusting.complete("zai/glm-4.7", "hi")
        assert response.content
        assert len(fake.requests) == 1


async def test_tls_refuses_a_plaintext_client(settings, files, fake):
    async with listening(settings, files, mutual=False) as gateway:
        error = await refused(gateway)
    assert error.code == grpc.StatusCode.UNAVAILABLE
    assert fake.requests == []


async def test_tls_is_refused_by_a_client_that_does_not_trust_the_ca(settings, files, stranger):
    async with listening(settings, files, mutual=False) as gateway:
        await refused(gateway, ca_file=stranger.ca_cert)


# -- mutual TLS ----------------------------------------------------------------------------


async def test_mtls_serves_a_client_certificate_from_the_client_ca(settings, files, fake):
    async with listening(settings, files, mutual=True) as gateway:
        async with client(
            gateway, ca_file=files.ca_cert, cert_file=files.client_cert, key_file=files.client_key
        ) as trusted:
            response = await trusted.complete("zai/glm-4.7", "hi")
        assert response.content

        def blocking() -> str:
            with CompletionClient(
                f"127.0.0.1:{gateway.port}",
                ca_file=files.ca_cert,
                cert_file=files.client_cert,
                key_file=files.client_key,
                timeout=10,
            ) as sync:
                return collect(sync.stream("zai/glm-4.7", "hi")).text

        assert await asyncio.to_thread(blocking)
    assert len(fake.requests) == 2


async def test_mtls_refuses_a_client_without_a_certificate(settings, files, fake):
    async with listening(settings, files, mutual=True) as gateway:
        error = await refused(gateway, ca_file=files.ca_cert)
        # Refused in the handshake: the channel never became ready, no call reached the service.
        assert error.code == grpc.StatusCode.UNAVAILABLE
        assert "failed to connect" in error.message
    assert fake.requests == []


async def test_mtls_refuses_a_client_certificate_from_another_ca(settings, files, stranger, fake):
    async with listening(settings, files, mutual=True) as gateway:
        error = await refused(
            gateway,
            ca_file=files.ca_cert,
            cert_file=stranger.client_cert,
            key_file=stranger.client_key,
        )
        assert error.code == grpc.StatusCode.UNAVAILABLE
    assert fake.requests == []


async def test_mtls_refuses_a_plaintext_client(settings, files, fake):
    async with listening(settings, files, mutual=True) as gateway:
        await refused(gateway)
    assert fake.requests == []


async def test_models_command_with_a_client_certificate(settings, files):
    async with listening(settings, files, mutual=True) as gateway:
        target = f"127.0.0.1:{gateway.port}"
        stdout, stderr = io.StringIO(), io.StringIO()
        args = parse(
            "models",
            "--target",
            target,
            "--ca-file",
            str(files.ca_cert),
            "--tls-cert",
            str(files.client_cert),
            "--tls-key",
            str(files.client_key),
        )
        from llmgateway.client.cli import run

        code = await asyncio.to_thread(run, args, io.StringIO(), stdout, stderr)
        assert code == 0, stderr.getvalue()
        assert "zai/glm-4.7" in stdout.getvalue()
        without_key = parse(
            "models", "--target", target, "--ca-file", str(files.ca_cert), "--tls-cert", "x.pem"
        )
        stderr = io.StringIO()
        assert run(without_key, io.StringIO(), io.StringIO(), stderr) == 2
        assert "--tls-cert and --tls-key go together" in stderr.getvalue()


def test_client_certificate_needs_its_key(files):
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        CompletionClient("127.0.0.1:1", cert_file=files.client_cert)
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        AsyncCompletionClient("127.0.0.1:1", key_file=files.client_key)


# -- the start-up log ----------------------------------------------------------------------


async def test_start_up_log_says_how_the_listener_is_secured(settings, files, caplog):
    caplog.set_level(logging.INFO, logger="llmgateway.server.process.server")

    def lines() -> list[tuple[int, str]]:
        found = [
            (r.levelno, r.getMessage())
            for r in caplog.records
            if r.name == "llmgateway.server.process.server"
        ]
        caplog.clear()
        return found

    async with listening(settings, files, mutual=True):
        pass
    logged = lines()
    assert any(
        "(mTLS, certificate " in m and f"verified against {files.ca_cert}" in m for _, m in logged
    )
    async with listening(settings, files, mutual=False):
        pass
    assert any(f"(TLS, certificate {files.server_cert})" in m for _, m in lines())
    key_lines = files.server_key.read_text().splitlines()[1:-1]
    assert not any(part in m for part in key_lines for _, m in logged)

    loopback = await start_gateway(settings, address="127.0.0.1:0")
    await loopback.stop(grace=0)
    logged = lines()
    assert any("(plaintext)" in m for _, m in logged)
    assert not [m for level, m in logged if level >= logging.WARNING and "plaintext" in m]

    everywhere = await start_gateway(settings, address="0.0.0.0:0")
    await everywhere.stop(grace=0)
    warnings = [m for level, m in lines() if level == logging.WARNING and "plaintext gRPC" in m]
    assert warnings
    assert "LLMGATEWAY_TLS_CERT" in warnings[0]


# -- configuration -------------------------------------------------------------------------


def test_tls_settings_from_the_environment(files):
    assert Settings.load({}).tls is None
    tls = Settings.load(tls_env(files, mutual=False)).tls
    assert tls == TlsSettings(cert_file=files.server_cert, key_file=files.server_key)
    assert not tls.mutual
    mutual = Settings.load(tls_env(files, mutual=True)).tls
    assert mutual is not None
    assert mutual.mutual
    assert mutual.client_ca_file == files.ca_cert
    assert files.server_key.read_text() not in repr(mutual)


def test_tls_settings_from_the_file_are_relative_to_it(files, tmp_path):
    config = files.ca_cert.parent / "llmgateway.toml"
    config.write_text(
        '[tls]\ncert_file = "server.pem"\nkey_file = "server.key"\nclient_ca_file = "ca.pem"\n'
    )
    tls = Settings.load({}, config).tls
    assert tls == TlsSettings(files.server_cert, files.server_key, files.ca_cert)
    # The environment wins, as for every other setting...
    other = make_certificates().write(tmp_path / "env")
    env = {
        "LLMGATEWAY_TLS_CERT": str(other.server_cert),
        "LLMGATEWAY_TLS_KEY": str(other.server_key),
    }
    assert Settings.load(env, config).tls == TlsSettings(
        other.server_cert, other.server_key, files.ca_cert
    )
    # ... and the pair is checked, whichever source each half came from.
    with pytest.raises(ConfigError, match="do not make a pair"):
        Settings.load({"LLMGATEWAY_TLS_CERT": str(other.server_cert)}, config)


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def _encrypted_key() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )


@pytest.mark.parametrize(
    ("case", "setting", "fix"),
    [
        ("cert without key", "LLMGATEWAY_TLS_CERT", "LLMGATEWAY_TLS_KEY ([tls] key_file) is not"),
        ("key without cert", "LLMGATEWAY_TLS_KEY", "LLMGATEWAY_TLS_CERT ([tls] cert_file) is not"),
        ("client CA alone", "LLMGATEWAY_TLS_CLIENT_CA", "set LLMGATEWAY_TLS_CERT"),
        ("missing cert", "LLMGATEWAY_TLS_CERT", "cannot read"),
        ("missing client CA", "LLMGATEWAY_TLS_CLIENT_CA", "cannot read"),
        ("cert not PEM", "LLMGATEWAY_TLS_CERT", "holds no PEM certificate"),
        ("key not PEM", "LLMGATEWAY_TLS_KEY", "holds no PEM private key"),
        ("certificate as key", "LLMGATEWAY_TLS_KEY", "it holds a certificate: are"),
        ("key as certificate", "LLMGATEWAY_TLS_CERT", "it holds a private key: are"),
        ("client CA not PEM", "LLMGATEWAY_TLS_CLIENT_CA", "holds no PEM certificate"),
        ("key of another cert", "LLMGATEWAY_TLS_KEY", "do not make a pair"),
        ("encrypted key", "LLMGATEWAY_TLS_KEY", "is encrypted"),
        ("client CA garbled", "LLMGATEWAY_TLS_CLIENT_CA", "not a usable CA certificate file"),
    ],
)
def test_a_tls_setting_that_cannot_work_is_named(case, setting, fix, files, stranger, tmp_path):
    env = tls_env(files, mutual=True)
    garbage = b"\x30\x82\x01\x0a not a PEM file"
    changes: dict[str, dict[str, str | None]] = {
        "cert without key": {"LLMGATEWAY_TLS_KEY": None, "LLMGATEWAY_TLS_CLIENT_CA": None},
        "key without cert": {"LLMGATEWAY_TLS_CERT": None},
        "client CA alone": {"LLMGATEWAY_TLS_CERT": None, "LLMGATEWAY_TLS_KEY": None},
        "missing cert": {"LLMGATEWAY_TLS_CERT": str(tmp_path / "nowhere.pem")},
        "missing client CA": {"LLMGATEWAY_TLS_CLIENT_CA": str(tmp_path / "nowhere.pem")},
        "cert not PEM": {"LLMGATEWAY_TLS_CERT": _write(tmp_path / "cert.der", garbage)},
        "key not PEM": {"LLMGATEWAY_TLS_KEY": _write(tmp_path / "key.der", garbage)},
        "certificate as key": {"LLMGATEWAY_TLS_KEY": str(files.server_cert)},
        "key as certificate": {"LLMGATEWAY_TLS_CERT": str(files.server_key)},
        "client CA not PEM": {"LLMGATEWAY_TLS_CLIENT_CA": _write(tmp_path / "ca.der", garbage)},
        "key of another cert": {"LLMGATEWAY_TLS_KEY": str(stranger.server_key)},
        "encrypted key": {"LLMGATEWAY_TLS_KEY": _write(tmp_path / "enc.key", _encrypted_key())},
        "client CA garbled": {
            "LLMGATEWAY_TLS_CLIENT_CA": _write(
                tmp_path / "bad-ca.pem",
                b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
            )
        },
    }
    for name, value in changes[case].items():
        if value is None:
            env.pop(name)
        else:
            env[name] = value
    with pytest.raises(ConfigError) as error:
        Settings.load(env)
    message = str(error.value)
    assert message.startswith(setting), message
    assert fix in message
    # Paths, never key material.
    assert files.server_key.read_text().splitlines()[1] not in message


def test_a_tls_file_setting_must_be_a_string(tmp_path):
    config = tmp_path / "llmgateway.toml"
    config.write_text("[tls]\ncert_file = 3\n")
    with pytest.raises(ConfigError, match=r"\[tls\] cert_file must be a string"):
        Settings.load({}, config)


# -- `llmgateway serve` --------------------------------------------------------------------


async def test_serve_workers_listen_with_mtls_from_the_environment(fake, files):
    """Two workers, each binding the same port with the same credentials."""
    port = free_port()
    env = tls_env(files, mutual=True)
    announced = f"llmgateway listening on 127.0.0.1:{port} (mTLS, certificate {files.server_cert}"
    async with _serving(fake, port, "--workers", "2", **env) as process:
        # Both workers up, so SIGTERM below finds each one serving, not still starting.
        seen = await _until_printed(process, announced, times=2)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=files.ca_cert.read_bytes(),
            private_key=files.client_key.read_bytes(),
            certificate_chain=files.client_cert.read_bytes(),
        )
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
            health: Any = health_pb2_grpc.HealthStub(channel)  # its stubs type only the sync API
            for _ in range(4):
                reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING
        async with grpc.aio.secure_channel(
            f"127.0.0.1:{port}",
            grpc.ssl_channel_credentials(root_certificates=files.ca_cert.read_bytes()),
        ) as anonymous:
            refusing: Any = health_pb2_grpc.HealthStub(anonymous)
            with pytest.raises(grpc.aio.AioRpcError) as no_certificate:
                await refusing.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert no_certificate.value.code() == grpc.StatusCode.UNAVAILABLE
        process.send_signal(signal.SIGTERM)
        code, rest = await _exit_of(process)
    output = seen + rest
    assert code == 0, output
    assert output.count(announced) == 2
    assert "plaintext gRPC" not in output
    for line in files.server_key.read_text().splitlines():
        assert line not in output


async def _until_printed(process: asyncio.subprocess.Process, text: str, times: int) -> str:
    """What `process` printed up to its `times`-th line holding `text`."""
    assert process.stdout is not None
    seen = ""
    while seen.count(text) < times:
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        if not line:
            raise AssertionError(
                f"the process ended before printing {text!r} {times} times: {seen}"
            )
        seen += line.decode()
    return seen


async def test_serve_refuses_a_bad_tls_setting_before_binding(fake, files, tmp_path):
    port = free_port()
    env = tls_env(files, mutual=False)
    env["LLMGATEWAY_TLS_KEY"] = _write(tmp_path / "key.txt", b"hunter2\n")
    async with _serving(fake, port, "--workers", "2", **env) as process:
        code, output = await _exit_of(process)
    assert code == 2, output
    assert "configuration error: LLMGATEWAY_TLS_KEY ([tls] key_file)" in output
    assert "started" not in output
    assert "listening" not in output
