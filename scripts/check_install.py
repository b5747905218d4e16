"""Checks of an installed llmgateway distribution, for scripts/package.sh.

Each subcommand runs under the interpreter of the virtual environment it
inspects (a clean venv holding only the wheels under test), so everything here
uses the standard library alone.

  only-closure DIST --forbid NAME...  every installed distribution is DIST or
                                      something DIST pulls in; none is forbidden
  top-level --own DIST...             the top-level names each installed
                                      distribution adds; the own ones add only
                                      `llmgateway` and never its __init__.py
  dependencies DIST                   DIST's requirements and what they install
  readme-examples README --section T --target HOST:PORT --out DIR
                                      the ```python blocks under heading T,
                                      one file each, pointed at the target;
                                      fails if a block names no localhost:50051
  wheel-files WHEEL --require GLOB... --refuse GLOB...
                                      the wheel holds a file matching each
                                      --require glob and none matching --refuse
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys
import zipfile
from importlib import metadata
from pathlib import Path

# The address every README example targets; the only thing rewritten in them.
README_TARGET = "localhost:50051"
# Installers' own tools, present in every venv before anything is installed.
VENV_TOOLS = {"pip", "setuptools", "wheel"}
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")
EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def canonical(name: str) -> str:
    """A distribution name as pip compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def installed() -> dict[str, metadata.Distribution]:
    """Every distribution in this environment, by canonical name."""
    return {canonical(dist.metadata["Name"]): dist for dist in metadata.distributions()}


def requirements(dist: metadata.Distribution, extras: set[str]) -> list[tuple[str, set[str]]]:
    """(name, extras) of each requirement of `dist` that applies with `extras` requested."""
    wanted = []
    for line in dist.requires or []:
        requirement, _, marker = line.partition(";")
        extra = EXTRA_MARKER.search(marker)
        if extra is not None and canonical(extra.group(1)) not in extras:
            continue
        match = REQUIREMENT.match(requirement)
        if match is None:
            continue
        asked = {canonical(e) for e in (match.group(2) or "").split(",") if e.strip()}
        wanted.append((canonical(match.group(1)), asked))
    return wanted


def closure(root: str, dists: dict[str, metadata.Distribution]) -> set[str]:
    """`root` and every installed distribution it pulls in, transitively."""
    seen: set[str] = set()
    todo: list[tuple[str, set[str]]] = [(canonical(root), set())]
    while todo:
        name, extras = todo.pop()
        if name in seen or name not in dists:
            continue
        seen.add(name)
        todo.extend(requirements(dists[name], extras))
    return seen


