"""Wires the agent: its identity, one shared HTTP client session, adapters, extension services, gRPC server,
and (``agent_worker``) the queue worker that runs asynchronous executions, on the configured backend
(:mod:`services.platform.backends`: the SQLite queue file or Service Bus; development or Entra ID tokens)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
import grpc

from exthub.agent.v1 import agent_service_pb2, agent_service_pb2_grpc
from exthub.type.v1 import types_pb2
from services.agent.adapters import AdapterRegistry, BodySigner, default_adapters
from services.agent.execution_client import ExecutionServiceClient
from services.agent.extension_services import ExtensionServiceRegistry, default_extension_services
from services.agent.identity import agent_id, agent_version
from services.agent.servicer import AgentServicer
from services.agent.worker import QueueWorker, WorkerConfig
from services.platform.auth.access import access_rules_from_descriptors
from services.platform.auth.verifier import TokenVerifier
from services.platform.backends import Backends
from services.platform.logging import get_logger
from services.platform.server import RunningServer, start_grpc_server
from services.platform.settings import Settings

__all__ = ["SERVICE", "AdapterFactory", "AgentApp", "start_agent"]

SERVICE = agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"]

AdapterFactory = Callable[[aiohttp.ClientSession, ExtensionServiceRegistry], AdapterRegistry]

_log = get_logger("exthub.agent")


@dataclass
class AgentApp:
    """A running agent and the resources it owns."""

    server: RunningServer
    session: aiohttp.ClientSession
    servicer: AgentServicer
    agent_id: str
    adapters: AdapterRegistry
    services: ExtensionServiceRegistry
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    worker: QueueWorker | None = None
    shutdown_grace: float = 10.0
    _closed: bool = False

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC server."""
        return self.server.address

    async def stop(self, grace: float | None = None) -> None:
        """Drains the server (in-flight attempts get up to ``grace`` seconds), then closes the HTTP session."""
        if self._closed:
            return
        self._closed = True
        try:
            if self.worker is not None:
                await self.worker.stop(self.shutdown_grace if grace is None else grace)
            await self.server.stop(grace)
        finally:
            for close in self.closers:
                await close()
            await self.session.close()


async def start_agent(
    settings: Settings,
    *,
    port: int | None = None,
    signer: BodySigner | None = None,
    sign: bool = True,
    services: ExtensionServiceRegistry | None = None,
    adapters: AdapterFactory | None = None,
    worker: bool | None = None,
    environ: Mapping[str, str] | None = None,
) -> AgentApp:
    """Start serving ``AgentService`` on ``port`` (default: ``settings.agent_port``; 0 → the OS chooses).

    ``signer`` signs the request bodies (see :mod:`services.agent.adapters.signing`). Default:
    ``AgentTaskService.SignExtensionRequest`` at ``settings.execution_address`` (or ``host:execution_port``) with
    the agent's service tokens (the development issuer's, or Entra ID's for the service scope on Azure; ``environ``
    holds the Azure identity's variables when not ``os.environ``). ``sign=False`` sends unsigned requests (tests
    only).
    ``services`` defaults to ``config/v1`` and ``greeting/v1``; ``adapters`` builds the adapter registry from
    the shared session (default: the http-json adapter for both http-json models).
    ``worker`` runs the queue worker (asynchronous executions, :mod:`services.agent.worker`) on the backend's work
    queue; default ``settings.agent_worker``.
    """
    await asyncio.to_thread(settings.data_dir.mkdir, parents=True, exist_ok=True)
    the_id = await asyncio.to_thread(agent_id, settings)
    version = agent_version()
    service_registry = services if services is not None else default_extension_services()
    closers: list[Callable[[], Awaitable[None]]] = []
    run_worker = settings.agent_worker if worker is None else worker
    client: ExecutionServiceClient | None = None
    backends = await Backends.open(settings, environ=environ)
    if run_worker or (signer is None and sign and adapters is None):
        try:
            tokens = await backends.service_tokens(user=the_id)
        except BaseException:
            await backends.close()
            raise
        client = ExecutionServiceClient(
            settings.execution_address or settings.grpc_address(settings.execution_port), tokens
        )
        closers.append(client.close)
        if signer is None and sign and adapters is None:
            signer = client
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.agent_max_in_flight, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None),  # each call is bounded by the adapter (asyncio.timeout)
        raise_for_status=False,
        trust_env=False,
    )
    try:
        if adapters is not None:
            registry = adapters(session, service_registry)
        else:
            registry = default_adapters(
                session,
                services=service_registry,
                signer=signer,
                sign=sign,
                user_agent=f"exthub-agent/{version}",
                egress=settings.egress.policy(),
            )
        servicer = AgentServicer(
            registry,
            agent_id=the_id,
            version=version,
            priorities=[types_pb2.Priority.Value(name) for name in settings.agent_priorities],
            max_in_flight=settings.agent_max_in_flight,
        )

        def register(server: grpc.aio.Server) -> Sequence[str]:
            agent_service_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)
            return [SERVICE.full_name]

        server = await start_grpc_server(
            name="agent",
            settings=settings,
            port=settings.agent_port if port is None else port,
            register=register,
            verifier=TokenVerifier(settings.auth),
            access_rules=access_rules_from_descriptors([SERVICE]),
        )
        queue_worker: QueueWorker | None = None
        if run_worker and client is not None:
            queue = await backends.work_queue(priorities=settings.agent_priorities)
            queue_worker = QueueWorker(
                queue,
                client,
                registry,
                WorkerConfig(
                    agent_id=the_id,
                    slots=settings.agent_worker_slots,
                    lease_seconds=settings.agent_lease_seconds,
                    heartbeat_seconds=settings.agent_heartbeat_seconds,
                    receive_wait_seconds=settings.agent_receive_wait_seconds,
                    poll_seconds=settings.queue_poll_seconds,
                    priorities=settings.agent_priorities,
                ),
            )
            queue_worker.start()
    except BaseException:
        for close in closers:
            await close()
        await backends.close()
        await session.close()
        raise
    closers.append(backends.close)  # last: the queue and the credential outlive the clients that use them
    if signer is None and sign and adapters is None:
        _log.warning("no request signer for this backend: every attempt will fail with REQUEST_NOT_SIGNED")
    _log.info(
        "agent started",
        agent_id=the_id,
        version=version,
        models=list(registry.models),
        worker=queue_worker is not None,
        backend=settings.backend,
    )
    return AgentApp(
        server=server,
        session=session,
        servicer=servicer,
        agent_id=the_id,
        adapters=registry,
        services=service_registry,
        closers=closers,
        worker=queue_worker,
        shutdown_grace=settings.shutdown_grace_seconds,
    )
