"""Settings from the environment and a TOML file; model names and aliases."""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tomllib

import grpc
import pytest

from llmgateway.server import config
from llmgateway.server.config import (
    DEFAULT_OPENROUTER_BASE_URL,
    DEFAULT_ZAI_BASE_URL,
    DEFAULT_ZAI_CODING_BASE_URL,
    AliasConfig,
    AliasTarget,
    CapabilityOverride,
    ConfigError,
    RouteEntryConfig,
    RoutingSettings,
    Secret,
    Settings,
    Timeouts,
)
from llmgateway.server.errors import GatewayError
from llmgateway.server.routing import router, task_rules
from llmgateway.server.routing.router import Plan, Route, Router
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc
from tests.readme import README, readme_example_toml
from tests.tls import make_certificates

OPENROUTER_KEY = "sk-or-v1-test-not-a-key"
ZAI_KEY = "zai-test-not-a-key.0123456789"

CONFIG = """
[server]
address = "127.0.0.1:6000"
shutdown_grace_seconds = 5

[timeouts]
connect_seconds = 3
request_seconds = 120.5
stream_idle_seconds = 45

[openrouter]
base_url = "https://or.file.test/api/v1/"
http_referer = "https://gateway.example.test"
app_title = "from-file"

[zai]
base_url = "https://zai.file.test/v4"
coding_base_url = "https://zai-coding.file.test/v4"
accept_language = "zh-CN"
coding_models = ["glm-4.6", "glm-4.7"]

[aliases]
coding = "zai/glm-4.7"
smart = "openrouter/anthropic/claude-sonnet-4.5"
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "llmgateway.toml"
    path.write_text(CONFIG)
    return path


def write(tmp_path, text):
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


# -- defaults and environment -----------------------------------------------------------


def test_defaults_with_an_empty_environment():
    settings = Settings.load({})
    assert settings.address == "0.0.0.0:50051"
    assert settings.openrouter.api_key is None
    assert settings.openrouter.base_url == DEFAULT_OPENROUTER_BASE_URL
    assert settings.openrouter.http_referer is None
    assert settings.openrouter.app_title is None
    assert settings.zai.api_key is None
    assert settings.zai.base_url == DEFAULT_ZAI_BASE_URL
    assert settings.zai.coding_base_url == DEFAULT_ZAI_CODING_BASE_URL
    assert settings.zai.accept_language == "en-US,en"
    assert settings.zai.coding_models == frozenset()
    assert settings.timeouts.connect == 10.0
    assert settings.timeouts.request == 600.0
    assert settings.timeouts.stream_idle == 300.0
    assert dict(settings.aliases) == {}
    assert settings.shutdown_grace == 30.0
    assert settings.max_request_bytes == 8 * 1024 * 1024


def test_environment_variables():
    settings = Settings.load(
        {
            "OPENROUTER_API_KEY": OPENROUTER_KEY,
            "ZAI_API_KEY": f"  {ZAI_KEY}\n",
            "OPENROUTER_BASE_URL": "http://127.0.0.1:8080/api/v1/",
            "ZAI_BASE_URL": "http://127.0.0.1:8081/v4",
            "ZAI_CODING_BASE_URL": "https://coding.zai.test/v4///",
            "OPENROUTER_HTTP_REFERER": "https://gateway.example.test",
            "OPENROUTER_APP_TITLE": "llmgateway",
            "ZAI_ACCEPT_LANGUAGE": "zh-CN",
            "LLMGATEWAY_ADDRESS": "127.0.0.1:7000",
            "LLMGATEWAY_CONNECT_TIMEOUT": "2.5",
            "LLMGATEWAY_REQUEST_TIMEOUT": "90",
            "LLMGATEWAY_STREAM_IDLE_TIMEOUT": "15",
            "LLMGATEWAY_SHUTDOWN_GRACE": "1",
            "LLMGATEWAY_MAX_REQUEST_BYTES": "1048576",
        }
    )
    assert settings.openrouter.api_key == Secret(OPENROUTER_KEY)
    assert settings.zai.api_key is not None
    assert settings.zai.api_key.value == ZAI_KEY  # surrounding whitespace stripped
    # Trailing slashes go, so "{base}/chat/completions" has exactly one slash.
    assert settings.openrouter.base_url == "http://127.0.0.1:8080/api/v1"
    assert settings.zai.base_url == "http://127.0.0.1:8081/v4"
    assert settings.zai.coding_base_url == "https://coding.zai.test/v4"
    assert settings.openrouter.http_referer == "https://gateway.example.test"
    assert settings.openrouter.app_title == "llmgateway"
    assert settings.zai.accept_language == "zh-CN"
    assert settings.address == "127.0.0.1:7000"
    assert settings.timeouts.connect == 2.5
    assert settings.timeouts.request == 90.0
    assert settings.timeouts.stream_idle == 15.0
    assert settings.shutdown_grace == 1.0
    assert settings.max_request_bytes == 1048576


@pytest.mark.parametrize("value", ["", "   ", "\n"])
def test_blank_api_key_means_not_configured(value):
    settings = Settings.load({"OPENROUTER_API_KEY": value, "ZAI_API_KEY": value})
    assert settings.openrouter.api_key is None
    assert settings.zai.api_key is None


def test_empty_environment_variables_fall_back_to_defaults():
    settings = Settings.load({"OPENROUTER_BASE_URL": "", "LLMGATEWAY_CONNECT_TIMEOUT": ""})
    assert settings.openrouter.base_url == DEFAULT_OPENROUTER_BASE_URL
    assert settings.timeouts.connect == 10.0


# -- the TOML file ----------------------------------------------------------------------


def test_toml_file(config_file):
    settings = Settings.load({}, config_file)
    assert settings.address == "127.0.0.1:6000"
    assert settings.shutdown_grace == 5.0
    assert settings.timeouts.connect == 3.0
    assert settings.timeouts.request == 120.5
    assert settings.timeouts.stream_idle == 45.0
    assert settings.openrouter.base_url == "https://or.file.test/api/v1"
    assert settings.openrouter.http_referer == "https://gateway.example.test"
    assert settings.openrouter.app_title == "from-file"
    assert settings.zai.base_url == "https://zai.file.test/v4"
    assert settings.zai.coding_base_url == "https://zai-coding.file.test/v4"
    assert settings.zai.accept_language == "zh-CN"
    assert settings.zai.coding_models == frozenset({"glm-4.6", "glm-4.7"})
    assert dict(settings.aliases) == {
        "coding": AliasConfig((AliasTarget("zai/glm-4.7"),)),
        "smart": AliasConfig((AliasTarget("openrouter/anthropic/claude-sonnet-4.5"),)),
    }


def test_config_file_from_the_environment(config_file):
    settings = Settings.load({"LLMGATEWAY_CONFIG": str(config_file)})
    assert settings.address == "127.0.0.1:6000"
    assert settings.zai.coding_models == frozenset({"glm-4.6", "glm-4.7"})


def test_environment_overrides_the_file(config_file):
    settings = Settings.load(
        {
            "LLMGATEWAY_ADDRESS": "127.0.0.1:7000",
            "OPENROUTER_BASE_URL": "https://or.env.test/api/v1",
            "ZAI_BASE_URL": "https://zai.env.test/v4",
            "ZAI_CODING_BASE_URL": "https://zai-coding.env.test/v4",
            "OPENROUTER_APP_TITLE": "from-env",
            "LLMGATEWAY_CONNECT_TIMEOUT": "7",
            "LLMGATEWAY_STREAM_IDLE_TIMEOUT": "9",
        },
        config_file,
    )
    assert settings.address == "127.0.0.1:7000"
    assert settings.openrouter.base_url == "https://or.env.test/api/v1"
    assert settings.zai.base_url == "https://zai.env.test/v4"
    assert settings.zai.coding_base_url == "https://zai-coding.env.test/v4"
    assert settings.openrouter.app_title == "from-env"
    assert settings.timeouts.connect == 7.0
    assert settings.timeouts.stream_idle == 9.0
    # What the environment does not set still comes from the file.
    assert settings.openrouter.http_referer == "https://gateway.example.test"
    assert settings.timeouts.request == 120.5
    assert settings.zai.accept_language == "zh-CN"


def test_api_keys_are_never_read_from_the_file(tmp_path):
    # Refused, not ignored: the operator believes the key is in use. The message
    # names the variable to use instead, and never quotes the key.
    path = write(tmp_path, f'[openrouter]\napi_key = "{OPENROUTER_KEY}"\n[zai]\napi_key = "x"\n')
    with pytest.raises(ConfigError) as caught:
        Settings.load({}, path)
    message = str(caught.value)
    assert "[openrouter] api_key" in message
    assert "OPENROUTER_API_KEY" in message
    assert "[zai] api_key" in message
    assert "ZAI_API_KEY" in message
    assert OPENROUTER_KEY not in message


def test_an_empty_file_gives_defaults(tmp_path):
    assert Settings.load({}, write(tmp_path, "")) == Settings.load({})


# -- invalid configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"OPENROUTER_BASE_URL": "openrouter.ai/api/v1"}, ["OPENROUTER_BASE_URL", "http"]),
        ({"ZAI_BASE_URL": "ftp://api.z.ai"}, ["ZAI_BASE_URL"]),
        ({"ZAI_CODING_BASE_URL": "api.z.ai/coding"}, ["ZAI_CODING_BASE_URL"]),
        ({"LLMGATEWAY_CONNECT_TIMEOUT": "ten"}, ["LLMGATEWAY_CONNECT_TIMEOUT", "ten"]),
        ({"LLMGATEWAY_CONNECT_TIMEOUT": "0"}, ["LLMGATEWAY_CONNECT_TIMEOUT", "greater than 0"]),
        ({"LLMGATEWAY_REQUEST_TIMEOUT": "-1"}, ["LLMGATEWAY_REQUEST_TIMEOUT"]),
        ({"LLMGATEWAY_STREAM_IDLE_TIMEOUT": "nan"}, ["LLMGATEWAY_STREAM_IDLE_TIMEOUT"]),
        ({"LLMGATEWAY_SHUTDOWN_GRACE": "soon"}, ["LLMGATEWAY_SHUTDOWN_GRACE"]),
        ({"LLMGATEWAY_MAX_REQUEST_BYTES": "lots"}, ["LLMGATEWAY_MAX_REQUEST_BYTES"]),
    ],
)
def test_invalid_environment_values_name_the_setting(environ, names):
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ)
    for name in names:
        assert name in str(caught.value)


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[timeouts]\nconnect_seconds = 0\n", ["connect_seconds"]),
        ('[timeouts]\nrequest_seconds = "long"\n', ["request_seconds", "long"]),
        ("[timeouts]\nstream_idle_seconds = -3\n", ["stream_idle_seconds"]),
        # A boolean is not a number of seconds (Python would read `true` as 1.0).
        ("[timeouts]\nconnect_seconds = true\n", ["connect_seconds"]),
        ('[openrouter]\nbase_url = "not a url"\n', ["OPENROUTER_BASE_URL"]),
        ("[server]\naddress = 50051\n", ["address"]),
        ("server = 5\n", ["[server]"]),
        ('[zai]\ncoding_models = "glm-4.7"\n', ["[zai] coding_models"]),
        ("[zai]\ncoding_models = [1, 2]\n", ["[zai] coding_models"]),
        ("[aliases]\nfast = 3\n", ["[aliases]", "fast"]),
        ('[aliases]\nempty = ""\n', ["[aliases]", "empty"]),
    ],
)
def test_invalid_file_values_name_the_setting(tmp_path, text, names):
    with pytest.raises(ConfigError) as caught:
        Settings.load({}, write(tmp_path, text))
    for name in names:
        assert name in str(caught.value)


def test_invalid_toml_names_the_file(tmp_path):
    path = write(tmp_path, "[server\naddress = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as caught:
        Settings.load({}, path)
    assert str(path) in str(caught.value)


def test_missing_config_file_names_the_path(tmp_path):
    path = tmp_path / "missing.toml"
    with pytest.raises(ConfigError, match="does not exist") as caught:
        Settings.load({"LLMGATEWAY_CONFIG": str(path)})
    assert str(path) in str(caught.value)


# -- secrets -------------------------------------------------------------------------------


def test_secret_repr_and_str_hide_the_value():
    secret = Secret(OPENROUTER_KEY)
    assert OPENROUTER_KEY not in repr(secret)
    assert OPENROUTER_KEY not in str(secret)
    assert OPENROUTER_KEY not in f"{secret}"
    assert OPENROUTER_KEY not in f"{secret!r}"
    assert secret.value == OPENROUTER_KEY


def test_settings_repr_hides_both_keys():
    settings = Settings.load({"OPENROUTER_API_KEY": OPENROUTER_KEY, "ZAI_API_KEY": ZAI_KEY})
    for text in (repr(settings), str(settings), repr(settings.openrouter), repr(settings.zai)):
        assert OPENROUTER_KEY not in text
        assert ZAI_KEY not in text
    assert "Secret('********')" in repr(settings.openrouter)


# -- model names and aliases -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "provider", "upstream"),
    [
        ("openrouter/openai/gpt-4o", common.PROVIDER_OPENROUTER, "openai/gpt-4o"),
        (
            "openrouter/meta-llama/llama-3.3-70b-instruct:free",
            common.PROVIDER_OPENROUTER,
            "meta-llama/llama-3.3-70b-instruct:free",
        ),
        ("openrouter/openrouter/auto", common.PROVIDER_OPENROUTER, "openrouter/auto"),
        ("zai/glm-4.7", common.PROVIDER_ZAI, "glm-4.7"),
        ("zai/glm-4.5-flash", common.PROVIDER_ZAI, "glm-4.5-flash"),
        # Once UNKNOWN_MODEL; the direct OpenAI provider since issue 13.
        ("openai/gpt-4o", common.PROVIDER_OPENAI, "gpt-4o"),
        ("anthropic/claude-sonnet-4-5", common.PROVIDER_ANTHROPIC, "claude-sonnet-4-5"),
        ("gemini/gemini-2.5-flash", common.PROVIDER_GEMINI, "gemini-2.5-flash"),
        ("groq/llama-3.3-70b-versatile", common.PROVIDER_GROQ, "llama-3.3-70b-versatile"),
        # Groq and Ollama model ids keep their slashes and tags.
        ("groq/openai/gpt-oss-120b", common.PROVIDER_GROQ, "openai/gpt-oss-120b"),
        ("ollama/llama3.2", common.PROVIDER_OLLAMA, "llama3.2"),
        ("ollama/hf.co/user/repo:Q4_K_M", common.PROVIDER_OLLAMA, "hf.co/user/repo:Q4_K_M"),
    ],
)
def test_router_resolves_model_names(name, provider, upstream):
    assert Router({}).resolve(name) == Plan((Route(provider, upstream, name),))


def test_router_resolves_aliases_and_keeps_the_requested_name():
    router = Router({"coding": "zai/glm-4.7", "smart": "openrouter/anthropic/claude-sonnet-4.5"})
    assert router.resolve("coding").routes == (Route(common.PROVIDER_ZAI, "glm-4.7", "coding"),)
    assert router.resolve("smart").routes == (
        Route(common.PROVIDER_OPENROUTER, "anthropic/claude-sonnet-4.5", "smart"),
    )
    # Aliases add names; they do not take the full names away.
    assert router.resolve("zai/glm-4.5").routes[0].upstream_model == "glm-4.5"


def test_router_aliases_from_the_config_file(config_file):
    router = Router(Settings.load({}, config_file).aliases)
    assert router.resolve("coding").routes[0].provider == common.PROVIDER_ZAI


@pytest.mark.parametrize(
    "name",
    [
        "gpt-4o",
        "mistral/mistral-large",
        "openai/gpt/4o",
        "anthropic/",
        "gemini/models/gemini-2.5-flash",
        "gemini/gemini-2.5-flash:generateContent",
        "groq/",
        "ollama/llama3.2/",
        "openrouter/gpt-4o",
        "openrouter/",
        "openrouter//gpt-4o",
        "openrouter/openai/",
        "openrouter/openai//gpt-4o",
        "zai/",
        "zai/glm/4.7",
        "ZAI/glm-4.7",
        "",
        "glm-4.7",
    ],
)
def test_router_rejects_bad_names_with_a_helpful_message(name: str) -> None:
    router = Router({"coding": "zai/glm-4.7", "fast": "zai/glm-4.5-flash"})
    with pytest.raises(GatewayError) as caught:
        router.resolve(name)
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.reason == pb.ERROR_REASON_UNKNOWN_MODEL
    assert repr(name) in error.message
    assert "openrouter/<vendor>/<model>" in error.message
    assert "zai/<model>" in error.message
    assert "coding" in error.message
    assert "fast" in error.message
    assert [v.field for v in error.field_violations] == ["model"]
    assert error.metadata["model"] == name


def test_router_caps_a_huge_model_name_in_the_error():
    with pytest.raises(GatewayError) as caught:
        Router({}).resolve("x" * 10_000)
    assert len(caught.value.message) < 1_000
    assert caught.value.metadata["model"] == "x" * 256
    assert "configured aliases" not in caught.value.message


@pytest.mark.parametrize("target", ["gpt-4o", "openrouter/gpt-4o", "zai/", "coding"])
def test_router_rejects_aliases_to_bad_names(target):
    with pytest.raises(ConfigError) as caught:
        Router({"mine": target})
    assert "'mine'" in str(caught.value)
    assert repr(target) in str(caught.value)


def test_upstream_connection_limit_from_env_and_file(tmp_path):
    config = tmp_path / "gw.toml"
    config.write_text("[server]\nmax_upstream_connections = 64\n")
    assert Settings.load({}, config).max_connections_per_provider == 64
    env = {"LLMGATEWAY_MAX_UPSTREAM_CONNECTIONS": "8"}
    assert Settings.load(env, config).max_connections_per_provider == 8
    assert Settings.load({}).max_connections_per_provider == 1000
    with pytest.raises(ConfigError, match="LLMGATEWAY_MAX_UPSTREAM_CONNECTIONS"):
        Settings.load({"LLMGATEWAY_MAX_UPSTREAM_CONNECTIONS": "0"})


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("LLMGATEWAY_MAX_CONCURRENT_UPSTREAM", "0.5"),
        ("LLMGATEWAY_MAX_ATTEMPTS", "2.5"),
        ("LLMGATEWAY_MAX_UPSTREAM_CONNECTIONS", "0"),
    ],
)
def test_counts_must_be_whole_numbers(name, value):
    with pytest.raises(ConfigError, match=name):
        Settings.load({name: value})


def test_retry_settings():
    env = {
        "LLMGATEWAY_MAX_ATTEMPTS": "1",
        "LLMGATEWAY_MAX_RETRY_AFTER": "0",
        "LLMGATEWAY_RETRY_INITIAL_BACKOFF": "0.5",
        "LLMGATEWAY_RETRY_MAX_BACKOFF": "2",
    }
    retries = Settings.load(env).retries
    assert (retries.max_attempts, retries.max_retry_after) == (1, 0.0)
    assert (retries.initial_backoff, retries.max_backoff) == (0.5, 2.0)


# -- unknown keys and tables are refused ------------------------------------------------------

# Every table Settings.load reads, with a key in it that is a typo of a real
# one and the key the message should suggest.
TYPOS = [
    ("server", "shutdown_grace", "shutdown_grace_seconds"),
    ("timeouts", "connect", "connect_seconds"),
    ("openrouter", "http_referrer", "http_referer"),
    ("zai", "coding_model", "coding_models"),
    ("retries", "max_attempt", "max_attempts"),
    ("circuit_breaker", "cool_down", "cool_down_seconds"),
    ("state", "dbs", "db"),
    ("tls", "cert", "cert_file"),
    ("routing", "sticky_ttl", "sticky_ttl_seconds"),
]


def refusal(tmp_path, text, environ=None):
    """The message Settings.load refuses `text` with."""
    with pytest.raises(ConfigError) as caught:
        Settings.load(environ or {}, write(tmp_path, text))
    return str(caught.value)


def test_an_unknown_table_is_refused_with_the_closest_one(tmp_path):
    message = refusal(tmp_path, '[servr]\naddress = "127.0.0.1:6000"\n')
    assert "[servr] is not a known table; did you mean [server]?" in message
    assert str(tmp_path / "config.toml") in message


def test_an_unknown_table_far_from_every_name_lists_the_tables(tmp_path):
    message = refusal(tmp_path, "[wibble]\nx = 1\n")
    assert "[wibble] is not a known table (known: " in message
    assert "[server]" in message
    assert "[zai]" in message


@pytest.mark.parametrize(("table", "typo", "meant"), TYPOS)
def test_an_unknown_key_is_refused_with_the_closest_one(tmp_path, table, typo, meant):
    message = refusal(tmp_path, f"[{table}]\n{typo} = 1\n")
    assert f"[{table}] {typo} is not a known setting; did you mean {meant}?" in message


@pytest.mark.parametrize("table", [table for table, _, _ in TYPOS])
def test_an_unknown_key_far_from_every_name_lists_the_keys(tmp_path, table):
    message = refusal(tmp_path, f"[{table}]\nzzzz = 1\n")
    assert f"[{table}] zzzz is not a known setting (known: " in message


def test_the_misspelt_coding_models_of_the_issue(tmp_path):
    # Ignored, it sent every coding model to the general endpoint.
    message = refusal(tmp_path, '[zai]\ncoding_model = ["glm-4.7"]\n')
    assert message.endswith(
        "[zai] coding_model is not a known setting; did you mean coding_models?"
    )


def test_a_key_in_the_wrong_table_names_the_right_one(tmp_path):
    message = refusal(tmp_path, '[server]\ncoding_models = ["glm-4.7"]\n')
    assert "[server] coding_models is not a known setting; did you mean [zai] coding_models?" in (
        message
    )


def test_a_setting_outside_any_table_names_its_table(tmp_path):
    message = refusal(tmp_path, 'address = "127.0.0.1:6000"\n')
    assert "address at the top of the file is not a known setting" in message
    assert "did you mean [server] address?" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # A table inside a known table.
        ("[server.limits]\nx = 1\n", "[server] limits is not a known setting"),
        ('[tls]\ncert_file = "a.pem"\nkey = "a.key"\n', "[tls] key is not a known setting"),
        (
            '[prices."zai/glm-4.7"]\npromt_per_million = 1\ncompletion_per_million = 2\n',
            (
                '[prices."zai/glm-4.7"] promt_per_million is not a known setting; '
                "did you mean prompt_per_million?"
            ),
        ),
        (
            '[aliases.coding]\ntarget = ["zai/glm-4.7"]\n',
            "[aliases] coding target is not a known setting; did you mean targets?",
        ),
        (
            '[aliases.coding]\ntargets = ["zai/glm-4.7"]\nfallback = ["UPSTREAM_OVERLOADED"]\n',
            "[aliases] coding fallback is not a known setting; did you mean fallback_on?",
        ),
        (
            '[aliases]\ncoding = [{ model = "zai/glm-4.7", zai_endpiont = "coding" }]\n',
            (
                '[aliases] coding target "zai/glm-4.7" zai_endpiont is not a known setting; '
                "did you mean zai_endpoint?"
            ),
        ),
    ],
)
def test_unknown_keys_in_nested_tables_are_refused(tmp_path, text, expected):
    assert expected in refusal(tmp_path, text)


def test_every_unknown_key_is_named_at_once(tmp_path):
    message = refusal(tmp_path, "[servr]\n[zai]\ncoding_model = []\n[timeouts]\nconnect = 3\n")
    assert "3 unknown settings" in message
    assert "[servr] is not a known table" in message
    assert "[zai] coding_model" in message
    assert "[timeouts] connect " in message


def test_a_file_key_is_known_when_the_environment_overrides_it(tmp_path):
    # The environment wins, but the file's key is a setting all the same.
    path = write(
        tmp_path,
        '[server]\naddress = "127.0.0.1:6000"\nshutdown_grace_seconds = 5\n'
        '[state]\ndb = "file.db"\n[timeouts]\nconnect_seconds = 3\n',
    )
    env = {
        "LLMGATEWAY_ADDRESS": "127.0.0.1:7000",
        "LLMGATEWAY_SHUTDOWN_GRACE": "6",
        "LLMGATEWAY_DB": "env.db",
        "LLMGATEWAY_CONNECT_TIMEOUT": "4",
    }
    settings = Settings.load(env, path)
    assert (settings.address, settings.shutdown_grace) == ("127.0.0.1:7000", 6.0)
    assert (settings.db, settings.timeouts.connect) == ("env.db", 4.0)


# -- every documented setting is accepted ----------------------------------------------------


# Values for documented settings whose default is not a usable value ("unset").
# Paths of the TLS files are filled in by the test.
SAMPLES: dict[str, object] = {
    "OPENROUTER_API_KEY": OPENROUTER_KEY,
    "ZAI_API_KEY": ZAI_KEY,
    "LLMGATEWAY_WORKERS": 2,
    "[openrouter] http_referer": "https://gateway.example.test",
    "[openrouter] app_title": "example",
    "[zai] coding_models": ["glm-4.7"],
    "OPENAI_API_KEY": "sk-proj-test-not-a-real-key-000000",
    "ANTHROPIC_API_KEY": "sk-ant-api03-test-not-a-real-key-0000",
    "GEMINI_API_KEY": "AIzaTestNotARealKey00000000000000000000",
    "GROQ_API_KEY": "gsk_testnotarealkey0000000000000",
    "OLLAMA_API_KEY": "ollama-test-not-a-real-key",
    "[openai] organization": "org-example",
    "[openai] project": "proj_example",
    "[anthropic] beta": ["prompt-caching-2024-07-31"],
    "[ollama] keep_alive": "10m",
    # A TOML date unless quoted.
    "[anthropic] version": "2023-06-01",
    "[server] metrics_address": "127.0.0.1:9464",
    "[state] db": "state.db",
    "[routing] max_call_usd": {"low": 0.002, "medium": 0.02},
    "[state] redis_url": "redis://127.0.0.1:6379/0",
    "[server] max_connection_age_grace_seconds": 1800,
}


def documented_settings():
    """(environment variable or None, "[table] key" or None, default) for each row of
    the README's configuration table; a row naming two settings gives two."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Configuration", 1)[1]
    lines = [line for line in section.split("\n\n")[2].splitlines() if line.startswith("| ")]
    rows = []
    for line in lines[1:]:  # after the header
        variables, keys, default = (cell.strip() for cell in line.split("|")[1:4])
        names = re.findall(r"`([A-Z][A-Z0-9_]+)`", variables)
        table = re.match(r"`\[([a-z_]+)\] ([a-z_]+)`", keys)
        file_keys = (
            [f"[{table[1]}] {key}" for key in [table[2], *re.findall(r" / `([a-z_]+)`", keys)]]
            if table
            else []
        )
        defaults = re.findall(r"`([^`]*)`", default) or [default]
        for i in range(max(len(names), len(file_keys))):
            rows.append(
                (
                    names[i] if i < len(names) else None,
                    file_keys[i] if i < len(file_keys) else None,
                    defaults[min(i, len(defaults) - 1)],
                )
            )
    return rows


