"""Gemini's models: context windows and USD per million tokens (see __init__.py)."""

from __future__ import annotations

from llmgateway.server.routing.price_tables import BuiltinModel

# Sources, per row: say where each price comes from and when it was read.
MODELS: tuple[BuiltinModel, ...] = ()
