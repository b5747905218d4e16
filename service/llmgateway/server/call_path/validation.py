"""Request checks made before any upstream call, each naming the offending field."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Sequence

from llmgateway.server.errors import FieldViolation
from llmgateway.server.providers.openai_compatible.wire import ROLE_NAMES, AnyCompletionRequest
from llmgateway.server.routing.names import describe_char, first_invisible, model_name_problem
from llmgateway.server.routing.router import PREFIXES, is_route_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import routing_pb2 as rpb

MAX_MESSAGES = 2048
MAX_PARTS = 64
MAX_NAME = 64
MAX_STOP = 4
MAX_STOP_LENGTH = 256
MAX_TOKENS = 1_048_576
MAX_TOOLS = 128
MAX_USER = 128
MAX_FALLBACK_MODELS = 8
MAX_PROVIDER_ORDER = 32
MAX_PROVIDER_NAME = 64
MAX_REASONING_DETAILS = 64
# Each opaque reasoning field and a refusal (the request's size limit bounds
# their total).
MAX_DETAIL_FIELD_BYTES = 1 << 20
MAX_SESSION_ID = 128
_IDENTIFIER = re.compile(r"[A-Za-z0-9_-]{1,64}")
_IMAGE_URL_SCHEMES = ("https://", "http://", "data:image/")
# Gateway prefixes that are no OpenRouter vendor: an `openrouter.models` entry
# starting with one (and not with `openrouter/`) names another provider's model, which OpenRouter's own
# fallback cannot reach (OpenRouter's Z.AI and Google slugs are `z-ai/...`
# and `google/...`). `openai/` and `anthropic/` are OpenRouter vendors too.
_NOT_OPENROUTER_VENDORS = tuple(
    PREFIXES[p]
    for p in (
        common.PROVIDER_ZAI,
        common.PROVIDER_GEMINI,
        common.PROVIDER_GROQ,
        common.PROVIDER_OLLAMA,
    )
)
_DETAIL_KINDS = frozenset(common.ReasoningDetailKind.values()) - {
    common.REASONING_DETAIL_KIND_UNSPECIFIED
}
_DETAIL_PROVIDERS = frozenset(common.Provider.values()) - {common.PROVIDER_UNSPECIFIED}
# Each enum's known values, built once: `Enum.values()` builds a new list on
# every call, and validation asks for several on every request.
_IMAGE_DETAILS = frozenset(common.ImageDetail.values())
_TOOL_CHOICE_MODES = frozenset(common.ToolChoiceMode.values())
_RESPONSE_FORMAT_TYPES = frozenset(common.ResponseFormatType.values())
_REASONING_EFFORTS = frozenset(common.ReasoningEffort.values())
_DATA_COLLECTIONS = frozenset(common.DataCollection.values())
_PROVIDER_SORTS = frozenset(common.ProviderSort.values())
_ZAI_ENDPOINTS = frozenset(common.ZaiEndpoint.values())
_TASKS = frozenset(rpb.Task.values())
_COST_TIERS = frozenset(rpb.CostTier.values())
# Callers send the same few model names over and over; the answer for a name
# never changes. Bounded, so names a caller mints cannot grow it.
_model_name_problem = functools.lru_cache(maxsize=1024)(model_name_problem)

_Add = Callable[[FieldViolation], None]


def validate(
    request: AnyCompletionRequest, max_request_bytes: int, *, prefix: str = ""
) -> list[FieldViolation]:
    """Every way `request` breaks the contract's documented constraints.

    `prefix` goes before every field path, for a request inside another
    message (ExplainRoute's `request.`: `request.messages[0].role`)."""
    violations = _violations(request, max_request_bytes)
    if not prefix:
        return violations
    return [FieldViolation(prefix + v.field, v.description) for v in violations]


def _violations(request: AnyCompletionRequest, max_request_bytes: int) -> list[FieldViolation]:
    violations: list[FieldViolation] = []
    add = violations.append
    size = request.ByteSize()
    if size > max_request_bytes:
        add(
            FieldViolation(
                _largest_field(request),
                f"the request is {size} bytes; the gateway accepts at most {max_request_bytes}",
            )
        )
    if not request.model:
        add(
            FieldViolation(
                "model",
                "required; e.g. 'openai/gpt-4o-mini', 'anthropic/claude-sonnet-4-5', "
                "'zai/glm-4.7' or 'openrouter/openai/gpt-4o'",
            )
        )
    else:
        problem = _model_name_problem(request.model)
        if problem is not None:
            add(FieldViolation("model", problem))
    if not request.messages:
        add(FieldViolation("messages", "at least one message is required"))
    elif len(request.messages) > MAX_MESSAGES:
        add(FieldViolation("messages", f"at most {MAX_MESSAGES} messages"))
    for i, message in enumerate(request.messages[:MAX_MESSAGES]):
        _check_message(f"messages[{i}]", message, add)
    # A sub-message the caller left unset reads as its defaults, which every
    # check below accepts: skipping it gives the same answer, cheaper.
    if request.HasField("sampling"):
        _check_sampling(request.sampling, add)
    if request.tools or request.HasField("tool_choice"):
        _check_tools(request, add)
    if request.HasField("response_format"):
        _check_response_format(request.response_format, add)
    if request.HasField("reasoning"):
        _check_reasoning(request.reasoning, add)
    if len(request.user) > MAX_USER:
        add(FieldViolation("user", f"at most {MAX_USER} characters"))
    elif (char := first_invisible(request.user)) is not None:
        add(FieldViolation("user", f"must not contain {describe_char(char)}"))
    if request.HasField("openrouter"):
        _check_openrouter(request.openrouter, add)
    if request.zai.endpoint not in _ZAI_ENDPOINTS:
        add(FieldViolation("zai.endpoint", "unknown endpoint value"))
    # Hints are read only for routes: adding them to a call that names a model
    # can never break it, even if a newer client sends values this gateway
    # does not know.
    if is_route_name(request.model):
        _check_routing(request.routing, add)
    return violations


def _check_routing(routing: rpb.RoutingHints, add: _Add) -> None:
    if routing.task not in _TASKS:
        add(
            FieldViolation(
                "routing.task",
                f"unknown task value {routing.task}; known: "
                + ", ".join(rpb.Task.keys())
                + " (a newer client than this gateway?)",
            )
        )
    if routing.cost_tier not in _COST_TIERS:
        add(
            FieldViolation(
                "routing.cost_tier",
                f"unknown cost tier value {routing.cost_tier}; known: "
                + ", ".join(rpb.CostTier.keys()),
            )
        )
    if len(routing.session_id) > MAX_SESSION_ID:
        add(FieldViolation("routing.session_id", f"at most {MAX_SESSION_ID} characters"))
    elif (char := first_invisible(routing.session_id)) is not None:
        add(FieldViolation("routing.session_id", f"must not contain {describe_char(char)}"))


def _check_message(path: str, message: common.ChatMessage, add: _Add) -> None:
    role = ROLE_NAMES.get(message.role)
    if role is None:
        add(
            FieldViolation(
                f"{path}.role", "must be ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT or ROLE_TOOL"
            )
        )
        return
    if message.content and message.parts:
        add(FieldViolation(f"{path}.parts", "set either content or parts, not both"))
    has_content = bool(message.content or message.parts)
    if role == "assistant":
        # OpenAI's refusal answer has no content: sent back as it came.
        if not has_content and not message.tool_calls and not message.refusal:
            add(
                FieldViolation(
                    f"{path}.content", "an assistant message needs content, tool_calls or a refusal"
                )
            )
    elif not has_content:
        add(FieldViolation(f"{path}.content", f"a {role} message needs content"))
    if role == "tool" and not message.tool_call_id:
        add(
            FieldViolation(
                f"{path}.tool_call_id", "required for a tool message: the id of the call it answers"
            )
        )
    if role != "tool" and message.tool_call_id:
        add(FieldViolation(f"{path}.tool_call_id", "only tool messages carry tool_call_id"))
    if role != "assistant":
        if message.tool_calls:
            add(FieldViolation(f"{path}.tool_calls", "only assistant messages carry tool_calls"))
        if message.reasoning:
            add(FieldViolation(f"{path}.reasoning", "only assistant messages carry reasoning"))
        if message.reasoning_details:
            add(
                FieldViolation(
                    f"{path}.reasoning_details", "only assistant messages carry reasoning_details"
                )
            )
        if message.refusal:
            add(FieldViolation(f"{path}.refusal", "only assistant messages carry refusal"))
    else:
        _check_reasoning_details(path, message.reasoning_details, add)
        if _too_big(message.refusal):
            add(FieldViolation(f"{path}.refusal", f"at most {MAX_DETAIL_FIELD_BYTES} bytes"))
    if len(message.name) > MAX_NAME:
        add(FieldViolation(f"{path}.name", f"at most {MAX_NAME} characters"))
    if len(message.parts) > MAX_PARTS:
        add(FieldViolation(f"{path}.parts", f"at most {MAX_PARTS} parts"))
    for j, part in enumerate(message.parts[:MAX_PARTS]):
        _check_part(f"{path}.parts[{j}]", part, add)
    for j, call in enumerate(message.tool_calls):
        if not call.id:
            add(FieldViolation(f"{path}.tool_calls[{j}].id", "required"))
        if not call.name:
            add(FieldViolation(f"{path}.tool_calls[{j}].name", "required"))


def _check_reasoning_details(
    path: str, details: Sequence[common.ReasoningDetail], add: _Add
) -> None:
    if len(details) > MAX_REASONING_DETAILS:
        add(
            FieldViolation(
                f"{path}.reasoning_details", f"at most {MAX_REASONING_DETAILS} reasoning details"
            )
        )
    for k, detail in enumerate(details[:MAX_REASONING_DETAILS]):
        where = f"{path}.reasoning_details[{k}]"
        if detail.provider not in _DETAIL_PROVIDERS:
            add(
                FieldViolation(
                    f"{where}.provider",
                    "required: the provider that issued it, as the response carried it",
                )
            )
        if detail.kind not in _DETAIL_KINDS:
            add(FieldViolation(f"{where}.kind", "required: a known ReasoningDetailKind"))
        for name in ("text", "signature", "raw_json"):
            if _too_big(getattr(detail, name)):
                add(FieldViolation(f"{where}.{name}", f"at most {MAX_DETAIL_FIELD_BYTES} bytes"))
        if detail.raw_json and detail.kind != common.REASONING_DETAIL_KIND_OPENROUTER:
            add(
                FieldViolation(
                    f"{where}.raw_json", "only REASONING_DETAIL_KIND_OPENROUTER details carry it"
                )
            )


def _too_big(text: str) -> bool:
    """Whether `text` is over MAX_DETAIL_FIELD_BYTES in UTF-8 (no encoding
    for the many that cannot be: a character is at most 4 bytes)."""
    return len(text) * 4 > MAX_DETAIL_FIELD_BYTES and (
        len(text) > MAX_DETAIL_FIELD_BYTES or len(text.encode()) > MAX_DETAIL_FIELD_BYTES
    )


def _check_part(path: str, part: common.ContentPart, add: _Add) -> None:
    kind = part.WhichOneof("part")
    if kind is None:
        add(FieldViolation(path, "set text or image"))
    elif kind == "text" and not part.text:
        add(FieldViolation(f"{path}.text", "must not be empty"))
    elif kind == "image":
        if not part.image.url.startswith(_IMAGE_URL_SCHEMES):
            add(
                FieldViolation(
                    f"{path}.image.url", "must be an http(s) URL or a data:image/... data URL"
                )
            )
        if part.image.detail not in _IMAGE_DETAILS:
            add(FieldViolation(f"{path}.image.detail", "unknown detail value"))


def _check_sampling(sampling: common.SamplingParams, add: _Add) -> None:
    def in_range(name: str, low: float, high: float, *, low_open: bool = False) -> None:
        if not sampling.HasField(name):  # type: ignore[arg-type]  # names are literal fields
            return
        value = float(getattr(sampling, name))
        ok = math.isfinite(value) and (low < value if low_open else low <= value) and value <= high
        if not ok:
            bracket = "(" if low_open else "["
            add(
                FieldViolation(
                    f"sampling.{name}", f"must be in {bracket}{low}, {high}], got {value}"
                )
            )

    in_range("temperature", 0.0, 2.0)
    in_range("top_p", 0.0, 1.0, low_open=True)
    in_range("presence_penalty", -2.0, 2.0)
    in_range("frequency_penalty", -2.0, 2.0)
    if sampling.HasField("max_tokens") and not 1 <= sampling.max_tokens <= MAX_TOKENS:
        add(
            FieldViolation(
                "sampling.max_tokens", f"must be 1 to {MAX_TOKENS}, got {sampling.max_tokens}"
            )
        )
    if len(sampling.stop) > MAX_STOP:
        add(FieldViolation("sampling.stop", f"at most {MAX_STOP} stop sequences"))
    for i, stop in enumerate(sampling.stop):
        if not 1 <= len(stop) <= MAX_STOP_LENGTH:
            add(FieldViolation(f"sampling.stop[{i}]", f"must be 1 to {MAX_STOP_LENGTH} characters"))


def _check_tools(request: AnyCompletionRequest, add: _Add) -> None:
    if len(request.tools) > MAX_TOOLS:
        add(FieldViolation("tools", f"at most {MAX_TOOLS} tools"))
    names: set[str] = set()
    for i, tool in enumerate(request.tools):
        if not _IDENTIFIER.fullmatch(tool.name):
            add(FieldViolation(f"tools[{i}].name", "must be 1 to 64 of [A-Za-z0-9_-]"))
        elif tool.name in names:
            add(FieldViolation(f"tools[{i}].name", f"duplicate tool name {tool.name!r}"))
        names.add(tool.name)
    if not request.HasField("tool_choice"):
        return
    choice = request.tool_choice
    if choice.WhichOneof("choice") == "function_name":
        if choice.function_name not in names:
            add(
                FieldViolation(
                    "tool_choice.function_name", f"{choice.function_name!r} is not among tools"
                )
            )
    elif choice.mode not in _TOOL_CHOICE_MODES:
        add(FieldViolation("tool_choice.mode", "unknown mode value"))
    elif choice.mode == common.TOOL_CHOICE_MODE_REQUIRED and not request.tools:
        add(FieldViolation("tool_choice.mode", "REQUIRED needs at least one tool"))


def _check_response_format(response_format: common.ResponseFormat, add: _Add) -> None:
    kind = response_format.type
    if kind not in _RESPONSE_FORMAT_TYPES:
        add(FieldViolation("response_format.type", "unknown type value"))
    elif kind == common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        schema = response_format.json_schema
        if not _IDENTIFIER.fullmatch(schema.name):
            add(
                FieldViolation(
                    "response_format.json_schema.name", "required: 1 to 64 of [A-Za-z0-9_-]"
                )
            )
        if not schema.HasField("schema"):
            add(FieldViolation("response_format.json_schema.schema", "required"))
    elif response_format.HasField("json_schema"):
        add(
            FieldViolation(
                "response_format.json_schema", "only allowed with RESPONSE_FORMAT_TYPE_JSON_SCHEMA"
            )
        )


def _check_reasoning(reasoning: common.ReasoningOptions, add: _Add) -> None:
    if reasoning.effort not in _REASONING_EFFORTS:
        add(FieldViolation("reasoning.effort", "unknown effort value"))
    if (
        reasoning.HasField("enabled")
        and not reasoning.enabled
        and (
            reasoning.effort
            not in (common.REASONING_EFFORT_UNSPECIFIED, common.REASONING_EFFORT_NONE)
            or reasoning.HasField("max_tokens")
        )
    ):
        add(FieldViolation("reasoning.enabled", "false contradicts the effort or max_tokens set"))
    if reasoning.HasField("max_tokens"):
        if reasoning.effort != common.REASONING_EFFORT_UNSPECIFIED:
            add(FieldViolation("reasoning.max_tokens", "set effort or max_tokens, not both"))
        if not 1 <= reasoning.max_tokens <= MAX_TOKENS:
            add(FieldViolation("reasoning.max_tokens", f"must be 1 to {MAX_TOKENS}"))


def _check_openrouter(options: common.OpenRouterOptions, add: _Add) -> None:
    if len(options.models) > MAX_FALLBACK_MODELS:
        add(FieldViolation("openrouter.models", f"at most {MAX_FALLBACK_MODELS} models"))
    for i, model in enumerate(options.models[:MAX_FALLBACK_MODELS]):
        problem = _model_name_problem(model)
        slug = model.removeprefix("openrouter/")
        if problem is not None:
            add(FieldViolation(f"openrouter.models[{i}]", problem))
        elif model.startswith(_NOT_OPENROUTER_VENDORS):
            add(
                FieldViolation(
                    f"openrouter.models[{i}]",
                    f"{model!r} names another provider's model; OpenRouter's fallbacks are "
                    "OpenRouter slugs like 'openai/gpt-4o-mini' (for a fallback across "
                    "providers, configure an alias)",
                )
            )
        elif "/" not in slug:
            add(
                FieldViolation(
                    f"openrouter.models[{i}]",
                    "must be an OpenRouter model slug like 'openai/gpt-4o-mini'",
                )
            )
    prefs = options.provider
    if len(prefs.order) > MAX_PROVIDER_ORDER:
        add(FieldViolation("openrouter.provider.order", f"at most {MAX_PROVIDER_ORDER} entries"))
    for i, provider in enumerate(prefs.order[:MAX_PROVIDER_ORDER]):
        problem = _provider_name_problem(provider)
        if problem is not None:
            add(FieldViolation(f"openrouter.provider.order[{i}]", problem))
    if prefs.data_collection not in _DATA_COLLECTIONS:
        add(FieldViolation("openrouter.provider.data_collection", "unknown value"))
    if prefs.sort not in _PROVIDER_SORTS:
        add(FieldViolation("openrouter.provider.sort", "unknown value"))
    for name in ("prompt", "completion", "request", "image"):
        if prefs.max_price.HasField(name):
            value = getattr(prefs.max_price, name)
            if not (math.isfinite(value) and value >= 0):
                add(FieldViolation(f"openrouter.provider.max_price.{name}", "must be zero or more"))


def _provider_name_problem(name: str) -> str | None:
    """Provider slugs ("anthropic", "google-vertex") and names OpenRouter
    accepts vary; refuse only what no provider name holds."""
    if not name.strip():
        return "must not be empty"
    if len(name) > MAX_PROVIDER_NAME:
        return f"at most {MAX_PROVIDER_NAME} characters"
    char = first_invisible(name)
    if char is not None:
        return f"must not contain {describe_char(char)}; use a provider slug like 'anthropic'"
    if name != name.strip():
        return "no leading or trailing spaces; use a provider slug like 'anthropic'"
    return None


def _largest_field(request: AnyCompletionRequest) -> str:
    """The top-level field that makes an oversized request big, to name it."""
    sizes = {
        "messages": sum(m.ByteSize() for m in request.messages),
        "tools": sum(t.ByteSize() for t in request.tools),
        "response_format": request.response_format.ByteSize(),
    }
    return max(sizes, key=lambda name: sizes[name])
