"""Start-up warns, once per name, about an alias or route target that its
provider's built-in table does not know (a likely typo), and never refuses it;
OpenRouter and Ollama names, known only from their catalogues, are not judged."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from llmgateway.server.config import Settings
from llmgateway.server.process.server import start_gateway
from llmgateway.server.routing.router import Router
from llmgateway.server.routing.routes import RouteTable
from llmgateway.server.routing.unlisted_targets import unlisted_target_warnings
from llmgateway.v1 import completion_service_pb2 as pb
from tests.conftest import with_config_file
from tests.readme import readme_example_toml

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

    from llmgateway.testing.fake_upstream import FakeUpstream

CONFIG = """
[aliases]
typo = "zai/glm4.7"
dated = "openai/gpt-4o-2024-08-06"
elsewhere = ["openrouter/nobody/knows-this", "ollama/my-finetune:q4"]

[routes.default]
default = "zai/glm-4.7"
code = ["zai/glm4.7", "anthropic/claude-sonet-4-5"]
reasoning = { targets = ["gemini/gemini-2.5-pro"], cost_tier = { low = "groq/llama-9-tiny" } }
"""
_TYPO = "if it is a typo the calls will fail with UPSTREAM_MODEL_NOT_FOUND"
WARNINGS = [
    f"alias typo, route/default code: zai/glm4.7 is in no built-in table of zai models; {_TYPO}",
    "route/default code: anthropic/claude-sonet-4-5 is in no built-in table of anthropic "
    + f"models; {_TYPO}",
    "route/default reasoning (cost_tier low): groq/llama-9-tiny is in no built-in table of "
    + f"groq models; {_TYPO}",
]


def _warnings(path: Path, text: str) -> list[str]:
    path.write_text(text, encoding="utf-8")
    settings = Settings.load({}, path)
    router = Router(settings.aliases)
    return unlisted_target_warnings(router.aliases, RouteTable(settings.routes, router))


def test_each_unknown_name_gets_one_line_naming_every_place_it_is_used(tmp_path: Path) -> None:
    # A dated snapshot counts as its base model; OpenRouter and Ollama are not judged.
    assert _warnings(tmp_path / "c.toml", CONFIG) == WARNINGS


def test_the_readme_example_config_names_only_models_the_tables_know(tmp_path: Path) -> None:
    assert _warnings(tmp_path / "c.toml", readme_example_toml()) == []


async def test_start_up_warns_and_still_serves_the_names(
    settings: Settings, fake: FakeUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    configured = with_config_file(settings, tmp_path / "c.toml", CONFIG)
    with caplog.at_level(logging.WARNING, logger="llmgateway.server.process.server"):
        running = await start_gateway(configured, address="127.0.0.1:0")
    try:
        said = [
            r.getMessage()
            for r in caplog.records
            if r.name == "llmgateway.server.process.server" and "built-in table" in r.getMessage()
        ]
        assert said == WARNINGS
        # A warning, not a refusal: the gateway started, and lists the alias.
        reply = await running.catalog.list_models(pb.ListModelsRequest().provider)
        assert "typo" in {m.name for m in reply.models}
    finally:
        await running.stop(grace=0)
