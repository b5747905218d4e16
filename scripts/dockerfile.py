"""Read a Dockerfile and a .dockerignore the way a builder does, for scripts/image_check.py.

Only what this repository's Dockerfile uses is understood (stages, ARG before FROM, ENV
KEY=VALUE, RUN flags, exec and shell forms, line continuations, comments); anything else
is refused with the line it is on, so the check never silently misreads the file.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

MARKER = "image-check:"


class DockerfileError(ValueError):
    """The Dockerfile uses something the check cannot follow; the message says where."""


@dataclass(frozen=True, slots=True)
class Instruction:
    """One instruction: its keyword, leading --flags, the rest as written, and its stage."""

    keyword: str
    flags: tuple[str, ...]
    body: str
    stage: str
    line: int
    # The `# image-check: ...` comment directly above it, without the prefix.
    marker: str | None = None

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form instruction, or None for the shell form."""
        if not self.body.startswith("["):
            return None
        value = json.loads(self.body)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DockerfileError(f"line {self.line}: {self.keyword} must be a JSON string array")
        return value


@dataclass(slots=True)
class Dockerfile:
    """The instructions in order, and the stages' names (the last is the image)."""

    instructions: list[Instruction] = field(default_factory=list)
    stages: list[str] = field(default_factory=list)
    # FROM lines' images, ARGs substituted, by stage.
    images: dict[str, str] = field(default_factory=dict)

    def of(self, stage: str, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.stage == stage and i.keyword == keyword]

    @property
    def final_stage(self) -> str:
        return self.stages[-1]


def parse(text: str) -> Dockerfile:
    """The Dockerfile `text`, instruction by instruction."""
    result = Dockerfile()
    args: dict[str, str] = {}
    for line, logical, comments in _logical_lines(text):
        keyword, _, rest = logical.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        marker = next(
            (c.split(MARKER, 1)[1].strip() for c in reversed(comments) if MARKER in c), None
        )
        if keyword == "ARG" and not result.stages:
            name, _, default = rest.partition("=")
            args[name] = default
            continue
        if keyword == "FROM":
            image, _, name = re.sub(r"\s+as\s+", " AS ", rest, flags=re.IGNORECASE).partition(
                " AS "
            )
            stage = name.strip() or str(len(result.stages))
            result.stages.append(stage)
            result.images[stage] = re.sub(
                r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), ""), image.strip()
            )
            continue
        if not result.stages:
            raise DockerfileError(f"line {line}: {keyword} before the first FROM")
        if "<<" in rest and keyword == "RUN":
            raise DockerfileError(f"line {line}: heredocs are not supported by the check")
        flags: list[str] = []
        while keyword in ("RUN", "COPY", "ADD", "HEALTHCHECK") and rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            flags.append(flag)
            rest = rest.strip()
        result.instructions.append(
            Instruction(keyword, tuple(flags), rest, result.final_stage, line, marker)
        )
    if not result.stages:
        raise DockerfileError("no FROM line")
    return result


def env_pairs(
    instruction: Instruction, env: dict[str, str], move: Callable[[str], str]
) -> dict[str, str]:
    """The variables an `ENV K=V ...` sets: each value as `move` rewrites it, then with
    `$NAME` and `${NAME}` expanded from `env`."""
    pairs: dict[str, str] = {}
    for word in shlex.split(instruction.body):
        name, sep, value = word.partition("=")
        if not sep:
            raise DockerfileError(
                f"line {instruction.line}: write ENV as KEY=VALUE (the check reads no other form)"
            )
        pairs[name] = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), move(value))
    return pairs


def _logical_lines(text: str) -> list[tuple[int, str, list[str]]]:
    """(first line number, instruction, the comment block right above it) for each
    instruction; a blank line ends a comment block."""
    found: list[tuple[int, str, list[str]]] = []
    parts: list[str] = []
    start = 0
    pending: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#"):
            if not parts:
                pending.append(stripped)
            continue  # a comment inside a continuation is dropped, as builders do
        if not stripped:
            if not parts:
                pending.clear()
            continue
        if not parts:
            start = number
        continued = stripped.endswith("\\")
        parts.append(stripped[:-1].strip() if continued else stripped)
        if not continued:
            found.append((start, " ".join(parts), pending))
            pending = []
            parts = []
    if parts:
        raise DockerfileError(f"line {start}: the last instruction ends in a line continuation")
    return found


def build_context(root: Path, dockerignore: str) -> list[Path]:
    """The files under `root` a builder sends, given a .dockerignore's text: patterns in order,
    the last that matches a path or one of its parent directories deciding (`!` re-includes);
    `*` stays within one path segment, `**` spans any number."""
    rules: list[tuple[re.Pattern[str], bool]] = []
    for raw in dockerignore.splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        include = pattern.startswith("!")
        pattern = pattern.removeprefix("!").strip("/")
        rules.append((re.compile(_pattern_regex(pattern)), include))
    sent: list[Path] = []
    for path in sorted(root.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            continue
        relative = path.relative_to(root).as_posix()
        segments = relative.split("/")
        candidates = ["/".join(segments[: i + 1]) for i in range(len(segments))]
        keep = True
        for regex, include in rules:
            if any(regex.fullmatch(c) for c in candidates):
                keep = include
        if keep:
            sent.append(path)
    return sent


def _pattern_regex(pattern: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)
