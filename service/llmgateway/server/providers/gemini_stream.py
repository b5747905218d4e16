"""Reading Gemini's answers: candidate parts, usage, finish reasons, and the stream assembler.

A unary answer and every chunk of an `alt=sse` stream are the same shape, a
GenerateContentResponse, so one TurnReader reads both. Rules other clients
got wrong, and this one keeps:
- only candidate 0 is read (the gateway never asks for more);
- function calls arrive whole, several at once; they get Gemini's own id
  (Gemini 3) or one made up, stable for the response and unique within it;
- `thoughtSignature` may ride on any part (function calls and text alike):
  each becomes a ReasoningDetail tied to its call, for the caller to send back;
- `usageMetadata` is on every chunk, cumulative but not monotonic (prompt
  counts change mid-stream): the last one wins, never a sum;
- thoughts are billed as output: completion = candidates + thoughts;
- the stream has no terminator: it ends at end of body, and without a
  finishReason that is a truncation;
- STOP with function calls is a tool-call turn (Gemini says STOP regardless).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import orjson

from llmgateway.server.providers.openai_compatible.wire import MAX_TOKEN_COUNT, token_count
from llmgateway.server.providers.translate import generated_call_id
from llmgateway.server.routing.router import gateway_model_name
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb

if TYPE_CHECKING:
    from llmgateway.server.errors import GatewayError
    from llmgateway.server.providers.openai_compatible.wire import JSONObject
    from llmgateway.server.providers.redaction import Redactor
    from llmgateway.server.providers.sse import ServerSentEvent
    from llmgateway.server.routing.router import Route

# Gemini's finishReason values and ours. Content-filter finishes are answers
# (possibly empty), not errors: the model ran and its output was stopped.
FINISH_REASONS: dict[str, common.FinishReason.ValueType] = {
    "STOP": common.FINISH_REASON_STOP,
    "MAX_TOKENS": common.FINISH_REASON_LENGTH,
    **dict.fromkeys(
        (
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
            "IMAGE_SAFETY",
            "IMAGE_PROHIBITED_CONTENT",
        ),
        common.FINISH_REASON_CONTENT_FILTER,
    ),
}
# The model produced a function call Gemini's own server refused: the model,
# not the request, failed, and a retry usually works.
INVALID_TOOL_CALL_FINISHES = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL"})


class GeminiOwner(Protocol):
    """What the assembler needs of the provider it reads for (gemini.py's
    GeminiProvider): declared here, so this module does not import it."""

    @property
    def redactor(self) -> Redactor:
        """What scrubs provider keys from everything the stream passes on."""

    @property
    def display_name(self) -> str:
        """The provider's name, reported as the upstream provider."""

    def in_band_error(self, error: object, route: Route) -> GatewayError:
        """An `error` object sent inside a 200 response or stream."""

    def prompt_blocked(self, feedback: JSONObject, route: Route) -> GatewayError:
        """The error for a prompt Gemini refused to answer (promptFeedback.blockReason)."""

    def invalid_tool_call(self, native: str, message: str, route: Route) -> GatewayError:
        """The error for a MALFORMED_FUNCTION_CALL-like finish."""

    def malformed(self, detail: str, route: Route) -> GatewayError:
        """The upstream broke its own wire format."""

    def truncated(self, detail: str, route: Route) -> GatewayError:
        """The stream ended before it was complete."""


