"""Tracing for one process: an OpenTelemetry tracer provider configured from the standard ``OTEL_*`` variables.

Traces are exported when

* an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_ENDPOINT``), over the
  protocol of ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf``, the
  default, or ``grpc``), unless ``OTEL_TRACES_EXPORTER`` says ``none``;
* ``EXTHUB_TELEMETRY__AZURE_MONITOR=true``: to Application Insights (``APPLICATIONINSIGHTS_CONNECTION_STRING``).

``OTEL_SDK_DISABLED=true`` turns everything off. When nothing is exported, nothing is set up: no provider, no
instrumentation, no interceptor — the process runs exactly as without this module (the OpenTelemetry API's
no-op tracer answers the few direct calls).

When tracing is on, :func:`configure_telemetry` also instruments, for the whole process, every ``grpc.aio``
client channel (so the services' channels to each other carry ``traceparent``), every ``aiohttp`` client
session (the agent's call to the extension; the URL's query string is never recorded) and every ``aiohttp``
application (the object endpoints, the status callback, echo); ``/metrics`` and health routes are not traced.
:func:`server_interceptors` gives the gRPC server its span interceptors. Other standard variables apply as
usual: ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,
``OTEL_EXPORTER_OTLP_HEADERS``/``TIMEOUT``/``CERTIFICATE``.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.metadata
import os
import uuid
import warnings
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from services.platform.logging import disable_trace_context, enable_trace_context, get_logger

if TYPE_CHECKING:
    import grpc
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Tracer

__all__ = [
    "TRACE_PROPERTIES",
    "UNTRACED_SERVICES",
    "Telemetry",
    "annotate",
    "configure_telemetry",
    "consumer_span",
    "current",
    "internal_span",
    "otlp_traces_endpoint",
    "producer_span",
    "server_interceptors",
    "shutdown_telemetry",
    "tracer",
    "tracing_destination",
]

_log = get_logger("exthub.telemetry")

SERVICE_NAMESPACE = "exthub"
_DISTRIBUTION = "exthub"
_TRUE = frozenset({"true", "1", "yes", "on"})
#: Probes and discovery: traced, they would only bury the interesting spans.
UNTRACED_SERVICES = frozenset({"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})
#: HTTP routes never traced (scrapes and probes); a regular expression list as ``OTEL_PYTHON_*_EXCLUDED_URLS``.
UNTRACED_HTTP_PATHS = ("/metrics$", "/healthz$")
_INSTRUMENTATION = "exthub"
#: W3C trace context as message properties (what the propagator writes); a property value is at most 256 chars.
TRACE_PROPERTIES = ("traceparent", "tracestate")
_MAX_PROPERTY_VALUE = 256
#: The standard variable the Azure Monitor exporter reads (a secret: never copied into settings or logs).
APPLICATIONINSIGHTS_CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"


def _flag(env: Mapping[str, str], name: str) -> bool:
    return env.get(name, "").strip().lower() in _TRUE


def _protocol(env: Mapping[str, str]) -> str:
    protocol = (
        env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    ).strip()
    if protocol not in ("http/protobuf", "grpc"):
        raise ValueError(f"OTLP protocol {protocol!r} is not supported: use http/protobuf or grpc")
    return protocol


def otlp_traces_endpoint(env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """``(protocol, URL)`` traces are sent to over OTLP, as the exporter resolves it; None when OTLP is off.

    A generic ``OTEL_EXPORTER_OTLP_ENDPOINT`` gets ``/v1/traces`` appended for ``http/protobuf`` (the
    signal-specific variable is used as is).
    """
    env = os.environ if env is None else env
    if _flag(env, "OTEL_SDK_DISABLED"):
        return None
    exporters = {part.strip().lower() for part in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if "otlp" not in exporters:
        return None
    specific = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    generic = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not specific and not generic:
        return None
    protocol = _protocol(env)
    if specific:
        return protocol, specific
    if protocol == "http/protobuf":
        return protocol, f"{generic.rstrip('/')}/v1/traces"
    return protocol, generic


def tracing_destination(env: Mapping[str, str] | None = None, *, azure_monitor: bool = False) -> str | None:
    """Where this environment sends traces, in words (for ``exthub up``); None when tracing is off."""
    env = os.environ if env is None else env
    if _flag(env, "OTEL_SDK_DISABLED"):
        return None
    places: list[str] = []
    otlp = otlp_traces_endpoint(env)
    if otlp is not None:
        places.append(f"OTLP {otlp[0]} {otlp[1]}")
    if azure_monitor:
        places.append("Azure Monitor (APPLICATIONINSIGHTS_CONNECTION_STRING)")
    return ", ".join(places) or None


@dataclass
class Telemetry:
    """The tracing set-up of this process (``provider`` None: tracing is off)."""

    service_name: str
    provider: TracerProvider | None = None
    destination: str | None = None
    _uninstrument: list[Callable[[], None]] = field(default_factory=list, repr=False)

    @property
    def enabled(self) -> bool:
        """Whether spans are recorded and exported."""
        return self.provider is not None

    def shutdown(self) -> None:
        """Export what is pending, then remove the instrumentation (blocking: up to the exporter's timeout)."""
        for undo in reversed(self._uninstrument):
            undo()
        self._uninstrument.clear()
        if self.provider is not None:
            self.provider.shutdown()


_OFF = Telemetry("")
_current: Telemetry = _OFF


def current() -> Telemetry:
    """The telemetry of this process (tracing off until :func:`configure_telemetry` turned it on)."""
    return _current


def tracer(name: str = _INSTRUMENTATION) -> Tracer:
    """A tracer of this process's provider (the API's no-op tracer when tracing is off)."""
    from opentelemetry import trace

    provider = _current.provider
    return provider.get_tracer(name) if provider is not None else trace.get_tracer(name)


def _service_version() -> str:
    try:
        return importlib.metadata.version(_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0+unknown"


def _exporters(env: Mapping[str, str], *, azure_monitor: bool, credential: Any) -> list[SpanExporter]:
    exporters: list[SpanExporter] = []
    otlp = otlp_traces_endpoint(env)
    if otlp is not None:
        protocol, endpoint = otlp
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
                OTLPSpanExporter as GrpcExporter,
            )

            exporters.append(GrpcExporter(endpoint=endpoint))
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                OTLPSpanExporter as HttpExporter,
            )

            exporters.append(HttpExporter(endpoint=endpoint))
    if azure_monitor:
        if not env.get(APPLICATIONINSIGHTS_CONNECTION_STRING, "").strip():
            raise ValueError(
                f"EXTHUB_TELEMETRY__AZURE_MONITOR=true needs {APPLICATIONINSIGHTS_CONNECTION_STRING} to be set"
            )
        from azure.monitor.opentelemetry.exporter import AzureMonitorTraceExporter

        # reads APPLICATIONINSIGHTS_CONNECTION_STRING itself; with a credential it authenticates with Entra ID
        exporters.append(
            AzureMonitorTraceExporter(credential=credential) if credential else AzureMonitorTraceExporter()
        )
    return exporters


