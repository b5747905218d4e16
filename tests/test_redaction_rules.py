"""The redaction rules themselves (service/llmgateway/server/providers/redaction.py), without a gateway."""

from __future__ import annotations

import orjson
from hypothesis import assume, given
from hypothesis import strategies as st

from llmgateway.server.config import OpenRouterSettings, Secret, Timeouts
from llmgateway.server.providers import upstream_errors as ue
from llmgateway.server.providers.openai_compatible.stream import (
    StreamAssembler,
    failure_from_error_object,
)
from llmgateway.server.providers.openrouter import OpenRouterProvider
from llmgateway.server.providers.openrouter import openrouter_models as _openrouter_models
from llmgateway.server.providers.redaction import PARTIAL_MIN, REDACTED, Redactor
from llmgateway.server.providers.sse import ServerSentEvent
from llmgateway.server.routing.router import Route
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

OPENROUTER_KEY = "sk-or-v1-" + "3f9a" * 16
# Not hex: only the configured key, never a key-shaped pattern, can match it.
ZAI_KEY = "Zz-not-hex-id-canary-000000000000.SecretPartCanary"
REDACTOR = Redactor((OPENROUTER_KEY, ZAI_KEY))


def ctx() -> ue.ErrorContext:
    return ue.ErrorContext(
        provider_name="OpenRouter",
        provider_id="openrouter",
        key_env="OPENROUTER_API_KEY",
        model="openrouter/x/y",
        redactor=REDACTOR,
    )


def test_every_configured_key_goes_and_the_text_around_it_stays() -> None:
    text = f"bad key {OPENROUTER_KEY}; other {ZAI_KEY} end"
    assert REDACTOR.text(text) == f"bad key {REDACTED}; other {REDACTED} end"


def test_a_key_cut_short_by_the_upstream_still_goes() -> None:
    # An upstream that quotes only the first 20 characters still gives most away.
    assert REDACTOR.text(f"key {OPENROUTER_KEY[:20]}…") == f"key {REDACTED}…"
    assert REDACTOR.text(f"key {ZAI_KEY[:PARTIAL_MIN]}") == f"key {REDACTED}"
    # Fewer than PARTIAL_MIN characters tell nothing (OpenRouter keys share nine).
    assert REDACTOR.text("key sk-or-v1-3f") == "key sk-or-v1-3f"


def test_bearer_tokens_and_key_shapes_go_even_when_not_configured() -> None:
    assert Redactor().text("Authorization: Bearer abcdefghijklmnop1234") == (
        f"Authorization: Bearer {REDACTED}"
    )
    assert Redactor().text("key sk-or-v1-0123456789abcdef0123 x") == f"key {REDACTED} x"
    zai_shaped = "0123456789abcdef0123456789abcdef.AbCdEfGhIjKlMnOp"
    assert Redactor().text(f"({zai_shaped})") == f"({REDACTED})"
    # Ordinary words survive.
    assert Redactor().text("the bearer token was not accepted") == (
        "the bearer token was not accepted"
    )


def test_redacting_twice_changes_nothing_more() -> None:
    once = REDACTOR.text(f"Bearer {OPENROUTER_KEY} and {ZAI_KEY}")
    assert REDACTOR.text(once) == once


def test_answers_lose_only_the_exact_keys() -> None:
    # A model asked to show an Authorization header keeps its example; an exact
    # key (which no model can produce by chance) does not survive.
    example = "curl -H 'Authorization: Bearer sk-or-v1-0123456789abcdef0123'"
    assert REDACTOR.content(example) == example
    assert REDACTOR.content(f"x {OPENROUTER_KEY} y") == f"x {REDACTED} y"


@given(
    before=st.text(max_size=600),
    after=st.text(max_size=50),
    limit=st.integers(min_value=0, max_value=700),
    key=st.sampled_from([OPENROUTER_KEY, ZAI_KEY]),
)
def test_no_cut_leaves_a_keys_start_behind(before: str, after: str, limit: int, key: str) -> None:
    bounded = REDACTOR.bounded(before + key + after, limit)
    assert key[:PARTIAL_MIN] not in bounded
    assert len(bounded) <= limit


def test_a_key_straddling_the_message_cut_leaves_no_prefix() -> None:
    # The key starts 20 characters before the 500-character cap on the upstream message.
    failure = ue.UpstreamFailure(400, None, "x" * 480 + OPENROUTER_KEY)
    error = ue.build_error(pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST, failure, ctx())
    assert OPENROUTER_KEY[:PARTIAL_MIN] not in error.message
    assert error.message.endswith("x" * 480 + REDACTED)


