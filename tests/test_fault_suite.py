"""The fault table (faults/table.py), every row end to end over a real gRPC channel.

Each row runs against its own gateway (faults/runner.py), so no row inherits
another's retry budget or pooled connections; `python -m faults` runs the same
rows and prints them as a table.
"""

from __future__ import annotations

import pytest

from faults.runner import run_fault
from faults.table import FAULTS

# Rows end within sub-second bounds (a 0.3 s first-byte timeout): never beside other tests.
pytestmark = pytest.mark.serial


@pytest.mark.parametrize("fault", FAULTS, ids=[fault.id for fault in FAULTS])
async def test_fault(fake, fault):
    outcome = await run_fault(fault, fake)
    assert outcome.correct, outcome.explain()


def test_every_row_is_unique():
    ids = [fault.id for fault in FAULTS]
    assert len(ids) == len(set(ids))
