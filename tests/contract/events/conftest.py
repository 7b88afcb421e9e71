"""Fixtures for the event-publishing contract suite.

Every adapter of :class:`services.platform.events.port.EventPublisher` runs the same tests through a
``Harness``: the publisher, a real subscriber that records what arrives, and a way to make the destination
unavailable for a while.

* ``webhook``: a real aiohttp server on 127.0.0.1 (an OS-chosen port) answering 204, or 503 during an outage.
* ``servicebus``: the Service Bus test broker (``tools/emulators/servicebus_broker.py``, a separate process
  over AMQPS with the development CA; if it cannot start, the tests fail), a fresh namespace per test, and an
  unmodified SDK receiver on the subscription ``all`` of ``execution-events``; an outage freezes the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest
from aiohttp import web
from azure.servicebus import ServiceBusReceivedMessage
from azure.servicebus.aio import ServiceBusClient, ServiceBusReceiver
from cloudevents.core.bindings.amqp import AMQPMessage
from cloudevents.core.bindings.amqp import from_structured_event as from_amqp
from cloudevents.core.bindings.http import HTTPMessage
from cloudevents.core.bindings.http import from_structured_event as from_http
from cloudevents.core.v1.event import CloudEvent

from services.platform.events.cloudevent import ExecutionEventFacts, to_cloudevent
from services.platform.events.port import EventPublisher
from services.platform.events.servicebus import ServiceBusEventPublisher
from services.platform.events.webhook import WebhookEventPublisher
from services.platform.servicebus import close_handlers, open_client
from tools.emulators.certs import load_or_create
from tools.emulators.servicebus_broker import BrokerProcess, BrokerTokenCredential

ADAPTERS = ["webhook", "servicebus"]
SOURCE = "https://hub.example.test"
WEBHOOK_ATTEMPTS = 3
WEBHOOK_TIMEOUT = 2.0
SERVICEBUS_TIMEOUT = 2.0


@dataclass
class Delivered:
    """One event as a subscriber received it: the parsed CloudEvent, the transport's metadata, the raw body."""

    event: CloudEvent
    transport: dict[str, str]
    raw: bytes


class Harness(Protocol):
    """A publisher and a subscriber on one destination."""

    name: str
    drops_repeats: bool
    """True when the destination itself drops a republished event (Service Bus duplicate detection)."""
    bound_seconds: float
    """How long a publish may take at most when the destination is down."""

    @property
    def publisher(self) -> EventPublisher:
        """The adapter under test."""
        ...

    async def collect(self, count: int, seconds: float = 20) -> list[Delivered]:
        """What arrived so far, waiting until at least ``count`` deliveries or ``seconds``."""
        ...

    def outage(self) -> contextlib.AbstractAsyncContextManager[None]:
        """The destination is unavailable inside the block."""
        ...

    def secrets(self) -> list[str]:
        """Credentials the publisher used (none may appear in what subscribers get)."""
        ...


def facts(execution: str = "executions/e-1", sequence: int = 1, **overrides: Any) -> ExecutionEventFacts:
    """A well-formed execution event."""
    values: dict[str, Any] = {
        "name": f"{execution}/events/{sequence}",
        "type": "STATE_CHANGED" if sequence > 1 else "CREATED",
        "time": datetime(2026, 11, 21, 6, 1, 24, 123456, tzinfo=UTC) + timedelta(seconds=sequence),
        "execution": execution,
        "sequence": sequence,
        "state": "QUEUED" if sequence == 1 else "RUNNING",
        "attempt": 1,
        "extension": "extensions/echo",
        "version": "1.0.0",
        "profile": "async",
        "execution_model": "http-json/async/v1",
        "priority": "NORMAL",
        "tenant": "t-1",
        "user": "u-1",
        "labels": {"team": "blue"},
        "create_time": datetime(2026, 11, 21, 6, 1, 24, tzinfo=UTC),
        "update_time": datetime(2026, 11, 21, 6, 1, 25, tzinfo=UTC),
    }
    values.update(overrides)
    return ExecutionEventFacts(**values)


