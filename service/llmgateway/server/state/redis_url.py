"""Redis URLs as redis-py reads them: which ones it would misread, how to show
one, and which parts of one are secret (to keep out of every error and log line).

redis-py splits a URL with urllib: the authority ends at the first '/', '?' or
'#'. So a password holding one of those unencoded ends the authority inside the
password: `redis://:12/SECRET@host:6379/0` is read as host localhost, port 12,
no password, and a connection error then quotes "localhost:12", a piece of the
password. Such URLs are refused (`url_problem`) before any connection is made.
Pure: no redis import, so config.py can use it at load time.
"""

from __future__ import annotations

import urllib.parse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

SCHEMES = ("redis://", "rediss://", "unix://")
REDACTED = "***"

_ENCODE_HINT = "percent-encode '/', '?', '#' and '@' in a user name or password, e.g. %2F for '/'"


def display_url(url: str) -> str:
    """A Redis URL without its password (in the user part or the query)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    # The credentials end at the last '@', before the query is cut off: a
    # password may hold an unencoded '?' or '#', which a URL parser would take
    # for the start of the query or fragment.
    credentials, _, host = rest.rpartition("@")
    host = host.split("?", 1)[0].split("#", 1)[0]
    user = credentials.split(":", 1)[0]
    if any(c in user for c in "/?#"):
        user = ""  # not a user name: the '@' was in the query or a password
    return f"{scheme}://{user}{'@' if user else ''}{host}"


def url_problem(url: str) -> str | None:
    """Why redis-py would not read `url` as written, in words that quote none
    of it (it may hold a password); None when it reads it as written."""
    try:
        urllib.parse.urlsplit(url).port  # noqa: B018  # raises ValueError: not a number
    except ValueError:
        # urllib's reasons (a bad port, a bad IPv6 literal) may quote the URL.
        return f"cannot be read: its host or port is malformed ({_ENCODE_HINT})"
    # The authority ends where urllib ends it: at the first '/', '?' or '#'.
    rest = url.partition("://")[2]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, after_authority = rest[:end], rest[end:]
    # An '@' past the authority: the credentials held a '/', '?' or '#' that
    # ended the authority early, and the rest of the password became a port,
    # a database number or a query. (`unix:///run/redis@a.sock` has no
    # authority: its '@' is in the socket's path.)
    if authority and "@" in after_authority:
        return (
            "has an '@' after the end of its host part, so the client would read a piece "
            f"of the user name or password as the host, port or database ({_ENCODE_HINT})"
        )
    return None


def url_secrets(url: str) -> tuple[str, ...]:
    """The password(s) `url` carries, as written and percent-decoded: in the user
    part, and any `password=` of the query (redis-py takes that too)."""
    found: set[str] = set()
    try:
        parts = urllib.parse.urlsplit(url)
        password = parts.password
    except ValueError:
        parts, password = None, None
    if password:
        found.update((password, urllib.parse.unquote(password)))
    # Also by the last '@', as display_url reads it: whatever url_problem would
    # say of the URL, nothing between the first ':' of the credentials and that
    # '@' is to be shown.
    credentials = url.partition("://")[2].rpartition("@")[0]
    if ":" in credentials:
        raw = credentials.split(":", 1)[1]
        found.update((raw, urllib.parse.unquote(raw)))
    query = parts.query if parts is not None else url.partition("?")[2]
    for pair in query.split("&"):
        name, _, value = pair.partition("=")
        if urllib.parse.unquote_plus(name) == "password" and value:
            found.update((value, urllib.parse.unquote(value), urllib.parse.unquote_plus(value)))
    # Longest first, so a password that holds another's text is replaced whole.
    return tuple(sorted((s for s in found if s), key=len, reverse=True))


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of each secret replaced."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def scrub(exc: BaseException, secrets: tuple[str, ...]) -> BaseException:
    """Remove `secrets` from `exc` and the exceptions it was raised from or while
    handling (what a traceback in the log prints), in place; `exc` itself."""
    if not secrets:
        return exc
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if any(isinstance(arg, str) and _holds(arg, secrets) for arg in current.args):
            current.args = tuple(
                redact(arg, secrets) if isinstance(arg, str) else arg for arg in current.args
            )
        if isinstance(current, OSError):
            # str() of an OSError with an errno reads these, not args.
            if isinstance(current.strerror, str):
                current.strerror = redact(current.strerror, secrets)
            if isinstance(current.filename, str):
                current.filename = redact(current.filename, secrets)
            if isinstance(current.filename2, str):
                current.filename2 = redact(current.filename2, secrets)
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
    return exc


def _holds(text: str, secrets: tuple[str, ...]) -> bool:
    return any(secret in text for secret in secrets)
