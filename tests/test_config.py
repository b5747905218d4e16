"""Settings from the environment and a TOML file; model names and aliases."""

from __future__ import annotations

import grpc
import pytest
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

from service.config import (
    DEFAULT_OPENROUTER_BASE_URL,
    DEFAULT_ZAI_BASE_URL,
    DEFAULT_ZAI_CODING_BASE_URL,
    AliasConfig,
    AliasTarget,
    ConfigError,
    Secret,
    Settings,
)
from service.errors import GatewayError
from service.routing import Plan, Route, Router

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
    path = write(tmp_path, f'[openrouter]\napi_key = "{OPENROUTER_KEY}"\n[zai]\napi_key = "x"\n')
    settings = Settings.load({}, path)
    assert settings.openrouter.api_key is None
    assert settings.zai.api_key is None


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
        "openai/gpt-4o",
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
def test_router_rejects_bad_names_with_a_helpful_message(name):
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
