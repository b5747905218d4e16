"""Resilience: retrying transient upstream failures and breaking circuits to failing ones."""
