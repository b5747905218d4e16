"""The benchmark's reference servers (bench/reference/) answer the gateway's
contract over a real gRPC channel: the bare one from memory, the relay from the
fake upstream, each with two workers on one port."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from hypothesis import given
from hypothesis import strategies as st

from bench import processes as procs
from bench.reference.relay import events
from bench.reference.serving import without_workers
from llmgateway.testing.fake_upstream import FakeUpstream
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

MODEL = "openrouter/openai/gpt-4o-mini"
MESSAGE = common.ChatMessage(role=common.ROLE_USER, content="hi")


@contextlib.contextmanager
def reference(name: str, tmp_path: Path, env: dict[str, str], chunks: int = 4) -> Iterator[int]:
    """A reference server with two workers, until the block ends; its port."""
    port = procs.free_port()
    log = tmp_path / f"{name}.log"
    command = procs.reference_command(name, port, 2, chunks, 0.001)
    with procs.running(command, env=env, log=log) as process:
        procs.wait_for_line(log, "serving", process)
        yield port
    assert process.returncode == 0, log.read_text()


@contextlib.asynccontextmanager
async def stub(port: int) -> AsyncIterator[pb_grpc.CompletionServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield pb_grpc.CompletionServiceStub(channel)


async def stream_events(
    client: pb_grpc.CompletionServiceAsyncStub,
) -> list[pb.StreamCompleteResponse]:
    request = pb.StreamCompleteRequest(model=MODEL, messages=[MESSAGE])
    return [event async for event in client.StreamComplete(request, timeout=10)]


async def test_bare_answers_at_once_and_streams_its_chunks_then_done(tmp_path: Path) -> None:
    with reference("bare", tmp_path, {}, chunks=4) as port:
        async with stub(port) as client:
            answer = await client.Complete(
                pb.CompleteRequest(model=MODEL, messages=[MESSAGE]), timeout=10
            )
            streamed = await stream_events(client)
    assert answer.content
    assert answer.finish_reason == common.FINISH_REASON_STOP
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens
    assert [e.WhichOneof("event") for e in streamed] == ["content_delta"] * 4 + ["done"]
    assert "".join(e.content_delta.text for e in streamed[:-1]) == "tok " * 4
    assert streamed[-1].done.usage.completion_tokens == 4


async def test_relay_reads_the_fake_upstream_and_writes_one_message_per_delta(
    tmp_path: Path,
) -> None:
    async with FakeUpstream(stream_chunks=5) as fake:
        env = procs.fake_environment(fake.port)
        with reference("relay", tmp_path, env) as port:
            async with stub(port) as client:
                answer = await client.Complete(
                    pb.CompleteRequest(model=MODEL, messages=[MESSAGE]), timeout=10
                )
                streamed = await stream_events(client)
        sent = [r.body for r in fake.requests if r.provider == "openrouter"]
    assert answer.content == "Hello from the fake upstream! You said: hi"
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (6, 8)
    assert answer.model == "openai/gpt-4o-mini"
    assert [e.WhichOneof("event") for e in streamed] == ["content_delta"] * 5 + ["done"]
    assert all(e.content_delta.text == "tok " for e in streamed[:-1])
    assert streamed[-1].done.usage.completion_tokens == 5
    # OpenRouter's model id (the gateway's provider prefix taken off), and a
    # stream that asks for its usage, as the gateway's requests do.
    assert [b["model"] for b in sent] == ["openai/gpt-4o-mini"] * 2
    assert sent[1]["stream"] is True
    assert sent[1]["stream_options"] == {"include_usage": True}


def test_a_stopped_reference_server_stops_every_worker(tmp_path: Path) -> None:
    port = procs.free_port()
    log = tmp_path / "bare.log"
    with procs.running(procs.reference_command("bare", port, 2), log=log) as process:
        procs.wait_for_line(log, "serving", process)
        workers = procs._tree(process.pid)[1:]  # the helper the sampler uses
        assert len(workers) == 2
    # The parent waits for its workers before it exits.
    assert all(not Path(f"/proc/{pid}").exists() for pid in workers)


@given(
    payloads=st.lists(st.binary(min_size=1, max_size=30).filter(lambda b: b"\n" not in b)),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=10),
)
def test_events_finds_every_data_payload_however_the_body_is_cut(
    payloads: list[bytes], cuts: list[int]
) -> None:
    body = b"".join(b": OPENROUTER PROCESSING\n\ndata: " + p + b"\n\n" for p in payloads)
    found: list[bytes] = []
    buffer = b""
    start = 0
    for cut in [*sorted(c for c in cuts if c < len(body)), len(body)]:
        more, buffer = events(buffer + body[start:cut])
        found += more
        start = cut
    assert found == payloads
    assert buffer == b""


def test_a_worker_gets_every_argument_but_workers() -> None:
    argv = ["--port", "9", "--workers", "2", "--chunks", "2", "--workers=3", "--chunk-delay", "0"]
    assert without_workers(argv) == ["--port", "9", "--chunks", "2", "--chunk-delay", "0"]