def configure_telemetry(
    service: str,
    *,
    azure_monitor: bool = False,
    credential: Any = None,
    env: Mapping[str, str] | None = None,
    instance_id: str | None = None,
) -> Telemetry:
    """Set up tracing for this process as ``exthub-<service>`` (idempotent: a second call returns the first set-up).

    Returns the (possibly disabled) :class:`Telemetry`; :func:`shutdown_telemetry` undoes it. ``credential``
    (an azure-identity token credential) lets the Azure Monitor exporter use Entra ID instead of the key in
    the connection string.
    """
    global _current
    if _current.enabled:
        return _current
    env = os.environ if env is None else env
    exporters = _exporters(env, azure_monitor=azure_monitor, credential=credential)
    name = f"{SERVICE_NAMESPACE}-{service}"
    if not exporters:
        _current = Telemetry(name)
        return _current

    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create(
        {
            "service.name": name,
            "service.namespace": SERVICE_NAMESPACE,
            "service.instance.id": instance_id or str(uuid.uuid4()),
            "service.version": _service_version(),
        }
    )
    provider = TracerProvider(resource=resource)  # sampler from OTEL_TRACES_SAMPLER (default: parent-based, on)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))  # exports on its own thread
    telemetry = Telemetry(name, provider, tracing_destination(env, azure_monitor=azure_monitor))
    telemetry._uninstrument.extend(_instrument(provider))
    enable_trace_context()
    telemetry._uninstrument.append(disable_trace_context)
    _current = telemetry
    _log.info("tracing on", service=name, destination=telemetry.destination)
    return telemetry


