"""gRPC server bootstrap: health, reflection, interceptors, runtime options, graceful drain."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.platform import telemetry
from services.platform.auth.access import AccessRule
from services.platform.auth.verifier import TokenVerifier
from services.platform.interceptors import HubServerInterceptor
from services.platform.limits import MAX_MESSAGE_BYTES, MAX_METADATA_BYTES
from services.platform.logging import get_logger
from services.platform.metrics import ServiceMetrics
from services.platform.settings import Settings

__all__ = ["MAX_MESSAGE_BYTES", "SERVER_OPTIONS", "RunningServer", "serve_until_signalled", "start_grpc_server"]

_log = get_logger("exthub.server")

SERVER_OPTIONS: tuple[tuple[str, int], ...] = (
    ("grpc.so_reuseport", 0),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    # one metadata limit, soft = hard: above the soft limit grpc-core refuses calls at random (as
    # RESOURCE_EXHAUSTED, naming header sizes); the gateway's header limit is below it (services.platform.limits)
    ("grpc.max_metadata_size", MAX_METADATA_BYTES),
    ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
    # accept the clients' keepalive cadence (30 s) without GOAWAY "too_many_pings"
    ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    # rebalance long-lived connections behind Envoy / Kubernetes
    ("grpc.max_connection_age_ms", 300_000),
    ("grpc.max_connection_age_grace_ms", 30_000),
)
HEALTH_SERVICE = "grpc.health.v1.Health"


@dataclass
class RunningServer:
    """A started server: where it listens, its health servicer, and a graceful :meth:`stop`."""

    name: str
    server: grpc.aio.Server
    health: HealthServicer
    host: str
    port: int
    service_names: tuple[str, ...]
    metrics: ServiceMetrics
    _stopped: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def address(self) -> str:
        """``host:port`` to dial (IPv6 hosts in brackets)."""
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    async def stop(self, grace: float | None) -> None:
        """Report NOT_SERVING for every service, then drain in-flight calls for up to ``grace`` seconds."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        _log.info("grpc server draining", server=self.name, grace_seconds=grace)
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(0)  # let Watch streams send NOT_SERVING before the server stops accepting
        await self.server.stop(grace)
        _log.info("grpc server stopped", server=self.name)

    async def wait_for_termination(self) -> None:
        """Wait until the server has terminated."""
        await self.server.wait_for_termination()


async def start_grpc_server(
    *,
    name: str,
    settings: Settings,
    port: int,
    register: Callable[[grpc.aio.Server], Sequence[str]],
    verifier: TokenVerifier,
    access_rules: Mapping[str, AccessRule],
    reflect_also: Sequence[str] = (),
    metrics: ServiceMetrics | None = None,
) -> RunningServer:
    """Build, bind (``settings.host:port``, 0 → OS chooses) and start a server for one service.

    ``register`` adds the service's servicers and returns their full names; health (all SERVING),
    reflection and the :class:`HubServerInterceptor` are added here. ``reflect_also`` names services that
    reflection describes although another server implements them: the gateway sends reflection to one
    service, and a client of the gateway's port should discover the whole public API there.
    ``metrics`` (default: a new registry for ``name``) records every call (``RunningServer.metrics``); when
    tracing is on, every call but health and reflection has a server span.
    """
    metrics = metrics if metrics is not None else ServiceMetrics(name)
    observer = metrics.rpc_observer(())
    streaming: set[str] = set()
    traced_outer, traced_inner = telemetry.server_interceptors(streaming)
    server = grpc.aio.server(
        interceptors=[*traced_outer, observer, HubServerInterceptor(verifier, access_rules), *traced_inner],
        options=list(SERVER_OPTIONS),
    )
    service_names = tuple(register(server))
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    for service in ("", *service_names):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        (*service_names, *reflect_also, HEALTH_SERVICE, reflection.SERVICE_NAME), server
    )
    methods, server_streaming = _methods((*service_names, HEALTH_SERVICE, reflection.SERVICE_NAME))
    observer.know(methods)
    streaming.update(server_streaming)

    address = settings.grpc_address(port)
    bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"cannot bind gRPC server {name} to {address}")
    await server.start()
    running = RunningServer(
        name=name,
        server=server,
        health=health,
        host=settings.host,
        port=bound,
        service_names=service_names,
        metrics=metrics,
    )
    _log.info("grpc server started", server=name, address=running.address, services=list(service_names))
    return running


def _methods(service_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Every ``/pkg.Service/Method`` of the services, and those whose responses stream."""
    pool = descriptor_pool.Default()
    methods: list[str] = []
    streaming: list[str] = []
    for service_name in service_names:
        try:
            service = pool.FindServiceByName(service_name)
        except KeyError:
            continue
        for method in service.methods:
            path = f"/{service.full_name}/{method.name}"
            methods.append(path)
            if method.server_streaming:
                streaming.append(path)
    return methods, streaming


async def serve_until_signalled(running: RunningServer, grace: float) -> None:
    """Serve until SIGTERM or SIGINT, then go NOT_SERVING, drain for ``grace`` seconds and return."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        terminated = asyncio.ensure_future(running.wait_for_termination())
        signalled = asyncio.ensure_future(stop.wait())
        await asyncio.wait({terminated, signalled}, return_when=asyncio.FIRST_COMPLETED)
        signalled.cancel()
        if stop.is_set():
            await running.stop(grace)
        terminated.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await terminated
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
