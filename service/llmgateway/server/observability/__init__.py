"""Observability: logs, metrics, traces and the health service."""
