"""Test doubles that ship with the server: the fake upstream behind `llmgateway demo`."""
