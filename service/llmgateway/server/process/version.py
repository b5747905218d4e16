"""What `llmgateway --version` prints: the installed distributions, as their metadata says."""

from __future__ import annotations

from importlib import metadata

SERVER_DISTRIBUTION = "llmgateway"
CLIENT_DISTRIBUTION = "llmgateway-client"
# The protobuf package of the contract both distributions speak (protos/llmgateway/v1/).
CONTRACT_PACKAGE = "llmgateway.v1"


def version_text() -> str:
    """One line, e.g. `llmgateway 0.4.0 (llmgateway-client 0.4.0, contract llmgateway.v1)`."""
    return (
        f"{SERVER_DISTRIBUTION} {_installed(SERVER_DISTRIBUTION)} "
        f"({CLIENT_DISTRIBUTION} {_installed(CLIENT_DISTRIBUTION)}, contract {CONTRACT_PACKAGE})"
    )


def _installed(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        # Run from a source tree that was never installed: say so rather than guess.
        return "(not installed)"
