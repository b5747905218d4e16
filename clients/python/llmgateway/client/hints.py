"""Routing hints for `route/<name>` calls, by name: `routing(task="code")`.

The gateway's task names (docs/routing.md) are the Task enum's value names
without their `TASK_` prefix, lower-cased; cost tiers likewise. The helpers
here translate both ways, so callers and the CLI never spell enum prefixes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from llmgateway.v1 import routing_pb2 as rpb

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import _EnumTypeWrapper

_V = TypeVar("_V", bound=int)

# Every named value a caller may ask for; UNSPECIFIED is "not given", so not a name.
TASKS: tuple[str, ...] = tuple(
    name.removeprefix("TASK_").lower() for name, _ in rpb.Task.items() if name != "TASK_UNSPECIFIED"
)
COST_TIERS: tuple[str, ...] = tuple(
    name.removeprefix("COST_TIER_").lower()
    for name, _ in rpb.CostTier.items()
    if name != "COST_TIER_UNSPECIFIED"
)


def routing(
    task: str | rpb.Task.ValueType | None = None,
    cost_tier: str | rpb.CostTier.ValueType | None = None,
    session_id: str | None = None,
    *,
    explain: bool = False,
) -> rpb.RoutingHints:
    """RoutingHints for `complete(..., routing=...)`, `stream` and `explain_route`.

    `task` is a name ("code", "auto", or "TASK_CODE") or a Task value; unset,
    the gateway infers it. `cost_tier` is "low", "medium", "high" or a
    CostTier value. `session_id` keeps a conversation's turns on one target;
    `explain` asks for the decision's plan and signals too. An unknown name
    raises ValueError listing the known ones.
    """
    return rpb.RoutingHints(
        task=_value(rpb.Task, "TASK_", "task", task, TASKS),
        cost_tier=_value(rpb.CostTier, "COST_TIER_", "cost_tier", cost_tier, COST_TIERS),
        session_id=session_id or "",
        explain=explain,
    )


def task_name(task: rpb.Task.ValueType) -> str:
    """ "code" for TASK_CODE; the number itself for a value this client does not know."""
    return _name(rpb.Task, "TASK_", task)


def cost_tier_name(tier: rpb.CostTier.ValueType) -> str:
    """ "low" for COST_TIER_LOW; the number itself for a value this client does not know."""
    return _name(rpb.CostTier, "COST_TIER_", tier)


def _value(
    enum: _EnumTypeWrapper[_V],
    prefix: str,
    what: str,
    given: str | int | None,
    names: tuple[str, ...],
) -> _V:
    if given is None:
        return enum.Value(f"{prefix}UNSPECIFIED")
    if isinstance(given, bool):
        raise TypeError(f"{what} takes a name or a {enum.DESCRIPTOR.name} value, not {given!r}")
    if isinstance(given, int):
        # A number must still be one of this client's values: a typo'd 22 is refused here,
        # with the names, rather than by the gateway.
        for value in enum.values():
            if value == given:
                return value
        raise ValueError(f"unknown {what} {given}; known: {', '.join(names)}")
    key = given.strip().upper()
    key = key if key.startswith(prefix) else prefix + key
    for name, value in enum.items():
        if name == key and name != f"{prefix}UNSPECIFIED":
            return value
    raise ValueError(f"unknown {what} {given!r}; known: {', '.join(names)}")


def _name(enum: _EnumTypeWrapper[_V], prefix: str, value: _V) -> str:
    try:
        return enum.Name(value).removeprefix(prefix).lower()
    except ValueError:
        return str(value)