def shutdown_telemetry() -> None:
    """Flush and undo :func:`configure_telemetry` (blocking: call it through ``asyncio.to_thread`` on a loop)."""
    global _current
    telemetry, _current = _current, _OFF
    telemetry.shutdown()


def _strip_query(url: Any) -> str:
    """The URL a client span records: no query string (signed object URLs carry their signature there)."""
    return str(url.with_query(None).with_fragment(None))


def _instrument(provider: TracerProvider) -> list[Callable[[], None]]:
    """Instrument grpc.aio clients, aiohttp clients and aiohttp applications of this process."""
    from opentelemetry.instrumentation.aiohttp_client import AioHttpClientInstrumentor
    from opentelemetry.instrumentation.aiohttp_server import AioHttpServerInstrumentor, create_aiohttp_middleware
    from opentelemetry.instrumentation.grpc import GrpcAioInstrumentorClient, filters

    if not os.environ.get("OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS") and not os.environ.get(
        "OTEL_PYTHON_EXCLUDED_URLS"
    ):  # the instrumentation reads its exclusions from the environment only
        os.environ["OTEL_PYTHON_AIOHTTP_SERVER_EXCLUDED_URLS"] = ",".join(UNTRACED_HTTP_PATHS)
    grpc_client = GrpcAioInstrumentorClient(  # type: ignore[no-untyped-call]
        filter_=filters.negate(filters.any_of(*(filters.service_name(s) for s in UNTRACED_SERVICES)))
    )
    http_client = AioHttpClientInstrumentor()
    http_server = AioHttpServerInstrumentor()
    grpc_client.instrument(tracer_provider=provider)
    http_client.instrument(tracer_provider=provider, url_filter=_strip_query)
    original = web.Application
    with warnings.catch_warnings():  # aiohttp frowns on subclassing Application, which the instrumentation does
        warnings.simplefilter("ignore", DeprecationWarning)
        http_server.instrument(tracer_provider=provider)  # sets the middleware's module state; undone below
        traced = create_aiohttp_middleware(tracer_provider=provider)
        web.Application = _once_traced_application(original, traced)  # type: ignore[misc]
    return [grpc_client.uninstrument, http_client.uninstrument, http_server.uninstrument]


_TRACED = web.RequestKey("exthub_traced", bool)


def _once_traced_application(original: type[web.Application], traced: Any) -> type[web.Application]:
    """``web.Application`` with the instrumentation's middleware first, run once per request: a sub-application
    (the object endpoints under ``/objects/``) runs its parent's middlewares too, and would record a second span."""

    @web.middleware
    async def once(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.get(_TRACED):
            response: web.StreamResponse = await handler(request)
            return response
        request[_TRACED] = True
        response = await traced(request, handler)
        return response

    class TracedApplication(original):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, middlewares: Any = (), **kwargs: Any) -> None:
            super().__init__(*args, middlewares=[once, *middlewares], **kwargs)

    return TracedApplication


