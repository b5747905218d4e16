"""What a target model can serve, what a request needs, and the first hard
constraint a target violates: the capability filter a route applies before
its preference order (issue 14, "Capability filter before preference").

Pure and cheap: no network, no model call, no clock. A route's dispatcher
calls `needs_of(request)` once, then for each candidate target
`capabilities_for(name, catalog_info)` and `skip_reason(needs, caps, ...)`,
and passes over every target with a reason.

Where the facts come from, per fact:
- the context window: the catalog (ListModels' `context_length`, from the
  provider's own list) where it has one; for Ollama at most the configured
  `num_ctx`, which the gateway always sends; else the built-in price tables
  (routing/price_tables/, routing/pricing.py's ZAI_MODELS), a dated snapshot
  taking its base model's row as pricing.py does; else unknown (None), which
  no window check can refuse. The capability table below carries no windows
  of its own, so that two built-in tables cannot disagree about one.
- tools, vision, JSON output, forcing a call: the catalog where the
  provider publishes them (ListModels' `capabilities`: OpenRouter's
  `supported_parameters` and `architecture.input_modalities`, Ollama's
  /api/show `capabilities`), fact by fact; else the built-in table below (a
  model's family), else the provider's default for models the table does
  not know. OpenAI, Anthropic, Gemini, Groq and Z.AI publish none of these
  in their lists, so the table is theirs.
- what the gateway itself refuses on a provider's wire (Anthropic: JSON
  output, forced tool use while thinking; Z.AI: json_schema, forcing a call;
  Ollama: forcing a call; Gemini and Ollama: images by URL) is per provider
  (`_WIRES`), read from each provider's check() and the contract's comments,
  and caps every fact above, the catalog's included;
  tests/test_capabilities.py checks that whatever check() refuses, these
  facts refuse too.

Unknown means conservative for the direct providers: a target skipped with a
reason costs the caller nothing but the next target, while a target that
cannot serve answers 400, which is the request's fault (INVALID_ARGUMENT) and
ends a fallback chain. OpenRouter is the exception: for a model the table
does not know, its defaults are permissive, because OpenRouter answers 404
"No endpoints found that support ..." when no provider of the model can
serve a parameter, which the gateway maps to UPSTREAM_MODEL_NOT_FOUND, a
reason every chain falls back on.

Circuit breakers are not a capability: whether a target's breaker is open
changes from one second to the next and lives in dispatch
(resilience/circuit.py). The decision reports it with `breaker_skip()`, so
every reason a target is passed over has one shape.
"""

from __future__ import annotations

import dataclasses
import enum
import fnmatch
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypeAlias

from llmgateway.server.providers.anthropic import thinking_budget
from llmgateway.server.routing.pricing import BUILTIN_TABLES
from llmgateway.server.routing.router import gateway_model_name, parse_model_name
from llmgateway.v1 import completion_pb2 as common

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

    from llmgateway.v1 import completion_service_pb2 as pb

Provider: TypeAlias = common.Provider.ValueType


class FactSource(enum.StrEnum):
    """Where a capability fact came from."""

    # ListModels: the provider's own model list, cached by routing/catalog.py.
    CATALOG = "catalog"
    # The gateway's configuration (Ollama's `num_ctx`, sent with every call).
    CONFIG = "config"
    # The built-in price tables' context windows.
    PRICE_TABLE = "price-table"
    # The capability table in this module, by model family.
    BUILTIN_TABLE = "built-in-table"
    # What the provider's models do unless the table knows better.
    PROVIDER_DEFAULT = "provider-default"


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What one target can serve through this gateway."""

    # Tokens of prompt and answer together; None when unknown.
    context_window: int | None
    # Where `context_window` came from; None when it is unknown.
    context_source: FactSource | None
    # Takes `tools` (and tool calls and results in the history).
    tools: bool
    # Takes RESPONSE_FORMAT_TYPE_JSON_SCHEMA.
    json_schema: bool
    # Takes RESPONSE_FORMAT_TYPE_JSON_OBJECT.
    json_object: bool
    # Reads image parts.
    vision: bool
    # Reads images given by http(s) URL, not only data URLs (the gateway does
    # not fetch URLs, and Gemini and Ollama take images inline only).
    image_urls: bool
    # Can be made to call a tool: TOOL_CHOICE_MODE_REQUIRED or a named function.
    forced_tool_choice: bool
    # ... also while thinking (Anthropic refuses forced tool use with thinking on).
    forced_tool_choice_while_thinking: bool
    # Where tools, JSON, vision and forcing came from: CATALOG when the
    # catalog published all four of tools, JSON schema, JSON object and
    # vision; else where those it did not publish came from (see
    # `catalog_facts` for the others).
    features_source: FactSource
    # The table row that gave them ("openai gpt-4o family"), "catalog", or
    # an override's `[capabilities."M"]`; empty for a provider default.
    matched: str = ""
    # The facts above (field names of this class) whose value the catalog
    # published, whatever `features_source` says of the rest.
    catalog_facts: frozenset[str] = frozenset()
    # The facts above that are false because the gateway's adapter for the
    # provider cannot carry them, though the model could ("json_schema" on
    # Anthropic): field names of this class.
    gateway_refuses: frozenset[str] = frozenset()


# -- the built-in table --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Facts:
    """What a model family can do, whatever the gateway's wire allows."""

    tools: bool
    vision: bool
    json_schema: bool
    json_object: bool