def sample(samples, name, default):
    """A valid value for a documented setting: a sample, else its default."""
    if name in samples:
        return samples[name]
    try:
        return tomllib.loads(f"value = {default}")["value"]
    except tomllib.TOMLDecodeError:
        return default


@pytest.fixture
def documented(tmp_path):
    """A config file setting every documented key, and an environment setting
    every documented variable, both to valid values."""
    files = make_certificates().write(tmp_path / "tls")
    samples = {
        **SAMPLES,
        "[tls] cert_file": str(files.server_cert),
        "[tls] key_file": str(files.server_key),
        "[tls] client_ca_file": str(files.ca_cert),
    }
    tables: dict[str, dict[str, object]] = {}
    environ = {}
    for variable, key, default in documented_settings():
        if key is not None:
            table, name = key[1:].split("] ")
            tables.setdefault(table, {})[name] = sample(samples, key, default)
        if variable is not None:
            environ[variable] = str(sample(samples, key or variable, default))
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{name} = {toml_value(value)}" for name, value in values.items())
    text = "\n".join(lines) + "\n"
    # The example's [zai] and [openrouter] are set above; its aliases are not.
    example = readme_example_toml().split("[aliases]", 1)[1]
    text += '\n[prices."zai/glm-4.7"]\nprompt_per_million = 0.6\ncompletion_per_million = 2.2\n'
    text += "cached_per_million = 0.11\n\n[aliases]" + example
    return write(tmp_path, text), environ


