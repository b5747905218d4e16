"""The fault suite's rows for Anthropic: each wire's own failure shapes."""

from __future__ import annotations

from faults.row import Fault

# Fallback chains these rows use (config-file aliases), merged into row.ALIASES.
ALIASES: dict[str, list[str]] = {}

ROWS: list[Fault] = []
