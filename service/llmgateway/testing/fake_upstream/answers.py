"""What the fake model says: a deterministic answer built from the request."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

JSON = dict[str, Any]


@dataclass(slots=True)
class ToolCallPlan:
    """A tool call the fake model makes."""

    id: str
    name: str
    arguments: str


@dataclass(slots=True)
class Answer:
    """Everything one completion produces, before a provider renders it."""

    model: str
    reasoning: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)
    tool_calls: list[ToolCallPlan] = field(default_factory=list)
    finish_reason: str = "stop"
    prompt_tokens: int = 0
    cached_tokens: int = 0
    # OpenRouter only: whether usage carries the inline `cost` (fault no-cost).
    reports_cost: bool = True

    @property
    def completion_tokens(self) -> int:
        """One token per piece: easy to predict in tests."""
        return len(self.reasoning) + len(self.content) + len(self.tool_calls)


def plan_answer(body: JSON, *, thinks: bool) -> Answer:
    """The answer to a chat-completions request body."""
    messages = body.get("messages") or []
    answer = Answer(model=str(body.get("model", "")))
    answer.prompt_tokens = 5 + sum(len(_text(m.get("content")).split()) for m in messages)
    answer.cached_tokens = 2 if len(messages) > 1 else 0
    last = messages[-1] if messages else {}
    tools = body.get("tools") or []
    if thinks:
        answer.reasoning = _pieces("Let me think about what the user asked, then answer.")
    if tools and last.get("role") != "tool" and body.get("tool_choice") != "none":
        function = tools[0].get("function", {})
        answer.tool_calls.append(
            ToolCallPlan(
                id="call_fake_0001",
                name=str(function.get("name", "")),
                arguments=_arguments_for(function.get("parameters") or {}),
            )
        )
        answer.finish_reason = "tool_calls"
        return answer
    if last.get("role") == "tool":
        text = f"The tool answered: {_text(last.get('content'))}"
    else:
        said = _last_user_text(messages)
        text = f"Hello from the fake upstream! You said: {said}"
    if (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        text = '{"answer": "hello"}'
    answer.content = _pieces(text)
    max_tokens = body.get("max_tokens")
    if isinstance(max_tokens, int) and max_tokens < answer.completion_tokens:
        answer.content = answer.content[: max(0, max_tokens - len(answer.reasoning))]
        answer.finish_reason = "length"
    return answer


def _pieces(text: str) -> list[str]:
    """Split after each space, the way tokens usually arrive."""
    words = text.split(" ")
    return [w + " " for w in words[:-1]] + [words[-1]]


def _text(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _last_user_text(messages: list[JSON]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message.get("content"))[:200]
    return ""


def _arguments_for(schema: JSON) -> str:
    properties = schema.get("properties") or {}
    arguments: JSON = {}
    for name in schema.get("required") or list(properties)[:1]:
        kind = (properties.get(name) or {}).get("type", "string")
        if kind in ("integer", "number"):
            arguments[name] = 1
        elif kind == "boolean":
            arguments[name] = True
        else:
            arguments[name] = "Boston" if name in ("location", "city") else "example"
    return json.dumps(arguments)
