"""Task inference over the labelled prompt set: python -m bench.routing_eval.

Loads tests/data/task_prompts.jsonl, builds each row's CompleteRequest, runs
`infer_task` on it and prints the confusion matrix (labels by row, the rules'
answers by column, `default` when a rule is below threshold or none fired),
per-task precision and recall, the overall accuracy beside the always-default
baseline's, the signals' agreement, and the per-call cost in microseconds. A
benchmark that prints figures: it judges nothing (the accuracy floor is
asserted by tests/test_task_rules.py).

A row is right when the rules name its label, or when a chat row falls to the
route's default: chat has no positive rule, the default is its target.

`--write docs/routing.md` rewrites the part of that file between the
`routing-eval:begin` and `routing-eval:end` markers with the tables (never
the timings: they vary by machine); `--check docs/routing.md` exits 1 when
that part is not what the set and the rules give today (scripts/lint.sh).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import struct_pb2

from llmgateway.server.errors import GatewayError
from llmgateway.server.routing.decide import decide
from llmgateway.server.routing.routes import DEFAULT_ENTRY, ENTRY_NAMES, CompiledRoute
from llmgateway.server.routing.task_rules import Signal, Task, infer_task
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from tests.readme import readme_example_toml
from tests.routing_fixtures import FakeView, load_settings, route_table

if TYPE_CHECKING:
    from llmgateway.server.config import RoutingSettings

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "task_prompts.jsonl"
DEFAULT = "default"
COLUMNS: tuple[str, ...] = (*(task.value for task in Task), DEFAULT)
_ROLES = {
    "system": common.ROLE_SYSTEM,
    "user": common.ROLE_USER,
    "assistant": common.ROLE_ASSISTANT,
    "tool": common.ROLE_TOOL,
}
# A 1x1 PNG: the rules look at the part's kind, never its bytes.
_PIXEL = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"
    "YPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


@dataclass(frozen=True)
class LabelledPrompt:
    """One row of the set: its id, true task, expected signals and request."""

    id: str
    label: str
    signals: frozenset[str]
    request: pb.CompleteRequest
    note: str


def build_request(row: dict[str, Any]) -> pb.CompleteRequest:
    """The CompleteRequest a row describes.

    Row fields: `messages` (role, content, optional `images`: that many image
    parts after the text, optional `repeat`: the content that many times),
    `tools` (true: one function tool), `response_format` (`json_schema` or
    `json_object`).
    """
    request = pb.CompleteRequest(model="route/default")
    for entry in row["messages"]:
        message = request.messages.add(role=_ROLES[entry["role"]])
        text = entry["content"] * int(entry.get("repeat", 1))
        images = int(entry.get("images", 0))
        if images:
            message.parts.add(text=text)
            for _ in range(images):
                message.parts.add().image.url = _PIXEL
        else:
            message.content = text
    if row.get("tools"):
        parameters = struct_pb2.Struct()
        parameters.update({"type": "object", "properties": {"query": {"type": "string"}}})
        request.tools.add(name="lookup", description="Look something up.", parameters=parameters)
    fmt = row.get("response_format")
    if fmt == "json_schema":
        request.response_format.type = common.RESPONSE_FORMAT_TYPE_JSON_SCHEMA
        request.response_format.json_schema.name = "answer"
        request.response_format.json_schema.schema.update({"type": "object"})
    elif fmt == "json_object":
        request.response_format.type = common.RESPONSE_FORMAT_TYPE_JSON_OBJECT
    elif fmt is not None:
        raise ValueError(f"{row['id']}: unknown response_format {fmt!r}")
    return request


def load_prompts(path: Path = DATA) -> list[LabelledPrompt]:
    prompts: list[LabelledPrompt] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if row["label"] not in COLUMNS[:-1]:
            raise ValueError(f"{row['id']}: unknown label {row['label']!r}")
        prompts.append(
            LabelledPrompt(
                id=row["id"],
                label=row["label"],
                signals=frozenset(row.get("signals", ())),
                request=build_request(row),
                note=row.get("note", ""),
            )
        )
    return prompts


def predicted(request: pb.CompleteRequest) -> str:
    """What the rules route to: a task, or `default`."""
    inference = infer_task(request)
    return DEFAULT if inference.below_threshold else inference.task.value


def correct(label: str, answer: str) -> bool:
    return answer == label or (label == Task.CHAT.value and answer == DEFAULT)


@dataclass(frozen=True)
class Evaluation:
    confusion: dict[str, dict[str, int]]
    right: int
    total: int
    misses: list[tuple[str, str, str]]  # id, label, answer

    @property
    def accuracy(self) -> float:
        return self.right / self.total if self.total else 0.0

    def precision_recall(self, task: str) -> tuple[float, float]:
        """Precision and recall of `task`, a chat row's `default` counting as chat."""

        def as_label(answer: str) -> str:
            return Task.CHAT.value if answer == DEFAULT else answer

        hits = sum(
            n
            for label, row in self.confusion.items()
            for answer, n in row.items()
            if label == task and as_label(answer) == task
        )
        claimed = sum(
            n
            for row in self.confusion.values()
            for answer, n in row.items()
            if as_label(answer) == task
        )
        actual = sum(self.confusion.get(task, {}).values())
        return (hits / claimed if claimed else 0.0, hits / actual if actual else 0.0)