def toml_value(value):
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


def test_the_readme_documents_the_settings_this_test_fills_in():
    rows = documented_settings()
    keys = {key for _, key, _ in rows if key}
    variables = {variable for variable, _, _ in rows if variable}
    assert {"[zai] coding_models", "[tls] client_ca_file", "[retries] max_backoff_seconds"} <= keys
    assert {"LLMGATEWAY_RETRY_MAX_BACKOFF", "OPENROUTER_API_KEY", "LLMGATEWAY_DB"} <= variables


def test_every_documented_key_is_accepted(documented):
    path, _ = documented
    settings = Settings.load({}, path)
    assert settings.zai.coding_models == frozenset({"glm-4.7"})
    assert settings.tls is not None
    assert settings.tls.mutual
    assert set(settings.aliases) == {"fast", "smart", "sonnet", "coding"}
    assert settings.prices["zai/glm-4.7"].cached_prompt == 0.11
    # The example's routes ride along after its aliases; [routing] comes from the table.
    assert set(settings.routes) == {"default", "cheap"}
    assert settings.routing == RoutingSettings(max_call_usd={"low": 0.002, "medium": 0.02})


def test_every_documented_key_is_accepted_when_the_environment_sets_it_too(documented):
    path, environ = documented
    settings = Settings.load(environ, path)
    assert settings.openrouter.api_key == Secret(OPENROUTER_KEY)
    assert settings.environment_warnings == ()


