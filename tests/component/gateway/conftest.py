"""The real Envoy (rendered ``local`` config) in front of the real catalog, the real object app and an execution.

Upstreams are fixtures, so adding a real service is a fixture change: ``execution_address`` is a recording fake
ExecutionService (it captures what reaches it: metadata such as ``x-exthub-tenant``) until the execution
service exists; swap that one fixture for ``start_execution(...)`` to put the real service behind the gateway.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from multidict import CIMultiDict

from exthub.execution.v1 import execution_pb2, execution_service_pb2
from gateway.envoy import RunningEnvoy, start_envoy
from gateway.render import render_config
from services.catalog.app import CatalogApp, start_catalog
from services.objects.http import create_object_app
from services.objects.local import LocalObjectProvider
from services.platform.auth.dev_issuer import DevIssuer
from services.platform.settings import Settings

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
EXECUTION_SERVICE = "exthub.execution.v1.ExecutionService"
OBJECTS_PLACEHOLDER_BASE = "http://gateway.invalid"
Headers = dict[str, str]
Bearer = Callable[..., Headers]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    return Settings.local_defaults(data_dir, catalog_port=0, log_format="console")


@pytest.fixture
async def catalog(settings: Settings) -> AsyncIterator[CatalogApp]:
    app = await start_catalog(settings, port=0)
    try:
        yield app
    finally:
        await app.stop(0)


@pytest.fixture
def issuer(data_dir: Path) -> DevIssuer:
    return DevIssuer.load_or_create(data_dir)


@pytest.fixture
def bearer(issuer: DevIssuer) -> Bearer:
    """``bearer(roles=[...], tenant=..., user=...)`` → request headers with a development token."""

    def make(*, roles: tuple[str, ...] = (), tenant: str = "tenant-a", user: str = "user-1", **kw: Any) -> Headers:
        return {"authorization": f"Bearer {issuer.issue(tenant=tenant, user=user, roles=list(roles), **kw)}"}

    return make


@dataclass
class RecordingExecution:
    """A stand-in ExecutionService that records every call's method and metadata and answers a few RPCs."""

    address: str = ""
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def metadata(self, method: str) -> list[dict[str, str]]:
        return [md for name, md in self.calls if name == method]


_FAKE_RESPONSES: Mapping[str, tuple[type[Any], Callable[[Any], Any]]] = {
    "GetSigningKeys": (
        execution_service_pb2.GetSigningKeysRequest,
        lambda _: execution_service_pb2.GetSigningKeysResponse(),
    ),
    "ReportExecutionStatus": (
        execution_service_pb2.ReportExecutionStatusRequest,
        lambda request: execution_pb2.Execution(name=request.name),
    ),
    "GetExecution": (execution_service_pb2.GetExecutionRequest, lambda r: execution_pb2.Execution(name=r.name)),
    "ClaimExecution": (
        execution_service_pb2.ClaimExecutionRequest,
        lambda _: execution_service_pb2.ClaimExecutionResponse(),
    ),
}


Event = execution_pb2.ExecutionEvent
State = execution_pb2.Execution.State
WATCH_EVENTS = (
    Event(sequence=1, type=Event.CREATED, state=State.Value("QUEUED")),
    Event(sequence=2, type=Event.STATE_CHANGED, state=State.Value("RUNNING")),
    Event(sequence=3, type=Event.PROGRESS, state=State.Value("RUNNING"), percent_complete=50),
    Event(sequence=4, type=Event.STATE_CHANGED, state=State.Value("SUCCEEDED"), percent_complete=100),
)


def _fields(event: execution_pb2.ExecutionEvent) -> dict[str, Any]:
    return {f.name: v for f, v in event.ListFields()}