@dataclass(frozen=True, slots=True)
class _Row:
    # fnmatch patterns over the provider's model id (after `:tag` and, for
    # OpenRouter, the vendor are set aside); the first row that matches wins.
    patterns: tuple[str, ...]
    facts: _Facts
    label: str


@dataclass(frozen=True, slots=True)
class _Wire:
    """What the gateway's adapter for a provider can carry, whatever the model."""

    json_schema: bool = True
    json_object: bool = True
    forced_tool_choice: bool = True
    forced_tool_choice_while_thinking: bool = True
    image_urls: bool = True


_ALL = _Facts(tools=True, vision=True, json_schema=True, json_object=True)
_TEXT_ALL = _Facts(tools=True, vision=False, json_schema=True, json_object=True)
_TOOLS_JSON_MODE = _Facts(tools=True, vision=False, json_schema=False, json_object=True)
_NOTHING = _Facts(tools=False, vision=False, json_schema=False, json_object=False)


def _row(label: str, facts: _Facts, *patterns: str) -> _Row:
    return _Row(patterns, facts, label)


# OpenAI (Chat Completions). Sources: OpenAI's model pages as summarised by
# third parties through the search tool, read 2026-12 (the official pages are
# not in the reference store): vercel.com/ai-gateway model pages (o4-mini:
# tools and vision, "earlier mini reasoning models were text-only"),
# openrouter.ai/openai/o3-mini ("function calling, structured outputs ... does
# not include vision"), dev.to/multigrid "Does o1-mini Support Function
# Calling?" (400 unsupported_parameter for tools), simonw/llm-openai-plugin#12
# (o1-mini: no schemas; o1: vision). Structured outputs (json_schema) arrived
# with gpt-4o-2024-08-06 and gpt-4o-mini; gpt-4-turbo and gpt-3.5-turbo have
# JSON mode only. As of 2026-12; re-check when OpenAI ships a family.
_OPENAI: tuple[_Row, ...] = (
    _row(
        "openai o1-mini and o1-preview: no tools, no JSON output",
        _NOTHING,
        "o1-mini*",
        "o1-preview*",
    ),
    _row("openai o3-mini: text only", _TEXT_ALL, "o3-mini*"),
    _row("openai search models: no tools", _Facts(False, False, True, True), "*search*"),
    _row("openai audio models: no image input", _TOOLS_JSON_MODE, "*audio*", "*realtime*"),
    # llumiverse's OpenAI capability table (@llumiverse/common 0.22.2): no tool support.
    _row("openai chatgpt-4o-latest: no tools", _Facts(False, True, False, True), "chatgpt-4o*"),
    _row("openai o-series", _ALL, "o1", "o1-2*", "o1-pro*", "o3", "o3-2*", "o3-pro*", "o4-mini*"),
    _row("openai gpt-5 family", _ALL, "gpt-5*"),
    _row("openai gpt-4.1 family", _ALL, "gpt-4.1*"),
    _row("openai gpt-4o family", _ALL, "gpt-4o*"),
    _row(
        "openai gpt-4-turbo: vision, JSON object only",
        _Facts(True, True, False, True),
        "gpt-4-turbo*",
    ),
    _row(
        "openai gpt-4 previews: text, JSON object only",
        _TOOLS_JSON_MODE,
        "gpt-4-1106*",
        "gpt-4-0125*",
    ),
    _row(
        "openai gpt-4: text and tools, no JSON output",
        _Facts(True, False, False, False),
        "gpt-4",
        "gpt-4-0*",
    ),
    _row("openai gpt-3.5-turbo: text, JSON object only", _TOOLS_JSON_MODE, "gpt-3.5-turbo*"),
)

# Anthropic (Messages API). Every Claude 3 and later model takes tools and
# images (Anthropic's models overview; vercel.com/ai-gateway's Claude pages
# list "Tool Use, Vision (Image)" for 3 Haiku through 4.x, read 2026-12). JSON
# output is refused by the gateway on this wire (`_WIRES`), whatever the model;
# the json facts here matter only through OpenRouter, which forwards
# structured output to Anthropic models. Claude 2 and Instant (retired) took
# neither tools nor images on the Messages API.
_ANTHROPIC: tuple[_Row, ...] = (
    _row("anthropic claude 2 and instant: text only", _NOTHING, "claude-2*", "claude-instant*"),
    _row("anthropic claude 3 and later", _ALL, "claude-*"),
)