# -- LLMGATEWAY_* variables nothing reads are warned about ------------------------------------


def test_a_misspelt_variable_is_warned_about_with_the_closest_one():
    settings = Settings.load({"LLMGATEWAY_SHUTDOWN_GRACE_SECONDS": "5"})
    assert settings.environment_warnings == (
        (
            "environment variable LLMGATEWAY_SHUTDOWN_GRACE_SECONDS is set but no setting "
            "reads it; did you mean LLMGATEWAY_SHUTDOWN_GRACE?"
        ),
    )
    assert settings.shutdown_grace == 30.0


def test_a_provider_variable_under_the_prefix_points_at_the_real_one():
    (warning,) = Settings.load({"LLMGATEWAY_ZAI_API_KEY": ZAI_KEY}).environment_warnings
    assert warning.endswith("did you mean ZAI_API_KEY?")
    assert ZAI_KEY not in warning


def test_other_variables_are_not_warned_about():
    environ = {
        "PATH": "/usr/bin",
        "LLMGATEWAY_WORKERS": "2",
        "LLMGATEWAY_API_KEY": "caller-key",  # the client commands' key, in the same shell
        "LLMGATEWAY_CONFIG": "",
        "OPENROUTER_MODEL": "x",
    }
    assert Settings.load(environ).environment_warnings == ()


