"""A fake upstream that speaks all seven providers' wire formats over real HTTP.

Used by the tests, the demo and the benchmarks; it never touches the internet.
Model names choose behaviour: a model whose last path segment is
`fault-<name>` triggers that fault (see `app.py`), anything else answers.
"""

from __future__ import annotations

from llmgateway.testing.fake_upstream.app import FakeUpstream, RecordedRequest

__all__ = ["FakeUpstream", "RecordedRequest"]
