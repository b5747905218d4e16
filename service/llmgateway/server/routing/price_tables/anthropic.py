"""Anthropic's models: context windows and USD per million tokens (see __init__.py).

Source for every price row: Anthropic's pricing page,
https://platform.claude.com/docs/en/about-claude/pricing ("Model pricing"), as
read on 2026-12-01 through the project's documentation search (the page
itself, and the pricing tables of two clients that quote it). `cache_write` is
the 5-minute cache-write rate, Anthropic's default TTL: usage reports one
cache-write count, so writes with the opt-in 1-hour TTL (billed at twice the
input rate, not 1.25 times) are priced low. `cached` is "cache hits and
refreshes". Context windows: 200k unless the row says otherwise; the 1M-token
context of Sonnet 4 and 4.5 is a beta billed at a higher rate above 200k
prompt tokens, which this table does not model (override with `[prices]`).

Rows match exact ids and dated snapshots of them (claude-sonnet-4-5-20250929
takes claude-sonnet-4-5), so every minor version needs its own row: without
one, claude-opus-4-6 would be priced as claude-opus-4.
"""

from __future__ import annotations

from llmgateway.server.routing.price_tables import BuiltinModel

MODELS: tuple[BuiltinModel, ...] = (
    # Opus 4.5 and later: $5 in, $6.25 5m write, $0.50 hit, $25 out (as of 2026-12-01).
    # Opus 4.6 and 4.7: 1M-token context at the standard rate (as of 2026-12-01).
    BuiltinModel("claude-opus-4-7", 1_000_000, 5.0, 0.50, 25.0, cache_write=6.25),
    BuiltinModel("claude-opus-4-6", 1_000_000, 5.0, 0.50, 25.0, cache_write=6.25),
    BuiltinModel("claude-opus-4-5", 200_000, 5.0, 0.50, 25.0, cache_write=6.25),
    # Opus 4 and 4.1: $15 in, $18.75 5m write, $1.50 hit, $75 out (as of 2026-12-01).
    BuiltinModel("claude-opus-4-1", 200_000, 15.0, 1.50, 75.0, cache_write=18.75),
    BuiltinModel("claude-opus-4-0", 200_000, 15.0, 1.50, 75.0, cache_write=18.75),
    BuiltinModel("claude-opus-4", 200_000, 15.0, 1.50, 75.0, cache_write=18.75),
    # Sonnet 3.7 to 4.6: $3 in, $3.75 5m write, $0.30 hit, $15 out (as of 2026-12-01).
    # Sonnet 4.6: 1M-token context at the standard rate (as of 2026-12-01).
    BuiltinModel("claude-sonnet-4-6", 1_000_000, 3.0, 0.30, 15.0, cache_write=3.75),
    BuiltinModel("claude-sonnet-4-5", 200_000, 3.0, 0.30, 15.0, cache_write=3.75),
    BuiltinModel("claude-sonnet-4-0", 200_000, 3.0, 0.30, 15.0, cache_write=3.75),
    BuiltinModel("claude-sonnet-4", 200_000, 3.0, 0.30, 15.0, cache_write=3.75),
    BuiltinModel("claude-3-7-sonnet", 200_000, 3.0, 0.30, 15.0, cache_write=3.75),
    # Haiku 4.5: $1 in, $1.25 5m write, $0.10 hit, $5 out (as of 2026-12-01).
    BuiltinModel("claude-haiku-4-5", 200_000, 1.0, 0.10, 5.0, cache_write=1.25),
    # Haiku 3.5: $0.80 in, $1 5m write, $0.08 hit, $4 out (as of 2026-12-01).
    BuiltinModel("claude-3-5-haiku", 200_000, 0.80, 0.08, 4.0, cache_write=1.0),
    # Haiku 3: $0.25 in, $0.30 5m write, $0.03 hit, $1.25 out (as of 2026-12-01).
    BuiltinModel("claude-3-haiku", 200_000, 0.25, 0.03, 1.25, cache_write=0.30),
)
