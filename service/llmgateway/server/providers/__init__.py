"""Upstream providers: one OpenAI-compatible core, and what differs per provider."""
