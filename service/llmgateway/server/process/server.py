"""Builds, starts and drains the gateway's grpc.aio server."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from llmgateway.server.call_path.access import Access
from llmgateway.server.call_path.calls import Calls
from llmgateway.server.call_path.decoding import TolerantRegistrar
from llmgateway.server.call_path.dispatch import Dispatcher
from llmgateway.server.call_path.routing_view import RoutingView
from llmgateway.server.call_path.servicer import CompletionServicer, Planner, flush_sampled_logs
from llmgateway.server.call_path.usage import UsageReader
from llmgateway.server.config import ConfigError
from llmgateway.server.observability.health import ProviderHealth
from llmgateway.server.observability.logs import AccessLog
from llmgateway.server.observability.tracing import Tracing
from llmgateway.server.process.ports import check_port_is_free
from llmgateway.server.process.reflection import add_reflection
from llmgateway.server.process.server_options import connection_age_options
from llmgateway.server.process.startup_summary import SUMMARY_LINE, StartupSummary
from llmgateway.server.providers.anthropic import AnthropicProvider
from llmgateway.server.providers.core import ProviderLimits
from llmgateway.server.providers.gemini import GeminiProvider
from llmgateway.server.providers.groq import GroqProvider
from llmgateway.server.providers.ollama import OllamaProvider
from llmgateway.server.providers.openai import OpenAIProvider
from llmgateway.server.providers.openrouter import OpenRouterProvider
from llmgateway.server.providers.redaction import Redactor
from llmgateway.server.providers.zai import ZaiProvider
from llmgateway.server.routing.catalog import Catalog
from llmgateway.server.routing.pricing import PriceBook
from llmgateway.server.routing.router import Router
from llmgateway.server.routing.routes import RouteTable
from llmgateway.server.routing.sticky import StickySessions
from llmgateway.server.routing.unlisted_targets import unlisted_target_warnings
from llmgateway.server.state.runtime import State, open_state
from llmgateway.v1 import completion_pb2 as common
from llmgateway.v1 import completion_service_pb2 as pb
from llmgateway.v1 import completion_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from pathlib import Path

    import httpx
    from opentelemetry.trace import TracerProvider

    from llmgateway.server.config import Settings, TlsSettings
    from llmgateway.server.observability.metrics import GatewayMetrics, MetricsServer
    from llmgateway.server.observability.observe import CallObserver
    from llmgateway.server.providers.core import UpstreamProvider

logger = logging.getLogger(__name__)
# After the in-flight calls' grace, what follows (settlements, the ledger's
# last rows, the lease, the database) shares what is left of it, but at least
# this long: pending rows are always tried once.
CLOSE_FLOOR_SECONDS = 1.0

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["CompletionService"].full_name
# gRPC's own ceiling sits above ours, so an oversized request gets our
# INVALID_ARGUMENT naming the limit rather than a bare RESOURCE_EXHAUSTED.
_GRPC_MESSAGE_SLACK = 1024 * 1024
# gRPC core queues calls that arrived before the event loop asks for them,
# and past `grpc.server.max_pending_requests` (default 1,000) it cancels a
# random share of newcomers, all of them past the hard limit (default 3,000):
# a bare CANCELLED the gateway never sees, so no reason, access line, metric
# or ledger row. Both limits are set to one number, far above what the
# gateway itself admits, so a burst reaches the gateway's own admission,
# which answers OK or RESOURCE_EXHAUSTED GATEWAY_BUSY with a reason. Each
# waiting call holds ~12 KiB, so 20,000 bound a worker's backlog to ~250 MiB.
_MIN_PENDING_CALLS = 20_000
# Core also cancels, just as barely, a call left waiting 30 s (a loop that far
# behind: seen on a loaded machine). An hour leaves that to the caller's own
# deadline: DEADLINE_EXCEEDED, a status it asked for.
_MAX_WAIT_FOR_THE_LOOP_SECONDS = 3600
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@dataclass
class Gateway:
    """A started gateway: its server, bound port and what must be closed."""

    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    providers: dict[common.Provider.ValueType, UpstreamProvider]
    calls: Calls
    catalog: Catalog
    state: State | None = None
    # Prometheus metrics (with --metrics-address), and their listener unless
    # the parent of several workers serves them.
    metrics: GatewayMetrics | None = None
    metrics_server: MetricsServer | None = None
    # Its sampled refusal lines hold counts back; stopping writes them.
    access_log: AccessLog | None = None

    async def stop(self, grace: float | None, delay: float = 0.0) -> None:
        """Drain: report NOT_SERVING, wait `delay`, refuse new calls, let in-flight
        ones finish within `grace`, then close upstream connections and the state.
        One deadline for all of it after the delay: `grace`, or
        CLOSE_FLOOR_SECONDS past the calls' end if that is later; only a
        database call begun before it runs on (up to about 1.5 database
        timeouts), so a supervisor's kill timer can be set to match."""
        await self.health.enter_graceful_shutdown()
        if delay:
            await asyncio.sleep(delay)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (grace or 0.0)
        await self.server.stop(grace)
        deadline = max(deadline, loop.time() + CLOSE_FLOOR_SECONDS)
        if self.access_log is not None:
            self.access_log.flush()
        flush_sampled_logs()
        # Cost look-ups and settlements still running need the providers' clients.
        try:
            async with asyncio.timeout_at(deadline):
                await self.calls.aclose()
        except TimeoutError:
            logger.warning(
                "settlements and cost look-ups still running at the shutdown deadline were "
                "cut off: their reservations keep the estimates they hold"
            )
        await self.catalog.aclose()
        await asyncio.gather(*(p.aclose() for p in self.providers.values()))
        if self.state is not None:
            await self.state.close(deadline)
        if self.metrics_server is not None:
            await self.metrics_server.close()


