"""Prometheus metrics: a CallObserver fed by `Calls`, and the /metrics listener.

One process (`serve --workers 1`, or a gateway started in-process) serves its
own registry. With several workers the parent gives them a fresh
PROMETHEUS_MULTIPROC_DIR before they start; each worker writes its values
there, and the parent alone listens on the metrics address, summing the
workers' files (`MultiProcessCollector`; the in-flight gauge counts live
workers only, and a worker that exits is marked dead).

Label values stay bounded: `method` is Complete or StreamComplete, `status`
a gRPC code name, `provider` openrouter, zai, openai, anthropic, gemini,
groq, ollama or empty (the provider that answered, else the last one that
failed), `reason` an ErrorReason name.
`model` is the requested name (an alias stays an alias) cut to 64
characters, and only names admitted upstream count: at most `MAX_MODELS`
per worker, after which (and for calls refused before going upstream with
a name never admitted) the label is `other`. The routing counters' `route`
is a configured route (an unknown one is refused before admission), `task`
one of eight, `source` caller, rule or default, `rule` a task_rules id or
empty, and a skip's `reason` a stable skip id ("no-vision", "failed").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)

from llmgateway.server.config import ConfigError

if TYPE_CHECKING:
    from aiohttp import web

    from llmgateway.server.observability.observe import CallRecord

# No `_created` twin of every counter and histogram series (multiprocess mode
# has none either): half the scrape, and nothing Prometheus needs.
disable_created_metrics()  # type: ignore[no-untyped-call]

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
MAX_MODELS = 100
MODEL_LABEL_CHARS = 64
OTHER_MODEL = "other"
# From a fast unary answer to a long reasoning stream.
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_UsageChildren = tuple[Counter, Counter, Counter, Counter, Counter, Counter]


class GatewayMetrics:
    """The gateway's metrics for one process; a CallObserver.

    Label children are cached, so a finished call costs a few dict look-ups
    and increments.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        reg = self.registry
        self._requests = Counter(
            "llmgateway_requests",
            "Finished Complete and StreamComplete calls.",
            ("method", "model", "provider", "status"),
            registry=reg,
        )
        self._latency = Histogram(
            "llmgateway_request_duration_seconds",
            "Duration of calls that ended OK, from arrival to the last byte.",
            ("method", "model", "provider"),
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self._ttft = Histogram(
            "llmgateway_time_to_first_token_seconds",
            "From arrival to the first content reaching the caller (unary: the answer), "
            "for calls that ended OK.",
            ("method", "model", "provider"),
            buckets=TTFT_BUCKETS,
            registry=reg,
        )
        self._tokens = Counter(
            "llmgateway_tokens",
            "Tokens reported by providers; type input or output (cached_input, read from "
            "the provider's prompt cache, and cache_write_input, written to it, are part of "
            "input; reasoning is part of output).",
            ("model", "provider", "type"),
            registry=reg,
        )
        self._cost = Counter(
            "llmgateway_cost_usd",
            "Cost in USD as reported by OpenRouter, else priced from the gateway's price "
            "table (Ollama: 0).",
            ("model", "provider"),
            registry=reg,
        )
        self._upstream_errors = Counter(
            "llmgateway_upstream_errors",
            "Failed upstream attempts (retried, fallen back from, or final) by ErrorReason.",
            ("provider", "reason"),
            registry=reg,
        )
        self._in_flight = Gauge(
            "llmgateway_in_flight_requests",
            "Calls admitted upstream and not finished (StreamComplete: open streams).",
            ("method",),
            multiprocess_mode="livesum",
            registry=reg,
        )
        self._undecodable = Counter(
            "llmgateway_undecodable_requests",
            "Requests refused with INVALID_ARGUMENT because protobuf could not decode them "
            "(any service; method is the bare method name).",
            ("method",),
            registry=reg,
        )
        self._route_decisions = Counter(
            "llmgateway_route_decisions",
            "Calls to route/<name> models by the task served and where it came from: source "
            "caller (RoutingHints.task), rule (inferred; rule is its id) or default (the "
            "route's default entry; rule is the one that fired below the threshold, if any).",
            ("route", "task", "source", "rule"),
            registry=reg,
        )
        self._route_escalations = Counter(
            "llmgateway_route_escalations",
            "Routed calls moved once to a target with a larger context window after "
            "UPSTREAM_CONTEXT_LENGTH_EXCEEDED.",
            ("route",),
            registry=reg,
        )
        self._route_skips = Counter(
            "llmgateway_route_skips",
            "Targets passed over by routed calls, by reason (the decision's skip id, e.g. "
            "no-vision, context-window, budget; failed: tried and fallen back from).",
            ("route", "reason"),
            registry=reg,
        )
        # The limit store's (state/limits.py, state/redis_limits.py) own counts; `store`
        # is database or redis. Counted as they happen, so workers' values add up.
        self._limit_counters = {
            "settlements_waited": Counter(
                "llmgateway_limit_settlements_waited",
                "Settlements (a finished call's real use replacing its reserved estimate) "
                "the limit store could not take at once, kept and retried in the background.",
                ("store",),
                registry=reg,
            ),
            "settlements_lost": Counter(
                "llmgateway_limit_settlements_lost",
                "Settlements given up (more than the cap waiting, or still waiting at "
                "shutdown): their reservations keep the estimate, erring toward the limit.",
                ("store",),
                registry=reg,
            ),
            "fail_open_admits": Counter(
                "llmgateway_limit_fail_open_admits",
                "Calls of keys with limits admitted WITHOUT checking them because Redis did "
                "not answer and LLMGATEWAY_REDIS_FAILURE_MODE=open.",
                ("store",),
                registry=reg,
            ),
        }
        self._in_flight_children: dict[str, Gauge] = {}
        self._request_children: dict[tuple[str, str, str, str], Counter] = {}
        self._timing_children: dict[tuple[str, str, str], tuple[Histogram, Histogram]] = {}
        self._usage_children: dict[tuple[str, str], _UsageChildren] = {}
        self._error_children: dict[tuple[str, str], Counter] = {}
        self._decision_children: dict[tuple[str, str, str, str], Counter] = {}
        self._escalation_children: dict[str, Counter] = {}
        self._skip_children: dict[tuple[str, str], Counter] = {}
        # Requested name -> label, for names admitted upstream.
        self._models: dict[str, str] = {}
        # Request id -> model label, for calls admitted and not yet finished.
        self._admitted: dict[str, str] = {}

    # -- CallObserver ------------------------------------------------------------

    def call_started(self, record: CallRecord) -> None:
        """The call goes upstream: its model name may become a label."""
        name = record.requested_model
        label = self._models.get(name)
        if label is None:
            # Once the table is full, new names are `other` and are not kept:
            # a caller minting names must not grow it for the life of the process.
            label = OTHER_MODEL
            if len(self._models) < MAX_MODELS:
                label = self._models[name] = name[:MODEL_LABEL_CHARS]
        self._admitted[record.request_id] = label
        self._in_flight_gauge(record.method).inc()

    def call_finished(self, record: CallRecord) -> None:
        """Count the call, its time, tokens, cost and upstream errors."""
        method = record.method
        label = self._admitted.pop(record.request_id, None)
        if label is not None:
            self._in_flight_gauge(method).dec()
        else:
            label = self._models.get(record.requested_model, OTHER_MODEL)
        errors = record.upstream_errors
        provider = record.provider or (errors[-1][0] if errors else "")
        status = record.status
        key = (method, label, provider, status)
        requests = self._request_children.get(key)
        if requests is None:
            requests = self._request_children[key] = self._requests.labels(*key)
        requests.inc()
        if status == "OK":
            timing_key = (method, label, provider)
            timing = self._timing_children.get(timing_key)
            if timing is None:
                timing = self._timing_children[timing_key] = (
                    self._latency.labels(*timing_key),
                    self._ttft.labels(*timing_key),
                )
            timing[0].observe(record.latency)
            if record.time_to_first_token is not None:
                timing[1].observe(record.time_to_first_token)
        if record.prompt_tokens or record.completion_tokens or record.cost_usd:
            self._count_usage(record, label, provider)
        for error in errors:
            counter = self._error_children.get(error)
            if counter is None:
                counter = self._error_children[error] = self._upstream_errors.labels(*error)
            counter.inc()
        # A route's call refused before a decision (no target could serve it)
        # carries the route for the ledger, but no task: no decision to count.
        if record.route and record.task_source:
            self._count_route(record)

    def request_undecodable(self, method: str) -> None:
        """A request of `method` could not be decoded (service/llmgateway/server/call_path/decoding.py)."""
        self._undecodable.labels(method).inc()

    def limit_store_counted(self, store: str, what: str, count: int = 1) -> None:
        """The limit store `store` counted `count` of `what` (settlements_waited,
        settlements_lost or fail_open_admits; a LimitStoreObserver)."""
        self._limit_counters[what].labels(store).inc(count)

    # -- internals ----------------------------------------------------------------

    def _in_flight_gauge(self, method: str) -> Gauge:
        gauge = self._in_flight_children.get(method)
        if gauge is None:
            gauge = self._in_flight_children[method] = self._in_flight.labels(method)
        return gauge

    def _count_route(self, record: CallRecord) -> None:
        route = record.route
        source, _, rule = record.task_source.partition(":")
        key = (route, record.task, source, record.route_rule or rule)
        decisions = self._decision_children.get(key)
        if decisions is None:
            decisions = self._decision_children[key] = self._route_decisions.labels(*key)
        decisions.inc()
        if record.escalated:
            escalations = self._escalation_children.get(route)
            if escalations is None:
                escalations = self._escalation_children[route] = self._route_escalations.labels(
                    route
                )
            escalations.inc()
        for reason in record.route_skip_ids:
            skip_key = (route, reason)
            skips = self._skip_children.get(skip_key)
            if skips is None:
                skips = self._skip_children[skip_key] = self._route_skips.labels(*skip_key)
            skips.inc()

    def _count_usage(self, record: CallRecord, label: str, provider: str) -> None:
        key = (label, provider)
        children = self._usage_children.get(key)
        if children is None:
            tokens = self._tokens
            children = self._usage_children[key] = (
                tokens.labels(label, provider, "input"),
                tokens.labels(label, provider, "output"),
                tokens.labels(label, provider, "cached_input"),
                tokens.labels(label, provider, "cache_write_input"),
                tokens.labels(label, provider, "reasoning"),
                self._cost.labels(label, provider),
            )
        prompt, completion, cached, cache_write, reasoning, cost = children
        if record.prompt_tokens:
            prompt.inc(record.prompt_tokens)
        if record.completion_tokens:
            completion.inc(record.completion_tokens)
        if record.cached_tokens:
            cached.inc(record.cached_tokens)
        if record.cache_write_tokens:
            cache_write.inc(record.cache_write_tokens)
        if record.reasoning_tokens:
            reasoning.inc(record.reasoning_tokens)
        if record.cost_usd:
            cost.inc(record.cost_usd)


def split_address(address: str, setting: str = "--metrics-address") -> tuple[str, int]:
    """(host, port) from HOST:PORT or [V6]:PORT; an empty host means every interface."""
    host, sep, port_text = address.rpartition(":")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not sep or not 0 <= port <= 65535:  # the port range
        raise ConfigError(f"{setting} must be HOST:PORT, got {address!r}")
    return host.strip("[]") or "0.0.0.0", port  # noqa: S104  # the operator chose it


class MetricsServer:
    """GET /metrics over HTTP on the gateway's event loop (aiohttp)."""

    def __init__(self, runner: web.AppRunner, port: int) -> None:
        self._runner = runner
        self.port = port

    @classmethod
    async def start(cls, registry: CollectorRegistry, address: str) -> MetricsServer:
        """Listen on `address` (HOST:PORT; port 0 picks a free one)."""
        from aiohttp import web
        from prometheus_client.aiohttp import make_aiohttp_handler

        host, port = split_address(address)
        app = web.Application()
        app.router.add_get("/metrics", make_aiohttp_handler(registry))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ConfigError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from exc
        bound = runner.addresses[0][1] if runner.addresses else port
        return cls(runner, int(bound))

    async def close(self) -> None:
        """Stop listening."""
        await self._runner.cleanup()


class MultiprocessMetrics:
    """In the parent of several workers: their shared directory, and /metrics
    summing over them (a thread; the parent runs no event loop)."""

    def __init__(self, address: str) -> None:
        import tempfile

        from prometheus_client import start_http_server
        from prometheus_client.multiprocess import MultiProcessCollector

        host, port = split_address(address)
        self.address = address
        self.directory = tempfile.mkdtemp(prefix="llmgateway-metrics-")
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.directory)  # type: ignore[no-untyped-call]
        try:
            self._httpd, _ = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            self._remove_directory()
            raise ConfigError(f"cannot serve metrics on {address}: {exc.strerror or exc}") from exc
        self.port = int(self._httpd.server_port)
        self.display_address = f"{address.rpartition(':')[0]}:{self.port}"

    def worker_environment(self) -> dict[str, str]:
        """What a worker needs to write its metrics where they are summed."""
        return {MULTIPROC_ENV: self.directory}

    def worker_exited(self, pid: int) -> None:
        """Drop a dead worker's live gauges (its counters keep counting)."""
        from prometheus_client.multiprocess import mark_process_dead

        mark_process_dead(pid, self.directory)  # type: ignore[no-untyped-call]

    def close(self) -> None:
        """Stop serving and remove the directory."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._remove_directory()

    def _remove_directory(self) -> None:
        import shutil

        shutil.rmtree(self.directory, ignore_errors=True)
