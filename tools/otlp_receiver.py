"""A minimal OTLP/HTTP trace receiver for development, tests and benchmarks (not a collector).

``python -m tools.otlp_receiver [--port 4318]`` listens on ``127.0.0.1`` for ``POST /v1/traces``
(``application/x-protobuf``, gzip or not) and prints every trace as a tree once it has been quiet for a
second::

    trace 4bf92f3577b34da6a3ce929d0e0e4736 (9 spans)
      exthub-gateway     ingress                                      41.2 ms
        exthub-execution /exthub.execution.v1.ExecutionService/…     38.0 ms
          …

Point the hub at it with ``OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318``. In Python,
:class:`OtlpReceiver` keeps the decoded :class:`Span` objects for assertions (``await receiver.wait_for(...)``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2

__all__ = ["TRACES_PATH", "BackgroundReceiver", "OtlpReceiver", "Span", "format_tree"]

TRACES_PATH = "/v1/traces"
MAX_BODY_BYTES = 16 * 1024 * 1024
KIND_NAMES = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _value(value: common_pb2.AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which)


@dataclass(frozen=True)
class Span:
    """One received span, decoded."""

    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    service: str
    start_ns: int
    end_ns: int
    attributes: Mapping[str, Any] = field(default_factory=dict)
    status_code: int = 0
    links: tuple[tuple[str, str], ...] = ()

    @property
    def duration_ms(self) -> float:
        """Its duration in milliseconds."""
        return (self.end_ns - self.start_ns) / 1e6


def _span(span: Any, service: str) -> Span:
    return Span(
        trace_id=span.trace_id.hex(),
        span_id=span.span_id.hex(),
        parent_span_id=span.parent_span_id.hex(),
        name=span.name,
        kind=KIND_NAMES.get(span.kind, str(span.kind)),
        service=service,
        start_ns=span.start_time_unix_nano,
        end_ns=span.end_time_unix_nano,
        attributes={kv.key: _value(kv.value) for kv in span.attributes},
        status_code=span.status.code,
        links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in span.links),
    )


def decode(body: bytes) -> list[Span]:
    """The spans of an ``ExportTraceServiceRequest``."""
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[Span] = []
    for resource_spans in request.resource_spans:
        resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.scope_spans:
            spans.extend(_span(span, service) for span in scope_spans.spans)
    return spans


class OtlpReceiver:
    """An OTLP/HTTP receiver on ``127.0.0.1`` (port 0: the OS chooses) keeping every span it received."""

    def __init__(self, *, on_spans: Callable[[list[Span]], None] | None = None) -> None:
        self.spans: list[Span] = []
        self.keep = True  #: keep the decoded spans in :attr:`spans` (off for a long-running receiver)
        self._on_spans = on_spans
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.url = ""

    @property
    def endpoint(self) -> str:
        """The base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return self.url

    async def start(self, port: int = 0) -> OtlpReceiver:
        """Start listening."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post(TRACES_PATH, self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port)
        await site.start()
        bound = next(a[1] for a in self._runner.addresses if isinstance(a, tuple))
        self.url = f"http://127.0.0.1:{bound}"
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> OtlpReceiver:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _export(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        try:
            spans = decode(body)
        except DecodeError:
            return web.Response(status=400, text="not an ExportTraceServiceRequest")
        if self.keep:
            async with self._changed:
                self.spans.extend(spans)
                self._changed.notify_all()
        if self._on_spans is not None:
            self._on_spans(spans)
        response = trace_service_pb2.ExportTraceServiceResponse()
        return web.Response(body=response.SerializeToString(), content_type="application/x-protobuf")

    async def wait_for(self, predicate: Callable[[list[Span]], bool], *, within: float) -> list[Span]:
        """Wait up to ``within`` seconds until ``predicate(all spans so far)`` holds; the spans then (else
        TimeoutError)."""
        async with asyncio.timeout(within), self._changed:
            await self._changed.wait_for(lambda: predicate(self.spans))
            return list(self.spans)

    def trace(self, trace_id: str) -> list[Span]:
        """The spans of one trace received so far."""
        return [span for span in self.spans if span.trace_id == trace_id]


class BackgroundReceiver:
    """An :class:`OtlpReceiver` on a thread of its own (for synchronous callers and other event loops).

    ``with BackgroundReceiver() as receiver:`` → ``receiver.endpoint``; ``receiver.wait_for(predicate,
    within=…)`` blocks until the spans received so far satisfy ``predicate`` (TimeoutError after ``within``).
    """

    def __init__(self) -> None:
        self._spans: list[Span] = []
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._receiver = OtlpReceiver(on_spans=self._received)
        self._receiver.keep = False  # kept here, under the thread lock
        self._thread = threading.Thread(target=self._loop.run_forever, name="otlp-receiver", daemon=True)
        self.endpoint = ""

    def _received(self, spans: list[Span]) -> None:
        with self._changed:
            self._spans.extend(spans)
            self._changed.notify_all()

    def start(self) -> BackgroundReceiver:
        """Start the thread and the receiver (bounded)."""
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._receiver.start(), self._loop).result(timeout=10)
        self.endpoint = self._receiver.endpoint
        return self

    def stop(self) -> None:
        """Stop the receiver and its thread (bounded)."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._receiver.stop(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> BackgroundReceiver:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    @property
    def spans(self) -> list[Span]:
        """Every span received so far."""
        with self._changed:
            return list(self._spans)

    def wait_for(self, predicate: Callable[[list[Span]], bool], *, within: float) -> list[Span]:
        """Block until ``predicate(spans so far)`` holds (TimeoutError after ``within`` seconds); the spans."""
        deadline = time.monotonic() + within
        with self._changed:
            while not predicate(list(self._spans)):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"the spans received ({len(self._spans)}) did not satisfy the condition")
                self._changed.wait(remaining)
            return list(self._spans)


