"""bench.loadgen's gateway target: --channels and --metadata reach a real gateway
(here a keyed one, so the metadata must carry the caller key)."""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bench.cluster_bench import MODEL, Load, Via, load_command
from bench.loadgen import GatewayTarget, build_parser, main_async, metadata_pair, run_unary
from bench.processes import issue_caller_key
from llmgateway.server.process.server import start_gateway

if TYPE_CHECKING:
    from pathlib import Path

    from llmgateway.server.config import Settings


@pytest.fixture
def keyed(settings: Settings, tmp_path: Path) -> tuple[Settings, str]:
    db = str(tmp_path / "keyed.db")
    return dataclasses.replace(settings, db=db), issue_caller_key(db, "loadgen")


async def test_metadata_and_one_channel_reach_a_keyed_gateway(keyed):
    settings, key = keyed
    running = await start_gateway(settings, address="127.0.0.1:0")
    try:
        args = build_parser().parse_args(
            [
                "--target", "gateway", "--mode", "unary", "--requests", "6",
                "--concurrency", "2", "--channels", "1",
                "--address", f"127.0.0.1:{running.port}",
                "--metadata", f"Authorization=Bearer {key}",
                "--metadata", "x-bench-run=a=b",
            ]
        )  # fmt: skip
        assert args.channels == 1
        assert args.metadata == [("authorization", f"Bearer {key}"), ("x-bench-run", "a=b")]
        result = await main_async(args)
        assert (result.errors, len(result.latencies)) == (0, 6)

        # The same load without the key: every call refused, so the key did travel above.
        bare = GatewayTarget(f"127.0.0.1:{running.port}", channels=1)
        try:
            refused = await run_unary(bare, concurrency=1, requests=2, duration=0)
        finally:
            await bare.close()
        assert refused.errors == 2
        assert all("UNAUTHENTICATED" in sample for sample in refused.error_samples)
    finally:
        await running.stop(grace=0)


@given(
    key=st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,15}", fullmatch=True),
    value=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40),
)
def test_metadata_pair_lowercases_the_key_and_keeps_the_value(key, value):
    assert metadata_pair(f"{key}={value}") == (key.lower(), value)


@pytest.mark.parametrize("text", ["authorization", "=Bearer lgw_secret", "Bearer lgw_secret"])
def test_metadata_without_a_key_is_refused_without_echoing_it(text):
    with pytest.raises(argparse.ArgumentTypeError) as caught:
        metadata_pair(text)
    assert "secret" not in str(caught.value)


def test_channels_below_one_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        GatewayTarget("127.0.0.1:1", channels=0)


def test_cluster_bench_drives_its_loads_through_loadgen():
    via = Via("Envoy + 3", "127.0.0.1:10000", "lgw_fake_not_a_key", 3)
    command = load_command(via, Load("200 streams", "stream", 200, waves=2))
    assert command[1:3] == ["-m", "bench.loadgen"]
    args = build_parser().parse_args(command[3:])
    assert (args.target, args.address, args.mode, args.concurrency, args.waves) == (
        "gateway",
        "127.0.0.1:10000",
        "stream",
        200,
        2,
    )
    assert args.metadata == [("authorization", "Bearer lgw_fake_not_a_key")]
    assert args.gateway_model == MODEL
    assert args.channels == 8