@pytest.fixture
async def recording_execution() -> AsyncIterator[RecordingExecution]:
    recorder = RecordingExecution()

    def handler(method: str, request_type: type[Any], answer: Callable[[Any], Any]) -> grpc.RpcMethodHandler[Any, Any]:
        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            recorder.calls.append((method, {k: str(v) for k, v in context.invocation_metadata() or ()}))
            return answer(request)

        return grpc.unary_unary_rpc_method_handler(
            call, request_deserializer=request_type.FromString, response_serializer=lambda m: m.SerializeToString()
        )

    async def watch(
        request: execution_service_pb2.WatchExecutionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[execution_pb2.ExecutionEvent]:
        recorder.calls.append(("WatchExecution", {k: str(v) for k, v in context.invocation_metadata() or ()}))
        for event in WATCH_EVENTS:
            yield execution_pb2.ExecutionEvent(name=f"{request.name}/events/{event.sequence}", **_fields(event))

    handlers = {name: handler(name, t, a) for name, (t, a) in _FAKE_RESPONSES.items()}
    handlers["WatchExecution"] = grpc.unary_stream_rpc_method_handler(
        watch,
        request_deserializer=execution_service_pb2.WatchExecutionRequest.FromString,
        response_serializer=lambda m: m.SerializeToString(),
    )
    server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(EXECUTION_SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    recorder.address = f"127.0.0.1:{port}"
    try:
        yield recorder
    finally:
        await server.stop(0)


@pytest.fixture
def execution_address(recording_execution: RecordingExecution) -> str:
    """The ExecutionService behind the gateway (the one fixture to change for the real execution service)."""
    return recording_execution.address


@dataclass
class Objects:
    """The real ``local/v1`` object app; accessor URLs are rebased on the gateway by :meth:`through`."""

    provider: LocalObjectProvider
    address: str

    @staticmethod
    def through(gateway: RunningEnvoy, uri: str) -> str:
        assert uri.startswith(OBJECTS_PLACEHOLDER_BASE)
        return gateway.url + uri[len(OBJECTS_PLACEHOLDER_BASE) :]


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[Objects]:
    provider = await LocalObjectProvider.open(tmp_path / "objects-data", OBJECTS_PLACEHOLDER_BASE)
    runner = web.AppRunner(create_object_app(provider))
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    site = web.SockSite(runner, sock)
    await site.start()
    try:
        yield Objects(provider, f"127.0.0.1:{sock.getsockname()[1]}")
    finally:
        await runner.cleanup()


@pytest.fixture
def gateway_config(
    data_dir: Path, issuer: DevIssuer, catalog: CatalogApp, execution_address: str, objects: Objects
) -> dict[str, Any]:
    return render_config(
        "local",
        data_dir=data_dir,
        listen_port=0,
        admin_port=0,
        catalog_address=catalog.address,
        execution_address=execution_address,
        objects_address=objects.address,
        access_log=False,
    )


@pytest.fixture
async def gateway(gateway_config: dict[str, Any], tmp_path: Path) -> AsyncIterator[RunningEnvoy]:
    envoy = await start_envoy(gateway_config, tmp_path / "envoy")
    try:
        yield envoy
    finally:
        await envoy.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as session:
        yield session


@dataclass
class Reply:
    status: int
    body: Any
    headers: Mapping[str, str]

    @property
    def error_info(self) -> dict[str, Any]:
        """The ErrorInfo detail of a google.rpc.Status body."""
        infos = [d for d in self.body.get("details", []) if d.get("@type", "").endswith("google.rpc.ErrorInfo")]
        assert len(infos) == 1, self.body
        info: dict[str, Any] = infos[0]
        assert info["domain"] == "exthub.io"
        return info

    @property
    def reason(self) -> str:
        return str(self.error_info["reason"])


async def call(
    http: aiohttp.ClientSession,
    gateway: RunningEnvoy,
    method: str,
    path: str,
    *,
    headers: Mapping[str, str] | None = None,
    json_body: Any = None,
    params: Mapping[str, str] | None = None,
) -> Reply:
    """One REST call through the gateway; the body is parsed as JSON (every answer must be JSON)."""
    async with http.request(
        method, gateway.url + path, headers=dict(headers or {}), json=json_body, params=params
    ) as response:
        text = await response.text()
        assert response.headers.get("content-type", "").startswith("application/json"), (response.status, text)
        return Reply(response.status, json.loads(text) if text else None, CIMultiDict(response.headers))


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