async def start_gateway(
    settings: Settings,
    *,
    address: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
    reuse_port: bool = False,
    serve_metrics: bool = True,
    tracer_provider: TracerProvider | None = None,
) -> Gateway:
    """Bind, start and report SERVING. `transport` is a test seam for httpx;
    `serve_metrics=False` collects metrics without listening (a worker whose
    parent serves them); `tracer_provider` (tests) turns tracing on."""
    bind = address or settings.address
    if not reuse_port:
        # Before anything is opened. Workers share the port by design; their
        # parent probed it once.
        check_port_is_free(bind)
    router = Router(settings.aliases)
    # Checked like the aliases: a bad route stops the start with what to fix.
    routes = RouteTable(settings.routes, router)
    limits = ProviderLimits(
        max_connections=settings.max_connections_per_provider,
        max_response_bytes=settings.max_response_bytes,
        transport=transport,
    )
    openrouter = OpenRouterProvider(
        settings.openrouter, settings.timeouts_for("openrouter"), **limits
    )
    providers: dict[common.Provider.ValueType, UpstreamProvider] = {
        common.PROVIDER_OPENROUTER: openrouter,
        common.PROVIDER_ZAI: ZaiProvider(settings.zai, settings.timeouts_for("zai"), **limits),
        common.PROVIDER_OPENAI: OpenAIProvider(
            settings.openai, settings.timeouts_for("openai"), **limits
        ),
        common.PROVIDER_ANTHROPIC: AnthropicProvider(
            settings.anthropic, settings.timeouts_for("anthropic"), **limits
        ),
        common.PROVIDER_GEMINI: GeminiProvider(
            settings.gemini, settings.timeouts_for("gemini"), **limits
        ),
        common.PROVIDER_GROQ: GroqProvider(settings.groq, settings.timeouts_for("groq"), **limits),
        common.PROVIDER_OLLAMA: OllamaProvider(
            settings.ollama, settings.timeouts_for("ollama"), **limits
        ),
    }
    # No provider's output may carry any provider's key (a proxy could front
    # several); one redactor for all, built once (each costs a table of key runs).
    everyone = Redactor.union(provider.redactor for provider in providers.values())
    for provider in providers.values():
        provider.redact_as(everyone)
    max_message = settings.max_request_bytes + _GRPC_MESSAGE_SLACK
    pending = max(_MIN_PENDING_CALLS, 4 * len(providers) * settings.max_concurrent_upstream)
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message),
            ("grpc.server.max_pending_requests", pending),
            # Equal to the soft limit: no random early drops below it.
            ("grpc.server.max_pending_requests_hard_limit", pending),
            ("grpc.server_max_unrequested_time_in_server", _MAX_WAIT_FOR_THE_LOOP_SECONDS),
            # One process per port unless this is one of several workers: a
            # second gateway on a busy port should fail, not silently share it.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            # Accept client keepalive pings every 10 s while a call waits for
            # data (gRPC's default is 5 minutes, and it hangs up on clients that
            # ping more often: a reasoning model can be silent for minutes).
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
            # Ping clients that have gone quiet, so a vanished caller's calls
            # (and their upstream requests) are cancelled within a minute.
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
            # GOAWAY to aged connections, so clients balancing over DNS re-resolve.
            *connection_age_options(settings),
        ]
    )
    health_servicer = health.aio.HealthServicer()
    provider_health = ProviderHealth(health_servicer)
    dispatcher = Dispatcher(
        providers,
        retries=settings.retries,
        max_concurrent_upstream=settings.max_concurrent_upstream,
        circuit=settings.circuit,
        on_circuit_change=provider_health.on_circuit_change,
    )
    catalog = Catalog(router.aliases, providers, routes)
    # A worker of several holds its start-up lines: one of them says them for all.
    summary = StartupSummary.from_environment() if reuse_port else StartupSummary(None)
    summary.hold()
    try:
        state = await open_state(settings)
    except BaseException:
        summary.release(started=False)
        raise
    if state is not None:
        catalog.prefetch()
    try:
        # Beyond the ledger: the metrics when asked for, the access log always.
        access_log = AccessLog()
        watching: list[CallObserver] = [access_log]
        metrics: GatewayMetrics | None = None
        if settings.metrics_address is not None:
            from llmgateway.server.observability.metrics import GatewayMetrics

            metrics = GatewayMetrics()
            watching.insert(0, metrics)
            if state is not None:  # the limit store's waited/lost settlements, fail-open admits
                state.limiter.observe(metrics)
        prices = PriceBook(settings.prices, catalog.openrouter_pricing)
        calls = Calls(
            Access(state.keys if state else None),
            state.limiter if state else None,
            prices,
            observers=[*([state.ledger] if state else []), *watching],
            ledger=state.ledger if state else None,
            cost_lookup=openrouter.generation_cost,
        )
        calls.tracing = Tracing.create(settings.tracing, tracer_provider)
        planner = Planner(
            router,
            routes,
            RoutingView(
                providers,
                dispatcher.circuits,
                prices,
                model_info=catalog.model_info,
                overrides=settings.capabilities,
                ollama_num_ctx=settings.ollama.num_ctx,
            ),
            StickySessions(settings.routing.sticky_ttl, settings.routing.sticky_max_sessions),
            settings.routing,
        )
        servicer = CompletionServicer(
            planner,
            dispatcher,
            catalog,
            calls,
            max_request_bytes=settings.max_request_bytes,
            usage=UsageReader(state.db, state.ledger) if state else None,
        )
        # Every service decodes tolerantly: garbage gets INVALID_ARGUMENT, not UNKNOWN.
        registrar: Any = TolerantRegistrar(
            server, on_refused=metrics.request_undecodable if metrics is not None else None
        )
        pb_grpc.add_CompletionServiceServicer_to_server(servicer, registrar)
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, registrar)
        add_reflection(registrar, (SERVICE_NAME, health.SERVICE_NAME))
        try:
            if settings.tls is None:
                port = server.add_insecure_port(bind)
            else:
                port = server.add_secure_port(bind, _server_credentials(settings.tls))
        except RuntimeError as exc:
            from llmgateway.server.process.ports import ListenError

            raise ListenError(f"cannot listen on {bind}: {exc}") from exc
        metrics_server: MetricsServer | None = None
        if metrics is not None and serve_metrics and settings.metrics_address is not None:
            from llmgateway.server.observability.metrics import MetricsServer

            metrics_server = await MetricsServer.start(metrics.registry, settings.metrics_address)
        await server.start()
        for provider in providers.values():
            if provider.configured:
                logger.info("%s: configured", provider.display_name, extra=SUMMARY_LINE)
            else:
                logger.warning(
                    "%s: not configured; set %s to enable it (its models fail with "
                    "FAILED_PRECONDITION until then)",
                    provider.display_name,
                    provider.key_env,
                    extra=SUMMARY_LINE,
                )
        _warn_on_plaintext_upstreams(settings)
        for line in unlisted_target_warnings(router.aliases, routes):
            logger.warning("%s", line, extra=SUMMARY_LINE)
        for name in ("", SERVICE_NAME):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
        await provider_health.start(
            configured=[n for p in providers.values() if p.configured for n in p.circuit_names],
            unconfigured=[
                n for p in providers.values() if not p.configured for n in p.circuit_names
            ],
        )
        if settings.tls is None and not _is_loopback(bind):
            logger.warning(
                "plaintext gRPC on %s: calls, answers and their metadata travel unencrypted; set "
                "LLMGATEWAY_TLS_CERT and LLMGATEWAY_TLS_KEY, or listen on loopback behind a proxy "
                "that terminates TLS",
                bind,
                extra=SUMMARY_LINE,
            )
        if metrics_server is not None:
            logger.info(
                "metrics at http://%s/metrics",
                _display_address(settings.metrics_address or "", metrics_server.port),
                extra=SUMMARY_LINE,
            )
        if calls.tracing is not None:
            logger.info("tracing on (%s)", settings.tracing, extra=SUMMARY_LINE)
        await _announce_access(state)
        summary.release(started=True)
        # Every worker's own: it is ready (supervisors and tests wait for it).
        logger.info(
            "llmgateway listening on %s (%s)",
            _display_address(bind, port),
            _transport(settings.tls),
        )
        return Gateway(
            server=server,
            port=port,
            health=health_servicer,
            providers=providers,
            calls=calls,
            catalog=catalog,
            state=state,
            metrics=metrics,
            metrics_server=metrics_server,
            access_log=access_log,
        )
    except BaseException:
        # Whatever failed after the state opened (a busy port, a bad metrics
        # address): close what is open, so a failed start leaks nothing.
        summary.release(started=False)
        await catalog.aclose()
        await asyncio.gather(*(p.aclose() for p in providers.values()))
        if state is not None:
            await state.close()
        raise