def test_a_non_object_error_straddling_its_cut_leaves_no_prefix() -> None:
    # A bare-string error used to be cut to 500 characters before redaction.
    error_value = "x" * 480 + " " + OPENROUTER_KEY
    failure = failure_from_error_object(error_value, 400)
    error = ue.build_error(pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST, failure, ctx())
    assert OPENROUTER_KEY[:PARTIAL_MIN] not in error.message


def test_every_upstream_field_of_an_error_is_redacted() -> None:
    quoted = f"Bearer {OPENROUTER_KEY}"
    failure = failure_from_error_object(
        {
            "code": quoted,
            "message": f"refused {ZAI_KEY}",
            "metadata": {"error_type": quoted, "provider_name": quoted, "raw": {"auth": quoted}},
        },
        400,
    )
    error = ue.build_error(pb.ERROR_REASON_UPSTREAM_REJECTED_REQUEST, failure, ctx())
    status = error.to_rpc_status()
    everything = [error.message, *error.metadata.values(), status.details]
    everything += [str(value) for _, value in status.trailing_metadata]
    for text in everything:
        for key in (OPENROUTER_KEY, ZAI_KEY):
            assert key[:PARTIAL_MIN] not in text, text
    assert error.metadata["upstreamCode"] == f"Bearer {REDACTED}"
    assert error.metadata["upstreamErrorType"] == f"Bearer {REDACTED}"
    assert error.metadata["upstreamProvider"] == f"Bearer {REDACTED}"


async def test_errors_use_the_providers_own_redactor() -> None:
    # Built once per provider (its key index is not free), never per error.
    provider = OpenRouterProvider(OpenRouterSettings(api_key=Secret(OPENROUTER_KEY)), Timeouts())
    try:
        route = Route(common.PROVIDER_OPENROUTER, "x/y", "openrouter/x/y")
        assert provider.error_context(route).redactor is provider.redactor
        error = provider.in_band_error({"message": f"lost {OPENROUTER_KEY[30:]}"}, route)
        assert OPENROUTER_KEY[30:42] not in error.message
    finally:
        await provider.aclose()


def test_a_unary_answer_is_scrubbed() -> None:
    quoted = f"Bearer {OPENROUTER_KEY}"
    response = pb.CompleteResponse(
        id=quoted,
        model=f"openrouter/{quoted}",
        upstream_provider=quoted,
        native_finish_reason=quoted,
        content=f"echo {ZAI_KEY}",
        reasoning=OPENROUTER_KEY,
        tool_calls=[common.ToolCall(id=quoted, name=OPENROUTER_KEY, arguments=ZAI_KEY)],
    )
    wire = REDACTOR.response(response).SerializeToString()
    for key in (OPENROUTER_KEY, ZAI_KEY):
        assert key[:PARTIAL_MIN].encode() not in wire
    assert response.model == f"openrouter/Bearer {REDACTED}"
    assert response.content == f"echo {REDACTED}"


async def test_a_stream_is_scrubbed_as_it_is_assembled() -> None:
    provider = OpenRouterProvider(OpenRouterSettings(api_key=Secret(OPENROUTER_KEY)), Timeouts())
    try:
        route = Route(common.PROVIDER_OPENROUTER, "x/y", "openrouter/x/y")
        assembler = StreamAssembler(provider, route, include_reasoning=True)
        quoted = f"Bearer {OPENROUTER_KEY}"
        base = {"id": quoted, "model": quoted, "provider": quoted}
        chunks = [
            {**base, "choices": [{"index": 0, "delta": {"reasoning": OPENROUTER_KEY}}]},
            {**base, "choices": [{"index": 0, "delta": {"content": f"a {OPENROUTER_KEY}"}}]},
            {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": quoted,
                                    "function": {"name": "f", "arguments": OPENROUTER_KEY},
                                }
                            ]
                        },
                        "finish_reason": quoted,
                    }
                ],
            },
        ]
        events = [
            out
            for chunk in chunks
            for out in assembler.on_event(ServerSentEvent(data=orjson.dumps(chunk)))
        ]
        assembler.on_event(ServerSentEvent(data=b"[DONE]"))
        events += assembler.finish()
    finally:
        await provider.aclose()
    assert [e.WhichOneof("event") for e in events] == [
        "reasoning_delta",
        "content_delta",
        "tool_call",
        "done",
    ]
    for event in events:
        assert OPENROUTER_KEY[:PARTIAL_MIN].encode() not in event.SerializeToString(), event
    assert events[-1].done.model == f"openrouter/Bearer {REDACTED}"
    assert events[-1].done.native_finish_reason == f"Bearer {REDACTED}"


