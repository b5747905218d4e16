"""The OpenAI chat-completions dialect: the wire OpenRouter, Z.AI, OpenAI and Groq speak.

OpenAICompatibleProvider fills in the hooks of providers/core.py with OpenAI's
shapes (chat-completions bodies and answers, SSE chunks, `error` objects with
OpenRouter's metadata); OpenRouter, Z.AI, OpenAI and Groq subclass it and
override only the hooks where their wire differs.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, ClassVar

import orjson

from llmgateway.server.providers import upstream_errors as ue
from llmgateway.server.providers.core import UpstreamProvider
from llmgateway.server.providers.openai_compatible.stream import (
    StreamAssembler,
    as_object,
    failure_from_error_object,
    opaque_details,
)
from llmgateway.server.providers.openai_compatible.wire import usage_from_json
from llmgateway.server.routing.router import gateway_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from llmgateway.server.errors import GatewayError
    from llmgateway.server.providers.openai_compatible.wire import JSONObject
    from llmgateway.server.routing.router import Route

_COMMON_FINISH_REASONS: dict[str, common.FinishReason.ValueType] = {
    "stop": common.FINISH_REASON_STOP,
    "length": common.FINISH_REASON_LENGTH,
    "tool_calls": common.FINISH_REASON_TOOL_CALLS,
    "function_call": common.FINISH_REASON_TOOL_CALLS,
    "content_filter": common.FINISH_REASON_CONTENT_FILTER,
}


class OpenAICompatibleProvider(UpstreamProvider):
    """A provider that speaks OpenAI's chat-completions wire format."""

    # (field read first, fallback) in deltas and messages.
    reasoning_fields: ClassVar[tuple[str, str]] = ("reasoning", "reasoning_content")
    default_upstream_provider: ClassVar[str] = ""
    # Who issues the `reasoning_details` this wire returns (OpenRouter), so
    # that they go back to it alone; None: the wire has none, and they are not read.
    reasoning_details_provider: ClassVar[common.Provider.ValueType | None] = None

    # -- hooks of this dialect ------------------------------------------------

    def map_finish_reason(self, native: str) -> common.FinishReason.ValueType | None:
        """Provider-specific finish reasons; None defers to the common table."""
        del native
        return None

    def withdraws_content(self, native_finish_reason: str) -> bool:
        """Whether this finish means the partial output must not be shown."""
        del native_finish_reason
        return False

    def failure_from_error(self, error: object, http_status: int | None) -> ue.UpstreamFailure:
        """What an `error` object says (in an error body, a 200 body or a stream)."""
        return failure_from_error_object(error, http_status)

    def in_band_status(self, error: object, failure: ue.UpstreamFailure) -> int | None:
        """The HTTP-style status an in-band error carries, to classify it by:
        OpenRouter puts one in error.code."""
        del error
        return _int_or_none(failure.code)

    def chunk_usage(self, chunk: JSONObject) -> JSONObject | None:
        """The usage a stream chunk carries, if any. The stream keeps the last
        one it saw: a later chunk's `usage: null` never erases it."""
        usage = chunk.get("usage")
        return usage if isinstance(usage, dict) else None

    # -- the core's hooks, in OpenAI's shapes ---------------------------------

    def stream_assembler(self, route: Route, include_reasoning: bool) -> StreamAssembler:
        return StreamAssembler(self, route, include_reasoning=include_reasoning)

    def failure_from_error_body(
        self, status: int | None, payload: object, content: bytes
    ) -> ue.UpstreamFailure:
        error = payload.get("error", payload) if isinstance(payload, dict) else None
        if error is None:
            return super().failure_from_error_body(status, payload, content)
        return self.failure_from_error(error, status)

    def in_band_error(self, error: object, route: Route) -> GatewayError:
        """An error the provider sent inside a 200 response or stream."""
        failure = self.failure_from_error(error, None)
        # Classified by the HTTP-style status it carries, when it carries one;
        # reported as what it is, an in-band error.
        status = self.in_band_status(error, failure)
        if status is not None and 400 <= status <= 599:
            reason = self.classify(dataclasses.replace(failure, http_status=status))
        else:
            reason = self.classify(failure)
        return ue.build_error(reason, failure, self.error_context(route))

    def finish_reason(self, native: str, route: Route) -> common.FinishReason.ValueType:
        """Our enum for a provider finish reason (unknown ones become OTHER)."""
        del route
        specific = self.map_finish_reason(native)
        if specific is not None:
            return specific
        return _COMMON_FINISH_REASONS.get(native, common.FINISH_REASON_OTHER)

    def usage(self, usage: JSONObject) -> common.Usage:
        """Our Usage from the provider's usage object."""
        return usage_from_json(usage)

    def non_stream_body(self, content: bytes, route: Route) -> GatewayError:
        try:
            payload = orjson.loads(content)
        except orjson.JSONDecodeError:
            payload = None
        if isinstance(payload, dict) and payload.get("error") is not None:
            return self.in_band_error(payload["error"], route)
        return self.malformed("a 200 response to a stream request is not an event stream", route)

    def parse_unary(
        self, payload: object, route: Route, include_reasoning: bool
    ) -> pb.CompleteResponse:
        if not isinstance(payload, dict):
            raise self.malformed("the response body is not a JSON object", route)
        if payload.get("error") is not None:
            # OpenRouter: HTTP 200 whose body holds only an error.
            raise self.in_band_error(payload["error"], route)
        choices = payload.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise self.malformed("the response has no choices", route)
        choice = choices[0]
        if choice.get("error") is not None:
            raise self.in_band_error(choice["error"], route)
        native = choice.get("finish_reason")
        if not native:
            raise self.malformed("the response has no finish_reason", route)
        if native == "error":
            raise self.in_band_error({"message": "finish_reason 'error'"}, route)
        message = as_object(choice.get("message"))
        reason = self.finish_reason(str(native), route)
        content = _text(message.get("content"))
        if self.withdraws_content(str(native)):
            content = ""
        response = pb.CompleteResponse(
            id=str(payload.get("id") or ""),
            model=gateway_model_name(
                route.provider, str(payload.get("model") or route.upstream_model)
            ),
            provider=route.provider,
            upstream_provider=str(payload.get("provider") or self.default_upstream_provider),
            content=content,
            finish_reason=reason,
            native_finish_reason=str(choice.get("native_finish_reason") or native),
        )
        refusal = message.get("refusal")
        if isinstance(refusal, str):
            # The core's Redactor.response scrubs it again with the rest of the
            # answer; scrubbing exact keys twice changes nothing.
            response.refusal = self._redactor.content(refusal)
        if self.reasoning_details_provider is not None:
            # Returned even when reasoning text is excluded: the next turn needs them.
            response.reasoning_details.extend(
                opaque_details(
                    message.get("reasoning_details"),
                    self.reasoning_details_provider,
                    self._redactor.content,
                )
            )
        if include_reasoning:
            primary, secondary = self.reasoning_fields
            response.reasoning = _text(message.get(primary) or message.get(secondary))
        for call in message.get("tool_calls") or ():
            if isinstance(call, dict):
                function = as_object(call.get("function"))
                arguments = function.get("arguments")
                if not isinstance(arguments, str):
                    arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
                response.tool_calls.add(
                    id=str(call.get("id") or ""),
                    name=str(function.get("name") or ""),
                    arguments=arguments,
                )
        usage = payload.get("usage")
        if isinstance(usage, dict):
            response.usage.CopyFrom(self.usage(usage))
        return response


def _text(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        # Some upstreams return content parts; keep their text.
        return "".join(
            part["text"]
            for part in value
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None