def format_tree(spans: Iterable[Span]) -> str:
    """One trace as an indented tree: service, span name, duration (children in start order)."""
    spans = sorted(spans, key=lambda s: s.start_ns)
    ids = {span.span_id for span in spans}
    children: dict[str, list[Span]] = {}
    roots: list[Span] = []
    for span in spans:
        if span.parent_span_id and span.parent_span_id in ids:
            children.setdefault(span.parent_span_id, []).append(span)
        else:
            roots.append(span)
    lines: list[str] = []

    def walk(span: Span, depth: int) -> None:
        orphan = " (parent not received)" if depth == 0 and span.parent_span_id else ""
        lines.append(f"{'  ' * depth}{span.service} · {span.name} [{span.kind}] {span.duration_ms:.1f} ms{orphan}")
        for child in children.get(span.span_id, []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return "\n".join(lines)


async def _serve(port: int, quiet_seconds: float, *, count_only: bool) -> None:
    pending: dict[str, list[Span]] = {}
    timers: dict[str, asyncio.TimerHandle] = {}
    traces: set[str] = set()
    total = 0
    loop = asyncio.get_running_loop()

    def flush(trace_id: str) -> None:
        spans = pending.pop(trace_id, [])
        timers.pop(trace_id, None)
        print(f"trace {trace_id} ({len(spans)} spans)\n{format_tree(spans)}\n", flush=True)

    def received(spans: list[Span]) -> None:
        nonlocal total
        total += len(spans)
        for span in spans:
            traces.add(span.trace_id)
            if count_only:
                continue
            pending.setdefault(span.trace_id, []).append(span)
            if (timer := timers.get(span.trace_id)) is not None:
                timer.cancel()
            timers[span.trace_id] = loop.call_later(quiet_seconds, flush, span.trace_id)

    receiver = OtlpReceiver(on_spans=received)
    receiver.keep = False
    await receiver.start(port)
    print(f"OTLP/HTTP receiver on {receiver.endpoint} (POST {TRACES_PATH}); Ctrl-C stops it", flush=True)
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for trace_id in list(pending):
            flush(trace_id)
        await receiver.stop()
        print(f"received {total} spans in {len(traces)} traces", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m tools.otlp_receiver", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4318, help="port on 127.0.0.1 (default 4318; 0: any)")
    parser.add_argument("--quiet-seconds", type=float, default=1.0, help="print a trace after this much silence")
    parser.add_argument("--count-only", action="store_true", help="print no trace, only the totals when stopped")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port, args.quiet_seconds, count_only=args.count_only))
    return 0


if __name__ == "__main__":
    sys.exit(main())