def test_catalogue_strings_copied_out_are_scrubbed() -> None:
    document = {
        "data": [
            {"id": f"x/{OPENROUTER_KEY}", "name": f"tail {ZAI_KEY[-20:]}", "n": 3},
            {"id": "vendor/model", "name": "Vendor: Model", "description": OPENROUTER_KEY},
        ]
    }
    leaky, clean = _openrouter_models(document, True, REDACTOR.text)
    assert leaky.upstream_model == f"x/{REDACTED}"
    assert leaky.name == f"openrouter/x/{REDACTED}"
    assert leaky.display_name == f"tail {REDACTED}"
    assert (clean.upstream_model, clean.display_name) == ("vendor/model", "Vendor: Model")


def test_openrouter_provider_returned_error_carries_the_real_reason() -> None:
    # The shape real OpenRouter traffic shows: a 429 whose message says nothing,
    # its reason in metadata.raw and the provider behind it in provider_name.
    failure = failure_from_error_object(
        {
            "code": 429,
            "message": "Provider returned error",
            "metadata": {
                "provider_name": "ExampleCloud",
                "raw": "vendor/model-x is temporarily rate-limited upstream; retry shortly",
            },
        },
        429,
    )
    error = ue.build_error(pb.ERROR_REASON_UPSTREAM_RATE_LIMITED, failure, ctx())
    assert error.message == (
        "OpenRouter rate-limited the request (HTTP 429, provider ExampleCloud): "
        "Provider returned error: vendor/model-x is temporarily rate-limited upstream; "
        "retry shortly"
    )
    assert error.metadata["upstreamProvider"] == "ExampleCloud"
    assert error.metadata["upstreamRaw"] == (
        "vendor/model-x is temporarily rate-limited upstream; retry shortly"
    )


def test_a_raw_reason_is_bounded_and_may_be_an_object() -> None:
    failure = failure_from_error_object(
        {"message": "Provider returned error", "metadata": {"raw": {"error": "z" * 5000}}}, 502
    )
    error = ue.build_error(pb.ERROR_REASON_UPSTREAM_UNAVAILABLE, failure, ctx())
    assert '{"error":"zzz' in error.message
    assert len(error.message) < 1200
    assert len(error.metadata["upstreamRaw"]) == 256


def test_a_keys_end_or_middle_goes_wherever_it_sits() -> None:
    tail = OPENROUTER_KEY[-52:]
    middle = OPENROUTER_KEY[16:56]
    assert REDACTOR.text(f"invalid key ...{tail}") == f"invalid key ...{REDACTED}"
    assert REDACTOR.text(f"key ({middle})") == f"key ({REDACTED})"
    assert REDACTOR.text(f"x{ZAI_KEY[5 : 5 + PARTIAL_MIN]}y") == f"x{REDACTED}y"
    # Fewer than PARTIAL_MIN characters of a key are left alone.
    short_run = OPENROUTER_KEY[30 : 30 + PARTIAL_MIN - 1]
    assert REDACTOR.text(f"x {short_run} y") == f"x {short_run} y"


def test_the_secret_half_of_a_zai_key_goes_on_its_own() -> None:
    secret = ZAI_KEY.rpartition(".")[2]
    assert REDACTOR.text(f"invalid secret {secret}") == f"invalid secret {REDACTED}"
    zai = Redactor(("0123456789abcdef0123456789abcdef.AbCdEfGhIjKlMnOp",))
    assert zai.text("secret=AbCdEfGhIjKlMnOp;") == f"secret={REDACTED};"


def test_a_json_escaped_key_in_raw_metadata_goes() -> None:
    raw = orjson.dumps({"error": {"message": f"bad {OPENROUTER_KEY}"}}).decode()
    escaped = raw.replace("-", "\\u002d")
    assert OPENROUTER_KEY[:PARTIAL_MIN] not in escaped  # no plain search finds it
    failure = failure_from_error_object(
        {"message": "Provider returned error", "metadata": {"raw": escaped}}, 429
    )
    error = ue.build_error(pb.ERROR_REASON_UPSTREAM_RATE_LIMITED, failure, ctx())
    for text in (error.message, error.metadata["upstreamRaw"]):
        assert REDACTED in text
        assert _longest_run_of(OPENROUTER_KEY, text.replace("\\u002d", "-")) < PARTIAL_MIN
    # Escaped every way, even a whole character at a time, and escaped twice.
    every = "".join(f"\\u{ord(c):04x}" for c in OPENROUTER_KEY)
    assert REDACTOR.text(f"k={every}") == f"k={REDACTED}"
    assert REDACTOR.text(f"k={every.replace(chr(92), chr(92) * 2)}") == f"k={REDACTED}"
    # Escapes hiding no key stay as they were.
    assert REDACTOR.text('{"a": "\\u00e9\\n"}') == '{"a": "\\u00e9\\n"}'


