"""The compiled route table: each `[routes.<name>]` entry as a Plan, built
once at start-up so a routed call only looks plans up.

A route entry is an alias whose `requested` is the route's name
(`route/default`); an alias named as one of its targets is expanded in place
(its targets and pinned Z.AI endpoints, not its `fallback_on`: the entry's
governs the whole entry). A cost tier variant replaces the entry's targets
for calls that ask for that tier.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from llmgateway.server.config import AliasConfig, AliasTarget, ConfigError
from llmgateway.server.errors import FieldViolation, GatewayError
from llmgateway.server.routing.names import model_name_problem
from llmgateway.server.routing.router import (
    DEFAULT_FALLBACK_ON,
    NAMING_HELP,
    ROUTE_PREFIX,
    Plan,
    Route,
    _alias_plan,
    fallback_reasons,
    is_route_name,
    parse_model_name,
)
from llmgateway.server.routing.task_rules import Signal, Task
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import routing_pb2 as rpb

if TYPE_CHECKING:
    from collections.abc import Mapping

    from llmgateway.server.config import RouteConfig, RouteEntryConfig
    from llmgateway.server.routing.router import Router

# `route/default` must exist whenever routes are configured.
DEFAULT_ROUTE = "default"
DEFAULT_ENTRY = "default"
# Entry names a route may have: the default, one per task, and the entry
# Han-dominant text prefers to `translation`.
ENTRY_NAMES: tuple[str, ...] = (DEFAULT_ENTRY, *(task.value for task in Task), Signal.CHINESE.value)
# Cost tier names in `cost_tier = { low = ... }` and `[routing] max_call_usd`.
COST_TIERS: dict[str, rpb.CostTier.ValueType] = {
    "low": rpb.COST_TIER_LOW,
    "medium": rpb.COST_TIER_MEDIUM,
    "high": rpb.COST_TIER_HIGH,
}
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
TIER_NAMES: dict[rpb.CostTier.ValueType, str] = {value: name for name, value in COST_TIERS.items()}


@dataclass(frozen=True, slots=True)
class Entry:
    """One entry of a route (`code`), compiled."""

    name: str
    # Every Route's `requested` is the route's name ("route/default").
    plan: Plan
    # A cost tier's variant, replacing `plan` for calls asking for that tier.
    tiers: Mapping[rpb.CostTier.ValueType, Plan] = field(default_factory=dict)

    def plan_for(self, tier: rpb.CostTier.ValueType) -> Plan:
        """The targets for a call asking for `tier`: its variant, else the entry's."""
        return self.tiers.get(tier, self.plan)


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """A `[routes.<name>]` table, compiled."""

    # "route/default"
    name: str
    # Always has "default".
    entries: Mapping[str, Entry]

    @property
    def default(self) -> Entry:
        """The entry that serves when no other applies."""
        return self.entries[DEFAULT_ENTRY]

    @property
    def routes(self) -> tuple[Route, ...]:
        """Every target of every entry and variant, each once, in table order."""
        seen: dict[str, Route] = {}
        for entry in self.entries.values():
            for plan in (entry.plan, *entry.tiers.values()):
                for route in plan.routes:
                    seen.setdefault(route.target, route)
        return tuple(seen.values())


class RouteTable:
    """Every configured route, by its name (`route/default`)."""

    def __init__(self, routes: Mapping[str, RouteConfig], router: Router) -> None:
        """Compile `routes` (names without `route/`), expanding `router`'s
        aliases; ConfigError saying what to fix."""
        if routes and DEFAULT_ROUTE not in routes:
            raise ConfigError(
                "[routes] needs a default route: add [routes.default] with `default = ...`"
            )
        self._routes = {
            ROUTE_PREFIX + name: _compile(name, config, router)
            for name, config in sorted(routes.items())
        }
        self.names: tuple[str, ...] = tuple(self._routes)

    def get(self, name: str) -> CompiledRoute | None:
        """The route called `name` ("route/default"), if configured."""
        return self._routes.get(name)

    def resolve(self, name: str) -> CompiledRoute:
        """The route called `name`, or INVALID_ARGUMENT UNKNOWN_MODEL listing the routes."""
        route = self._routes.get(name)
        if route is not None:
            return route
        if self.names:
            hint = "configured routes: " + ", ".join(self.names[:10])
        else:
            hint = "no routes are configured (add a [routes.default] table to the config file)"
        raise GatewayError(
            grpc.StatusCode.INVALID_ARGUMENT,
            pb.ERROR_REASON_UNKNOWN_MODEL,
            f"unknown route {name[:256]!r}: {hint}",
            metadata={"model": name[:256]},
            field_violations=(FieldViolation("model", hint),),
        )

    def __len__(self) -> int:
        return len(self._routes)