def event(execution: str = "executions/e-1", sequence: int = 1, **overrides: Any) -> CloudEvent:
    """The CloudEvent of :func:`facts`."""
    return to_cloudevent(facts(execution, sequence, **overrides), source=SOURCE)


# -- webhook ---------------------------------------------------------------------------------------------------


@dataclass
class WebhookSink:
    """A real HTTP receiver: answers 204, or what ``script`` says next, or 503 while ``down``."""

    url: str = ""
    requests: list[tuple[str, dict[str, str], bytes, int]] = field(default_factory=list)
    script: list[int] = field(default_factory=list)
    delay_seconds: float = 0.0
    down: bool = False
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        status = 503 if self.down else (self.script.pop(0) if self.script else 204)
        self.requests.append((request.path, {k.lower(): v for k, v in request.headers.items()}, body, status))
        self.arrived.set()
        if self.delay_seconds:
            await asyncio.sleep(self.delay_seconds)
        if 300 <= status < 400:
            return web.Response(status=status, headers={"location": "/elsewhere"})
        return web.Response(status=status)

    def accepted(self) -> list[Delivered]:
        """The requests answered 2xx, parsed."""
        return [
            Delivered(from_http(HTTPMessage(headers, body)), headers, body)  # type: ignore[arg-type]
            for _, headers, body, status in self.requests
            if 200 <= status < 300
        ]


@contextlib.asynccontextmanager
async def webhook_sink() -> AsyncIterator[WebhookSink]:
    """A :class:`WebhookSink` listening on 127.0.0.1 (paths ``/hook`` and ``/elsewhere``)."""
    sink = WebhookSink()
    app = web.Application()
    app.router.add_post("/hook", sink.handle)
    app.router.add_post("/elsewhere", sink.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sink.url = f"http://127.0.0.1:{port}/hook"
    try:
        yield sink
    finally:
        await runner.cleanup()


class WebhookHarness:
    """The webhook adapter posting to one :class:`WebhookSink`."""

    name = "webhook"
    drops_repeats = False
    bound_seconds = WEBHOOK_ATTEMPTS * WEBHOOK_TIMEOUT + 2.0

    def __init__(self, sink: WebhookSink, publisher: WebhookEventPublisher) -> None:
        self.sink = sink
        self.publisher = publisher

    async def collect(self, count: int, seconds: float = 20) -> list[Delivered]:
        deadline = time.monotonic() + seconds
        while len(self.sink.accepted()) < count and time.monotonic() < deadline:
            self.sink.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.sink.arrived.wait(), max(deadline - time.monotonic(), 0.01))
        return self.sink.accepted()

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        self.sink.down = True
        try:
            yield
        finally:
            self.sink.down = False

    def secrets(self) -> list[str]:
        return []


# -- Service Bus -----------------------------------------------------------------------------------------------


@dataclass
class Broker:
    """The session's test broker and a TLS context trusting its certificate."""

    process: BrokerProcess
    tls: ssl.SSLContext