def server_interceptors(
    streaming_methods: Container[str],
) -> tuple[list[grpc.aio.ServerInterceptor], list[grpc.aio.ServerInterceptor]]:
    """The span interceptors of a gRPC server: ``(outermost, innermost)``, both empty when tracing is off.

    A unary method's server span encloses everything the server does for the call (authentication, the access
    log line), so its interceptor goes first. A server-streaming method (``streaming_methods``: full
    ``/pkg.Service/Method`` paths, read at call time) gets its span from an interceptor placed last, next to
    the servicer: the instrumentation iterates the behaviour it wraps, and the edge interceptor's stream
    behaviour is a coroutine that writes. Health and reflection are not traced.
    """
    provider = _current.provider
    if provider is None:
        return [], []
    from opentelemetry.instrumentation.grpc import aio_server_interceptor

    streaming = streaming_methods

    def traced(method: str) -> bool:
        return method.lstrip("/").split("/", 1)[0] not in UNTRACED_SERVICES

    def unary(details: grpc.HandlerCallDetails) -> bool:
        return details.method not in streaming and traced(details.method)

    def stream(details: grpc.HandlerCallDetails) -> bool:
        return details.method in streaming and traced(details.method)

    return (
        [aio_server_interceptor(tracer_provider=provider, filter_=unary)],  # type: ignore[no-untyped-call]
        [aio_server_interceptor(tracer_provider=provider, filter_=stream)],  # type: ignore[no-untyped-call]
    )


# ---- spans of our own: messages and background work ---------------------------------------------------------


def _w3c() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


@contextlib.contextmanager
def producer_span(destination: str, attributes: Mapping[str, str | int] | None = None) -> Iterator[dict[str, str]]:
    """A PRODUCER span ``send <destination>`` around publishing one message; yields the message properties that
    carry its W3C trace context (``{}`` when tracing is off: nothing is recorded)."""
    if _current.provider is None:
        yield {}
        return
    from opentelemetry.trace import SpanKind

    span_attributes = {
        "messaging.operation.type": "send",
        "messaging.destination.name": destination,
        **(attributes or {}),
    }
    with tracer().start_as_current_span(f"send {destination}", kind=SpanKind.PRODUCER, attributes=span_attributes):
        carrier: dict[str, str] = {}
        _w3c().inject(carrier)
        if len(carrier.get("tracestate", "")) > _MAX_PROPERTY_VALUE:
            del carrier["tracestate"]  # vendor state may be long; the trace itself still travels
        yield carrier


@contextlib.contextmanager
def consumer_span(
    destination: str, properties: Mapping[str, str], attributes: Mapping[str, str | int] | None = None
) -> Iterator[None]:
    """A CONSUMER span ``process <destination>`` around processing one message, continuing the trace its
    properties carry (a new trace when they carry none). Nothing when tracing is off."""
    if _current.provider is None:
        yield
        return
    from opentelemetry.trace import SpanKind

    carrier = {key: properties[key] for key in TRACE_PROPERTIES if key in properties}
    span_attributes = {
        "messaging.operation.type": "process",
        "messaging.destination.name": destination,
        **(attributes or {}),
    }
    with tracer().start_as_current_span(
        f"process {destination}", context=_w3c().extract(carrier), kind=SpanKind.CONSUMER, attributes=span_attributes
    ):
        yield


@contextlib.contextmanager
def internal_span(name: str, attributes: Mapping[str, str | int] | None = None) -> Iterator[None]:
    """An INTERNAL span (background work: the outbox relay, the sweeper). Nothing when tracing is off."""
    if _current.provider is None:
        yield
        return
    with tracer().start_as_current_span(name, attributes=dict(attributes or {})):
        yield


@contextlib.contextmanager
def linked_span(name: str, contexts: Sequence[contextvars.Context]) -> Iterator[None]:
    """An INTERNAL span around one piece of work done for several traced callers at once (a batch call): a child
    of the current span, linked to the span each of ``contexts`` was in. Nothing when tracing is off."""
    if _current.provider is None:
        yield
        return
    from opentelemetry import trace

    links = []
    for context in contexts:
        span_context = context.run(trace.get_current_span).get_span_context()
        if span_context.is_valid:
            links.append(trace.Link(span_context))
    with tracer().start_as_current_span(name, links=links, attributes={"exthub.batch.items": len(contexts)}):
        yield


def annotate(attributes: Mapping[str, str | int | None]) -> None:
    """Set attributes (None values skipped) on the current span, if tracing is on and one is recording."""
    if _current.provider is None:
        return
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({key: value for key, value in attributes.items() if value is not None})
