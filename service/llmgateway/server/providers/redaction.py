"""Provider keys out of everything an upstream says: the one place that scrubs.

An upstream, or a proxy in front of it, may quote the Authorization header it
was sent anywhere it likes: an error's message, code or metadata, a non-JSON
error page, a mid-stream error event, even a 200 answer's `id` or `model`. Every
string the provider layer passes on goes through a `Redactor` first, so no
caller, log line, ledger row, metric label or span ever holds a provider key.

Two strengths:
- `text()` for the upstream's metadata (error fields, ids, model and provider
  names, finish reasons): every run of at least PARTIAL_MIN consecutive
  characters of a configured key, wherever in the key it starts (an upstream
  that quotes a key's start, its end, its middle or only the secret half of a
  Z.AI `<id>.<secret>` key still gives most of it away), the same behind JSON
  escapes (`sk-or\\u002dv1-…` in a `metadata.raw` that is itself JSON text),
  and anything shaped like a bearer token or a provider key;
- `content()` for the answer itself (content, reasoning, refusal, tool calls,
  reasoning details' text, signature and raw_json): exact configured keys
  only. The answer is the caller's data and the patterns above could mangle
  a legitimate answer (a model asked to show an Authorization header), or an
  opaque signature the caller must pass back unchanged; an exact 256-bit key
  cannot occur by chance, so replacing it costs nothing a caller could want.
  In a stream each delta is checked on its own, so a key there is caught only
  when one delta holds all of it (see providers/stream.py).

Redaction always comes before any truncation: cutting first could leave part
of a key on the near side of the cut.

How runs are found cheaply: every GRAM-character piece of every key is indexed
(piece -> where in which key). A run of PARTIAL_MIN characters of a key
contains PARTIAL_MIN - GRAM + 1 whole pieces at consecutive positions, so one
of them starts at a multiple of STRIDE = PARTIAL_MIN - GRAM + 1: looking up the
pieces at those positions only (one in seven) finds every run, and each hit is
grown both ways against the key to its full length. A clean 30-character id
costs four dictionary look-ups.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from llmgateway.v1 import completion_service_pb2 as pb

REDACTED = "[redacted]"
# Any run of a key's characters this long or longer is redacted wherever it
# appears. Fewer tell nothing useful: OpenRouter's keys share the first nine
# ("sk-or-v1-"), which leaves at most a couple of a key's 64 secret characters,
# and 11 characters of a random key are 11 of its 64 (or of Z.AI's 16).
PARTIAL_MIN = 12
GRAM = 6
STRIDE = PARTIAL_MIN - GRAM + 1
# Shapes worth removing even when they are not a configured key (an upstream
# that quotes a reformatted header, or a key the gateway no longer holds):
# bearer tokens, OpenRouter-style `sk-or-v1-…` keys, Anthropic's
# `sk-ant-api03-…`, OpenAI's `sk-proj-…` (and older `sk-…`), Groq's `gsk_…`,
# Google's `AIza…` and Z.AI's `<id>.<secret>`. Each is looked for only when a
# literal it must hold is in the text (a substring test costs next to nothing).
_BEARER = re.compile(r"(?i)\b(bearer[\s:=]+)[A-Za-z0-9._~+/=-]{16,}")
_OPENROUTER_SHAPE = re.compile(r"\bsk-or-(?:v\d+-)?[A-Za-z0-9]{16,}")
_ANTHROPIC_SHAPE = re.compile(r"\bsk-ant-(?:api|admin)\d\d-[A-Za-z0-9_-]{20,}")
# After the two above, so that an OpenRouter key goes exactly as its own shape
# says (this one, broader, would also take the `-`/`_` text after it).
_OPENAI_SHAPE = re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}")
_GROQ_SHAPE = re.compile(r"\bgsk_[A-Za-z0-9]{20,}")
_GOOGLE_SHAPE = re.compile(r"\bAIza[0-9A-Za-z_-]{35}")
_ZAI_SHAPE = re.compile(r"\b[0-9a-f]{32}\.[A-Za-z0-9]{16}\b")
# What every Z.AI-shaped string holds, found far faster than _ZAI_SHAPE (a
# search that starts with a literal skips ahead to it); and its shortest length.
_ZAI_HINT = re.compile(r"\.[A-Za-z0-9]{16}")
_ZAI_SHAPE_LEN = 49
# JSON string escapes: an upstream's `metadata.raw` may be JSON text in a
# string, where any character of a key may be written `\uXXXX`.
_JSON_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|([\"\\/bfnrt]))")
_SIMPLE_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r"}
_SIMPLE_ESCAPES["t"] = "\t"
# JSON text inside a JSON string inside...: unescaped at most this many times.
_MAX_UNESCAPES = 3
# The string fields of a unary answer: metadata, scrubbed fully (Redactor.text),
# and the answer itself, of exact keys only (Redactor.content).
_RESPONSE_METADATA = ("id", "model", "upstream_provider", "native_finish_reason")
_RESPONSE_ANSWER = ("content", "reasoning", "refusal")
# A reasoning detail's text and opaque parts are answer text too (looser rules
# could alter a signature the caller must pass back unchanged).
_DETAIL_ANSWER = ("text", "signature", "raw_json")


class Redactor:
    """Scrubs the gateway's provider keys out of upstream-provided text."""

    __slots__ = ("_grams", "_secrets", "_short")

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a key that contains another is removed whole.
        self._secrets: tuple[str, ...] = tuple(
            sorted({s for s in secrets if s}, key=len, reverse=True)
        )
        # Keys too short for runs are only ever removed whole.
        self._short = tuple(s for s in self._secrets if len(s) < PARTIAL_MIN)
        grams: dict[str, list[tuple[str, int]]] = {}
        for secret in self._secrets:
            if len(secret) >= PARTIAL_MIN:
                for at in range(len(secret) - GRAM + 1):
                    grams.setdefault(secret[at : at + GRAM], []).append((secret, at))
        self._grams: dict[str, tuple[tuple[str, int], ...]] = {
            gram: tuple(places) for gram, places in grams.items()
        }

    @classmethod
    def union(cls, redactors: Iterable[Redactor]) -> Redactor:
        """One redactor removing the keys of all of `redactors`."""
        return cls(secret for redactor in redactors for secret in redactor._secrets)

    def text(self, value: str) -> str:
        """`value` without any long run of a key's characters (escaped or not),
        bearer tokens or key-shaped strings. `value` itself when nothing goes."""
        if not value:
            return value
        if "\\" in value and self._grams:
            value = self._unescaped_if_hiding_a_key(value)
        value = self._without_runs(value)
        for secret in self._short:
            if secret in value:
                value = value.replace(secret, REDACTED)
        # Cheap tests first: most strings hold no such shape, and each of
        # these regexes costs ~20 ns a character where a substring test is ~0.
        if "bearer" in value.lower():
            value = _BEARER.sub(r"\g<1>" + REDACTED, value)
        if "sk-" in value:
            if "sk-or-" in value:
                value = _OPENROUTER_SHAPE.sub(REDACTED, value)
            if "sk-ant-" in value:
                value = _ANTHROPIC_SHAPE.sub(REDACTED, value)
            if "sk-" in value:
                value = _OPENAI_SHAPE.sub(REDACTED, value)
        if "gsk_" in value:
            value = _GROQ_SHAPE.sub(REDACTED, value)
        if "AIza" in value:
            value = _GOOGLE_SHAPE.sub(REDACTED, value)
        if len(value) >= _ZAI_SHAPE_LEN and "." in value and _ZAI_HINT.search(value):
            value = _ZAI_SHAPE.sub(REDACTED, value)
        return value

    def bounded(self, value: str, limit: int) -> str:
        """`text(value)`, then cut to `limit` characters (in that order, always)."""
        return self.text(value)[:limit]

    def content(self, value: str) -> str:
        """`value` without the exact configured keys; nothing else is changed."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def response(self, response: pb.CompleteResponse) -> pb.CompleteResponse:
        """A unary answer scrubbed, in place: metadata fully, the answer of exact keys.
        A field is written only when its value changed (each write copies it into
        the message again). (Stream events are scrubbed as they are assembled,
        field by field: see providers/stream.py.)"""
        text = self.text
        for field in _RESPONSE_METADATA:
            value = getattr(response, field)
            if (scrubbed := text(value)) != value:
                setattr(response, field, scrubbed)
        if not self._secrets:
            return response
        content = self.content
        for field in _RESPONSE_ANSWER:
            value = getattr(response, field)
            if value and (scrubbed := content(value)) != value:
                setattr(response, field, scrubbed)
        for call in response.tool_calls:
            if (scrubbed := text(call.id)) != call.id:
                call.id = scrubbed
            if (scrubbed := content(call.name)) != call.name:
                call.name = scrubbed
            if (scrubbed := content(call.arguments)) != call.arguments:
                call.arguments = scrubbed
        for detail in response.reasoning_details:
            # Scrubbed as the tool call id it names is, so the two still match.
            if (scrubbed := text(detail.tool_call_id)) != detail.tool_call_id:
                detail.tool_call_id = scrubbed
            for field in _DETAIL_ANSWER:
                value = getattr(detail, field)
                if value and (scrubbed := content(value)) != value:
                    setattr(detail, field, scrubbed)
        return response

    def _runs(self, value: str) -> list[tuple[int, int]]:
        """Where in `value` runs of PARTIAL_MIN or more characters of a key are,
        as (start, end) pairs, possibly overlapping."""
        grams = self._grams
        length = len(value)
        runs: list[tuple[int, int]] = []
        if length < PARTIAL_MIN or not grams:
            return runs
        for at in range(0, length - GRAM + 1, STRIDE):
            places = grams.get(value[at : at + GRAM])
            if places is None:
                continue
            for secret, offset in places:
                start, back = at, offset
                while start > 0 and back > 0 and value[start - 1] == secret[back - 1]:
                    start -= 1
                    back -= 1
                end, ahead = at + GRAM, offset + GRAM
                while end < length and ahead < len(secret) and value[end] == secret[ahead]:
                    end += 1
                    ahead += 1
                if end - start >= PARTIAL_MIN:
                    runs.append((start, end))
        return runs

    def _without_runs(self, value: str) -> str:
        runs = self._runs(value)
        if not runs:
            return value
        runs.sort()
        parts: list[str] = []
        done = 0
        for start, end in runs:
            if end <= done:
                continue  # inside a run already removed
            if start >= done:
                parts.append(value[done:start])
                parts.append(REDACTED)
            done = end
        parts.append(value[done:])
        return "".join(parts)

    def _unescaped_if_hiding_a_key(self, value: str) -> str:
        """`value` with its JSON escapes undone when that shows a run of a key
        (which the caller then removes); otherwise `value` as it was, escapes
        and all."""
        unescaped = value
        for _ in range(_MAX_UNESCAPES):
            once = _JSON_ESCAPE.sub(_unescape, unescaped)
            if once == unescaped:
                break
            unescaped = once
            if self._runs(unescaped):
                return unescaped
            if "\\" not in unescaped:
                break
        return value


def _unescape(match: re.Match[str]) -> str:
    code = match.group(1)
    if code is None:
        return _SIMPLE_ESCAPES[match.group(2)]
    char = chr(int(code, 16))
    # A lone surrogate could not be encoded into a protobuf string; a pair
    # becomes two of these, which only happens in text that held a key.
    return "\ufffd" if "\ud800" <= char <= "\udfff" else char
