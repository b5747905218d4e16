"""The fake's Anthropic wire refuses what the real API refuses, so a gateway that breaks
the wire fails against it (the gateway's own tests then prove it does not)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import httpx
import pytest

from llmgateway.testing.fake_upstream.anthropic_wire import (
    INVALID_SIGNATURE,
    REDACTED_DATA,
    awkward_cuts,
    sign,
)

if TYPE_CHECKING:
    from llmgateway.testing.fake_upstream.app import FakeUpstream


async def post(
    fake: FakeUpstream, body: dict[str, Any], headers: dict[str, str] | None = None
) -> httpx.Response:
    sent = {"x-api-key": fake.keys["anthropic"], "anthropic-version": "2023-06-01"}
    if headers is not None:
        sent = headers
    async with httpx.AsyncClient() as client:
        return await client.post(
            f"{fake.base_url}/anthropic/v1/messages", json=body, headers=sent, timeout=5
        )


def turn(role: str, *blocks: dict[str, Any]) -> dict[str, Any]:
    return {"role": role, "content": list(blocks)}


def text(value: str) -> dict[str, Any]:
    return {"type": "text", "text": value}


GOOD: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 100,
    "messages": [turn("user", text("hi"))],
}


async def test_a_good_request_is_answered(fake):
    response = await post(fake, GOOD)
    assert response.status_code == 200
    assert response.json()["content"][0]["text"] == "Hello from the fake upstream! You said: hi"
    assert response.headers["request-id"].startswith("req_fake")


@pytest.mark.parametrize(
    ("headers", "status", "words"),
    [
        ({"anthropic-version": "2023-06-01"}, 401, "x-api-key"),
        ({"x-api-key": "sk-ant-api03-wrong"}, 401, "x-api-key"),
    ],
)
async def test_auth_and_version_headers_are_required(fake, headers, status, words):
    response = await post(fake, GOOD, headers)
    assert response.status_code == status
    assert words in response.json()["error"]["message"]
    response = await post(fake, GOOD, {"x-api-key": fake.keys["anthropic"]})
    assert response.status_code == 400
    assert "anthropic-version" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"max_tokens": None}, "max_tokens"),
        ({"temperature": 1.5}, "temperature"),
        ({"reasoning": {"effort": "high"}}, "Extra inputs are not permitted"),
        ({"messages": [turn("user", text("a")), turn("user", text("b"))]}, "alternate"),
        ({"messages": [turn("user", text(""))]}, "non-empty"),
        (
            {"messages": [turn("user", {"type": "tool_result", "tool_use_id": "t1"})]},
            "unexpected `tool_use_id`",
        ),
        (
            {
                "messages": [
                    turn("user", text("a")),
                    turn("assistant", {"type": "tool_use", "id": "t1", "name": "f", "input": {}}),
                    turn("user", text("b")),
                ]
            },
            "without `tool_result`",
        ),
        (
            {
                "messages": [
                    turn("user", text("a")),
                    turn(
                        "assistant", {"type": "thinking", "thinking": "x", "signature": sign("y")}
                    ),
                    turn("user", text("b")),
                ]
            },
            INVALID_SIGNATURE,
        ),
        (
            {
                "messages": [
                    turn("user", text("a")),
                    turn("assistant", {"type": "redacted_thinking"}),
                    turn("user", text("b")),
                ]
            },
            "data: Field required",
        ),
        (
            {"thinking": {"type": "enabled", "budget_tokens": 2000}, "max_tokens": 2000},
            "greater than `thinking.budget_tokens`",
        ),
    ],
)
async def test_what_the_real_api_refuses_is_refused(fake, change, words):
    body = {**GOOD, **change}
    body = {k: v for k, v in body.items() if v is not None}
    response = await post(fake, body)
    assert response.status_code == 400, response.text
    envelope = response.json()
    assert envelope["type"] == "error"
    assert envelope["error"]["type"] == "invalid_request_error"
    assert words in envelope["error"]["message"]


async def test_its_own_thinking_comes_back_valid(fake):
    body = {
        **GOOD,
        "max_tokens": 3000,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
        "messages": [
            turn("user", text("a")),
            turn(
                "assistant",
                {"type": "thinking", "thinking": "x y", "signature": sign("x y")},
                {"type": "redacted_thinking", "data": REDACTED_DATA},
                text("ok"),
            ),
            turn("user", text("b")),
        ],
    }
    response = await post(fake, body)
    assert response.status_code == 200, response.text
    thinking = response.json()["content"][0]
    assert thinking["signature"] == sign(thinking["thinking"])


def test_tool_input_is_cut_awkwardly_after_a_first_empty_piece():
    pieces = awkward_cuts('{"city": "Oslo"}')
    assert pieces[0] == ""
    assert "".join(pieces) == '{"city": "Oslo"}'
    assert awkward_cuts("") == [""]