@pytest.fixture(scope="session")
def events_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A Service Bus test broker for this suite (started on first use)."""
    root: Path = tmp_path_factory.mktemp("servicebus-events")
    certs = load_or_create(root)
    process = BrokerProcess.start(root)
    try:
        yield Broker(process, ssl.create_default_context(cafile=str(certs.ca_cert)))
    finally:
        process.stop()


class RecordingCredential(BrokerTokenCredential):
    """Remembers the tokens it handed out (to prove none leaks into a message)."""

    def __init__(self) -> None:
        super().__init__()
        self.tokens: list[str] = []

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:
        token = await super().get_token(*scopes, **kwargs)
        self.tokens.append(token.token)
        return token


class ServiceBusHarness:
    """The Service Bus adapter and an SDK receiver on ``execution-events/all`` that completes what it gets."""

    name = "servicebus"
    # As deployed (terraform/modules/servicebus), execution-events drops a repeated message id (= event id).
    drops_repeats = True
    bound_seconds = SERVICEBUS_TIMEOUT + 3.0

    def __init__(
        self,
        broker: Broker,
        publisher: ServiceBusEventPublisher,
        credential: RecordingCredential,
        client: ServiceBusClient,
    ) -> None:
        self.broker = broker
        self.publisher = publisher
        self.credential = credential
        self._client = client
        self._received: list[Delivered] = []
        self._arrived = asyncio.Event()
        self._receiver: ServiceBusReceiver | None = None
        self._stopping = False
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that races with
        # the result, and this loop would then never stop.
        while not self._stopping:
            try:
                if self._receiver is None:
                    self._receiver = self._client.get_subscription_receiver("execution-events", "all")
                    async with asyncio.timeout(10):
                        await self._receiver.__aenter__()
                async with asyncio.timeout(10):
                    batch = await self._receiver.receive_messages(max_message_count=50, max_wait_time=1)
                for message in batch:
                    async with asyncio.timeout(10):
                        await self._receiver.complete_message(message)
                    self._received.append(_delivered(message))
                    self._arrived.set()
            except asyncio.CancelledError:
                raise
            except Exception:  # the broker is frozen or gone for a moment: start over with a new link
                receiver, self._receiver = self._receiver, None
                if receiver is not None:
                    await close_handlers([receiver])
                await asyncio.sleep(0.2)

    async def collect(self, count: int, seconds: float = 20) -> list[Delivered]:
        deadline = time.monotonic() + seconds
        while len(self._received) < count and time.monotonic() < deadline:
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), max(deadline - time.monotonic(), 0.01))
        return list(self._received)

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        self.broker.process.pause()
        try:
            yield
        finally:
            self.broker.process.resume()

    def secrets(self) -> list[str]:
        return list(self.credential.tokens)

    async def close(self) -> None:
        self._stopping = True
        self._task.cancel()
        await asyncio.wait({self._task}, timeout=15)
        await close_handlers([h for h in (self._receiver, self._client) if h is not None])


def _delivered(message: ServiceBusReceivedMessage) -> Delivered:
    body = b"".join(bytes(part) for part in message.body)
    content_type = str(message.content_type or "")
    parsed = from_amqp(AMQPMessage({"content-type": content_type}, {}, body))
    transport = {
        (k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
        for k, v in (message.application_properties or {}).items()
    }
    transport["content-type"] = content_type
    transport["message-id"] = str(message.message_id)
    transport["subject"] = str(message.subject)
    return Delivered(parsed, transport, body)


# -- fixtures --------------------------------------------------------------------------------------------------


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    """The adapter under test."""
    return str(request.param)


@pytest.fixture
async def harness(adapter: str, request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """A fresh destination with its publisher and subscriber."""
    if adapter == "webhook":
        async with webhook_sink() as sink:
            publisher = await WebhookEventPublisher.open(
                [sink.url],
                request_timeout=WEBHOOK_TIMEOUT,
                max_attempts=WEBHOOK_ATTEMPTS,
                backoff_seconds=0.05,
                max_backoff_seconds=0.2,
            )
            try:
                yield WebhookHarness(sink, publisher)
            finally:
                await publisher.close()
        return
    broker: Broker = request.getfixturevalue("events_broker")
    namespace = f"ev-{uuid.uuid4().hex[:16]}.servicebus.test"
    credential = RecordingCredential()
    sb_publisher = await ServiceBusEventPublisher.open(
        namespace,
        credential,
        endpoint=broker.process.endpoint,
        ssl_context=broker.tls,
        operation_timeout=SERVICEBUS_TIMEOUT,
    )
    client = await open_client(
        namespace, BrokerTokenCredential(), endpoint=broker.process.endpoint, ssl_context=broker.tls
    )
    found = ServiceBusHarness(broker, sb_publisher, credential, client)
    try:
        yield found
    finally:
        await found.close()
        await sb_publisher.close()
