"""How a `route/<name>` call is routed: the decision's data.

The decision itself (`decide`) is pure: it reads the request, the compiled
route, the caller's key and a read-only view of the targets (configured,
capabilities, breakers, prices), and returns the plan to dispatch with the
reasons behind it. No await, no I/O, no model call.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import grpc

from llmgateway.server.errors import FieldViolation, GatewayError
from llmgateway.server.routing import capabilities
from llmgateway.server.routing.capabilities import SkipId
from llmgateway.server.routing.router import PREFIXES, Plan, Route, gateway_model_name
from llmgateway.server.routing.routes import DEFAULT_ENTRY, ENTRY_NAMES, TIER_NAMES
from llmgateway.server.routing.sticky import sticky_key
from llmgateway.server.routing.task_rules import (
    LONG_INPUT_CHARS,
    Signal,
    Task,
    chinese_text,
    infer_task,
)
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import routing_pb2 as rpb

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from llmgateway.server.config import RoutingSettings
    from llmgateway.server.providers.openai_compatible.wire import AnyCompletionRequest
    from llmgateway.server.routing.capabilities import Capabilities, RequestNeeds
    from llmgateway.server.routing.pricing import Price
    from llmgateway.server.routing.routes import CompiledRoute, Entry
    from llmgateway.server.routing.sticky import StickySessions
    from llmgateway.server.state.keys import CallerKey
    from llmgateway.v1 import completion_pb2 as common


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

    def dispatch_plan(self) -> Plan:
        """`plan` carrying this decision, for the dispatcher (`plan.decision`).
        `plan` itself holds none: a plan that held its own decision would
        compare (and print) recursively."""
        return dataclasses.replace(self.plan, decision=self)

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


class TargetView(Protocol):
    """What the decision may ask about a target, read-only: the gateway's
    providers, capability table (with the operator's overrides), breakers and
    prices. call_path/routing_view.py implements it over the running
    gateway; tests pass a fake. `model_name` is always gateway naming without
    a pinned endpoint (`zai/glm-4.7`)."""

    def configured(self, provider: common.Provider.ValueType) -> bool:
        """Whether the provider can be called (has its API key or base URL)."""
        ...

    def check(self, request: AnyCompletionRequest, route: Route) -> list[FieldViolation]:
        """What the route's provider refuses in this request (its check())."""
        ...

    def breaker_open(self, route: Route, request: AnyCompletionRequest | None = None) -> bool:
        """Whether the route's breaker would refuse a call that has a fallback
        now; read-only (never takes a probe, never creates a breaker). The
        request decides which breaker an unpinned Z.AI target uses (its
        endpoint)."""
        ...

    def capabilities(self, model_name: str) -> Capabilities:
        """What the model can serve through this gateway."""
        ...

    def price(self, model_name: str) -> Price | None:
        """The model's price, None when unknown."""
        ...


# One proto reason per capabilities.SkipId (tests check it is total).
SKIP_IDS: dict[SkipId, rpb.SkipReason.ValueType] = {
    SkipId.KEY_MODEL_PATTERNS: rpb.SKIP_REASON_KEY_MODEL_PATTERNS,
    SkipId.CONTEXT_WINDOW: rpb.SKIP_REASON_CONTEXT_WINDOW,
    SkipId.NO_TOOLS: rpb.SKIP_REASON_NO_TOOLS,
    SkipId.CANNOT_FORCE_TOOL: rpb.SKIP_REASON_CANNOT_FORCE_TOOL,
    SkipId.NO_JSON_SCHEMA: rpb.SKIP_REASON_NO_JSON_SCHEMA,
    SkipId.NO_JSON_OBJECT: rpb.SKIP_REASON_NO_JSON_OBJECT,
    SkipId.NO_VISION: rpb.SKIP_REASON_NO_VISION,
    SkipId.NO_IMAGE_URLS: rpb.SKIP_REASON_NO_IMAGE_URLS,
    SkipId.BREAKER: rpb.SKIP_REASON_CIRCUIT_OPEN,
}
# The decision's own skip ids, beside capabilities.SkipId's; FAILED_ID is the
# dispatcher's, for a target tried at run time that failed.
NOT_CONFIGURED_ID = "not-configured"
PROVIDER_REFUSES_ID = "provider-refuses"
BUDGET_ID = "budget"
FAILED_ID = "failed"
# The request fields a caller could change to lift a skip, for the BadRequest
# of NO_ELIGIBLE_TARGET. Key patterns and breakers are not the request's.
_FIELDS: dict[SkipId, tuple[str, ...]] = {
    SkipId.KEY_MODEL_PATTERNS: (),
    SkipId.CONTEXT_WINDOW: ("messages", "sampling.max_tokens"),
    SkipId.NO_TOOLS: ("tools",),
    SkipId.CANNOT_FORCE_TOOL: ("tool_choice",),
    SkipId.NO_JSON_SCHEMA: ("response_format.type",),
    SkipId.NO_JSON_OBJECT: ("response_format.type",),
    SkipId.NO_VISION: ("messages",),
    SkipId.NO_IMAGE_URLS: ("messages",),
    SkipId.BREAKER: (),
}


@dataclass(slots=True)
class _Filter:
    """The hard constraints of one request, applied to targets one at a time;
    remembers what it learned about each target within the decision."""

    request: AnyCompletionRequest
    needs: RequestNeeds
    view: TargetView
    # The caller key's model patterns, None when they do not apply.
    patterns: Sequence[str] | None
    tier: rpb.CostTier.ValueType
    ceiling: float | None
    caps: dict[str, Capabilities] = field(default_factory=dict)
    breakers: dict[str, bool] = field(default_factory=dict)
    price_unknown: list[str] = field(default_factory=list)

    def capabilities(self, route: Route) -> Capabilities:
        name = gateway_model_name(route.provider, route.upstream_model)
        found = self.caps.get(name)
        if found is None:
            found = self.caps[name] = self.view.capabilities(name)
        return found

    def breaker_open(self, route: Route) -> bool:
        """Whether the target's breaker is open now, asked once per decision."""
        found = self.breakers.get(route.target)
        if found is None:
            found = self.breakers[route.target] = self.view.breaker_open(route, self.request)
        return found

    def breaker_skip(self, route: Route) -> Skip:
        name = gateway_model_name(route.provider, route.upstream_model)
        breaker = capabilities.breaker_skip(name)
        return Skip(route.target, SKIP_IDS[breaker.id], breaker.message, breaker.id.value)

    def longest_first(self, route: Route) -> int:
        """A sort key: the largest known window first, unknown windows last."""
        return -(self.capabilities(route).context_window or -1)

    def skip(self, route: Route) -> Skip | None:
        """The first hard constraint `route` violates, in the documented order."""
        target = route.target
        if not self.view.configured(route.provider):
            provider = PREFIXES[route.provider].rstrip("/")
            return Skip(
                target,
                rpb.SKIP_REASON_NOT_CONFIGURED,
                f"the {provider} provider is not configured on this gateway (no API key)",
                NOT_CONFIGURED_ID,
            )
        name = gateway_model_name(route.provider, route.upstream_model)
        reason = capabilities.skip_reason(
            self.needs, self.capabilities(route), key_patterns=self.patterns, model_name=name
        )
        if reason is not None:
            fields = _FIELDS[reason.id]
            if reason.id == SkipId.NO_TOOLS and not self.request.tools:
                fields = ("messages",)  # tool calls or results in the history, no tools offered
            return Skip(target, SKIP_IDS[reason.id], reason.message, reason.id.value, fields)
        violations = self.view.check(self.request, route)
        if violations:
            first = violations[0]
            return Skip(
                target,
                rpb.SKIP_REASON_PROVIDER_REFUSES,
                f"{first.field}: {first.description}",
                PROVIDER_REFUSES_ID,
                tuple(dict.fromkeys(violation.field for violation in violations)),
            )
        if self.ceiling is not None:
            price = self.view.price(name)
            if price is None:
                if target not in self.price_unknown:
                    self.price_unknown.append(target)
                return None
            cost = price.cost(self.needs.estimated_prompt_tokens, self.needs.max_tokens)
            if cost > self.ceiling:
                return Skip(
                    target,
                    rpb.SKIP_REASON_BUDGET,
                    f"estimated ${cost:.6f} for {self.needs.estimated_prompt_tokens:,} prompt + "
                    f"{self.needs.max_tokens:,} answer tokens is above the "
                    f"{TIER_NAMES[self.tier]} tier's ceiling of ${self.ceiling:g} a call",
                    BUDGET_ID,
                    ("routing.cost_tier",),
                )
        return None


def decide(
    request: AnyCompletionRequest,
    route: CompiledRoute,
    *,
    key: CallerKey | None,
    view: TargetView,
    sticky: StickySessions | None,
    settings: RoutingSettings,
) -> RouteDecision:
    """Where a `route/<name>` call goes, and why. Pure: reads `view` and
    `sticky`, writes nothing. Raises GatewayError NO_ELIGIBLE_TARGET
    (INVALID_ARGUMENT) when no target can serve the request, or
    MODEL_NOT_ALLOWED (PERMISSION_DENIED) when only the key's model patterns
    excluded them."""
    hints = request.routing
    # 1. What the request needs, once: also the prompt estimate.
    needs = capabilities.needs_of(request)
    # 2. The task, and the entries it asks for.
    asked = _task_of(request, needs, settings, chinese_entry=Signal.CHINESE.value in route.entries)
    signals = dict(asked.signals)
    task, source = asked.task, asked.source
    entry = next((route.entries[name] for name in asked.entries if name in route.entries), None)
    if entry is None:
        entry = route.default
        if source == rpb.TASK_SOURCE_RULE:
            source = rpb.TASK_SOURCE_ROUTE_DEFAULT

    tier = hints.cost_tier
    tier_name = TIER_NAMES.get(tier)
    check = _Filter(
        request=request,
        needs=needs,
        view=view,
        patterns=_key_patterns(key, route.name),
        tier=tier,
        ceiling=settings.max_call_usd.get(tier_name) if tier_name is not None else None,
    )

    # 3-4. Candidates through the hard filter; the default entry only when
    # every candidate of the entry is excluded.
    passed_over: list[Skip] = []
    considered: set[str] = set()
    eligible = _eligible(entry, tier, check, considered, passed_over)
    if not eligible and entry.name != DEFAULT_ENTRY:
        entry = route.default
        if source == rpb.TASK_SOURCE_RULE:
            source = rpb.TASK_SOURCE_ROUTE_DEFAULT
        eligible = _eligible(entry, tier, check, considered, passed_over)
    # 4b. Very long input that neither entry can take: any target of the
    # route whose window can, longest first (the issue's "very long input ->
    # the longest-context eligible target"); `entry` is then the one the
    # chosen target is listed in.
    origins: dict[str, Entry] | None = None
    if not eligible and asked.long_input:
        eligible, origins = _route_search(route, tier, check, considered, passed_over)
        if eligible:
            signals["long_input_search"] = "route"
    if not eligible:
        raise _nothing_eligible(route.name, entry.name, task, key, passed_over)
    # 4c. Every target of the entry behind an open breaker, and a closed one
    # in the default entry: the default serves (the entry's are passed over
    # as CIRCUIT_OPEN). No closed one there either: the entry, as below.
    if entry.name != DEFAULT_ENTRY and all(check.breaker_open(c) for c in eligible):
        # Tried on copies: the decision shows the default only if it serves.
        default_skips: list[Skip] = []
        default_considered = set(considered)
        fallback = _eligible(route.default, tier, check, default_considered, default_skips)
        if any(not check.breaker_open(c) for c in fallback):
            passed_over.extend(check.breaker_skip(c) for c in eligible)
            passed_over.extend(default_skips)
            considered = default_considered
            entry, eligible = route.default, fallback
            if source == rpb.TASK_SOURCE_RULE:
                source = rpb.TASK_SOURCE_ROUTE_DEFAULT
    # 5a. Stickiness: the session's target, if it passes this request's
    # hard filter, goes first (it may be another entry's).
    held: Route | None = None
    if sticky is not None and hints.session_id:
        stored = sticky.get(sticky_key(key.id if key else None, route.name, hints.session_id))
        if stored is not None:
            held, broken = _sticky_target(stored, route, eligible, check)
            if held is None:
                signals["sticky_broken"] = broken
    candidates = eligible if held is None else [held, *(r for r in eligible if r != held)]

    # An open breaker is soft: passed over only while another target remains,
    # else the dispatcher's panic rule decides about the last one.
    closed = [c for c in candidates if not check.breaker_open(c)]
    kept = closed or candidates[:1]
    passed_over.extend(check.breaker_skip(c) for c in eligible if c not in kept)
    if held is not None and held not in kept:
        signals["sticky_broken"] = SkipId.BREAKER.value
        held = None

    # 5b. Order: the entry's, longest window first for long input (stable,
    # unknown windows last), after the session's target.
    rest = [candidate for candidate in kept if candidate != held]
    if asked.long_input:
        rest.sort(key=check.longest_first)
    ordered = rest if held is None else [held, *rest]
    if origins is not None:
        # The route's targets came from several entries: name the one the
        # first target not held by the session is listed in.
        entry = origins[(rest or eligible)[0].target]
    if check.price_unknown:
        signals["price_unknown"] = ", ".join(check.price_unknown)

    # 6. The decision.
    return RouteDecision(
        route=route.name,
        task=task,
        source=source,
        rule=asked.rule,
        confidence=asked.confidence,
        below_threshold=asked.below_threshold,
        entry=entry.name,
        cost_tier=tier,
        plan=Plan(tuple(ordered), entry.plan_for(tier).fallback_on),
        windows=tuple(check.capabilities(r).context_window for r in ordered),
        passed_over=tuple(passed_over),
        sticky=held is not None,
        estimated_prompt_tokens=needs.estimated_prompt_tokens,
        signals=signals,
    )


@dataclass(frozen=True, slots=True)
class _Task:
    """What the work is and who said so, before the route is consulted."""

    task: Task
    source: rpb.TaskSource.ValueType
    rule: str
    confidence: float
    below_threshold: bool
    # The route entries to try, in order, before the default.
    entries: tuple[str, ...]
    long_input: bool
    signals: Mapping[str, str]


def _task_of(
    request: AnyCompletionRequest,
    needs: RequestNeeds,
    settings: RoutingSettings,
    *,
    chinese_entry: bool,
) -> _Task:
    """The caller's task, trusted as given (D13: no inference), else the
    rules' guess, given the prompt's size in UTF-8 bytes, the unit of the
    token estimate (a CJK character counts three). `chinese_entry`: the
    route has a `chinese` entry, which a caller's translation of Han text
    prefers to `translation` (the contract's TASK_TRANSLATION says so)."""
    prompt_bytes = needs.estimated_prompt_tokens * capabilities.BYTES_PER_TOKEN
    caller_task = TASKS_BY_PROTO.get(request.routing.task)
    if caller_task is not None:
        # Size is a fact whoever names the task: the rules' own threshold.
        long_input = prompt_bytes > LONG_INPUT_CHARS
        signals = {"long_input": "true"} if long_input else {}
        entries: tuple[str, ...] = (caller_task.value,)
        # The script is a fact too, asked of the rules' own signal, and only
        # where it can change the entry: the task is not second-guessed.
        if caller_task == Task.TRANSLATION and chinese_entry and chinese_text(request):
            signals["chinese"] = "true"
            entries = (Signal.CHINESE.value, caller_task.value)
        return _Task(
            caller_task,
            rpb.TASK_SOURCE_CALLER,
            rule="",
            confidence=1.0,
            below_threshold=False,
            entries=entries,
            long_input=long_input,
            signals=signals,
        )
    inference = infer_task(request, prompt_chars=prompt_bytes, threshold=settings.min_confidence)
    signals = {"scanned_chars": str(inference.scanned_chars)}
    if Signal.CHINESE in inference.signals:
        signals["chinese"] = "true"
    long_input = Signal.LONG_INPUT in inference.signals
    if long_input:
        signals["long_input"] = "true"
    return _Task(
        inference.task,
        rpb.TASK_SOURCE_RULE,
        rule=inference.rule,
        confidence=inference.confidence,
        below_threshold=inference.below_threshold,
        entries=inference.entries,
        long_input=long_input,
        signals=signals,
    )


def _key_patterns(key: CallerKey | None, route_name: str) -> Sequence[str] | None:
    """The key's patterns the targets must match: none without a key, or when
    the key allows the route itself (granting `route/*` trusts the route's
    choices, as granting an alias trusts its targets)."""
    if key is None or key.allows_model(route_name):
        return None
    return key.models


def _eligible(
    entry: Entry,
    tier: rpb.CostTier.ValueType,
    check: _Filter,
    considered: set[str],
    passed_over: list[Skip],
) -> list[Route]:
    """The entry's targets for `tier` that pass the hard filter, each target
    once across the decision (a target already passed over stays so)."""
    eligible: list[Route] = []
    for candidate in entry.plan_for(tier).routes:
        if candidate.target in considered:
            continue
        considered.add(candidate.target)
        skip = check.skip(candidate)
        if skip is None:
            eligible.append(candidate)
        else:
            passed_over.append(skip)
    return eligible


def _route_search(
    route: CompiledRoute,
    tier: rpb.CostTier.ValueType,
    check: _Filter,
    considered: set[str],
    passed_over: list[Skip],
) -> tuple[list[Route], dict[str, Entry]]:
    """Every target of the route not yet considered that passes the hard
    filter, longest window first, and the entry each is first listed in.
    Route order, for ties and for `passed_over`: each entry's targets for
    `tier`, the entries in ENTRY_NAMES order (default, the tasks, chinese),
    as the config loader keeps them whatever the file's order."""
    found: list[Route] = []
    origins: dict[str, Entry] = {}
    for name in ENTRY_NAMES:
        entry = route.entries.get(name)
        if entry is None:
            continue
        for candidate in _eligible(entry, tier, check, considered, passed_over):
            found.append(candidate)
            origins[candidate.target] = entry
    found.sort(key=check.longest_first)
    return found, origins


def _sticky_target(
    stored: str, route: CompiledRoute, eligible: Sequence[Route], check: _Filter
) -> tuple[Route | None, str]:
    """The session's target if it passes the hard filter for this request,
    else None and the id of why not."""
    for candidate in eligible:
        if candidate.target == stored:
            return candidate, ""
    held = next((r for r in route.routes if r.target == stored), None)
    if held is None:
        return None, "not-in-route"
    skip = check.skip(held)
    if skip is not None:
        return None, skip.id
    return held, ""


def _nothing_eligible(
    route: str,
    entry: str,
    task: Task,
    key: CallerKey | None,
    passed_over: Sequence[Skip],
) -> GatewayError:
    targets = ", ".join(skip.target for skip in passed_over)
    if key is not None and all(s.reason == rpb.SKIP_REASON_KEY_MODEL_PATTERNS for s in passed_over):
        # The wording and metadata of call_path/access.check_model, as for a
        # model the key may not use.
        return GatewayError(
            grpc.StatusCode.PERMISSION_DENIED,
            pb.ERROR_REASON_MODEL_NOT_ALLOWED,
            f"key {key.name!r} may not use model {route!r} (nor any of its targets for this "
            f"request: {targets}); it may use: " + ", ".join(key.models),
            metadata={"keyId": key.id, "model": route},
        )
    reasons = "; ".join(f"{skip.target} ({skip.id}: {skip.detail})" for skip in passed_over)
    by_field: dict[str, list[str]] = {}
    for skip in passed_over:
        for name in skip.fields:
            by_field.setdefault(name, []).append(f"{skip.target}: {skip.detail}")
    return GatewayError(
        grpc.StatusCode.INVALID_ARGUMENT,
        pb.ERROR_REASON_NO_ELIGIBLE_TARGET,
        f"no target of {route} can serve this request ({task.value}, entry {entry}): {reasons}",
        metadata={"route": route, "entry": entry, "task": task.value},
        field_violations=tuple(
            FieldViolation(name, "; ".join(details)) for name, details in by_field.items()
        ),
    )
