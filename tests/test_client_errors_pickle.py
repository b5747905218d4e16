"""Every client exception survives pickling, so it can cross a ProcessPoolExecutor
or a multiprocessing queue with the fields a caller branches on."""

from __future__ import annotations

import multiprocessing
import pickle
from concurrent.futures import ProcessPoolExecutor

import grpc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import llmgateway.client
from bench.processes import free_port
from llmgateway.client import CompletionClient, GatewayError, GatewayUnreachableError, errors

# Found from the package's exports, so a class added later is covered too.
EXPORTED = sorted(
    (
        exported
        for name in llmgateway.client.__all__
        if isinstance(exported := getattr(llmgateway.client, name), type)
        and issubclass(exported, GatewayError)
    ),
    key=lambda cls: cls.__name__,
)
# The ones the local channel raises take a target instead of the status's details.
CHANNEL_ERRORS = {"GatewayUnreachableError", "ConnectionLostError"}

texts = st.text(max_size=40)
fields = st.dictionaries(texts, texts, max_size=3)
codes = st.sampled_from(list(grpc.StatusCode))


def test_every_exception_class_is_exported_and_so_covered() -> None:
    defined = {
        name
        for name, value in vars(errors).items()
        if isinstance(value, type) and issubclass(value, GatewayError) and not name.startswith("_")
    }
    assert {cls.__name__ for cls in EXPORTED} == defined
    assert defined >= CHANNEL_ERRORS


def assert_same(copy: GatewayError, error: GatewayError) -> None:
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert copy.args == error.args
    for field in (
        "code",
        "message",
        "reason",
        "domain",
        "metadata",
        "field_violations",
        "retry_after",
    ):
        assert getattr(copy, field) == getattr(error, field), field
    assert getattr(copy, "target", None) == getattr(error, "target", None)


@pytest.mark.parametrize("cls", EXPORTED, ids=lambda cls: cls.__name__)
@settings(max_examples=40)
@given(
    code=codes,
    message=texts,
    reason=texts,
    domain=texts,
    metadata=fields,
    violations=fields,
    retry_after=st.none() | st.floats(min_value=0, max_value=1e6),
    target=texts,
)
def test_round_trips_through_pickle(
    cls: type[GatewayError],
    code: grpc.StatusCode,
    message: str,
    reason: str,
    domain: str,
    metadata: dict[str, str],
    violations: dict[str, str],
    retry_after: float | None,
    target: str,
) -> None:
    if cls.__name__ in CHANNEL_ERRORS:
        error = cls(code, message, target=target)  # type: ignore[call-arg]
    else:
        error = cls(
            code,
            message,
            reason=reason,
            domain=domain,
            metadata=metadata,
            field_violations=violations,
            retry_after=retry_after,
        )
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        copy = pickle.loads(pickle.dumps(error, protocol))  # noqa: S301  # bytes made here
        assert_same(copy, error)


def call_a_dead_port(target: str) -> None:
    """Runs in a worker process: a call that fails there, raised to the parent."""
    with CompletionClient(target, timeout=10, max_attempts=1) as client:
        client.list_models()


def test_an_error_raised_in_a_worker_process_reaches_the_parent_typed() -> None:
    target = f"127.0.0.1:{free_port()}"
    # spawn: a fresh interpreter, as gRPC does not survive fork once it has started.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        future = pool.submit(call_a_dead_port, target)
        with pytest.raises(GatewayUnreachableError) as caught:
            future.result()
    assert caught.value.target == target
    assert caught.value.code == grpc.StatusCode.UNAVAILABLE
    assert caught.value.message.startswith(f"cannot reach the gateway at {target}: ")
