"""How a `route/<name>` call is routed: the decision's data.

The decision itself (`decide`) is pure: it reads the request, the compiled
route, the caller's key and a read-only view of the targets (configured,
capabilities, breakers, prices), and returns the plan to dispatch with the
reasons behind it. No await, no I/O, no model call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmgateway.server.routing.task_rules import Task
from llmgateway.v1 import routing_pb2 as rpb

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmgateway.server.routing.router import Plan


# The proto's task values by task_rules' names, and back: one vocabulary.
PROTO_TASKS: dict[Task, rpb.Task.ValueType] = {
    Task.CHAT: rpb.TASK_CHAT,
    Task.CODE: rpb.TASK_CODE,
    Task.REASONING: rpb.TASK_REASONING,
    Task.EXTRACTION: rpb.TASK_EXTRACTION,
    Task.SUMMARIZATION: rpb.TASK_SUMMARIZATION,
    Task.TRANSLATION: rpb.TASK_TRANSLATION,
    Task.AGENT: rpb.TASK_AGENT,
    Task.VISION: rpb.TASK_VISION,
}
TASKS_BY_PROTO: dict[rpb.Task.ValueType, Task] = {
    value: task for task, value in PROTO_TASKS.items()
}


@dataclass(frozen=True, slots=True)
class Skip:
    """A target passed over, and why."""

    target: str
    reason: rpb.SkipReason.ValueType
    detail: str
    # The stable id ("no-vision", "budget", "failed"), as in logs and metrics.
    id: str = ""
    # The request fields behind it, for a NO_ELIGIBLE_TARGET BadRequest.
    fields: tuple[str, ...] = ()

    def to_proto(self) -> rpb.PassedOver:
        return rpb.PassedOver(
            target=self.target, reason=self.reason, detail=self.detail, id=self.id
        )


@dataclass(frozen=True, slots=True)
class RouteDecision:
    """Why a routed call goes where it goes."""

    route: str
    task: Task
    source: rpb.TaskSource.ValueType
    rule: str
    confidence: float
    below_threshold: bool
    entry: str
    cost_tier: rpb.CostTier.ValueType
    # Eligible targets, the chosen one first, with the entry's fallback_on.
    plan: Plan
    # The context window of each plan route, None when unknown (escalation).
    windows: tuple[int | None, ...]
    passed_over: tuple[Skip, ...]
    sticky: bool
    estimated_prompt_tokens: int
    signals: Mapping[str, str] = field(default_factory=dict)

    @property
    def task_source_label(self) -> str:
        """The ledger's task source: "caller", "rule:<id>" or "default"."""
        if self.source == rpb.TASK_SOURCE_CALLER:
            return "caller"
        if self.source == rpb.TASK_SOURCE_RULE:
            return f"rule:{self.rule}"
        return "default"

    def to_proto(
        self,
        *,
        chosen: str,
        runtime: Sequence[Skip] = (),
        escalated_from: str = "",
        explain: bool = False,
    ) -> rpb.RoutingDecision:
        """The decision as callers see it; `runtime` adds the targets that
        were tried and failed before `chosen` served."""
        decision = rpb.RoutingDecision(
            route=self.route,
            task=PROTO_TASKS[self.task],
            task_source=self.source,
            rule=self.rule,
            entry=self.entry,
            cost_tier=self.cost_tier,
            chosen=chosen,
            passed_over=[skip.to_proto() for skip in (*self.passed_over, *runtime)],
            sticky=self.sticky,
            escalated=bool(escalated_from),
            escalated_from=escalated_from,
            estimated_prompt_tokens=self.estimated_prompt_tokens,
            confidence=self.confidence,
            below_threshold=self.below_threshold,
        )
        if explain:
            decision.plan.extend(route.target for route in self.plan.routes)
            decision.signals.update(self.signals)
        return decision
