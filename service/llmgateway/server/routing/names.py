"""What a name in a request may hold: model names, and the characters no
identifier-like string may carry.

A model name (`model`, `openrouter.models[i]`; an alias is a model name too)
is segments separated by single '/', each made of ASCII letters, digits and
. _ : - and starting with a letter or digit, optionally after one '~'. That
covers every real slug (openai/gpt-4o-2024-08-06,
meta-llama/llama-3.1-8b-instruct:free, z-ai/glm-5-turbo-20260315,
glm-4.5-air) and refuses what could smuggle something into an upstream URL,
header, log line, metric label or routing decision: whitespace, control and
format characters (CR/LF, NUL, ANSI escapes, bidi overrides), '?', '#', '%',
'\\', empty segments, a leading or trailing '/', and '.' or '..' segments.
"""

from __future__ import annotations

import re
import unicodedata

MAX_MODEL_NAME = 256
MODEL_NAME_RULE = (
    "ASCII letters, digits and . _ : - in segments separated by single '/', "
    "each segment starting with a letter or digit (or one '~' before it)"
)
_MODEL_SEGMENT = re.compile(r"~?[A-Za-z0-9][A-Za-z0-9._:-]*")
_MODEL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-~/")
# Unicode categories no identifier-like string may hold: control (C0, C1,
# DEL), format (bidi overrides and isolates, zero-width characters), line
# and paragraph separators, surrogates.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def model_name_problem(name: str) -> str | None:
    """Why `name` cannot be a model name (see MODEL_NAME_RULE), or None."""
    if not name:
        return "required"
    if len(name) > MAX_MODEL_NAME:
        return f"at most {MAX_MODEL_NAME} characters"
    for position, char in enumerate(name):
        if char not in _MODEL_CHARS:
            return (
                f"must not contain {describe_char(char)} (position {position}); "
                f"a model name holds only {MODEL_NAME_RULE}"
            )
    if name.startswith("/") or name.endswith("/") or "//" in name:
        return f"no leading, trailing or doubled '/'; a model name holds only {MODEL_NAME_RULE}"
    for segment in name.split("/"):
        if segment in (".", ".."):
            return f"no '{segment}' path segments; a model name holds only {MODEL_NAME_RULE}"
        if not _MODEL_SEGMENT.fullmatch(segment):
            return (
                f"segment {segment!r} must start with a letter or digit ('~' may only come "
                f"first); a model name holds only {MODEL_NAME_RULE}"
            )
    return None


def first_invisible(text: str) -> str | None:
    """The first control, format or line-separator character in `text`, if any."""
    if text.isprintable():  # the common case, in C
        return None
    for char in text:
        if unicodedata.category(char) in _INVISIBLE_CATEGORIES:
            return char
    return None


_CONTROL_NAMES = {
    "\x00": "NUL",
    "\t": "tab",
    "\n": "line feed",
    "\r": "carriage return",
    "\x1b": "escape",
    "\x7f": "delete",
}


def describe_char(char: str) -> str:
    """A character named so that the description itself is plain ASCII."""
    if char.isascii() and char.isprintable():
        return f"{char!r}"
    name = _CONTROL_NAMES.get(char) or unicodedata.name(char, "a control character").lower()
    return f"U+{ord(char):04X} ({name})"