# -- `llmgateway serve` ----------------------------------------------------------------------


def serve(tmp_path, *args, environ=None):
    """`llmgateway serve ARGS` in a clean environment: (exit code, stderr)."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "llmgateway.server.process.cli", "serve", *args],
        cwd=README.parent,
        env={**env, **(environ or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done.returncode, done.stderr


def test_serve_refuses_a_config_typo_with_exit_code_2(tmp_path):
    bad = write(tmp_path, '[zai]\ncoding_model = ["glm-4.7"]\n[servr]\n')
    # --workers 0 would stop serve right after loading: nothing is bound even if
    # the typo went unnoticed.
    code, stderr = serve(tmp_path, "--config", str(bad), "--workers", "0")
    assert code == 2
    assert "llmgateway: configuration error:" in stderr
    assert "[zai] coding_model is not a known setting; did you mean coding_models?" in stderr
    assert "[servr] is not a known table; did you mean [server]?" in stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("how", ["--config", "LLMGATEWAY_CONFIG"])
def test_serve_refuses_a_config_path_that_is_a_directory_with_one_line(tmp_path, how):
    folder = tmp_path / "conf.d"
    folder.mkdir()
    if how == "--config":
        code, stderr = serve(tmp_path, "--config", str(folder), "--workers", "0")
    else:
        code, stderr = serve(tmp_path, "--workers", "0", environ={how: str(folder)})
    assert code == 2
    said = f"llmgateway: configuration error: config file {folder} is a directory; "
    assert stderr.strip().splitlines() == [said + "name the TOML file itself"]


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\naddress = "caf\xe9"\n')
    with pytest.raises(ConfigError, match="is not UTF-8 text") as caught:
        Settings.load({}, path)
    assert str(path) in str(caught.value)


def test_serve_warns_about_a_misspelt_variable(tmp_path):
    # --workers 0 stops serve right after start-up's warnings, with no port bound.
    environ = {"LLMGATEWAY_SHUTDOWN_GRACE_SECONDS": "5"}
    code, stderr = serve(tmp_path, "--workers", "0", environ=environ)
    assert code == 2
    assert "LLMGATEWAY_SHUTDOWN_GRACE_SECONDS is set but no setting reads it" in stderr
    assert "did you mean LLMGATEWAY_SHUTDOWN_GRACE?" in stderr


# -- per-provider timeouts --------------------------------------------------------


def test_a_provider_table_may_override_the_timeouts_for_that_provider_only(tmp_path):
    path = write(
        tmp_path,
        "[timeouts]\nfirst_byte_seconds = 30\n\n"
        "[ollama.timeouts]\nfirst_byte_seconds = 300\nrequest_seconds = 1200\n\n"
        "[anthropic.timeouts]\nstream_idle_seconds = 90\n",
    )
    settings = Settings.load({}, path)
    assert settings.timeouts_for("ollama") == Timeouts(first_byte=300.0, request=1200.0)
    # What the provider table leaves out comes from [timeouts], not the built-in defaults.
    assert settings.timeouts_for("anthropic") == Timeouts(first_byte=30.0, stream_idle=90.0)
    assert settings.timeouts_for("openai") == settings.timeouts == Timeouts(first_byte=30.0)


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[ollama.timeouts]\nfirst_byte = 300\n", "[ollama.timeouts] first_byte is not a known"),
        ("[groq.timeouts]\nrequest_seconds = 0\n", "[groq.timeouts] request_seconds must be"),
        ('[zai.timeouts]\nconnect_seconds = "5"\n', "[zai.timeouts] connect_seconds must be"),
        ("[openai]\ntimeouts = 5\n", "[openai.timeouts] must be a table"),
    ],
)
def test_a_bad_provider_timeout_is_refused_naming_it(tmp_path, table, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        Settings.load({}, write(tmp_path, table))


async def test_the_gateway_gives_each_provider_its_own_timeouts(settings):
    """A stream that never begins ends at its own provider's first-byte timeout."""
    from llmgateway.server.process.server import start_gateway
    from tests.conftest import rich_status, user

    configured = dataclasses.replace(
        settings,
        timeouts=dataclasses.replace(settings.timeouts, first_byte=5.0),
        provider_timeouts={"ollama": dataclasses.replace(settings.timeouts, first_byte=0.3)},
    )
    gateway = await start_gateway(configured, address="127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{gateway.port}") as channel:
            stub = pb_grpc.CompletionServiceStub(channel)
            messages = {}
            for model in ("ollama/fault-hang", "openai/fault-hang"):
                call = stub.StreamComplete(
                    pb.StreamCompleteRequest(model=model, messages=[user("hi")]), timeout=10
                )
                with pytest.raises(grpc.aio.AioRpcError) as caught:
                    async for _ in call:
                        pass
                status = rich_status(caught.value)
                assert status.info.reason == "UPSTREAM_TIMEOUT", model
                messages[model] = status.message
    finally:
        await gateway.stop(grace=0)
    assert "had not begun within 0.3 s" in messages["ollama/fault-hang"]
    # OpenAI keeps the global bounds (here the 2 s stream idle timeout ends it first).
    assert "0.3 s" not in messages["openai/fault-hang"]