async def serve(
    settings: Settings, *, reuse_port: bool = False, serve_metrics: bool = True
) -> None:
    """Run until SIGTERM or SIGINT, then drain within settings.shutdown_grace."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Before start-up, which opens the database and binds: a signal that
    # arrives meanwhile still ends in a clean stop, not a killed process.
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    gateway = await start_gateway(settings, reuse_port=reuse_port, serve_metrics=serve_metrics)
    await stop.wait()
    logger.info(
        "shutting down: NOT_SERVING now, refusing new calls in %.0f s, then draining in-flight "
        "calls for up to %.0f s",
        settings.shutdown_delay,
        settings.shutdown_grace,
    )
    await gateway.stop(settings.shutdown_grace, settings.shutdown_delay)
    logger.info("stopped")


def _server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    """The listener's TLS credentials; with a client CA, client certificates are
    required and verified against it. Settings.load checked the files; each
    worker process reads them again here, when it binds."""
    client_ca = tls.client_ca_file
    return grpc.ssl_server_credentials(
        [(_read("LLMGATEWAY_TLS_KEY", tls.key_file), _read("LLMGATEWAY_TLS_CERT", tls.cert_file))],
        root_certificates=_read("LLMGATEWAY_TLS_CLIENT_CA", client_ca) if client_ca else None,
        require_client_auth=tls.mutual,
    )


def _read(setting: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{setting}: cannot read {path}: {exc.strerror or exc}") from exc


def _transport(tls: TlsSettings | None) -> str:
    """How the listener is secured, for the start-up log (paths only, never key material)."""
    if tls is None:
        return "plaintext"
    if tls.client_ca_file is None:
        return f"TLS, certificate {tls.cert_file}"
    return (
        f"mTLS, certificate {tls.cert_file}; client certificates required, "
        f"verified against {tls.client_ca_file}"
    )


def _is_loopback(bind: str) -> bool:
    """Whether `bind` (HOST:PORT, [V6]:PORT or unix:PATH) listens on this machine only."""
    if bind.startswith(("unix:", "unix-abstract:")):
        return True
    host = bind.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, it may not be loopback


async def _announce_access(state: State | None) -> None:
    """Say loudly when anyone who can reach the port may call."""
    if state is None:
        logger.warning(
            "no state database: no caller keys, limits or usage ledger", extra=SUMMARY_LINE
        )
    elif await Access(state.keys).is_open():
        logger.warning(
            "OPEN GATEWAY: no caller keys exist in %s, so every call is accepted without "
            "one. Fine for local development; before sharing this gateway, issue keys with "
            "`llmgateway keys create --db %s --name NAME`",
            state.db.display,
            state.db.display,
            extra=SUMMARY_LINE,
        )
    else:
        logger.info("caller keys required (authorization: Bearer <key>)", extra=SUMMARY_LINE)


def _display_address(bind: str, port: int) -> str:
    host = bind.rsplit(":", 1)[0]
    return f"{host}:{port}"


def _warn_on_plaintext_upstreams(settings: Settings) -> None:
    """An http:// base URL off this machine sends the API key in the clear."""
    urls = {
        "OPENROUTER_BASE_URL": settings.openrouter.base_url,
        "ZAI_BASE_URL": settings.zai.base_url,
        "ZAI_CODING_BASE_URL": settings.zai.coding_base_url,
        "OPENAI_BASE_URL": settings.openai.base_url,
        "ANTHROPIC_BASE_URL": settings.anthropic.base_url,
        "GEMINI_BASE_URL": settings.gemini.base_url,
        "GROQ_BASE_URL": settings.groq.base_url,
    }
    if settings.ollama.api_key is not None:
        # A local Ollama over http carries no key; a hosted one does.
        urls["OLLAMA_BASE_URL"] = settings.ollama.base_url
    for name, url in urls.items():
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "http" and parsed.hostname not in _LOOPBACK:
            logger.warning(
                "%s is plain http to %s: API keys travel unencrypted",
                name,
                parsed.hostname,
                extra=SUMMARY_LINE,
            )