def _longest_run_of(secret: str, text: str) -> int:
    """The longest run of consecutive characters of `secret` found in `text`."""
    best = 0
    for start in range(len(secret)):
        for end in range(start + best + 1, len(secret) + 1):
            if secret[start:end] not in text:
                break
            best = end - start
    return best


@given(
    before=st.text(max_size=120),
    after=st.text(max_size=120),
    key=st.sampled_from([OPENROUTER_KEY, ZAI_KEY]),
    span=st.tuples(st.integers(0, 80), st.integers(PARTIAL_MIN, 80)),
)
def test_no_run_of_a_key_survives_wherever_it_is_cut(
    before: str, after: str, key: str, span: tuple[int, int]
) -> None:
    start = span[0] % (len(key) - PARTIAL_MIN + 1)
    run = key[start : start + span[1]]
    scrubbed = REDACTOR.text(before + run + after)
    for secret in (OPENROUTER_KEY, ZAI_KEY):
        assert _longest_run_of(secret, scrubbed) < PARTIAL_MIN, scrubbed
    assert REDACTOR.text(scrubbed) == scrubbed


@given(text=st.text(alphabet=st.characters(codec="utf-8"), max_size=200))
def test_text_without_a_key_is_left_as_it_was(text: str) -> None:
    # Shapes aside (no bearer, no sk-or-, no long hex-dot-alnum), nothing changes.
    assume("bearer" not in text.lower() and "sk-" not in text and "\\" not in text)
    assume("gsk_" not in text and "AIza" not in text)
    assert REDACTOR.text(text) == text
    assert REDACTOR.text(text) is text


# -- the direct providers' key shapes ------------------------------------------------

_KEY_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_URL_SAFE = _KEY_CHARS + "_-"
_SHAPED_KEYS = st.one_of(
    st.builds(
        lambda kind, digits, body: f"sk-ant-{kind}{digits}-{body}",
        st.sampled_from(["api", "admin"]),
        st.text("0123456789", min_size=2, max_size=2),
        st.text(_URL_SAFE, min_size=20, max_size=100),
    ),
    st.builds(
        lambda kind, body: f"sk-{kind}{body}",
        st.sampled_from(["", "proj-", "svcacct-", "admin-"]),
        st.text(_URL_SAFE, min_size=20, max_size=160),
    ),
    st.builds(lambda body: f"gsk_{body}", st.text(_KEY_CHARS, min_size=20, max_size=60)),
    st.builds(lambda body: f"AIza{body}", st.text(_URL_SAFE, min_size=35, max_size=35)),
)


@given(
    key=_SHAPED_KEYS,
    before=st.sampled_from(["", "key ", "Incorrect API key provided: ", '{"key": "', "x="]),
    after=st.sampled_from(["", " is invalid", '"}', ". Check it.", "&alt=sse"]),
)
def test_provider_key_shapes_go_even_when_not_configured(key: str, before: str, after: str) -> None:
    scrubbed = Redactor().text(before + key + after)
    assert scrubbed == before + REDACTED + after
    assert Redactor().text(scrubbed) == scrubbed


def test_the_fake_upstreams_keys_have_the_real_shapes() -> None:
    from llmgateway.testing.fake_upstream import app

    for key in (
        app.DEFAULT_OPENAI_KEY,
        app.DEFAULT_ANTHROPIC_KEY,
        app.DEFAULT_GEMINI_KEY,
        app.DEFAULT_GROQ_KEY,
    ):
        assert Redactor().text(f"[{key}]") == f"[{REDACTED}]", key


def test_an_openrouter_key_still_goes_by_its_own_shape() -> None:
    # The broader OpenAI shape runs after it: the text after an OpenRouter key stays.
    key = "sk-or-v1-" + "0123456789abcdef" * 4
    assert Redactor().text(f"{key}-suffix_x") == f"{REDACTED}-suffix_x"
    assert Redactor().text(f"{key}-{key}") == f"{REDACTED}-{REDACTED}"


def test_masked_keys_and_ordinary_words_are_left_alone() -> None:
    for text in (
        # OpenAI's own 401 masks all but the last four characters.
        "Incorrect API key provided: sk-proj-********************abcd.",
        "task-oriented tasks-and-risks-with-long-names-here",
        "gsk_short",
        "AIzaTooShort",
        "sk-ant-api03-short",
        "sk-",
    ):
        assert Redactor().text(text) == text