# Gemini (generateContent). Tools, images and JSON (responseMimeType,
# responseJsonSchema) on every 2.x and 3 text model (ai.google.dev's
# structured-output and function-calling guides as quoted by Firebase AI
# Logic's docs and zilliz.com's Gemini 3 FAQ through the search tool, read
# 2026-12). Image-generation, TTS, embedding and Live models are not chat
# models of this wire; Gemma on the Gemini API takes images but neither
# function declarations nor JSON mode.
_GEMINI: tuple[_Row, ...] = (
    _row(
        "gemini media and embedding models: not chat",
        _NOTHING,
        "*-tts*",
        "*embedding*",
        "*-live*",
        "*native-audio*",
    ),
    _row("gemini image models: no tools, no JSON", _Facts(False, True, False, False), "*-image*"),
    _row(
        "gemma on the gemini api: no tools, no JSON", _Facts(False, True, False, False), "gemma-*"
    ),
    _row(
        "gemini 2.x, 3 and latest aliases",
        _ALL,
        "gemini-2.*",
        "gemini-3*",
        "gemini-flash-latest",
        "gemini-flash-lite-latest",
        "gemini-pro-latest",
    ),
)

# Groq. console.groq.com/docs/structured-outputs (read 2026-12 through the
# search tool): strict json_schema on openai/gpt-oss-20b and -120b; an earlier
# version of the page lists moonshotai/kimi-k2-instruct and the Llama 4 Scout
# and Maverick models. console.groq.com/docs/vision: Llama 4 Scout takes
# images ("tool use, and JSON mode"). Llama 3.x and Qwen3 have tool use and
# JSON mode but no json_schema. Compound systems run Groq's own built-in
# tools and take no caller tools; guard, speech and TTS models are not chat.
_GROQ: tuple[_Row, ...] = (
    _row("groq non-chat models", _NOTHING, "*guard*", "whisper*", "playai*", "*tts*"),
    _row(
        "groq compound systems: built-in tools only",
        _Facts(False, False, False, True),
        "groq/compound*",
        "compound*",
    ),
    _row("llama 4 scout and maverick", _ALL, "meta-llama/llama-4-*"),
    _row(
        "gpt-oss and kimi-k2: text, JSON schema",
        _TEXT_ALL,
        "openai/gpt-oss-*",
        "moonshotai/kimi-k2*",
    ),
    _row(
        "llama 3.x and qwen3: text, JSON object only",
        _TOOLS_JSON_MODE,
        "llama-3*",
        "llama3*",
        "qwen/qwen3*",
    ),
)

# Ollama. Whether a local model takes tools or images depends on its template
# and projector: Ollama answers 400 "... does not support tools" otherwise
# (open-webui#26466, continuedev/continue#10561 for qwen2.5vl). The families
# below carry the `tools` / `vision` tags of ollama.com/library as they were
# in 2026 (recalled and spot-checked against those threads, not re-read from
# the library). They serve until the catalogue is fetched, and for servers
# whose /api/show has no `capabilities` list: once it is, the pulled model's
# own list wins (providers/ollama.py). JSON object and schema output is
# constrained decoding in Ollama itself (`format`), so every model takes it.
_OLLAMA_JSON = _Facts(tools=False, vision=False, json_schema=True, json_object=True)
_OLLAMA: tuple[_Row, ...] = (
    _row(
        "ollama vision models with tools",
        _ALL,
        "llama4*",
        "qwen3-vl*",
        "mistral-small3.1*",
        "mistral-small3.2*",
        "gemma4*",
    ),
    _row(
        "ollama vision models",
        _Facts(tools=False, vision=True, json_schema=True, json_object=True),
        "llava*",
        "bakllava*",
        "llama3.2-vision*",
        "gemma3*",
        "qwen2.5vl*",
        "minicpm-v*",
        "granite3.2-vision*",
        "moondream*",
    ),
    _row(
        "ollama models with tools",
        _TEXT_ALL,
        "llama3.1*",
        "llama3.2*",
        "llama3.3*",
        "qwen2.5*",
        "qwen3*",
        "mistral*",
        "gpt-oss*",
        "command-r*",
        "granite3*",
        "phi4-mini*",
        "hermes3*",
        "devstral*",
        "deepseek-v3*",
        "kimi-k2*",
        "glm-4.6*",
        "glm-4.7*",
    ),
)