def test_the_readme_example_config_file_loads_as_it_says(tmp_path):
    settings = Settings.load({}, write(tmp_path, readme_example_toml()))
    assert settings.anthropic.beta == ("context-1m-2025-08-07",)
    assert settings.ollama.num_ctx == 32768
    assert settings.timeouts_for("ollama").first_byte == 300.0
    assert settings.timeouts_for("anthropic") == settings.timeouts
    sonnet = settings.aliases["sonnet"]
    assert isinstance(sonnet, AliasConfig)
    assert [t.model for t in sonnet.targets] == [
        "anthropic/claude-sonnet-4-5",
        "openrouter/anthropic/claude-sonnet-4.5",
        "zai/glm-4.7",
    ]
    default = settings.routes["default"].entries
    assert set(default) == {
        "default",
        "code",
        "agent",
        "vision",
        "extraction",
        "summarization",
        "translation",
        "chinese",
    }
    assert default["code"].alias == AliasConfig((AliasTarget("coding"),))
    assert [t.model for t in default["extraction"].cost_tiers["high"].targets] == ["openai/gpt-4o"]
    assert set(settings.routes["cheap"].entries) == {"default"}
    # Every route target names a model or an alias the example defines.
    for route in settings.routes.values():
        for entry in route.entries.values():
            for variant in (entry.alias, *entry.cost_tiers.values()):
                for target in variant.targets:
                    assert target.model in settings.aliases or router.parse_model_name(
                        target.model
                    ), target.model


# -- routes, routing and capabilities ----------------------------------------------------

ROUTES = """
[aliases]
fast = "zai/glm-4.5-flash"

[routes.default]
default = "fast"
code = [{ model = "zai/glm-4.7", zai_endpoint = "coding" }, "openrouter/anthropic/claude-sonnet-4.5"]
chinese = "zai/glm-4.7"
extraction = { targets = ["openai/gpt-4o-mini"], fallback_on = ["UPSTREAM_RATE_LIMITED"] }

# The table form of an entry, as its own TOML table.
[routes.default.reasoning]
targets = ["openrouter/openai/o3"]
cost_tier = { low = "zai/glm-4.5-flash", high = { targets = ["openai/o3"], fallback_on = [] } }

[routes.cheap]
default = ["groq/llama-3.3-70b-versatile", "ollama/llama3.2"]

[routing]
sticky_ttl_seconds = 600
sticky_max_sessions = 50
min_confidence = 0.75
max_call_usd = { low = 0.002, high = 0 }

[capabilities."openrouter/x/my-finetune"]
context_window = 32768
tools = true
vision = false
"""


