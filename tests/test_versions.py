"""The packages are released together: one version number, everywhere a user reads it."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _project(pyproject: Path) -> dict[str, object]:
    return tomllib.loads(pyproject.read_text())["project"]  # type: ignore[no-any-return]


def _server_version() -> str:
    return str(_project(ROOT / "pyproject.toml")["version"])


def test_the_client_distribution_has_the_servers_version():
    assert _project(ROOT / "clients/python/pyproject.toml")["version"] == _server_version()


def test_the_server_depends_on_exactly_its_own_client_version():
    dependencies = _project(ROOT / "pyproject.toml")["dependencies"]
    assert isinstance(dependencies, list)
    client = [d for d in dependencies if d.startswith("llmgateway-client")]
    assert client == [f"llmgateway-client=={_server_version()}"]


def test_the_client_distribution_depends_on_ranges_of_the_grpc_family_only():
    dependencies = _project(ROOT / "clients/python/pyproject.toml")["dependencies"]
    assert isinstance(dependencies, list)
    names = sorted(re.split(r"[<>=!~ \[]", d, maxsplit=1)[0] for d in dependencies)
    assert names == ["grpcio", "grpcio-status", "protobuf"]
    for dependency in dependencies:
        assert "==" not in dependency, f"{dependency}: a caller's own pins must be able to win"
        assert "<" in dependency, f"{dependency}: bound the next major version"


def test_the_npm_package_has_the_same_version():
    package = json.loads((ROOT / "clients/node/package.json").read_text())
    assert package["version"] == _server_version()


def test_the_changelog_describes_this_version_first():
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    # Keep a Changelog: work not yet released sits under [Unreleased], above the
    # latest release, which is the version the packages carry.
    released = [heading for heading in headings if heading != "Unreleased"]
    assert headings[: len(headings) - len(released)] in ([], ["Unreleased"])
    assert released[0] == _server_version()