def only_closure(root: str, forbidden: list[str]) -> int:
    dists = installed()
    expected = closure(root, dists)
    if canonical(root) not in dists:
        print(f"FAIL: {root} is not installed here", file=sys.stderr)
        return 1
    present = sorted(set(dists) - VENV_TOOLS)
    print(f"installed (besides any pip/setuptools): {', '.join(present)}")
    failures = 0
    for name in present:
        if name not in expected:
            print(f"FAIL: {name} is installed but {root} does not pull it in", file=sys.stderr)
            failures += 1
    for name in forbidden:
        if canonical(name) in dists:
            print(f"FAIL: {name} is installed with {root} alone", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


def top_level_names(dist: metadata.Distribution) -> set[str]:
    """The names a distribution's files add at the top of site-packages."""
    names = set()
    for file in dist.files or []:
        parts = file.parts
        # ../../bin/... are console scripts; the .dist-info folder is metadata.
        if not parts or parts[0] in {"..", "__pycache__"} or parts[0].endswith(".dist-info"):
            continue
        top = parts[0]
        if len(parts) == 1:
            top = top.split(".", 1)[0] if top.endswith((".py", ".so", ".pyd")) else top
        names.add(top)
    return names


def top_level(own: list[str]) -> int:
    dists = installed()
    failures = 0
    for name, dist in sorted(dists.items()):
        names = top_level_names(dist)
        print(f"{name}: {' '.join(sorted(names)) or '(none)'}")
        if name not in {canonical(o) for o in own}:
            continue
        for extra in sorted(names - {"llmgateway"}):
            print(f"FAIL: {name} adds the top-level name {extra!r}", file=sys.stderr)
            failures += 1
        if any(str(file) == "llmgateway/__init__.py" for file in dist.files or []):
            print(f"FAIL: {name} ships llmgateway/__init__.py (a namespace)", file=sys.stderr)
            failures += 1
    for name in own:
        if canonical(name) not in dists:
            print(f"FAIL: {name} is not installed here", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


def dependencies(root: str) -> int:
    dists = installed()
    dist = dists[canonical(root)]
    direct = [line for line in dist.requires or [] if "extra ==" not in line]
    pulled = sorted(closure(root, dists) - {canonical(root)})
    print(f"{root} {dist.version} requires: {'; '.join(direct) or '(nothing)'}")
    print(f"{root} installs {len(pulled)} distributions with it: {', '.join(pulled)}")
    return 0


def python_blocks(readme: str, section: str) -> list[str]:
    """The ```python blocks between heading `section` and the next heading of its level."""
    lines = readme.splitlines()
    start = next(
        (
            i
            for i, line in enumerate(lines)
            if line.startswith("#") and line.lstrip("#").strip() == section
        ),
        None,
    )
    if start is None:
        return []
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    blocks: list[str] = []
    block: list[str] | None = None
    for line in lines[start + 1 :]:
        if block is None and re.match(rf"^#{{1,{level}}} ", line):
            break
        if block is None and line.strip() == "```python":
            block = []
        elif block is not None and line.strip() == "```":
            blocks.append("\n".join(block) + "\n")
            block = None
        elif block is not None:
            block.append(line)
    return blocks


def readme_examples(readme: Path, section: str, target: str, out: Path) -> int:
    blocks = python_blocks(readme.read_text(encoding="utf-8"), section)
    if not blocks:
        print(f"FAIL: no ```python block under {section!r} in {readme}", file=sys.stderr)
        return 1
    # A block that does not name the README's target would run against whatever listens
    # there (or nothing), not against the gateway under test.
    astray = [n for n, block in enumerate(blocks, start=1) if README_TARGET not in block]
    for number in astray:
        print(
            f"FAIL: ```python block {number} under {section!r} in {readme} does not call "
            f"{README_TARGET}, the address every example targets; write that address in it",
            file=sys.stderr,
        )
    if astray:
        return 1
    out.mkdir(parents=True, exist_ok=True)
    for number, block in enumerate(blocks, start=1):
        path = out / f"readme_example_{number}.py"
        path.write_text(block.replace(README_TARGET, target), encoding="utf-8")
        print(path)
    return 0


def wheel_files(wheel: Path, required: list[str], refused: list[str]) -> int:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    failures = 0
    for pattern in required:
        if not fnmatch.filter(names, pattern):
            print(f"FAIL: {wheel.name} has no file matching {pattern}", file=sys.stderr)
            failures += 1
    for pattern in refused:
        for name in fnmatch.filter(names, pattern):
            print(f"FAIL: {wheel.name} ships {name} (matches {pattern})", file=sys.stderr)
            failures += 1
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    commands = parser.add_subparsers(dest="command", required=True)
    only = commands.add_parser("only-closure")
    only.add_argument("dist")
    only.add_argument("--forbid", nargs="*", default=[])
    top = commands.add_parser("top-level")
    top.add_argument("--own", nargs="+", required=True)
    deps = commands.add_parser("dependencies")
    deps.add_argument("dist")
    examples = commands.add_parser("readme-examples")
    examples.add_argument("readme", type=Path)
    examples.add_argument("--section", required=True)
    examples.add_argument("--target", required=True)
    examples.add_argument("--out", type=Path, required=True)
    files = commands.add_parser("wheel-files")
    files.add_argument("wheel", type=Path)
    files.add_argument("--require", nargs="*", default=[])
    files.add_argument("--refuse", nargs="*", default=[])
    args = parser.parse_args(argv)
    if args.command == "only-closure":
        return only_closure(args.dist, args.forbid)
    if args.command == "top-level":
        return top_level(args.own)
    if args.command == "dependencies":
        return dependencies(args.dist)
    if args.command == "readme-examples":
        return readme_examples(args.readme, args.section, args.target, args.out)
    return wheel_files(args.wheel, args.require, args.refuse)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