# Z.AI. Tools on the GLM-4.x and 5 text models ([ref] zai-api.md; Z.AI's
# function-calling guide). Images only on the V models: GLM-4.6V and
# 4.6V-Flash with native function calling (vercel.com/ai-gateway/models/glm-4.6v,
# novita.ai's model card: "the first visual model to natively integrate
# Function Call", read 2026-12); GLM-4.5V's tool support is not confirmed,
# so it has none here. json_schema is refused by the gateway on this wire.
_ZAI: tuple[_Row, ...] = (
    _row("zai glm-4.6v", _ALL, "glm-4.6v", "glm-4.6v-*"),
    _row("zai glm v models: no tools", _Facts(False, True, False, True), "glm-*v", "glm-*v-*"),
    _row("zai glm text models: text, JSON object only", _TOOLS_JSON_MODE, "glm-*"),
)

# OpenRouter slugs are `<vendor>/<model>`: a known vendor's model takes that
# vendor's family row (the model is the same; OpenRouter translates the wire).
_OPENROUTER_VENDORS: dict[str, tuple[_Row, ...]] = {
    "openai": _OPENAI,
    "anthropic": _ANTHROPIC,
    "google": _GEMINI,
    "z-ai": _ZAI,
    "meta-llama": _GROQ,
    "moonshotai": _GROQ,
    "qwen": _GROQ,
}

_TABLES: dict[Provider, tuple[_Row, ...]] = {
    common.PROVIDER_OPENAI: _OPENAI,
    common.PROVIDER_ANTHROPIC: _ANTHROPIC,
    common.PROVIDER_GEMINI: _GEMINI,
    common.PROVIDER_GROQ: _GROQ,
    common.PROVIDER_OLLAMA: _OLLAMA,
    common.PROVIDER_ZAI: _ZAI,
}

# For models no row matches. Direct providers: conservative where the line-up
# is mixed (see the module docstring). OpenAI's and Groq's current chat models
# all take tools and JSON mode; Gemini's text models take everything; Claude
# names all start with `claude-`, so an unmatched Anthropic id is no known
# chat model. Ollama: JSON always (constrained decoding), tools and images
# only for families known to have them. Z.AI: unmatched ids are not GLM.
# OpenRouter: permissive, because it fails over with a 404 the chain falls
# back on.
_DEFAULTS: dict[Provider, _Facts] = {
    common.PROVIDER_OPENAI: _TOOLS_JSON_MODE,
    common.PROVIDER_ANTHROPIC: _Facts(
        tools=True, vision=False, json_schema=False, json_object=False
    ),
    common.PROVIDER_GEMINI: _Facts(tools=True, vision=True, json_schema=False, json_object=True),
    common.PROVIDER_GROQ: _TOOLS_JSON_MODE,
    common.PROVIDER_OLLAMA: _OLLAMA_JSON,
    common.PROVIDER_ZAI: _NOTHING,
    common.PROVIDER_OPENROUTER: _ALL,
}
_UNKNOWN_PROVIDER = _NOTHING

# What each adapter can carry: from its check() (the refusals) and from the
# contract's comments on ToolChoice (where a forced call is softened instead).
_WIRES: dict[Provider, _Wire] = {
    common.PROVIDER_OPENAI: _Wire(),
    common.PROVIDER_GROQ: _Wire(),
    common.PROVIDER_OPENROUTER: _Wire(),
    # providers/anthropic.py _parameter_violations: response_format JSON_OBJECT
    # and JSON_SCHEMA refused; REQUIRED or a named function refused while thinking.
    common.PROVIDER_ANTHROPIC: _Wire(
        json_schema=False, json_object=False, forced_tool_choice_while_thinking=False
    ),
    # providers/gemini.py: images via translate.image_data, data URLs only.
    common.PROVIDER_GEMINI: _Wire(image_urls=False),
    # providers/ollama.py: REQUIRED refused; a named function is only offered
    # alone (not forced); images as data only.
    common.PROVIDER_OLLAMA: _Wire(
        forced_tool_choice=False, forced_tool_choice_while_thinking=False, image_urls=False
    ),
    # providers/zai.py: json_schema refused; tool_choice always sent as "auto".
    common.PROVIDER_ZAI: _Wire(
        json_schema=False, forced_tool_choice=False, forced_tool_choice_while_thinking=False
    ),
}
_UNKNOWN_WIRE = _Wire(
    json_schema=False,
    json_object=False,
    forced_tool_choice=False,
    forced_tool_choice_while_thinking=False,
    image_urls=False,
)


# -- context windows -------------------------------------------------------------

# The price tables' windows by gateway name.
_PRICE_TABLE_WINDOWS: dict[str, int] = {
    gateway_model_name(provider, model.name): model.context
    for provider, models in BUILTIN_TABLES.items()
    for model in models
}
# The same snapshot rule as routing/pricing.py's PriceBook (tests check they
# agree): what follows a listed name in a snapshot id the provider serves
# under it is a date or version number, `latest` or a `preview` tag.
_SNAPSHOT_TAG = re.compile(r"(?:\d|latest\b|preview\b)")


