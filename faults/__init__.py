"""The fault-injection suite: every upstream fault, what the caller must see, and a runner.

`faults.table` holds the expectations as data, `faults.runner` runs one row end
to end (fake upstream, gateway, real gRPC channel) and judges it, and
`python -m faults` prints the whole table's summary. `tests/test_fault_suite.py`
runs the same rows under pytest.
"""

from __future__ import annotations