def evaluate(prompts: list[LabelledPrompt]) -> Evaluation:
    confusion = {task.value: dict.fromkeys(COLUMNS, 0) for task in Task}
    right = 0
    misses: list[tuple[str, str, str]] = []
    for prompt in prompts:
        answer = predicted(prompt.request)
        confusion[prompt.label][answer] += 1
        if correct(prompt.label, answer):
            right += 1
        else:
            misses.append((prompt.id, prompt.label, answer))
    return Evaluation(confusion=confusion, right=right, total=len(prompts), misses=misses)


def signal_agreement(prompts: list[LabelledPrompt]) -> dict[str, tuple[int, int, int]]:
    """Per signal: (rows expecting it, rows given it, rows with both)."""
    table: dict[str, tuple[int, int, int]] = {}
    for signal in Signal:
        expected = {p.id for p in prompts if signal.value in p.signals}
        given = {p.id for p in prompts if signal in infer_task(p.request).signals}
        table[signal.value] = (len(expected), len(given), len(expected & given))
    return table


def per_call_ns(request: pb.CompleteRequest, repeats: int) -> float:
    """Mean cost of one call over `repeats` calls, after one warm-up call."""
    infer_task(request)
    start = time.perf_counter_ns()
    for _ in range(repeats):
        infer_task(request)
    return (time.perf_counter_ns() - start) / repeats


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