def snapshot_bases(name: str) -> Iterator[str]:
    """`name`, then each shorter name it extends with a snapshot tag, longest
    first (`openai/gpt-4o-2024-08-06` -> `openai/gpt-4o-2024-08`,
    `openai/gpt-4o-2024`, `openai/gpt-4o`)."""
    yield name
    end = len(name)
    while (dash := name.rfind("-", 0, end)) > 0:
        if _SNAPSHOT_TAG.match(name, dash + 1):
            yield name[:dash]
        end = dash


def _price_table_window(model_name: str) -> int | None:
    for base in snapshot_bases(model_name):
        window = _PRICE_TABLE_WINDOWS.get(base)
        if window is not None:
            return window
    return None


def _openrouter_twin(vendor: str, model: str) -> str | None:
    """The direct provider's name for an OpenRouter model of the same vendor,
    whose price-table window serves when OpenRouter's catalogue is not cached."""
    direct = {
        "openai": common.PROVIDER_OPENAI,
        "anthropic": common.PROVIDER_ANTHROPIC,
        "google": common.PROVIDER_GEMINI,
        "z-ai": common.PROVIDER_ZAI,
    }.get(vendor)
    return gateway_model_name(direct, model) if direct is not None else None


# -- capabilities_for ----------------------------------------------------------------


def _family(rows: Sequence[_Row], model: str) -> _Row | None:
    for row in rows:
        if any(fnmatch.fnmatchcase(model, pattern) for pattern in row.patterns):
            return row
    return None


def capabilities_for(
    model_name: str,
    catalog_info: pb.ModelInfo | None,
    *,
    ollama_num_ctx: int | None = None,
) -> Capabilities:
    """What `model_name` (gateway naming, no alias, no `@endpoint`) can serve.

    `catalog_info` is its ListModels entry from the cached catalogue, if any
    (never fetched on a call's path). `ollama_num_ctx` is the configured
    `num_ctx`, which caps an Ollama model's window: the gateway sends it with
    every call, and Ollama cuts the prompt to it."""
    parsed = parse_model_name(model_name)
    if parsed is None:
        return _capabilities(
            None, None, _UNKNOWN_PROVIDER, FactSource.PROVIDER_DEFAULT, "", _UNKNOWN_WIRE
        )
    provider, upstream = parsed
    # Ollama tags (`llama3.2:3b`) and OpenRouter variants (`:free`) do not
    # change what the model can do.
    model, _, _ = upstream.partition(":")

    rows = _TABLES.get(provider, ())
    window_fallback: str | None = None
    if provider == common.PROVIDER_OPENROUTER:
        vendor, _, model = model.partition("/")
        rows = _OPENROUTER_VENDORS.get(vendor, ())
        window_fallback = _openrouter_twin(vendor, model)
    row = _family(rows, model)
    if row is None and provider == common.PROVIDER_OPENROUTER:
        # Open-weight rows name the vendor too (`meta-llama/llama-4-*`).
        row = _family(rows, f"{vendor}/{model}")
    if row is not None:
        facts, source, label = row.facts, FactSource.BUILTIN_TABLE, row.label
    else:
        facts = _DEFAULTS.get(provider, _UNKNOWN_PROVIDER)
        source, label = FactSource.PROVIDER_DEFAULT, ""
    published = _published(catalog_info)
    if published:
        facts = dataclasses.replace(
            facts, **{name: value for name, value in published.items() if name in _FACT_NAMES}
        )
        if published.keys() >= _FACT_NAMES:
            source, label = FactSource.CATALOG, "catalog"

    window, window_source = _window(model_name, catalog_info, window_fallback)
    ollama = provider == common.PROVIDER_OLLAMA
    # A non-positive num_ctx is no window (config refuses one; this keeps the answer sane anyway).
    if (
        ollama
        and ollama_num_ctx
        and ollama_num_ctx > 0
        and (window is None or ollama_num_ctx < window)
    ):
        window, window_source = ollama_num_ctx, FactSource.CONFIG
    return _capabilities(
        window,
        window_source,
        facts,
        source,
        label,
        _WIRES.get(provider, _UNKNOWN_WIRE),
        published=published,
    )


# The catalog's facts that stand in for a table row's (_Facts' fields).
_FACT_NAMES = frozenset({"tools", "json_schema", "json_object", "vision"})
# ModelCapabilities' fields, in the contract's order.
_Publishable: TypeAlias = Literal[
    "tools", "json_schema", "json_object", "vision", "forced_tool_choice"
]
_PUBLISHABLE: tuple[_Publishable, ...] = (
    "tools",
    "json_schema",
    "json_object",
    "vision",
    "forced_tool_choice",
)


