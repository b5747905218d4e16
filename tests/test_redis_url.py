"""Redis URLs (state/redis_url.py): one the client would misread is refused at
configuration without quoting its password, one it reads is read as written, and
no error redis-py raises carries the password to a log line, a caller or a
traceback (here against a server that echoes what it was sent into its errors)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import traceback
import urllib.parse

import pytest
import redis.connection
import redis.exceptions
from hypothesis import given
from hypothesis import strategies as st

from llmgateway.server.config import ConfigError, Settings, check_redis_url
from llmgateway.server.state.db import StateUnavailableError
from llmgateway.server.state.redis_limits import RedisLimiter
from llmgateway.server.state.redis_url import REDACTED, display_url, scrub, url_secrets
from tests.redis_server import echoing_server
from tests.routing_fixtures import caller_key

# Pieces of a password no message has of its own: letters, or digits long enough
# that no port, errno or line number in a message matches them.
_PIECES = st.one_of(
    st.sampled_from(["SECRET", "Hunter", "pw"]).map(lambda word: word + "XQ"),
    st.integers(10**5, 10**9).map(str),
)
_PASSWORDS = st.builds(
    lambda first, rest: first + "".join(d + piece for d, piece in rest),
    _PIECES,
    st.lists(st.tuples(st.sampled_from("/?#@:-"), _PIECES), max_size=4),
)


def pieces(password: str) -> list[str]:
    for delimiter in "/?#@:-":
        password = password.replace(delimiter, " ")
    return password.split()


@given(
    password=_PASSWORDS,
    user=st.sampled_from(["", "gw"]),
    scheme=st.sampled_from(["redis", "rediss"]),
)
def test_a_password_is_read_as_written_or_refused_without_a_piece_of_it(password, user, scheme):
    url = f"{scheme}://{user}:{password}@cache.internal:6379/0"
    try:
        assert check_redis_url(url) == url
    except ConfigError as refused:
        message = str(refused)
        for piece in pieces(password):
            assert piece not in message, message
        assert "LLMGATEWAY_REDIS_URL" in message
        assert "percent-encode" in message
        assert "cache.internal:6379" in message  # which URL: its host, as displayed
    else:
        # Accepted: redis-py reads the password, host, port and database as meant.
        read = redis.connection.parse_url(url)
        assert (read["password"], read["host"], read["port"], read["db"]) == (
            password,
            "cache.internal",
            6379,
            0,
        )
    # Percent-encoded, every password is accepted and read back exactly.
    encoded = f"{scheme}://{user}:{urllib.parse.quote(password, safe='')}@cache.internal:6379/0"
    assert check_redis_url(encoded) == encoded
    assert redis.connection.parse_url(encoded)["password"] == password


def test_a_password_read_as_a_port_is_refused_at_load():
    # redis-py would read this as localhost:12, no password: a connection error
    # would then quote "localhost:12", digits of the password.
    url = "redis://:12/SECRET@cache.internal:6379/0"
    with pytest.raises(ConfigError) as refused:
        Settings.load({"LLMGATEWAY_REDIS_URL": url})
    message = str(refused.value)
    assert "SECRET" not in message
    assert ":12" not in message
    assert "redis://cache.internal:6379/0" in message
    assert "%2F" in message
    with pytest.raises(ConfigError):  # and when the limiter is built without the config
        RedisLimiter(url, instance_id="i", lease_seconds=15.0, timeout=0.5)


@pytest.mark.parametrize(
    "url",
    [
        "unix:///run/redis@main.sock",  # an '@' in a socket path, no credentials
        "unix://:pw@/run/redis.sock?db=1",
        "redis://gw:p%2Fss%40word@cache.internal:6379/0",
        "redis://:p@ss@cache.internal:6379/0",  # urllib ends credentials at the last '@'
        "rediss://[::1]:6380/2",
    ],
)
def test_urls_the_client_reads_as_written_are_accepted(url):
    assert check_redis_url(url) == url


@pytest.mark.parametrize("url", ["redis://cache.internal:99999/0", "redis://[::1/0"])
def test_a_malformed_host_or_port_is_refused(url):
    with pytest.raises(ConfigError, match="host or port is malformed"):
        check_redis_url(url)


def test_the_secrets_of_a_url_are_its_passwords_as_written_and_decoded():
    assert set(url_secrets("redis://gw:p%2Fss@h:6379/0")) == {"p%2Fss", "p/ss"}
    assert set(url_secrets("redis://h:6379/0?password=a%2Bb+c")) == {"a%2Bb+c", "a+b+c", "a+b c"}
    assert url_secrets("redis://h:6379/0") == ()
    assert display_url("redis://gw:p%2Fss@h:6379/0") == "redis://gw@h:6379/0"


@given(password=_PASSWORDS)
def test_scrub_removes_the_password_from_a_whole_exception_chain(password):
    secrets = url_secrets(f"redis://:{urllib.parse.quote(password, safe='')}@h:6379/0")
    try:
        try:
            raise OSError(111, f"Connect call failed ('{password}', 6379)", password)
        except OSError as cause:
            raise redis.exceptions.ConnectionError(f"Error 111 connecting to {password}.") from (
                cause
            )
    except redis.exceptions.ConnectionError as exc:
        scrubbed = scrub(exc, secrets)
        shown = "".join(traceback.format_exception(scrubbed))
    assert password not in shown
    assert REDACTED in str(scrubbed)
    assert "Connect call failed" in shown  # the rest of the reason stays


# ---- against a server that echoes what it was sent into its error replies ----

PASSWORD = "p/ss-SECRETXQ-31415926"
KEY = dataclasses.replace(caller_key(name="echo"), rpm=5)


def limiter(port: int) -> RedisLimiter:
    quoted = urllib.parse.quote(PASSWORD, safe="")
    return RedisLimiter(
        f"redis://:{quoted}@127.0.0.1:{port}/0", instance_id="i", lease_seconds=15.0, timeout=2.0
    )


async def test_an_outage_reply_quoting_the_password_reaches_no_log_or_caller(caplog):
    caplog.set_level(logging.INFO, logger="llmgateway.server.state.redis_limits")
    async with echoing_server("LOADING echo:") as server:
        store = limiter(server.port)
        try:
            await store.start()
            with pytest.raises(StateUnavailableError) as refused:
                await store.reserve(KEY, tokens=10, cost_usd=0.0)
        finally:
            await store.close(give_up=asyncio.get_running_loop().time())
    told = str(refused.value)
    assert "echo:" in told  # the server's reason did reach the caller, without the password
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "echo:" in logged
    for shown in (told, logged):
        assert "SECRETXQ" not in shown, shown
        assert "31415926" not in shown, shown


async def test_an_error_reply_quoting_the_password_is_raised_without_it():
    async with echoing_server("ERR echo:") as server:
        store = limiter(server.port)
        try:
            with pytest.raises(redis.exceptions.ResponseError) as raised:
                await store.start()
        finally:
            await store.close(give_up=asyncio.get_running_loop().time())
    shown = "".join(traceback.format_exception(raised.value))
    assert "echo:" in shown
    assert "SECRETXQ" not in shown, shown
