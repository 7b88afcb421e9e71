"""Wires the execution service: store, signing keys, object server, catalog and agent clients, gRPC server."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING

import grpc
from aiohttp import web

from exthub.execution.v1 import (
    agent_task_service_pb2,
    agent_task_service_pb2_grpc,
    execution_service_pb2,
    execution_service_pb2_grpc,
)
from services.execution.adapters.agent import SERVICE_USER, GrpcAgentClient
from services.execution.adapters.catalog import GrpcCatalogClient
from services.execution.adapters.documents import COLLECTION
from services.execution.agent_servicer import AgentTaskServicer
from services.execution.dispatch import Dispatcher
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.ports import AgentPort, CatalogPort
from services.execution.http import create_http_app
from services.execution.instances import InstanceKeeper
from services.execution.observability import ExecutionMetrics, watch_queue
from services.execution.outbox import OutboxRelay
from services.execution.repository import ExecutionRepository, InstanceRegistry
from services.execution.servicer import ExecutionServicer
from services.execution.signing import SigningKeyRing
from services.execution.store import DATABASE_FILE
from services.execution.sweeper import Sweeper
from services.objects.local import LocalObjectProvider
from services.platform.auth.access import access_rules_from_descriptors
from services.platform.auth.verifier import TokenVerifier
from services.platform.backends import Backends
from services.platform.docstore.port import DocumentStore
from services.platform.metrics import ServiceMetrics, add_metrics_route
from services.platform.paging import PageTokenCodec
from services.platform.server import RunningServer, start_grpc_server
from services.platform.settings import Settings
from services.platform.workqueue.port import WorkQueue

if TYPE_CHECKING:
    from services.execution.adapters.events import CloudEventPublisher

SERVICE = execution_service_pb2.DESCRIPTOR.services_by_name["ExecutionService"]
AGENT_TASK_SERVICE = agent_task_service_pb2.DESCRIPTOR.services_by_name["AgentTaskService"]
SIGNING_DIR = "signing"
LOCAL_HUB_ID = "exthub-local"


@dataclass
class ExecutionApp:
    """A running execution service and the backends it opened (see :mod:`services.platform.backends`)."""

    server: RunningServer
    store: DocumentStore
    http_runner: web.AppRunner
    http_url: str
    context: ExecutionContext
    backends: Backends
    closers: list[GrpcCatalogClient | GrpcAgentClient] = field(default_factory=list)
    queue: WorkQueue | None = None
    relay: OutboxRelay | None = None
    sweeper: Sweeper | None = None
    sweeper_task: asyncio.Task[None] | None = None
    keeper: InstanceKeeper | None = None
    keeper_task: asyncio.Task[None] | None = None
    _closed: bool = False

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC server."""
        return self.server.address

    @property
    def objects_url(self) -> str:
        """Base URL of the HTTP server (objects, status callbacks, JWKS)."""
        return self.http_url

    async def stop(self, grace: float | None = None) -> None:
        """Drain gRPC, stop HTTP, finish background runs, close clients and the backends (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self.sweeper is not None and self.sweeper_task is not None:
            self.sweeper.stop()
            self.sweeper_task.cancel()
            await asyncio.gather(self.sweeper_task, return_exceptions=True)
        if self.keeper is not None and self.keeper_task is not None:
            self.keeper.stop()
            self.keeper_task.cancel()
            await asyncio.gather(self.keeper_task, return_exceptions=True)
        await self.server.stop(grace)
        await self.http_runner.cleanup()
        pending = list(self.context.background)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self.keeper is not None:
            await self.keeper.release()  # the calls cut short above are ended by the next instance's first pass
        for client in self.closers:
            await client.close()
        if self.relay is not None:
            await self.relay.close()
        await self.backends.close()


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


async def start_execution(
    settings: Settings,
    *,
    port: int | None = None,
    catalog: CatalogPort | None = None,
    agent: AgentPort | None = None,
    environ: Mapping[str, str] | None = None,
) -> ExecutionApp:
    """Open the backends and serve gRPC on ``port`` (default: the settings') and HTTP on ``objects_port``.

    The backends are ``settings.backend``'s (:mod:`services.platform.backends`; ``environ`` holds the Azure
    identity's standard variables when not ``os.environ``). Asynchronous executions: the outbox relay stores
    events, publishes them (when a publisher is configured) and publishes QUEUED attempts to the work queue; the
    sweeper runs every ``execution_sweep_seconds`` (timeouts, unacknowledged cancels, what outboxes still hold).
    The process registers as an instance before it serves and ends the synchronous calls that gone instances
    (e.g. its own previous process) left RUNNING (:mod:`services.execution.instances`).
    """
    await asyncio.to_thread(settings.data_dir.mkdir, parents=True, exist_ok=True)
    page_key = await asyncio.to_thread(settings.page_token_key)
    signing = await asyncio.to_thread(
        SigningKeyRing.load_or_create, settings.data_dir / SIGNING_DIR, hub_id=settings.public_url or LOCAL_HUB_ID
    )
    sock = _bind(settings.host, settings.objects_port)
    http_url = _url(settings.host, sock.getsockname()[1])
    closers: list[GrpcCatalogClient | GrpcAgentClient] = []
    backends = await Backends.open(settings, environ=environ)
    runner: web.AppRunner | None = None
    try:
        store = await backends.document_store(sqlite_file=DATABASE_FILE)
        queue = await backends.work_queue()
        provider = await backends.object_provider(public_base_url=settings.public_url or http_url)
        publisher = await backends.event_publisher()
        tokens = await backends.service_tokens(user=SERVICE_USER)
        if catalog is None:
            catalog_address = settings.catalog_address or settings.grpc_address(settings.catalog_port)
            catalog_client = GrpcCatalogClient(
                catalog_address,
                tokens,
                version_cache_seconds=settings.execution_version_cache_seconds,
                latest_cache_seconds=settings.execution_latest_cache_seconds,
            )
            closers.append(catalog_client)
            catalog = catalog_client
        if agent is None:
            agent_client = GrpcAgentClient(
                settings.agent_address or settings.grpc_address(settings.agent_port), tokens, signing=signing
            )
            closers.append(agent_client)
            agent = agent_client
        ctx = ExecutionContext(
            repository=ExecutionRepository(store.collection(COLLECTION), keep_final_events=publisher is None),
            catalog=catalog,
            agent=agent,
            objects=provider,
            signing=signing,
            page_tokens=PageTokenCodec(page_key),
            callback_base_url=settings.public_url or http_url,
            queue=queue,
            input_timeout=timedelta(seconds=settings.execution_input_timeout_seconds),
            cancel_grace=timedelta(seconds=settings.execution_cancel_grace_seconds),
        )
        events: CloudEventPublisher | None = None
        if publisher is not None:  # loads the CloudEvents SDK only where events are published
            from services.execution.adapters.events import CloudEventPublisher

            events = CloudEventPublisher(publisher, source=settings.events.source or settings.public_url or http_url)
        metrics = ServiceMetrics("execution")
        execution_metrics = ExecutionMetrics(metrics.registry)
        watch_queue(metrics, queue)  # the queue gauges, when the queue offers stats (not on Service Bus)
        relay = OutboxRelay(ctx.repository, dispatcher=Dispatcher(queue), publisher=events, metrics=execution_metrics)
        ctx.repository.add_listener(relay.notice)
        sweeper = Sweeper(ctx, relay, interval_seconds=settings.execution_sweep_seconds, metrics=execution_metrics)
        keeper = InstanceKeeper(ctx, InstanceRegistry(ctx.repository.collection))
        await keeper.register()
        local_objects = provider if isinstance(provider, LocalObjectProvider) else None
        http_app = create_http_app(ctx, local_objects)
        add_metrics_route(http_app, metrics)
        runner = web.AppRunner(http_app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()

        def register(server: grpc.aio.Server) -> Sequence[str]:
            execution_service_pb2_grpc.add_ExecutionServiceServicer_to_server(ExecutionServicer(ctx), server)
            agent_task_service_pb2_grpc.add_AgentTaskServiceServicer_to_server(AgentTaskServicer(ctx), server)
            return [SERVICE.full_name, AGENT_TASK_SERVICE.full_name]

        server = await start_grpc_server(
            name="execution",
            settings=settings,
            port=settings.execution_port if port is None else port,
            register=register,
            verifier=TokenVerifier(settings.auth),
            access_rules=access_rules_from_descriptors([SERVICE, AGENT_TASK_SERVICE]),
            metrics=metrics,
        )
    except BaseException:
        if runner is not None:
            await runner.cleanup()
        with contextlib.suppress(OSError):
            sock.close()
        for client in closers:
            await client.close()
        await backends.close()
        raise
    loop = asyncio.get_running_loop()
    sweeper_task = loop.create_task(sweeper.run())
    keeper_task = loop.create_task(keeper.run())
    return ExecutionApp(
        server=server,
        store=store,
        http_runner=runner,
        http_url=http_url,
        context=ctx,
        backends=backends,
        closers=closers,
        queue=queue,
        relay=relay,
        sweeper=sweeper,
        sweeper_task=sweeper_task,
        keeper=keeper,
        keeper_task=keeper_task,
    )
