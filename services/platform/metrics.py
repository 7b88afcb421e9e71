"""Prometheus metrics of one service: its registry, the RPC edge observer, and the ``/metrics`` HTTP endpoint.

Every service owns one :class:`ServiceMetrics` (its own ``CollectorRegistry``, so services sharing a process in
tests keep their series apart) and serves it as Prometheus text at ``GET /metrics`` on its HTTP port. Names
and labels follow the OpenTelemetry semantic conventions mapped to Prometheus (dots become underscores, the
unit becomes a suffix): the RPC latency histogram is ``rpc_server_duration_seconds{rpc_service, rpc_method,
rpc_grpc_status_code}``. Label values are bounded: a method the server does not implement is counted as
``_OTHER``; no label ever holds an id, a tenant or a user.

:class:`RpcObserver` (a ``grpc.aio`` server interceptor placed just inside the tracing interceptor) times each
call and records its final status code, marks the server span of a failed call as the conventions say, and
binds the execution name and attempt of a request that names one to the log context
(:func:`services.platform.logging.execution_context`).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import time
from collections.abc import Awaitable, Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from services.platform import telemetry
from services.platform.grpc_handlers import Behaviour, WrappingServerInterceptor, rewrap, serve_stream
from services.platform.logging import execution_context, get_logger

__all__ = [
    "METRICS_PATH",
    "OTHER",
    "RPC_DURATION_BUCKETS",
    "HttpServer",
    "RpcObserver",
    "ServiceMetrics",
    "add_metrics_route",
    "start_http_server",
]

_log = get_logger("exthub.metrics")

# No ``<name>_created`` sample per counter and histogram: Prometheus does not need them, and they double the series
# (``exthub_executions_created_created`` …).
disable_created_metrics()  # type: ignore[no-untyped-call]

METRICS_PATH = "/metrics"
OTHER = "_OTHER"
#: Seconds; finer than the OpenTelemetry default below 5 ms, where most of the hub's calls end.
RPC_DURATION_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
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
)
REFRESH_TIMEOUT_SECONDS = 2.0
#: The codes that make a SERVER span an error (OpenTelemetry RPC conventions); the others are the client's.
_SERVER_ERROR_CODES = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)

Refresher = Callable[[], Awaitable[None]]


class ServiceMetrics:
    """The registry of one service: process metrics, ``exthub_build_info``, the RPC histogram, and what the
    service registers on :attr:`registry`. ``add_refresher`` registers a coroutine run before each scrape
    (for gauges read from a backend, e.g. the queue depth), bounded by :data:`REFRESH_TIMEOUT_SECONDS`."""

    def __init__(self, service: str, *, version: str = "") -> None:
        self.service = service
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        Gauge(
            "exthub_build_info",
            "The service and its software version (always 1).",
            ["service", "version"],
            registry=self.registry,
        ).labels(service, version or _version()).set(1)
        self.rpc_duration = Histogram(
            "rpc_server_duration_seconds",
            "Duration of gRPC calls handled by this server, by service, method and final status code.",
            ["rpc_service", "rpc_method", "rpc_grpc_status_code"],
            buckets=RPC_DURATION_BUCKETS,
            registry=self.registry,
        )
        self._refreshers: list[Refresher] = []

    def add_refresher(self, refresh: Refresher) -> None:
        """Run ``refresh`` before every scrape (its failure is logged; the scrape still answers)."""
        self._refreshers.append(refresh)

    async def exposition(self) -> bytes:
        """The registry in Prometheus text format, after the refreshers ran."""
        for refresh in self._refreshers:
            try:
                async with asyncio.timeout(REFRESH_TIMEOUT_SECONDS):
                    await refresh()
            except Exception as error:  # a backend failure must not fail the scrape of everything else
                _log.warning("metrics refresh failed", error=type(error).__name__)
        return generate_latest(self.registry)

    def rpc_observer(self, methods: Collection[str]) -> RpcObserver:
        """The server interceptor recording :attr:`rpc_duration` for ``methods`` (``/pkg.Service/Method``)."""
        return RpcObserver(self.rpc_duration, methods)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("exthub")
    except PackageNotFoundError:
        return "0.0.0+unknown"


class RpcObserver(WrappingServerInterceptor):
    """Times every call, records its final code, marks the span, binds the execution to the log context."""

    def __init__(self, histogram: Histogram, methods: Collection[str]) -> None:
        self._histogram = histogram
        self._labels: dict[str, tuple[str, str]] = {}
        self._children: dict[tuple[str, grpc.StatusCode], Any] = {}
        self._tracing = telemetry.current().enabled
        super().__init__()
        self.know(methods)

    def know(self, methods: Collection[str]) -> None:
        """Label calls of ``methods`` (``/pkg.Service/Method``) by name; any other method is ``_OTHER``."""
        for method in methods:
            service, _, name = method.lstrip("/").partition("/")
            self._labels[method] = (service, name)

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
        return rewrap(
            handler,
            unary=lambda behaviour: self._unary(method, behaviour),
            stream=lambda behaviour: self._stream(method, behaviour),
        )

    def _unary(self, method: str, behaviour: Behaviour) -> Behaviour:
        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                name, attempt = _execution_of(request)
                with execution_context(name, attempt):
                    self._mark_execution(name, attempt)
                    result = behaviour(request, context)
                    if inspect.iscoroutine(result) or inspect.isawaitable(result):  # the first test is the cheap one
                        result = await result
                code = _final_code(context, None)
                return result
            except BaseException as error:
                code = _final_code(context, error)
                raise
            finally:
                self._observe(method, code, time.perf_counter() - started)

        return observed

    def _stream(self, method: str, behaviour: Behaviour) -> Behaviour:
        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
            started = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN
            try:
                name, attempt = _execution_of(request)
                with execution_context(name, attempt), self._caller_trace(context):
                    await serve_stream(behaviour(request, context), context)
                code = _final_code(context, None)
            except BaseException as error:
                code = _final_code(context, error)
                raise
            finally:
                self._observe(method, code, time.perf_counter() - started)

        return observed

    @contextlib.contextmanager
    def _caller_trace(self, context: grpc.aio.ServicerContext[Any, Any]) -> Iterator[None]:
        """A streaming call's span starts next to the servicer (see ``telemetry.server_interceptors``): until
        then, the caller's trace context is the current one, so the edge's log lines carry its trace id."""
        if not self._tracing:
            yield
            return
        from opentelemetry import context as otel_context
        from opentelemetry import propagate

        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        token = otel_context.attach(propagate.extract(metadata))
        try:
            yield
        finally:
            otel_context.detach(token)

    def _mark_execution(self, name: str | None, attempt: int | None) -> None:
        if name is None or not self._tracing:
            return
        from opentelemetry import trace

        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("exthub.execution", name)
            if attempt is not None:
                span.set_attribute("exthub.attempt", attempt)

    def _observe(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        child = self._children.get((method, code))
        if child is None:
            service, name = self._labels.get(method, (OTHER, OTHER))
            child = self._histogram.labels(service, name, str(code.value[0]))
            if method in self._labels:  # unknown methods are not cached: the cache stays bounded too
                self._children[(method, code)] = child
        child.observe(seconds)
        if self._tracing:
            _mark_span(code)


def _execution_of(request: Any) -> tuple[str | None, int | None]:
    """The execution a request names (its ``name`` field, ``executions/…``) and its ``attempt`` field."""
    name = getattr(request, "name", None)
    if not isinstance(name, str) or not name.startswith("executions/"):
        return None, None
    attempt = getattr(request, "attempt", None)
    return name, attempt if isinstance(attempt, int) and attempt > 0 else None


def _final_code(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> grpc.StatusCode:
    if isinstance(error, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN


def _mark_span(code: grpc.StatusCode) -> None:
    """Set the final code on the current server span (the instrumentation cannot see an edge abort)."""
    from opentelemetry import trace
    from opentelemetry.trace import Status, StatusCode

    span = trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute("rpc.grpc.status_code", code.value[0])
    if code in _SERVER_ERROR_CODES:
        span.set_status(Status(StatusCode.ERROR, code.name))


# ---- HTTP ------------------------------------------------------------------------------------------------------


def add_metrics_route(app: web.Application, metrics: ServiceMetrics) -> None:
    """``GET /metrics`` on ``app``: ``metrics`` as Prometheus text."""

    async def scrape(_request: web.Request) -> web.Response:
        body = await metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get(METRICS_PATH, scrape)


@dataclass
class HttpServer:
    """A started aiohttp server: its base URL and a :meth:`stop`."""

    url: str
    runner: web.AppRunner

    @property
    def metrics_url(self) -> str:
        """Where Prometheus scrapes it."""
        return f"{self.url}{METRICS_PATH}"

    async def stop(self) -> None:
        """Stop listening and close the application."""
        await self.runner.cleanup()


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def start_http_server(host: str, port: int, app: web.Application) -> HttpServer:
    """Serve ``app`` on ``host:port`` (0: the OS chooses); ``OSError`` when the port is taken."""
    sock = _listening_socket(host, port)
    runner = web.AppRunner(app, access_log=None)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        sock.close()
        raise
    bound = sock.getsockname()[1]
    url = f"http://[{host}]:{bound}" if ":" in host else f"http://{host}:{bound}"
    return HttpServer(url, runner)