def _published(catalog_info: pb.ModelInfo | None) -> dict[str, bool]:
    """The capabilities the model's catalog entry publishes, by name: only
    those the provider's list said (an unset field is not a "no")."""
    if catalog_info is None or not catalog_info.HasField("capabilities"):
        return {}
    published = catalog_info.capabilities
    return {name: getattr(published, name) for name in _PUBLISHABLE if published.HasField(name)}


def _window(
    model_name: str, catalog_info: pb.ModelInfo | None, fallback_name: str | None
) -> tuple[int | None, FactSource | None]:
    if (
        catalog_info is not None
        and catalog_info.HasField("context_length")
        and catalog_info.context_length > 0
    ):
        return catalog_info.context_length, FactSource.CATALOG
    window = _price_table_window(model_name)
    if window is None and fallback_name is not None:
        window = _price_table_window(fallback_name)
    if window is not None:
        return window, FactSource.PRICE_TABLE
    return None, None


def adapter_refuses(model_name: str) -> frozenset[str]:
    """Every Capabilities fact the gateway's adapter for `model_name`'s provider
    cannot carry, whatever the model could: what an operator's
    `[capabilities."MODEL"]` override may never turn on."""
    parsed = parse_model_name(model_name)
    wire = _UNKNOWN_WIRE if parsed is None else _WIRES.get(parsed[0], _UNKNOWN_WIRE)
    refused = {
        "json_schema": not wire.json_schema,
        "json_object": not wire.json_object,
        "image_urls": not wire.image_urls,
        "forced_tool_choice": not wire.forced_tool_choice,
        "forced_tool_choice_while_thinking": not wire.forced_tool_choice_while_thinking,
    }
    return frozenset(name for name, no in refused.items() if no)


def _capabilities(
    window: int | None,
    window_source: FactSource | None,
    facts: _Facts,
    source: FactSource,
    label: str,
    wire: _Wire,
    *,
    published: Mapping[str, bool] | None = None,
) -> Capabilities:
    """The facts of a model (`facts`, the catalog's `published` among them)
    capped by what the provider's adapter can carry (`wire`)."""
    published = published or {}
    # Forcing a call needs tools; a catalog may also say the model cannot be
    # forced although it takes tools (OpenRouter: no `tool_choice`).
    forceable = facts.tools and published.get("forced_tool_choice", True)
    forced = forceable and wire.forced_tool_choice
    refused = {
        "json_schema": facts.json_schema and not wire.json_schema,
        "json_object": facts.json_object and not wire.json_object,
        "image_urls": facts.vision and not wire.image_urls,
        "forced_tool_choice": forceable and not wire.forced_tool_choice,
        "forced_tool_choice_while_thinking": forced and not wire.forced_tool_choice_while_thinking,
    }
    # What follows from a published fact came from the catalog as well.
    from_catalog = set(published)
    if "vision" in published:
        from_catalog.add("image_urls")
    if "tools" in published or "forced_tool_choice" in published:
        from_catalog |= {"forced_tool_choice", "forced_tool_choice_while_thinking"}
    return Capabilities(
        context_window=window,
        context_source=window_source,
        tools=facts.tools,
        json_schema=facts.json_schema and wire.json_schema,
        json_object=facts.json_object and wire.json_object,
        vision=facts.vision,
        image_urls=facts.vision and wire.image_urls,
        forced_tool_choice=forced,
        forced_tool_choice_while_thinking=forced and wire.forced_tool_choice_while_thinking,
        features_source=source,
        matched=label,
        gateway_refuses=frozenset(name for name, no in refused.items() if no),
        catalog_facts=frozenset(from_catalog),
    )


# -- what a request needs ------------------------------------------------------------

# The estimate of a prompt's tokens: UTF-8 bytes / 4 over every text the
# provider is sent (message text, reasoning sent back, tool calls and their
# arguments, tool definitions, the response schema). On English text and code
# that is the usual characters / 4; CJK text (3 bytes a character) counts
# about 0.75 tokens a character instead of 0.25, closer to what tokenizers
# give it. Cheap (len of an encode, in C) and deliberately rough: it decides
# only whether a window is plainly too small, and a context-length failure
# still escalates once (issue 14).
BYTES_PER_TOKEN = 4
# Each image, whatever its size: about what Anthropic charges for a
# 1092 x 1092 image (width x height / 750 = 1,590 tokens) and more than
# OpenAI's high-detail 1024 x 1024 (765) or Gemini's 258 per tile.
# Overestimating an image costs at most a target passed over on a tiny window.
IMAGE_TOKENS = 1_600
# Role markers and separators per message (OpenAI's chat format spends 3-4).
MESSAGE_OVERHEAD_TOKENS = 4
# Room reserved for the answer when the request sets no max_tokens: the
# model's default is unknowable here, and a window that cannot hold a short
# answer cannot serve. Anthropic's configured default (4,096) is larger; a
# thinking budget (reasoning.max_tokens) is added on top, as Anthropic counts
# thinking in max_tokens.
DEFAULT_ANSWER_TOKENS = 1_024

