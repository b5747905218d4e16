"""Showing a completion to a person: a stream as it arrives, and a route's decision.

Shared by `llmgateway chat` and `llmgateway demo`: the answer goes to one
stream, the model's reasoning (dimmed on a terminal) and its tool calls to
another, so reasoning stays visibly apart from the answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

from llmgateway.client.hints import cost_tier_name, task_name
from llmgateway.v1 import routing_pb2 as rpb

if TYPE_CHECKING:
    from llmgateway.v1 import completion_service_pb2 as pb

_DIM, _RESET = "\033[2m", "\033[0m"


def dim(text: str, stream: TextIO) -> str:
    """`text` dimmed when `stream` is a terminal."""
    return f"{_DIM}{text}{_RESET}" if stream.isatty() else text


class StreamPrinter:
    """Feed it events; it writes them where they belong and keeps the final `done`."""

    def __init__(self, answer: TextIO, notes: TextIO, *, show_reasoning: bool = True) -> None:
        self._answer = answer
        self._notes = notes
        self._show_reasoning = show_reasoning
        self._in_reasoning = False
        self._answer_open = False
        self.done: pb.CompletionDone | None = None

    @property
    def mid_line(self) -> bool:
        """Whether the last thing written left a line unfinished (an answer cut
        short, or reasoning), so that a message after it needs a newline first."""
        return self._in_reasoning or self._answer_open

    def show(self, event: pb.StreamCompleteResponse) -> None:
        """Write one event."""
        kind = event.WhichOneof("event")
        if kind == "content_delta":
            if self._in_reasoning:
                # End the reasoning's line, so the answer starts on its own.
                self._notes.write("\n")
                self._notes.flush()
                self._in_reasoning = False
            text = event.content_delta.text
            self._answer.write(text)
            self._answer.flush()
            if text:
                self._answer_open = not text.endswith("\n")
        elif kind == "reasoning_delta" and self._show_reasoning:
            if not self._in_reasoning:
                self._notes.write(dim("[reasoning] ", self._notes))
                self._in_reasoning = True
            self._notes.write(dim(event.reasoning_delta.text, self._notes))
            self._notes.flush()
        elif kind == "tool_call":
            call = event.tool_call
            print(f"\n[tool call] {call.name}({call.arguments})", file=self._notes)
            self._answer_open = False  # the note's newline ended the answer's line
        elif kind == "done":
            self.done = event.done

    def end(self) -> None:
        """After the last event: close an unfinished reasoning line."""
        if self._in_reasoning:
            self._notes.write("\n")
            self._in_reasoning = False


def decision_lines(decision: rpb.RoutingDecision) -> list[str]:
    """A RoutingDecision as lines a person reads: the route and what it chose, where
    the task came from, each target passed over with its reason, stickiness and
    escalation, then (when explained) the plan and the signals."""
    lines = [f"{decision.route} chose {decision.chosen} (entry {decision.entry})"]
    lines.append(f"task {task_name(decision.task)}: {_task_source(decision)}")
    if decision.cost_tier != rpb.COST_TIER_UNSPECIFIED:
        lines.append(f"cost tier {cost_tier_name(decision.cost_tier)}")
    for skipped in decision.passed_over:
        reason = skipped.id or rpb.SkipReason.Name(skipped.reason)
        detail = f": {skipped.detail}" if skipped.detail else ""
        lines.append(f"passed over {skipped.target}: {reason}{detail}")
    if decision.sticky:
        lines.append("sticky: the session's earlier target was kept")
    if decision.escalated:
        lines.append(f"escalated from {decision.escalated_from}, which refused the prompt's length")
    lines.append(f"estimated prompt: {decision.estimated_prompt_tokens:,} tokens")
    if decision.plan:
        lines.append(f"plan: {' > '.join(decision.plan)}")
    if decision.signals:
        signals = ", ".join(f"{key}={value}" for key, value in sorted(decision.signals.items()))
        lines.append(f"signals: {signals}")
    return lines


# The gateway's rule id for "none of the rules fired" (task_rules.RULE_NONE):
# not a rule that was unsure, so it reads as no rule at all.
NO_RULE_FIRED = "no-signal"


def _task_source(decision: rpb.RoutingDecision) -> str:
    confidence = f"confidence {decision.confidence:.2f}"
    if decision.task_source == rpb.TASK_SOURCE_CALLER:
        return "given by the caller"
    if decision.task_source == rpb.TASK_SOURCE_RULE:
        return f"inferred by rule {decision.rule} ({confidence})"
    if not decision.rule or decision.rule == NO_RULE_FIRED:
        return "no rule fired, so the route's default entry served"
    if decision.below_threshold:
        return (
            f"rule {decision.rule} was not sure enough ({confidence}), "
            "so the route's default entry served"
        )
    return f"inferred by rule {decision.rule}; the route has no entry for it, so its default served"