def test_routes_routing_and_capabilities_are_read_from_the_file(tmp_path):
    settings = Settings.load({}, write(tmp_path, ROUTES))
    default = settings.routes["default"].entries
    assert list(default) == ["default", "code", "reasoning", "extraction", "chinese"]
    assert default["default"] == RouteEntryConfig(AliasConfig((AliasTarget("fast"),)))
    assert default["code"].alias.targets == (
        AliasTarget("zai/glm-4.7", "coding"),
        AliasTarget("openrouter/anthropic/claude-sonnet-4.5"),
    )
    assert default["extraction"].alias.fallback_on == ("UPSTREAM_RATE_LIMITED",)
    reasoning = default["reasoning"]
    assert reasoning.alias == AliasConfig((AliasTarget("openrouter/openai/o3"),))
    # A tier variant keeps its own fallback_on; None (inherit the entry's) when it has none.
    assert reasoning.cost_tiers == {
        "low": AliasConfig((AliasTarget("zai/glm-4.5-flash"),)),
        "high": AliasConfig((AliasTarget("openai/o3"),), ()),
    }
    assert settings.routes["cheap"].entries["default"].alias.targets == (
        AliasTarget("groq/llama-3.3-70b-versatile"),
        AliasTarget("ollama/llama3.2"),
    )
    assert settings.routing == RoutingSettings(
        sticky_ttl=600.0,
        sticky_max_sessions=50,
        min_confidence=0.75,
        max_call_usd={"low": 0.002, "high": 0.0},
    )
    assert settings.capabilities == {
        "openrouter/x/my-finetune": CapabilityOverride(
            context_window=32768, tools=True, vision=False
        )
    }


def test_without_routes_nothing_is_routed_and_routing_has_its_defaults():
    settings = Settings.load({})
    assert settings.routes == {}
    assert settings.capabilities == {}
    assert settings.routing == RoutingSettings()
    assert settings.routing.min_confidence == task_rules.CONFIDENCE_THRESHOLD


def test_the_names_config_mirrors_agree_with_the_router_and_the_rules():
    # config.py cannot import the router (the router imports it): its copies must agree.
    assert config.ROUTE_PREFIX == router.ROUTE_PREFIX
    assert tuple(router.PREFIXES.values()) == config.PROVIDER_PREFIXES
    assert ("default", *task_rules.Task, "chinese") == config.ROUTE_ENTRIES


ROUTE_REFUSALS = [
    # (id, file text, what the message must say)
    (
        "task-typo",
        '[routes.default]\ndefault = "zai/glm-4.7"\ncod = "zai/glm-4.7"\n',
        (
            "[routes.default] cod is not a task; did you mean code? Tasks: chat, code, reasoning, "
            "extraction, summarization, translation, agent, vision, plus default and chinese"
        ),
    ),
    (
        "not-a-task",
        '[routes.default]\ndefault = "zai/glm-4.7"\nwibble = "zai/glm-4.7"\n',
        "[routes.default] wibble is not a task. Tasks: chat, code,",
    ),
    (
        "auto",
        '[routes.default]\ndefault = "zai/glm-4.7"\nauto = "zai/glm-4.7"\n',
        (
            "[routes.default] auto: auto is how a caller asks the gateway to infer the task; "
            "it is not a route entry"
        ),
    ),
    (
        "no-default-entry",
        '[routes.default]\ncode = "zai/glm-4.7"\n',
        "[routes.default] needs `default = ...`",
    ),
    (
        "no-default-route",
        '[routes.cheap]\ndefault = "zai/glm-4.5-flash"\n',
        (
            "[routes] needs a default route: add [routes.default] with `default = ...` "
            "(configured: cheap)"
        ),
    ),
    (
        "route-not-a-table",
        '[routes]\ndefault = "zai/glm-4.7"\n',
        "[routes] default must be a table: [routes.default] with `default = ...`",
    ),
    (
        "routes-not-a-table",
        'routes = "zai/glm-4.7"\n',
        "[routes] in the config file must be a table",
    ),
    (
        "route-name-with-a-slash",
        '[routes."a/b"]\ndefault = "zai/glm-4.7"\n',
        "[routes.\"a/b\"]: 'a/b' cannot be a route name: one name, without '/'",
    ),
    (
        "route-name-with-a-space",
        '[routes."my route"]\ndefault = "zai/glm-4.7"\n',
        "[routes.\"my route\"]: 'my route' cannot be a route name: must not contain ' '",
    ),
    (
        "empty-entry",
        "[routes.default]\ndefault = []\n",
        (
            "[routes.default] default must be a model name, a non-empty list of targets, "
            "or a table with `targets`"
        ),
    ),
    (
        "entry-not-a-model",
        "[routes.default]\ndefault = 3\n",
        "[routes.default] default must be a model name",
    ),
    (
        "entry-table-typo",
        '[routes.default]\ndefault = { target = ["zai/glm-4.7"] }\n',
        "[routes.default] default target is not a known setting; did you mean targets?",
    ),
    (
        "entry-table-without-targets",
        '[routes.default]\ndefault = { cost_tier = { low = "zai/glm-4.5-flash" } }\n',
        (
            "[routes.default] default must be a model name, a non-empty list of targets, "
            "or a table with `targets`"
        ),
    ),
    (
        "target-typo",
        '[routes.default]\ndefault = [{ model = "zai/glm-4.7", zai_endpiont = "coding" }]\n',
        (
            '[routes.default] default target "zai/glm-4.7" zai_endpiont is not a known setting; '
            "did you mean zai_endpoint?"
        ),
    ),
    (
        "fallback-not-a-list",
        '[routes.default]\ndefault = { targets = ["zai/glm-4.7"], fallback_on = "X" }\n',
        "[routes.default] default.fallback_on must be a list of strings",
    ),
    (
        "tier-typo",
        '[routes.default]\ndefault = { targets = ["zai/glm-4.7"], cost_tier = { lo = "x/y" } }\n',
        "[routes.default] default cost_tier lo is not a known setting; did you mean low?",
    ),
    (
        "tier-not-a-table",
        '[routes.default]\ndefault = { targets = ["zai/glm-4.7"], cost_tier = "low" }\n',
        '[routes.default] default cost_tier must be a table of tiers, e.g. { low = "',
    ),
    (
        "tier-empty",
        '[routes.default]\ndefault = { targets = ["zai/glm-4.7"], cost_tier = { low = [] } }\n',
        "[routes.default] default cost_tier low must be a model name, a non-empty list",
    ),
    (
        "tier-inside-a-tier",
        (
            '[routes.default]\ndefault = { targets = ["a/b"], cost_tier = { low = { targets = '
            '["c/d"], cost_tier = { high = "e/f" } } } }\n'
        ),
        "[routes.default] default cost_tier low cost_tier is not a known setting",
    ),
    (
        "routing-typo",
        "[routing]\nmin_confidense = 0.5\n",
        "[routing] min_confidense is not a known setting; did you mean min_confidence?",
    ),
    (
        "confidence-above-one",
        "[routing]\nmin_confidence = 1.5\n",
        "[routing] min_confidence must be a number from 0 to 1, got 1.5",
    ),
    (
        "confidence-negative",
        "[routing]\nmin_confidence = -0.1\n",
        "[routing] min_confidence must be a finite number 0 or more, got -0.1",
    ),
    (
        "confidence-a-string",
        '[routing]\nmin_confidence = "high"\n',
        "[routing] min_confidence must be a number, got 'high'",
    ),
    (
        "ttl-zero",
        "[routing]\nsticky_ttl_seconds = 0\n",
        "[routing] sticky_ttl_seconds must be a finite number greater than 0, got 0",
    ),
    (
        "ttl-infinite",
        "[routing]\nsticky_ttl_seconds = inf\n",
        "[routing] sticky_ttl_seconds must be a finite number greater than 0, got inf",
    ),
    (
        "sessions-fractional",
        "[routing]\nsticky_max_sessions = 2.5\n",
        "[routing] sticky_max_sessions must be a whole number, 1 or more, got 2.5",
    ),
    (
        "sessions-a-boolean",
        "[routing]\nsticky_max_sessions = true\n",
        "[routing] sticky_max_sessions must be a number, got True",
    ),
    (
        "ceiling-tier-typo",
        "[routing]\nmax_call_usd = { medum = 0.02 }\n",
        "[routing] max_call_usd medum is not a known setting; did you mean medium?",
    ),
    (
        "ceiling-negative",
        "[routing]\nmax_call_usd = { low = -1 }\n",
        "[routing] max_call_usd low must be a finite number 0 or more, got -1",
    ),
    (
        "ceilings-not-a-table",
        "[routing]\nmax_call_usd = 0.02\n",
        "[routing] max_call_usd must be a table of cost tiers, e.g. { low = 0.002, medium = 0.02 }",
    ),
    (
        "capability-typo",
        '[capabilities."openai/gpt-4o"]\ncontext_windw = 1000\n',
        (
            '[capabilities."openai/gpt-4o"] context_windw is not a known setting; '
            "did you mean context_window?"
        ),
    ),
    (
        "capability-not-a-boolean",
        '[capabilities."openai/gpt-4o"]\nvision = "yes"\n',
        "[capabilities.\"openai/gpt-4o\"] vision must be true or false, got 'yes'",
    ),
    (
        "capability-window-zero",
        '[capabilities."openai/gpt-4o"]\ncontext_window = 0\n',
        '[capabilities."openai/gpt-4o"] context_window must be a whole number, 1 or more, got 0',
    ),
    (
        "capability-unknown-provider",
        '[capabilities."openruoter/x/y"]\ntools = true\n',
        (
            "[capabilities.\"openruoter/x/y\"]: 'openruoter/x/y' cannot be a model name: it must "
            "be a model in gateway naming, starting with a provider: openrouter/, zai/, openai/,"
        ),
    ),
    (
        "capability-bad-name",
        '[capabilities."zai/glm 4.7"]\ntools = true\n',
        "[capabilities.\"zai/glm 4.7\"]: 'zai/glm 4.7' cannot be a model name: must not contain",
    ),
    (
        "capability-a-route",
        '[capabilities."route/default"]\ntools = true\n',
        "'route/default' cannot be a model name: it must be a model in gateway naming",
    ),
    (
        "capability-not-a-table",
        '[capabilities]\n"openai/gpt-4o" = 32768\n',
        '[capabilities."openai/gpt-4o"] must be a table, e.g. context_window = 32768',
    ),
    (
        "route-prefixed-alias",
        '[aliases]\n"route/default" = "zai/glm-4.7"\n',
        "[aliases] 'route/default' cannot be an alias name: route/ is reserved for [routes]",
    ),
]