ToolForcing = Literal["required", "function"]


@dataclass(frozen=True, slots=True)
class RequestNeeds:
    """What a request requires of the target that serves it."""

    estimated_prompt_tokens: int
    # sampling.max_tokens, else DEFAULT_ANSWER_TOKENS (+ a thinking budget).
    max_tokens: int
    # Whether max_tokens came from the request (for the decision's sentence).
    max_tokens_given: bool
    # Tools offered, or tool calls or results in the history.
    tools: bool
    json_schema: bool
    json_object: bool
    # Image parts, and how many of them are URLs rather than data URLs.
    images: int
    image_urls: int
    # A forced call: TOOL_CHOICE_MODE_REQUIRED or a named function (only with tools).
    forced_tool: ToolForcing | None
    # The request turns thinking on in Anthropic's sense (asked for, not the
    # model's default): Anthropic then refuses a forced tool call.
    thinking: bool

    @property
    def total_tokens(self) -> int:
        """The window the request needs: prompt and answer."""
        return self.estimated_prompt_tokens + self.max_tokens


def _utf8_length(text: str) -> int:
    """UTF-8 bytes of `text` without encoding it when it is ASCII (one byte a
    character): `isascii()` is O(1) in CPython, while `encode()` copies the
    string (about 14 ms for an 8 MiB request)."""
    return len(text) if text.isascii() else len(text.encode())


def needs_of(request: pb.CompleteRequest | pb.StreamCompleteRequest) -> RequestNeeds:
    """What `request` requires, estimated without tokenizing (see BYTES_PER_TOKEN)."""
    text_bytes = 0
    images = 0
    image_urls = 0
    tool_history = False
    for message in request.messages:
        text_bytes += _utf8_length(message.content)
        text_bytes += _utf8_length(message.reasoning)
        for part in message.parts:
            if part.WhichOneof("part") == "image":
                images += 1
                if not part.image.url.startswith("data:"):
                    image_urls += 1
            else:
                text_bytes += _utf8_length(part.text)
        for call in message.tool_calls:
            tool_history = True
            text_bytes += len(call.name) + _utf8_length(call.arguments)
        if message.role == common.ROLE_TOOL:
            tool_history = True
    for tool in request.tools:
        # The serialized size of the schema stands in for its JSON text.
        text_bytes += len(tool.name) + _utf8_length(tool.description) + tool.parameters.ByteSize()
    response_format = request.response_format
    if response_format.type == common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA:
        text_bytes += response_format.json_schema.schema.ByteSize()
    prompt = (
        math.ceil(text_bytes / BYTES_PER_TOKEN)
        + images * IMAGE_TOKENS
        + len(request.messages) * MESSAGE_OVERHEAD_TOKENS
    )

    given = request.sampling.HasField("max_tokens")
    if given:
        answer = max(request.sampling.max_tokens, 0)
    else:
        budget = request.reasoning.max_tokens if request.reasoning.HasField("max_tokens") else 0
        answer = DEFAULT_ANSWER_TOKENS + max(budget, 0)

    forced: ToolForcing | None = None
    if request.tools:
        if request.tool_choice.WhichOneof("choice") == "function_name":
            forced = "function"
        elif request.tool_choice.mode == common.TOOL_CHOICE_MODE_REQUIRED:
            forced = "required"
    return RequestNeeds(
        estimated_prompt_tokens=prompt,
        max_tokens=answer,
        max_tokens_given=given,
        tools=bool(request.tools) or tool_history,
        json_schema=response_format.type == common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA,
        json_object=response_format.type == common.RESPONSE_FORMAT_TYPE_JSON_OBJECT,
        images=images,
        image_urls=image_urls,
        forced_tool=forced,
        thinking=thinking_budget(request.reasoning) is not None,
    )


# -- skip reasons ------------------------------------------------------------------


class SkipId(enum.StrEnum):
    """Why a target was passed over: stable ids for decisions, metrics and tests."""

    KEY_MODEL_PATTERNS = "key-model-patterns"
    CONTEXT_WINDOW = "context-window"
    NO_TOOLS = "no-tools"
    CANNOT_FORCE_TOOL = "cannot-force-tool"
    NO_JSON_SCHEMA = "no-json-schema"
    NO_JSON_OBJECT = "no-json-object"
    NO_VISION = "no-vision"
    NO_IMAGE_URLS = "no-image-urls"
    # Never returned by skip_reason: dispatch checks breakers (breaker_skip).
    BREAKER = "breaker"


