"""The Go load generator (bench/go, built by bench.goload) against a real
gateway and the fake upstream: the JSON bench/loadgen.py prints, errors
counted rather than fatal, metadata and headers delivered."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from typing import TYPE_CHECKING, Any

import pytest

from bench import goload
from bench.processes import issue_caller_key
from llmgateway.server.process.server import start_gateway
from llmgateway.testing.fake_upstream.app import DEFAULT_OPENROUTER_KEY

if TYPE_CHECKING:
    from pathlib import Path

    from llmgateway.server.config import Settings
    from llmgateway.server.process.server import Gateway
    from llmgateway.testing.fake_upstream import FakeUpstream

LOADGEN_KEYS = {"latencies", "ttfts", "errors", "error_samples", "chunks", "wall", "waves"}
CHUNKS = 7


@pytest.fixture(scope="module")
def executable() -> Path:
    # Fails (never skips) when Go cannot be installed, saying what to install.
    return goload.binary()


async def drive(executable: Path, *args: str) -> dict[str, Any]:
    """One run of the binary, without blocking the loop the gateway runs on."""
    process = await asyncio.create_subprocess_exec(
        str(executable),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    raw: dict[str, Any] = json.loads(out)
    assert set(raw) == LOADGEN_KEYS | {"client_cpu_seconds"}
    return raw


def test_go_sources_are_formatted_vetted_and_unit_tested(executable: Path) -> None:
    goload.check()
    assert executable.name == "goload"
    assert executable.parent.name == f"goload-{goload.source_hash()}"


async def test_unary_calls_and_streams_through_the_gateway(
    executable: Path, gateway: Gateway, fake: FakeUpstream
) -> None:
    fake.stream_chunks = CHUNKS
    address = ["--target", "gateway", "--address", f"127.0.0.1:{gateway.port}"]

    unary = await drive(
        executable, *address, "--mode", "unary", "--concurrency", "3", "--requests", "12"
    )
    assert (len(unary["latencies"]), unary["errors"], unary["error_samples"]) == (12, 0, [])
    assert (unary["ttfts"], unary["chunks"], unary["waves"]) == ([], 0, 1)
    assert all(0 < latency <= unary["wall"] for latency in unary["latencies"])
    assert unary["client_cpu_seconds"] >= 0

    streams = await drive(
        executable,
        *address,
        "--mode",
        "stream",
        "--concurrency",
        "4",
        "--waves",
        "2",
        "--channels",
        "1",
    )
    assert (streams["errors"], streams["error_samples"]) == (0, [])
    assert len(streams["latencies"]) == len(streams["ttfts"]) == 8
    assert streams["chunks"] == 8 * CHUNKS
    assert streams["waves"] == 2
    assert all(
        0 < ttft <= total
        for ttft, total in zip(streams["ttfts"], streams["latencies"], strict=True)
    )


async def test_http_target_reads_openai_answers_and_streams(
    executable: Path, fake: FakeUpstream
) -> None:
    fake.stream_chunks = CHUNKS
    http = [
        "--target",
        "direct",
        "--url",
        f"{fake.openrouter_base_url}/chat/completions",
        "--key",
        DEFAULT_OPENROUTER_KEY,
        "--header",
        "X-Bench-Run: go",
    ]
    unary = await drive(
        executable, *http, "--mode", "unary", "--concurrency", "2", "--requests", "6"
    )
    assert (len(unary["latencies"]), unary["errors"]) == (6, 0)
    streams = await drive(executable, *http, "--mode", "stream", "--concurrency", "3")
    assert (len(streams["ttfts"]), streams["chunks"], streams["errors"]) == (3, 3 * CHUNKS, 0)


async def test_a_wrong_key_is_counted_with_its_answer(executable: Path, fake: FakeUpstream) -> None:
    url = f"{fake.openrouter_base_url}/chat/completions"
    raw = await drive(
        executable, "--target", "direct", "--url", url, "--key", "sk-or-wrong-fake", "--mode", "unary",
        "--requests", "3",
    )  # fmt: skip
    assert (raw["latencies"], raw["errors"]) == ([], 3)
    assert all(sample.startswith("HTTP 401") for sample in raw["error_samples"])


@pytest.mark.parametrize("mode", ["unary", "stream"])
async def test_an_unreachable_gateway_is_errors_with_samples_not_a_crash(
    executable: Path, mode: str
) -> None:
    raw = await drive(
        executable, "--target", "gateway", "--address", "127.0.0.1:1", "--mode", mode,
        "--concurrency", "7", "--requests", "7",
    )  # fmt: skip
    assert (raw["latencies"], raw["errors"]) == ([], 7)
    assert len(raw["error_samples"]) == 5
    assert all(sample.startswith("grpc UNAVAILABLE: ") for sample in raw["error_samples"])


async def test_metadata_carries_the_caller_key_to_a_keyed_gateway(
    executable: Path, settings: Settings, tmp_path: Path
) -> None:
    db = str(tmp_path / "keyed.db")
    key = issue_caller_key(db, "goload")
    running = await start_gateway(dataclasses.replace(settings, db=db), address="127.0.0.1:0")
    try:
        address = ["--target", "gateway", "--address", f"127.0.0.1:{running.port}"]
        keyed = await drive(
            executable, *address, "--mode", "unary", "--requests", "4",
            "--metadata", f"Authorization=Bearer {key}",
        )  # fmt: skip
        assert (len(keyed["latencies"]), keyed["errors"]) == (4, 0)
        bare = await drive(executable, *address, "--mode", "unary", "--requests", "2")
        assert bare["errors"] == 2
        assert all(s.startswith("grpc UNAUTHENTICATED: ") for s in bare["error_samples"])
        assert all(key not in s for s in bare["error_samples"] + keyed["error_samples"])
    finally:
        await running.stop(grace=0)
