"""The real Envoy (rendered ``local`` config) in front of the real hub: catalog, execution (gRPC and its HTTP
port for ``/objects/v1/``), agent and the echo extension, all from ``tests.support.hub.running_hub``.

No service is faked. To prove what reached a service (or that nothing did), :class:`ServiceCalls` records every
RPC that arrives at any of the hub's gRPC servers: the test swaps the servers' edge interceptor for a subclass
that notes the method and metadata, then hands the call to the real interceptor (token check, access rules) and
the real servicer.

The execution service builds accessor and ``statusUrl`` URLs from its public URL, which must be the gateway's, so
the gateway's port is chosen first and held (``SO_REUSEPORT``, never listening) until Envoy has bound it too.
"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2
from multidict import CIMultiDict
from yarl import URL

from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.errors import ERROR_DOMAIN, error_info, field_violations
from gateway.envoy import RunningEnvoy, start_envoy
from gateway.render import render_config
from services.catalog.app import CatalogApp
from services.platform import server as platform_server
from services.platform.interceptors import HubServerInterceptor
from tests.support.azure_hub import AzureHubProfile
from tests.support.hub import Hub, running_hub
from tools.emulators.stack import API, TENANT_ID

HTTP_TIMEOUT = aiohttp.ClientTimeout(total=10)
Headers = dict[str, str]
Bearer = Callable[..., Headers]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def issuer(data_dir: Path) -> DevIssuer:
    return DevIssuer.load_or_create(data_dir)


@pytest.fixture
def hub_profile() -> AzureHubProfile | None:
    """The embedded profile; a test module that drives executions imports ``tests.support.profiles.hub_profile``
    to run on the Azure profile too."""
    return None


@pytest.fixture
def bearer(issuer: DevIssuer, hub_profile: AzureHubProfile | None) -> Bearer:
    """``bearer(roles=[...], tenant=..., user=...)`` → request headers with a token the profile's hub accepts (a
    development token, or a user token of the emulators' token authority)."""

    def make(*, roles: tuple[str, ...] = (), tenant: str = "tenant-a", user: str = "user-1", **kw: Any) -> Headers:
        if hub_profile is not None:
            assert not kw, "the Azure profile's tokens take roles, tenant and user only"
            return {"authorization": f"Bearer {hub_profile.bearer(roles=roles, tenant=tenant, user=user)}"}
        return {"authorization": f"Bearer {issuer.issue(tenant=tenant, user=user, roles=list(roles), **kw)}"}

    return make


@dataclass
class ServiceCalls:
    """Every RPC that reached one of the hub's gRPC servers: ``(/pkg.Service/Method, metadata)``, in order."""

    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def record(self, method: str, metadata: Any) -> None:
        self.calls.append((method, {str(k): str(v) for k, v in metadata or ()}))

    def metadata(self, method: str) -> list[dict[str, str]]:
        """The metadata of each call to ``method`` (its short name, e.g. ``GetExecution``)."""
        return [md for path, md in self.calls if path.rsplit("/", 1)[-1] == method]

    def __len__(self) -> int:
        return len(self.calls)


@pytest.fixture
def service_calls(monkeypatch: pytest.MonkeyPatch) -> ServiceCalls:
    """Records the RPCs of every gRPC server started after it (attach before the hub starts)."""
    recorder = ServiceCalls()

    class RecordingInterceptor(HubServerInterceptor):
        async def intercept_service(
            self,
            continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
            handler_call_details: grpc.HandlerCallDetails,
        ) -> grpc.RpcMethodHandler[Any, Any] | None:
            recorder.record(handler_call_details.method, handler_call_details.invocation_metadata)
            return await super().intercept_service(continuation, handler_call_details)

    monkeypatch.setattr(platform_server, "HubServerInterceptor", RecordingInterceptor)
    return recorder


@pytest.fixture
def gateway_port() -> Iterator[int]:
    """A port for Envoy's listener, held by a bound (not listening) ``SO_REUSEPORT`` socket for the whole test.

    No ``bind(0)`` of another server can take it meanwhile, and Envoy (whose listeners use ``SO_REUSEPORT``)
    can still bind it; only Envoy's sockets listen, so only Envoy gets the connections.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        yield port


@pytest.fixture
async def hub(
    data_dir: Path,
    issuer: DevIssuer,
    gateway_port: int,
    service_calls: ServiceCalls,
    hub_profile: AzureHubProfile | None,
) -> AsyncIterator[Hub]:
    """The real hub, with the gateway's URL as its public URL (accessors and ``statusUrl`` point at Envoy)."""
    public_url = f"http://127.0.0.1:{gateway_port}"
    async with running_hub(data_dir, issuer, azure=hub_profile, public_url=public_url) as running:
        yield running


@pytest.fixture
def catalog(hub: Hub) -> CatalogApp:
    return hub.catalog


@pytest.fixture
def gateway_config(data_dir: Path, hub: Hub, gateway_port: int) -> dict[str, Any]:
    """The ``local`` target, or on the Azure profile the ``azure`` target for the emulators' token authority (as
    ``exthub up --backend azure --emulators`` renders it)."""
    upstreams = {
        "listen_port": gateway_port,
        "catalog_address": hub.catalog.address,
        "execution_address": hub.execution.address,
        "objects_address": URL(hub.execution.http_url).raw_authority,
        "access_log": False,
    }
    if hub.azure is None:
        return render_config("local", data_dir=data_dir, **upstreams)
    stack = hub.azure.stack
    return render_config(
        "azure",
        tenant_id=TENANT_ID,
        client_id=API,
        app_id_uri=API,
        authority_host=stack.authority.url.removeprefix("https://"),
        authority_ca_file=stack.certificates.trust_bundle,
        listen_address="127.0.0.1",
        **upstreams,
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
    def rpc_status(self) -> status_pb2.Status:
        """An error body as the ``google.rpc.Status`` it is (REST errors are that message's JSON)."""
        return json_format.ParseDict(self.body, status_pb2.Status())

    @property
    def code(self) -> str:
        """The canonical code of an error body, by name (``NOT_FOUND``)."""
        name: str = code_pb2.Code.Name(self.rpc_status.code)
        return name

    @property
    def error_info(self) -> error_details_pb2.ErrorInfo:
        """The ErrorInfo detail of an error body (read with the contract's one helper)."""
        info = error_info(self.rpc_status)
        assert info is not None and info.domain == ERROR_DOMAIN, self.body
        return info

    @property
    def reason(self) -> str:
        return str(self.error_info.reason)

    @property
    def field_violations(self) -> list[str]:
        """The fields named by the BadRequest detail of an error body."""
        return [name for name, _ in field_violations(self.rpc_status)]


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