def _compile(name: str, config: RouteConfig, router: Router) -> CompiledRoute:
    # As config.py names the table: quoted unless a TOML bare key.
    where = f"[routes.{name}]" if _BARE_KEY.fullmatch(name) else f'[routes."{name}"]'
    requested = ROUTE_PREFIX + name
    problem = model_name_problem(requested)
    if problem is not None or "/" in name:
        raise ConfigError(
            f"[routes] {name!r} cannot be a route name: "
            f"{problem or 'a route name is one segment, without /'}"
        )
    for entry in config.entries:
        _check_entry_name(where, entry)
    if DEFAULT_ENTRY not in config.entries:
        raise ConfigError(f"{where} needs a default entry: add `default = ...` (a model or alias)")
    entries = {
        entry: _entry(f"{where} {entry}", requested, entry, value, router)
        for entry, value in config.entries.items()
    }
    return CompiledRoute(requested, entries)


def _check_entry_name(where: str, entry: str) -> None:
    if entry in ENTRY_NAMES:
        return
    if entry == "auto":
        raise ConfigError(
            f"{where} auto is how a caller asks for inference; it is not a route entry"
        )
    close = difflib.get_close_matches(entry, ENTRY_NAMES, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    tasks = ", ".join(task.value for task in Task)
    raise ConfigError(
        f"{where} {entry} is not a task{hint} Tasks: {tasks}, plus default and chinese"
    )


def _entry(
    where: str, requested: str, name: str, config: RouteEntryConfig, router: Router
) -> Entry:
    plan = _plan(where, requested, config.alias, router, inherited=None)
    tiers: dict[rpb.CostTier.ValueType, Plan] = {}
    for tier, variant in config.cost_tiers.items():
        value = COST_TIERS.get(tier)
        if value is None:
            raise ConfigError(
                f"{where} cost_tier {tier!r} is not a cost tier; use low, medium or high"
            )
        tiers[value] = _plan(
            f"{where} cost_tier {tier}", requested, variant, router, inherited=plan.fallback_on
        )
    return Entry(name, plan, tiers)


def _plan(
    where: str,
    requested: str,
    config: AliasConfig,
    router: Router,
    *,
    inherited: frozenset[pb.ErrorReason.ValueType] | None,
) -> Plan:
    """An entry's (or variant's) targets as a Plan; a variant without its own
    `fallback_on` takes the entry's (`inherited`)."""
    if not config.targets:
        raise ConfigError(f"{where} has no targets")
    routes: list[Route] = []
    for target in config.targets:
        routes.extend(_target(where, requested, target, router))
    if config.fallback_on is not None:
        fallback_on = fallback_reasons(where, config.fallback_on)
    else:
        fallback_on = inherited if inherited is not None else DEFAULT_FALLBACK_ON
    return Plan(tuple(routes), fallback_on)


def _target(where: str, requested: str, target: AliasTarget, router: Router) -> tuple[Route, ...]:
    model = target.model
    if is_route_name(model):
        raise ConfigError(
            f"{where} points at {model!r}: a route cannot point at a route; name models or aliases"
        )
    alias = router.aliases.get(model)
    if alias is not None:
        if target.zai_endpoint is not None:
            raise ConfigError(
                f"{where}: zai_endpoint applies to zai/ targets, not the alias {model!r} "
                "(pin endpoints in the alias itself)"
            )
        # The alias's targets and pinned endpoints; its fallback_on is not the entry's.
        return tuple(dataclasses.replace(route, requested=requested) for route in alias.routes)
    if parse_model_name(model) is None:
        hint = NAMING_HELP
        if router.aliases:
            hint += "; configured aliases: " + ", ".join(sorted(router.aliases)[:10])
        raise ConfigError(f"{where} points at {model!r}: {hint}")
    problem = model_name_problem(model)
    if problem is not None:
        raise ConfigError(f"{where} points at {model!r}: {problem}")
    return _alias_plan(requested, AliasConfig((target,)), where=where).routes
