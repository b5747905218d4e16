"""What the issue-14 audit found between the gateway and its clients: the
explanation a person reads for a real decision, not a hand-built one."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llmgateway.client.render import NO_RULE_FIRED, decision_lines
from llmgateway.server.routing import task_rules
from llmgateway.server.routing.decide import decide
from tests.readme import readme_example_toml
from tests.routing_fixtures import FakeView, load_settings, make_request, route_table

if TYPE_CHECKING:
    from pathlib import Path


def test_the_clients_no_rule_id_is_the_gateways() -> None:
    assert task_rules.RULE_NONE == NO_RULE_FIRED


def test_a_request_with_no_signal_reads_as_no_rule_fired(tmp_path: Path) -> None:
    settings = load_settings(tmp_path, readme_example_toml())
    route = route_table(settings).resolve("route/default")
    decision = decide(
        make_request("hello there"),
        route,
        key=None,
        view=FakeView(),
        sticky=None,
        settings=settings.routing,
    )
    # The rules name "nothing fired" too; it is not a rule that was unsure.
    assert decision.rule == task_rules.RULE_NONE
    lines = decision_lines(decision.to_proto(chosen="zai/glm-4.5-flash", explain=False))
    assert lines[:2] == [
        "route/default chose zai/glm-4.5-flash (entry default)",
        "task chat: no rule fired, so the route's default entry served",
    ]