@dataclass(frozen=True, slots=True)
class SkipReason:
    """One target passed over: a stable id and a sentence for people."""

    id: SkipId
    message: str

    def __str__(self) -> str:
        return f"{self.id}: {self.message}"


def key_allows(key_patterns: Sequence[str] | None, model_name: str) -> bool:
    """Whether a caller key's model patterns let it call `model_name`: the
    rule of CallerKey.allows_model (fnmatch, case-sensitive; no patterns
    allows every model). None is a call without a caller key."""
    return not key_patterns or any(fnmatch.fnmatchcase(model_name, p) for p in key_patterns)


def _source(caps: Capabilities, fact: str) -> str:
    """Where a false fact came from, for the decision's sentence: "catalog",
    'built-in table, row "openai gpt-4o family"', 'config:
    [capabilities."zai/glm-4.7"]'."""
    if fact in caps.gateway_refuses:
        return "the gateway's adapter for this provider cannot carry it"
    if fact in caps.catalog_facts or caps.features_source == FactSource.CATALOG:
        return "catalog"
    if caps.features_source == FactSource.BUILTIN_TABLE and caps.matched:
        return f'built-in table, row "{caps.matched}"'
    if caps.features_source == FactSource.CONFIG and caps.matched:
        return f"config: {caps.matched}"
    if caps.features_source == FactSource.PROVIDER_DEFAULT:
        return "no built-in table row for this model: the provider's default"
    if caps.matched:
        return f"{caps.features_source}: {caps.matched}"
    return str(caps.features_source)


def _window_source(source: FactSource | None) -> str:
    """Where a context window came from, for the decision's sentence."""
    if source == FactSource.PRICE_TABLE:
        return "built-in price table"
    return str(source)


def skip_reason(
    needs: RequestNeeds,
    caps: Capabilities,
    *,
    key_patterns: Sequence[str] | None,
    model_name: str,
) -> SkipReason | None:
    """The first hard constraint `model_name` (with `caps`) violates for a
    request with `needs`, else None. Checked in this order: the caller key's
    model patterns, the context window (only when known), tools, forcing a
    tool call (also while thinking), json_schema, json_object, images, images
    by URL."""
    if not key_allows(key_patterns, model_name):
        shown = ", ".join(key_patterns or ())
        return SkipReason(
            SkipId.KEY_MODEL_PATTERNS,
            f"the caller's key may not use {model_name} (it may use: {shown})",
        )
    window = caps.context_window
    if window is not None and window < needs.total_tokens:
        answer = "max_tokens" if needs.max_tokens_given else "reserved for the answer"
        return SkipReason(
            SkipId.CONTEXT_WINDOW,
            f"{window:,} tokens < {needs.estimated_prompt_tokens:,} estimated prompt + "
            f"{needs.max_tokens:,} {answer} ({_window_source(caps.context_source)})",
        )
    if needs.tools and not caps.tools:
        return SkipReason(
            SkipId.NO_TOOLS, f"{model_name} does not take tools ({_source(caps, 'tools')})"
        )
    if needs.forced_tool is not None:
        while_thinking = needs.thinking and caps.forced_tool_choice
        fact = "forced_tool_choice_while_thinking" if while_thinking else "forced_tool_choice"
        if not getattr(caps, fact):
            what = "the named tool" if needs.forced_tool == "function" else "a tool (required)"
            return SkipReason(
                SkipId.CANNOT_FORCE_TOOL,
                f"{model_name} cannot be forced to call {what}"
                f"{' while thinking' if while_thinking else ''} ({_source(caps, fact)})",
            )
    if needs.json_schema and not caps.json_schema:
        return SkipReason(
            SkipId.NO_JSON_SCHEMA,
            f"{model_name} does not take a JSON schema response format ({_source(caps, 'json_schema')})",
        )
    if needs.json_object and not caps.json_object:
        return SkipReason(
            SkipId.NO_JSON_OBJECT,
            f"{model_name} does not take a JSON object response format ({_source(caps, 'json_object')})",
        )
    if needs.images and not caps.vision:
        return SkipReason(
            SkipId.NO_VISION,
            f"{model_name} does not read images; the request has {needs.images} "
            f"({_source(caps, 'vision')})",
        )
    if needs.image_urls and not caps.image_urls:
        return SkipReason(
            SkipId.NO_IMAGE_URLS,
            f"{model_name} takes images as data URLs only; the request has "
            f"{needs.image_urls} by URL, and the gateway does not fetch images "
            f"({_source(caps, 'image_urls')})",
        )
    return None


def breaker_skip(model_name: str) -> SkipReason:
    """The reason for a target whose circuit breaker is open, for dispatch to
    report alongside skip_reason's (which never checks breakers)."""
    return SkipReason(
        SkipId.BREAKER,
        f"{model_name}'s circuit breaker is open after recent failures",
    )
