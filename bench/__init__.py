"""Benchmarks: the gateway against the direct path (and LiteLLM's proxy), on loopback."""
