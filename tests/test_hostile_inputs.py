"""The hostile-input run (faults/hostile.py) as a test: every case gets its
status, with no traceback logged and no upstream request for invalid input."""

from __future__ import annotations

from faults.hostile import HOSTILE_MODELS, cases, run


async def test_hostile_requests_are_refused_cleanly_and_cost_no_upstream_request():
    summary = await run()
    assert [f"{r.case.id} {r.case.method}: {r.problems}" for r in summary.wrong] == []
    assert summary.tracebacks == 0
    assert summary.invalid_upstream_requests == 0
    assert summary.outcomes["UNKNOWN"] == summary.outcomes["INTERNAL"] == 0
    # The controls went upstream: the count of upstream requests is live.
    assert [r.upstream_requests for r in summary.results if r.case.valid] == [1, 1]


def test_the_run_covers_every_kind_of_hostile_input():
    labels = {case.id for case in cases()}
    assert {
        "random bytes",
        "invalid UTF-8 in the model",
        "nested past protobuf's depth limit",
        "over max_request_bytes",
        "2,048 field violations",
        "openrouter.models with CR/LF",
        "openrouter.provider.order with CR/LF",
        *HOSTILE_MODELS,
    } <= labels