@pytest.mark.parametrize(
    ("text", "expected"),
    [(text, expected) for _, text, expected in ROUTE_REFUSALS],
    ids=[case for case, _, _ in ROUTE_REFUSALS],
)
def test_bad_routes_routing_and_capabilities_are_refused_naming_what_to_fix(
    tmp_path, text, expected
):
    assert expected in refusal(tmp_path, text)


def test_serve_refuses_a_route_typo_with_exit_code_2(tmp_path):
    bad = write(tmp_path, '[routes.default]\ndefault = "zai/glm-4.7"\nvison = "gemini/x"\n')
    code, stderr = serve(tmp_path, "--config", str(bad), "--workers", "0")
    assert code == 2
    assert "[routes.default] vison is not a task; did you mean vision?" in stderr
    assert "Traceback" not in stderr


def test_redis_limits_and_connection_age_settings(tmp_path):
    # Defaults: no Redis (the database holds limits), fail closed, age 300 s
    # with a grace that follows the longest stream (None until the server picks it).
    plain = Settings.load({})
    assert (plain.redis_url, plain.redis_failure_mode, plain.redis_timeout) == ("", "closed", 0.5)
    assert (plain.max_connection_age, plain.max_connection_age_grace) == (300.0, None)
    config = write(
        tmp_path,
        '[state]\nredis_url = "unix:///run/redis.sock"\nredis_failure_mode = "OPEN"\n'
        "redis_timeout_seconds = 0.25\n"
        "[server]\nmax_connection_age_seconds = 0\nmax_connection_age_grace_seconds = 30\n",
    )
    loaded = Settings.load({}, config)
    assert loaded.redis_url == "unix:///run/redis.sock"
    assert (loaded.redis_failure_mode, loaded.redis_timeout) == ("open", 0.25)
    assert (loaded.max_connection_age, loaded.max_connection_age_grace) == (0.0, 30.0)
    assert Settings.load({"LLMGATEWAY_REDIS_URL": "rediss://r:6380/1"}, config).redis_url == (
        "rediss://r:6380/1"
    )


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"LLMGATEWAY_REDIS_URL": "127.0.0.1:6379"}, "must start with redis://"),
        ({"LLMGATEWAY_REDIS_FAILURE_MODE": "maybe"}, "LLMGATEWAY_REDIS_FAILURE_MODE"),
        ({"LLMGATEWAY_REDIS_TIMEOUT": "0"}, "greater than 0"),
        ({"LLMGATEWAY_MAX_CONNECTION_AGE": "-1"}, "0 or more"),
        ({"LLMGATEWAY_MAX_CONNECTION_AGE_GRACE": "0"}, "greater than 0"),
    ],
)
def test_redis_and_connection_age_refusals_say_what_to_fix(environ, message):
    with pytest.raises(ConfigError, match=message):
        Settings.load(environ)
