"""Run the whole fault table and print its summary (`python -m faults [--only TEXT]`).

One line per row (fault, provider, RPC kind, expected and actual status,
attempts, time against its bound, whether the upstream connection was let go,
tasks left running), then the totals. Exits 1 if any row is wrong.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time

from faults.runner import KEY_LEAK, SETTLE, Outcome, run_fault
from faults.table import (
    CONNECT_TIMEOUT,
    FAULTS,
    FIRST_BYTE_TIMEOUT,
    MAX_ATTEMPTS,
    MAX_STREAM_DURATION,
    REQUEST_TIMEOUT,
    STREAM_IDLE_TIMEOUT,
    Fault,
)
from llmgateway.testing.fake_upstream import FakeUpstream

_COLUMNS = (
    ("fault", 36),
    ("provider", 10),
    ("rpc", 6),
    ("expected", 50),
    ("got", 12),
    ("attempts", 8),
    ("fallbacks", 9),
    ("time / bound", 14),
    ("released", 8),
    ("tasks left", 10),
)


def _expected(fault: Fault) -> str:
    if fault.ok:
        return "OK"
    # "-": a status gRPC sets itself, with no ErrorInfo.
    reason = fault.reason or "-"
    if fault.deadline_race:
        reason += " or UPSTREAM_TIMEOUT"
    return f"{fault.code.name} {reason}"


def _line(cells: tuple[str, ...]) -> str:
    return "  ".join(cell.ljust(width) for cell, (_, width) in zip(cells, _COLUMNS, strict=True))


def _row(outcome: Outcome) -> str:
    fault = outcome.fault
    if outcome.hung:
        got = "HUNG"
    elif outcome.status_correct:
        got = "as expected"
    else:
        got = f"{outcome.code.name if outcome.code else '-'} {outcome.reason or '-'}"
    attempts = outcome.reported_attempts
    if attempts is None and fault.upstream == "fake":
        attempts = outcome.upstream_requests  # gRPC set the status: count at the upstream
    fallbacks = outcome.reported_fallbacks
    cells = (
        fault.label,
        fault.provider,
        fault.rpc,
        _expected(fault),
        got,
        f"{'?' if attempts is None else attempts}/{fault.attempts}",
        f"{'?' if fallbacks is None else fallbacks}/{fault.fallbacks}",
        f"{outcome.elapsed:.2f} / {fault.within:g} s",
        "yes" if outcome.busy_connections == 0 else "NO",
        str(len(outcome.leaked_tasks)),
    )
    line = _line(cells)
    return line if outcome.correct else f"{line}  WRONG"


async def _run(faults: list[Fault]) -> list[Outcome]:
    outcomes = []
    for fault in faults:
        # A fresh fake per row, as under pytest: faults such as `flaky` count requests.
        async with FakeUpstream() as fake:
            outcome = await run_fault(fault, fake)
        print(_row(outcome), flush=True)
        outcomes.append(outcome)
    return outcomes


def _summary(outcomes: list[Outcome], seconds: float) -> str:
    tried = len(outcomes)
    faults = len({(o.fault.label, o.fault.model, o.fault.upstream) for o in outcomes})
    statuses = sum(o.status_correct for o in outcomes)
    passed = sum(o.correct for o in outcomes)
    hung = sum(o.hung for o in outcomes)
    leaked_connections = sum(o.busy_connections for o in outcomes)
    leaked_tasks = sum(len(o.leaked_tasks) for o in outcomes)
    leaked_keys = sum(KEY_LEAK in o.problems for o in outcomes)
    return (
        f"faults tried {tried} ({faults} faults, as unary and/or stream calls), "
        f"statuses correct {statuses}/{tried}, all checks passed {passed}/{tried}, "
        f"provider keys reaching the caller {leaked_keys}, "
        f"hung calls {hung}, leaked connections {leaked_connections}, "
        f"leaked tasks {leaked_tasks} (after {SETTLE:g} s to settle); {seconds:.1f} s"
    )


def main() -> None:
    """Entry point."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", metavar="TEXT", help="run only rows whose id contains TEXT")
    args = parser.parse_args()
    # Each gateway warns that it has no caller keys: noise for 100-odd gateways.
    # Its errors (an INTERNAL status's traceback) still show.
    logging.getLogger("llmgateway.server").setLevel(logging.ERROR)
    faults = [f for f in FAULTS if args.only is None or args.only in f.id]
    if not faults:
        parser.error(f"no row's id contains {args.only!r}")
    print(
        f"{len(faults)} calls, each to a fresh gateway and fake upstream. Timeouts: connect "
        f"{CONNECT_TIMEOUT:g} s, unary {REQUEST_TIMEOUT:g} s, first byte "
        f"{FIRST_BYTE_TIMEOUT:g} s, stream idle {STREAM_IDLE_TIMEOUT:g} s, stream "
        f"{MAX_STREAM_DURATION:g} s; up to {MAX_ATTEMPTS} attempts per target.\n"
        "attempts and fallbacks: got/expected; released: no upstream connection still "
        "serves the call (idle keep-alive allowed); tasks left: still running after it.\n"
    )
    print(_line(tuple(name for name, _ in _COLUMNS)))
    started = time.monotonic()
    outcomes = asyncio.run(_run(faults))
    wrong = [o for o in outcomes if not o.correct]
    for outcome in wrong:
        print(f"\nWRONG {outcome.explain()}")
    print()
    print(_summary(outcomes, time.monotonic() - started))
    sys.exit(1 if wrong else 0)