def stress_requests() -> dict[str, pb.CompleteRequest]:
    """Requests far beyond the set: where the scan limit has to hold."""
    big = pb.CompleteRequest(model="route/default")
    big.messages.add(role=common.ROLE_USER, content="word " * (1024 * 1024 // 5))
    cjk = pb.CompleteRequest(model="route/default")
    cjk.messages.add(role=common.ROLE_USER, content="中文" * (256 * 1024))
    many = pb.CompleteRequest(model="route/default")
    for index in range(2048):
        role = common.ROLE_USER if index % 2 == 0 else common.ROLE_ASSISTANT
        many.messages.add(role=role, content=f"turn {index}: " + "some text " * 20)
    return {
        "one 1 MiB ASCII user message": big,
        "one 512 Ki-character Chinese user message": cjk,
        "2,048 messages of about 200 characters": many,
    }


def baseline_accuracy(evaluation: Evaluation) -> float:
    """Accuracy of a router that always answers `default`, on the same rows:
    right exactly on the chat rows."""
    chat = sum(evaluation.confusion[Task.CHAT.value].values())
    return chat / evaluation.total if evaluation.total else 0.0


def markdown_matrix(evaluation: Evaluation) -> str:
    header = "| label \\ rules | " + " | ".join(COLUMNS) + " | total |"
    rule = "|---|" + "---:|" * (len(COLUMNS) + 1)
    lines = [header, rule]
    for label, row in evaluation.confusion.items():
        cells = " | ".join(str(row[column]) for column in COLUMNS)
        lines.append(f"| {label} | {cells} | {sum(row.values())} |")
    return "\n".join(lines)


def markdown_precision_recall(evaluation: Evaluation) -> str:
    lines = ["| task | precision | recall |", "|---|---:|---:|"]
    for task in Task:
        precision, recall = evaluation.precision_recall(task.value)
        lines.append(f"| {task.value} | {precision:.2f} | {recall:.2f} |")
    return "\n".join(lines)


def markdown_signals(prompts: list[LabelledPrompt]) -> str:
    lines = ["| signal | expected | given | both |", "|---|---:|---:|---:|"]
    for signal, (expected, given, both) in signal_agreement(prompts).items():
        lines.append(f"| {signal} | {expected} | {given} | {both} |")
    return "\n".join(lines)


def accuracy_line(evaluation: Evaluation) -> str:
    baseline = baseline_accuracy(evaluation)
    chat = round(baseline * evaluation.total)
    return (
        f"accuracy: {evaluation.right}/{evaluation.total} = {evaluation.accuracy:.1%}; "
        f"always-default baseline: {chat}/{evaluation.total} = {baseline:.1%}"
    )


BEGIN = "<!-- routing-eval:begin -->"
END = "<!-- routing-eval:end -->"
WRITE_COMMAND = ".venv/bin/python -m bench.routing_eval --write docs/routing.md"


@dataclass(frozen=True)
class EntryTable:
    """Per label, how many rows each entry of the README's route/default got."""

    entries: tuple[str, ...]  # the route's entries, in ENTRY_NAMES order
    first_target: dict[str, str]  # entry -> the target it tries first
    counts: dict[str, dict[str, int]]  # label -> entry -> rows
    refused: dict[str, int]  # label -> rows no target could serve


def readme_route() -> tuple[CompiledRoute, RoutingSettings]:
    """The README example's `route/default`, compiled as the gateway does,
    and its `[routing]` settings."""
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(Path(folder), readme_example_toml())
    return route_table(settings).resolve("route/default"), settings.routing


def entry_table(prompts: list[LabelledPrompt]) -> EntryTable:
    """The entry decide() picks for each row over the README's route/default,
    with every provider configured, no breaker open, no caller key and no
    session (tests/routing_fixtures.py's FakeView: the built-in capability
    tables plus the fake upstream's OpenRouter catalogue)."""
    route, settings = readme_route()
    entries = tuple(name for name in ENTRY_NAMES if name in route.entries)
    counts = {task.value: dict.fromkeys(entries, 0) for task in Task}
    refused = dict.fromkeys(counts, 0)
    view = FakeView()
    for prompt in prompts:
        try:
            decision = decide(
                prompt.request, route, key=None, view=view, sticky=None, settings=settings
            )
        except GatewayError:
            refused[prompt.label] += 1
            continue
        counts[prompt.label][decision.entry] += 1
    first = {name: route.entries[name].plan.routes[0].target for name in entries}
    return EntryTable(entries=entries, first_target=first, counts=counts, refused=refused)


def markdown_entries(table: EntryTable) -> str:
    refused = any(table.refused.values())
    columns = [*table.entries, *(["no target"] if refused else [])]
    lines = [
        "| label \\ entry | " + " | ".join(columns) + " | total |",
        "|---|" + "---:|" * (len(columns) + 1),
    ]
    for label, row in table.counts.items():
        cells = [str(row[name]) for name in table.entries]
        if refused:
            cells.append(str(table.refused[label]))
        total = sum(row.values()) + table.refused[label]
        lines.append(f"| {label} | {' | '.join(cells)} | {total} |")
    return "\n".join(lines)


def entry_summary(table: EntryTable) -> str:
    """Rows on their own task's entry, rows on the default for want of an
    entry, rows on the default although their task has one, the rest."""
    own = no_entry = missed = other = 0
    for label, row in table.counts.items():
        mine = {label, Signal.CHINESE.value} if label == Task.TRANSLATION.value else {label}
        has_entry = label in table.entries
        for name, n in row.items():
            if name in mine:
                own += n
            elif name == DEFAULT_ENTRY:
                if has_entry:
                    missed += n
                else:
                    no_entry += n
            else:
                other += n
    total = own + no_entry + missed + other + sum(table.refused.values())
    without = ", ".join(t.value for t in Task if t.value not in table.entries)
    return (
        f"Of {total} rows, {own} reach the entry of their own task, {no_entry} go to `default` "
        f"because the route has no entry for their task ({without}; for chat that is the intended "
        f"target), {missed} go to `default` "
        f"although their task has an entry (the rules were not confident, or missed), and "
        f"{other} reach another task's entry."
    )


def generated_section(prompts: list[LabelledPrompt], source: str) -> str:
    """What goes between the markers: the set, the matrix, precision and
    recall, accuracy beside the baseline, the signals. No timings."""
    evaluation = evaluate(prompts)
    counts = ", ".join(
        f"{task.value} {sum(p.label == task.value for p in prompts)}" for task in Task
    )
    long_rows = sum(Signal.LONG_INPUT.value in p.signals for p in prompts)
    chinese = sum(Signal.CHINESE.value in p.signals for p in prompts)
    baseline = baseline_accuracy(evaluation)
    generated = f"<!-- Generated by `{WRITE_COMMAND}` from {source}; do not edit by hand. -->"
    the_set = (
        f"{evaluation.total} labelled prompts: {counts}. {chinese} carry the `chinese` "
        f"signal; {long_rows} are longer than 128 KiB (`long_input`)."
    )
    legend = (
        "Rows are the labels, columns the rules' answers (`default`: below threshold or no "
        "rule fired; a chat row answered `default` counts as right)."
    )
    accuracy = (
        f"**Accuracy: {evaluation.right} / {evaluation.total} = {evaluation.accuracy:.1%}.** "
        "The always-default baseline (every row to the route's default, right only on the "
        f"chat rows) scores {round(baseline * evaluation.total)} / {evaluation.total} = "
        f"{baseline:.1%} on the same rows."
    )
    parts = [
        generated,
        "",
        the_set,
        "",
        legend,
        "",
        markdown_matrix(evaluation),
        "",
        "Precision and recall (an answer of `default` counts as chat):",
        "",
        markdown_precision_recall(evaluation),
        "",
        accuracy,
        "",
        "Signals (rows expecting the signal, rows given it, both):",
        "",
        markdown_signals(prompts),
    ]
    table = entry_table(prompts)
    firsts = "; ".join(f"`{name}` {target}" for name, target in table.first_target.items())
    how = (
        "`decide()` on every row, over the README example's `route/default` (every provider "
        "configured, no breaker open, no key, no session). Each entry's first target: "
        f"{firsts}."
    )
    parts += [
        "",
        "### The entry each row reaches over the README's `route/default`",
        "",
        how,
        "",
        markdown_entries(table),
        "",
        entry_summary(table),
    ]
    return "\n".join(parts)


def replace_section(document: str, section: str, *, path: Path) -> str:
    """`document` with the text between the markers replaced by `section`."""
    start = document.find(BEGIN)
    end = document.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{path}: needs a line {BEGIN} and, after it, a line {END}")
    return document[: start + len(BEGIN)] + "\n" + section + "\n" + document[end:]


def write_or_check(path: Path, prompts: list[LabelledPrompt], data: Path, *, check: bool) -> int:
    document = path.read_text(encoding="utf-8")
    source = data.relative_to(ROOT).as_posix() if data.is_relative_to(ROOT) else data.name
    updated = replace_section(document, generated_section(prompts, source), path=path)
    if not check:
        if updated != document:
            path.write_text(updated, encoding="utf-8")
        print(f"{path}: routing-eval section written", file=sys.stderr)
        return 0
    if updated == document:
        return 0
    print(
        f"{path}: the routing-eval section does not match {source} and the rules; "
        f"regenerate it with `{WRITE_COMMAND}` and commit the result",
        file=sys.stderr,
    )
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--repeats", type=int, default=2000, help="calls timed per prompt")
    parser.add_argument("--misses", action="store_true", help="list the rows the rules got wrong")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--write", type=Path, metavar="MARKDOWN", help="rewrite the file's routing-eval section"
    )
    mode.add_argument(
        "--check",
        type=Path,
        metavar="MARKDOWN",
        help="exit 1 when the file's routing-eval section is out of date",
    )
    args = parser.parse_args()

    prompts = load_prompts(args.data)
    if args.write is not None or args.check is not None:
        target = args.write if args.write is not None else args.check
        sys.exit(write_or_check(target, prompts, args.data, check=args.check is not None))

    evaluation = evaluate(prompts)
    print(f"{len(prompts)} labelled prompts ({args.data.name})\n")
    print(markdown_matrix(evaluation))
    print()
    print(markdown_precision_recall(evaluation))
    print(f"\n{accuracy_line(evaluation)}")
    print()
    print(markdown_signals(prompts))
    if args.misses:
        print("\nmisses:")
        for row_id, label, answer in evaluation.misses:
            print(f"  {row_id}: {label} -> {answer}")

    costs = [per_call_ns(p.request, args.repeats) / 1000 for p in prompts]
    print(
        f"\ncost per call over the set ({args.repeats} calls per prompt): "
        f"mean {statistics.fmean(costs):.1f} µs, p99 {percentile(costs, 0.99):.1f} µs, "
        f"max {max(costs):.1f} µs"
    )
    for name, request in stress_requests().items():
        cost = per_call_ns(request, max(1, args.repeats // 20)) / 1000
        print(f"  {name}: {cost:.1f} µs per call")


if __name__ == "__main__":
    main()
