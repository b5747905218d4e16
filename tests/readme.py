"""The README's example config file, shared by the tests that load it."""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example_toml() -> str:
    """The README's example config file: the ```toml block that starts with
    `# llmgateway.toml`."""
    text = README.read_text(encoding="utf-8")
    return text.split("```toml\n# llmgateway.toml\n", 1)[1].split("```", 1)[0]