def usage_from_metadata(metadata: JSONObject) -> common.Usage:
    """Our Usage from Gemini's usageMetadata. Thoughts are outside
    candidatesTokenCount and billed as output, so they are added to
    completion; tool-use prompt tokens (code execution, search) to prompt."""
    prompt = token_count(metadata.get("promptTokenCount")) + token_count(
        metadata.get("toolUsePromptTokenCount")
    )
    thoughts = token_count(metadata.get("thoughtsTokenCount"))
    completion = token_count(metadata.get("candidatesTokenCount")) + thoughts
    return common.Usage(
        prompt_tokens=min(prompt, MAX_TOKEN_COUNT),
        completion_tokens=min(completion, MAX_TOKEN_COUNT),
        total_tokens=token_count(metadata.get("totalTokenCount"))
        or min(prompt + completion, MAX_TOKEN_COUNT),
        cached_tokens=token_count(metadata.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def first_candidate(response: JSONObject) -> JSONObject | None:
    """Candidate 0 of a GenerateContentResponse, or None when it has none."""
    candidates = response.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        return None
    first = candidates[0]
    return first if isinstance(first, dict) else None


def candidate_parts(candidate: JSONObject) -> list[object]:
    """The parts of a candidate's content ([] when it has none: a SAFETY stop)."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    return parts if isinstance(parts, list) else []


def blocked_feedback(response: JSONObject) -> JSONObject | None:
    """promptFeedback when it says the prompt was blocked, else None."""
    feedback = response.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        return feedback
    return None


def finish_reason(native: str, has_tool_calls: bool) -> common.FinishReason.ValueType:
    """Our finish reason for Gemini's (unknown ones, LANGUAGE and OTHER become OTHER)."""
    reason = FINISH_REASONS.get(native, common.FINISH_REASON_OTHER)
    if reason == common.FINISH_REASON_STOP and has_tool_calls:
        return common.FINISH_REASON_TOOL_CALLS
    return reason


@dataclass(slots=True)
class TurnReader:
    """Accumulates the model's turn from one or many GenerateContentResponses."""

    include_reasoning: bool
    response_id: str = ""
    content: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    tool_calls: list[common.ToolCall] = field(default_factory=list)
    details: list[common.ReasoningDetail] = field(default_factory=list)
    # Parts read so far: each detail's index, so signatures go back in order.
    _parts: int = 0

    def read(self, parts: list[object]) -> list[tuple[str, str]]:
        """Read `parts` in order; returns the text deltas they carry, as
        ("content" | "reasoning", text). Tool calls and signatures are kept."""
        deltas: list[tuple[str, str]] = []
        for part in parts:
            if not isinstance(part, dict):
                continue
            index = self._parts
            self._parts += 1
            call_id = ""
            call = part.get("functionCall")
            text = part.get("text")
            if isinstance(call, dict):
                call_id = self._add_call(call)
            elif isinstance(text, str) and text:
                if part.get("thought") is True:
                    if self.include_reasoning:
                        self.reasoning.append(text)
                        deltas.append(("reasoning", text))
                else:
                    self.content.append(text)
                    deltas.append(("content", text))
            signature = part.get("thoughtSignature")
            if isinstance(signature, str) and signature:
                self.details.append(
                    common.ReasoningDetail(
                        provider=common.PROVIDER_GEMINI,
                        kind=common.REASONING_DETAIL_KIND_THOUGHT_SIGNATURE,
                        signature=signature,
                        tool_call_id=call_id,
                        index=index,
                    )
                )
        return deltas

    def _add_call(self, call: JSONObject) -> str:
        own_id = call.get("id")
        call_id = (
            own_id
            if isinstance(own_id, str) and own_id
            else generated_call_id(self.response_id, len(self.tool_calls))
        )
        args = call.get("args")
        self.tool_calls.append(
            common.ToolCall(
                id=call_id,
                name=str(call.get("name") or ""),
                arguments=orjson.dumps(args if args is not None else {}).decode(),
            )
        )
        return call_id


class GeminiStreamAssembler:
    """Feed it the SSE events of `:streamGenerateContent?alt=sse`; it returns
    the gateway's events. The stream has no terminator, so `done` stays False
    and the loop reads to the end of the body (usage may still change on the
    last chunk); `finish()` then judges whether the turn was complete."""

    def __init__(self, owner: GeminiOwner, route: Route, *, include_reasoning: bool) -> None:
        self._owner = owner
        # Answer text is scrubbed of exact keys one delta at a time, the rest
        # (ids, names, signatures) when the closing events are built: the
        # same rules as openai_compatible/stream.py.
        self._redactor = owner.redactor
        self._route = route
        self._reader = TurnReader(include_reasoning)
        self._finish: str | None = None
        self._finish_message = ""
        self._usage: JSONObject | None = None
        # Deltas of a last chunk that arrived without its blank line (emitted by finish()).
        self._pending: list[pb.StreamCompleteResponse] = []
        self._cut = False

    @property
    def done(self) -> bool:
        """Never: Gemini's stream ends only at the end of the body."""
        return False

    def on_event(self, event: ServerSentEvent) -> list[pb.StreamCompleteResponse]:
        """The events one chunk produces."""
        if not event.data.strip():
            return []
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError as exc:
            raise self._owner.malformed(f"an SSE event is not JSON ({exc})", self._route) from None
        if not isinstance(chunk, dict):
            raise self._owner.malformed("an SSE event is not a JSON object", self._route)
        if chunk.get("error") is not None:
            raise self._owner.in_band_error(chunk["error"], self._route)
        response_id = chunk.get("responseId")
        if isinstance(response_id, str) and response_id and not self._reader.response_id:
            self._reader.response_id = response_id
        usage = chunk.get("usageMetadata")
        if isinstance(usage, dict):
            self._usage = usage
        candidate = first_candidate(chunk)
        if candidate is None:
            feedback = blocked_feedback(chunk)
            if feedback is not None:
                raise self._owner.prompt_blocked(feedback, self._route)
            return []  # a usage-only chunk
        out = []
        content = self._redactor.content
        for kind, text in self._reader.read(candidate_parts(candidate)):
            if kind == "reasoning":
                out.append(
                    pb.StreamCompleteResponse(reasoning_delta=pb.ReasoningDelta(text=content(text)))
                )
            else:
                out.append(
                    pb.StreamCompleteResponse(content_delta=pb.ContentDelta(text=content(text)))
                )
        native = candidate.get("finishReason")
        if isinstance(native, str) and native:
            self._finish = native
            message = candidate.get("finishMessage")
            self._finish_message = message if isinstance(message, str) else ""
        return out

    def on_end(self, leftover: list[ServerSentEvent]) -> None:
        """End of body. A last chunk that lacks its blank line still counts;
        one cut short (not JSON) is a truncation (finish() says so). A whole
        last chunk is read as any other: an `error` in it is that error, not
        a truncation."""
        for event in leftover:
            if self._finish is None and _cut_short(event.data):
                self._cut = True
                return
            self._pending.extend(self.on_event(event))

    def finish(self) -> list[pb.StreamCompleteResponse]:
        """The closing events, once the body has ended."""
        if self._cut or self._finish is None:
            raise self._owner.truncated("the stream ended without a finishReason", self._route)
        if self._finish in INVALID_TOOL_CALL_FINISHES:
            raise self._owner.invalid_tool_call(self._finish, self._finish_message, self._route)
        reader = self._reader
        text, content = self._redactor.text, self._redactor.content
        out = [*self._pending]
        out.extend(
            pb.StreamCompleteResponse(
                tool_call=common.ToolCall(
                    id=text(call.id), name=content(call.name), arguments=content(call.arguments)
                )
            )
            for call in reader.tool_calls
        )
        done = pb.CompletionDone(
            id=text(reader.response_id),
            model=text(gateway_model_name(self._route.provider, self._route.upstream_model)),
            provider=self._route.provider,
            upstream_provider=self._owner.display_name,
            finish_reason=finish_reason(self._finish, bool(reader.tool_calls)),
            native_finish_reason=text(self._finish),
        )
        for detail in reader.details:
            done.reasoning_details.add().CopyFrom(redacted_detail(detail, self._redactor))
        if self._usage is not None:
            done.usage.CopyFrom(usage_from_metadata(self._usage))
        out.append(pb.StreamCompleteResponse(done=done))
        return out


def _cut_short(data: bytes) -> bool:
    """Whether a frame the body ended in is an incomplete JSON document."""
    if not data.strip():
        return False
    try:
        orjson.loads(data)
    except orjson.JSONDecodeError:
        return True
    return False


def redacted_detail(detail: common.ReasoningDetail, redactor: Redactor) -> common.ReasoningDetail:
    """`detail` with exact keys out of its signature (a signature is opaque
    answer data: only an exact key could be in it) and its call id scrubbed."""
    return common.ReasoningDetail(
        provider=detail.provider,
        kind=detail.kind,
        signature=redactor.content(detail.signature),
        tool_call_id=redactor.text(detail.tool_call_id),
        index=detail.index,
    )
