"""Provider keys out of everything an upstream says: the one place that scrubs.

An upstream, or a proxy in front of it, may quote the Authorization header it
was sent anywhere it likes: an error's message, code or metadata, a non-JSON
error page, a mid-stream error event, even a 200 answer's `id` or `model`. Every
string the provider layer passes on goes through a `Redactor` first, so no
caller, log line, ledger row, metric label or span ever holds a provider key.

Two strengths:
- `text()` for the upstream's metadata (error fields, ids, model and provider
  names, finish reasons): every configured key, any run of at least
  PARTIAL_MIN leading characters of one (an upstream that cut the key short
  still leaks most of it), and anything shaped like a bearer token or a
  provider key;
- `content()` for the answer itself (content, reasoning, tool calls): exact
  configured keys only. The answer is the caller's data and the patterns
  above could mangle a legitimate answer (a model asked to show an
  Authorization header); an exact 256-bit key cannot occur by chance, so
  replacing it costs nothing a caller could want.

Redaction always comes before any truncation: cutting first could leave a
key's prefix on the near side of the cut, where no exact match finds it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable

    from llmgateway.v1 import completion_service_pb2 as pb

    from service.errors import GatewayError

REDACTED = "[redacted]"
# A key's leading characters this long or longer are redacted wherever they
# appear. Fewer tell nothing useful: OpenRouter's keys share the first nine
# ("sk-or-v1-"), which leaves at most a couple of a key's 64 secret characters.
PARTIAL_MIN = 12
# Shapes worth removing even when they are not a configured key (an upstream
# that quotes a reformatted header, or a key the gateway no longer holds):
# bearer tokens, OpenRouter-style `sk-or-v1-…` keys and Z.AI's `<id>.<secret>`.
_BEARER = re.compile(r"(?i)\b(bearer[\s:=]+)[A-Za-z0-9._~+/=-]{16,}")
_KEY_SHAPES = re.compile(r"\bsk-or-(?:v\d+-)?[A-Za-z0-9]{16,}|\b[0-9a-f]{32}\.[A-Za-z0-9]{16}\b")


class Redactor:
    """Scrubs the gateway's provider keys out of upstream-provided text."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a key that contains another is removed whole.
        self._secrets: tuple[str, ...] = tuple(
            sorted({s for s in secrets if s}, key=len, reverse=True)
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        """The keys this redactor removes."""
        return self._secrets

    def joined(self, other: Redactor) -> Redactor:
        """A redactor removing the keys of both."""
        return Redactor((*self._secrets, *other._secrets))

    def text(self, value: str) -> str:
        """`value` without keys, long key prefixes, bearer tokens or key-shaped strings."""
        if not value:
            return value
        for secret in self._secrets:
            value = _without(value, secret)
        value = _BEARER.sub(r"\g<1>" + REDACTED, value)
        return _KEY_SHAPES.sub(REDACTED, value)

    def bounded(self, value: str, limit: int) -> str:
        """`text(value)`, then cut to `limit` characters (in that order, always)."""
        return self.text(value)[:limit]

    def content(self, value: str) -> str:
        """`value` without the exact configured keys; nothing else is changed."""
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        return value

    def json(self, value: object) -> Any:
        """A parsed JSON document with every string in it (keys included) scrubbed."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.json(item) for item in value]
        if isinstance(value, dict):
            return {self.text(str(k)): self.json(v) for k, v in value.items()}
        return value

    def error(self, error: GatewayError) -> GatewayError:
        """`error` with its message and every metadata value scrubbed, in place."""
        error.message = self.text(error.message)
        error.args = (error.message,)
        error.metadata = {name: self.text(value) for name, value in error.metadata.items()}
        return error

    def response(self, response: pb.CompleteResponse) -> pb.CompleteResponse:
        """A unary answer scrubbed, in place: metadata fully, the answer of exact keys.
        (Stream events are scrubbed as they are assembled, field by field: see
        providers/stream.py.)"""
        text = self.text
        response.id = text(response.id)
        response.model = text(response.model)
        response.upstream_provider = text(response.upstream_provider)
        response.native_finish_reason = text(response.native_finish_reason)
        if self._secrets:
            response.content = self.content(response.content)
            response.reasoning = self.content(response.reasoning)
            for call in response.tool_calls:
                call.id = text(call.id)
                call.name = self.content(call.name)
                call.arguments = self.content(call.arguments)
        return response


def _without(value: str, secret: str) -> str:
    """`value` with `secret`, and every run of its first PARTIAL_MIN or more
    characters, replaced by REDACTED."""
    if len(secret) <= PARTIAL_MIN:
        return value.replace(secret, REDACTED) if secret in value else value
    head = secret[:PARTIAL_MIN]
    start = value.find(head)
    if start < 0:
        return value
    parts: list[str] = []
    done = 0
    while start >= 0:
        end = start + PARTIAL_MIN
        limit = min(len(value), start + len(secret))
        while end < limit and value[end] == secret[end - start]:
            end += 1
        parts.append(value[done:start])
        parts.append(REDACTED)
        done = end
        start = value.find(head, end)
    parts.append(value[done:])
    return "".join(parts)
