"""Routing: model names and aliases to providers, the model catalogue, and prices."""
