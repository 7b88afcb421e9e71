"""The execution REST routes through Envoy in front of the real hub (catalog, execution, agent, echo).

The execution service hands out URLs built from the gateway's public URL, so the gateway's listener port is
reserved first (bind to port 0, close) and the execution service is started with ``public_url`` pointing at it;
object uploads and downloads then go through Envoy's ``/objects/v1/`` route.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from aiohttp import web
from yarl import URL

from exthub.catalog.v1 import catalog_service_pb2_grpc
from exthub.execution.v1 import execution_service_pb2, execution_service_pb2_grpc
from gateway.envoy import RunningEnvoy
from gateway.render import render_config
from services.agent.app import AgentApp, start_agent
from services.catalog.app import CatalogApp
from services.echo.app import create_echo_app
from services.echo.registration import register_echo
from services.echo.signature import HttpJwksSource
from services.execution.app import ExecutionApp, start_execution
from services.platform.auth.dev_issuer import DevIssuer
from services.platform.settings import Settings
from tests.component.gateway.conftest import Bearer, call

RUN = ("Executions.Run",)
PLAIN = "extensions/echo-plain/versions/1.0.0"
WITH_OBJECTS = "extensions/echo/versions/1.0.0"


class BodySigner:
    """The agent's request signer: ``SignExtensionRequest`` on the execution service with an Agent token."""

    def __init__(self, issuer: DevIssuer) -> None:
        self.address = ""
        self._issuer = issuer
        self._channel: grpc.aio.Channel | None = None

    async def sign(self, execution: str, attempt: int, body: bytes) -> str:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self.address)
        stub = execution_service_pb2_grpc.ExecutionServiceStub(self._channel)
        token = self._issuer.issue(tenant="exthub", user="agent", roles=["Agent"])
        response = await stub.SignExtensionRequest(
            execution_service_pb2.SignExtensionRequestRequest(name=execution, attempt=attempt, body=body),
            metadata=(("authorization", f"Bearer {token}"),),
            timeout=10,
        )
        return str(response.signature)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


@dataclass
class Hub:
    agent: AgentApp
    execution: ExecutionApp
    gateway_port: int


@pytest.fixture
def gateway_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def hub_settings(data_dir: Path, **overrides: Any) -> Settings:
    return Settings.local_defaults(
        data_dir, catalog_port=0, execution_port=0, agent_port=0, objects_port=0, log_format="console", **overrides
    )


@pytest.fixture
async def hub(
    data_dir: Path, issuer: DevIssuer, catalog: CatalogApp, gateway_port: int, bearer: Bearer
) -> AsyncIterator[Hub]:
    signer = BodySigner(issuer)
    agent = await start_agent(hub_settings(data_dir), port=0, signer=signer)
    execution = await start_execution(
        hub_settings(
            data_dir,
            catalog_address=catalog.address,
            agent_address=agent.address,
            public_url=f"http://127.0.0.1:{gateway_port}",
        ),
        port=0,
    )
    signer.address = execution.address
    echo = web.AppRunner(create_echo_app(HttpJwksSource(f"{execution.http_url}/v1/signingKeys")), access_log=None)
    await echo.setup()
    await web.TCPSite(echo, "127.0.0.1", 0).start()
    echo_port = next(a[1] for a in echo.addresses if isinstance(a, tuple))
    try:
        async with grpc.aio.insecure_channel(catalog.address) as channel:
            stub = catalog_service_pb2_grpc.CatalogServiceStub(channel)
            publisher = tuple(bearer(roles=("Extensions.Publish",)).items())
            await register_echo(stub, echo_url=f"http://127.0.0.1:{echo_port}", metadata=publisher)
            await register_echo(
                stub,
                echo_url=f"http://127.0.0.1:{echo_port}",
                metadata=publisher,
                extension_id="echo-plain",
                with_objects=False,
            )
        yield Hub(agent, execution, gateway_port)
    finally:
        await echo.cleanup()
        await execution.stop(0)
        await agent.stop(0)
        await signer.close()


@pytest.fixture
def gateway_config(data_dir: Path, issuer: DevIssuer, catalog: CatalogApp, hub: Hub) -> dict[str, Any]:
    """Overrides the conftest's: the real execution service (gRPC and its object HTTP endpoint) upstream."""
    return render_config(
        "local",
        data_dir=data_dir,
        listen_port=hub.gateway_port,
        admin_port=0,
        catalog_address=catalog.address,
        execution_address=hub.execution.address,
        objects_address=URL(hub.execution.http_url).raw_authority,
        access_log=False,
    )


async def watch(http: aiohttp.ClientSession, gateway: RunningEnvoy, name: str, headers: Bearer) -> list[Any]:
    async with http.get(f"{gateway.url}/v1/{name}:watch", headers=headers()) as response:
        assert response.status == 200
        return [json.loads(line) async for line in response.content if line.strip()]


async def test_sync_execution_get_list_events_and_watch(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer
) -> None:
    runner = bearer(roles=RUN)
    created = await call(
        http,
        gateway,
        "POST",
        "/v1/executions",
        json_body={"extensionVersion": PLAIN, "request": {"hello": "world"}, "labels": {"order": "42"}},
        headers=runner,
    )
    assert created.status == 200, created.body
    execution = created.body
    assert execution["state"] == "SUCCEEDED" and execution["mode"] == "SYNC"
    assert execution["tenant"] == "tenant-a" and execution["labels"] == {"order": "42"}
    name = execution["name"]
    got = await call(http, gateway, "GET", f"/v1/{name}", headers=bearer())
    assert got.status == 200 and got.body["result"]["echo"] == {"hello": "world"}
    listed = await call(
        http, gateway, "GET", "/v1/executions", params={"filter": 'state = "SUCCEEDED"'}, headers=bearer()
    )
    assert [e["name"] for e in listed.body["executions"]] == [name]
    events = await call(http, gateway, "GET", f"/v1/{name}/events", headers=bearer())
    assert events.status == 200 and events.body["events"][-1]["state"] == "SUCCEEDED"
    streamed = await watch(http, gateway, name, bearer)
    assert [e["sequence"] for e in streamed] == [e["sequence"] for e in events.body["events"]]
    assert streamed[-1]["state"] == "SUCCEEDED"
    other_tenant = await call(http, gateway, "GET", f"/v1/{name}", headers=bearer(tenant="tenant-b"))
    assert (other_tenant.status, other_tenant.reason) == (404, "EXECUTION_NOT_FOUND")
    no_role = await call(
        http, gateway, "POST", "/v1/executions", json_body={"extensionVersion": PLAIN}, headers=bearer()
    )
    assert (no_role.status, no_role.reason) == (403, "ROLE_REQUIRED")
    keys = await call(http, gateway, "GET", "/v1/signingKeys")
    assert keys.status == 200 and keys.body["keys"] and {"kty", "kid"} <= set(keys.body["keys"][0])


async def test_inputs_uploaded_and_outputs_downloaded_through_the_gateway(
    http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer
) -> None:
    runner = bearer(roles=RUN)
    created = await call(
        http,
        gateway,
        "POST",
        "/v1/executions",
        json_body={"extensionVersion": WITH_OBJECTS, "request": {"kind": "objects"}},
        headers=runner,
    )
    assert created.status == 200 and created.body["state"] == "PENDING_INPUTS", created.body
    (document,) = created.body["inputs"]
    upload = document["upload"]
    assert upload["uri"].startswith(gateway.url + "/objects/v1/"), "accessors are built from the public URL"
    content = b"hello objects through envoy" * 100
    async with http.put(URL(upload["uri"], encoded=True), data=content) as response:
        assert response.status in (200, 201), await response.text()
    done = await call(
        http,
        gateway,
        "POST",
        f"/v1/{created.body['name']}:continue",
        json_body={"providedInputs": ["document"]},
        headers=runner,
    )
    assert done.status == 200 and done.body["state"] == "SUCCEEDED", done.body
    assert done.body["result"]["inputs"]["document"] == {
        "size": len(content),
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    (report,) = done.body["outputs"]
    async with http.get(URL(report["download"]["uri"], encoded=True)) as response:
        assert response.status == 200
        assert json.loads(await response.read()) == {"kind": "objects"}


async def test_cancel(http: aiohttp.ClientSession, gateway: RunningEnvoy, bearer: Bearer) -> None:
    runner = bearer(roles=RUN)
    pending = await call(
        http, gateway, "POST", "/v1/executions", json_body={"extensionVersion": WITH_OBJECTS}, headers=runner
    )
    assert pending.body["state"] == "PENDING_INPUTS"
    name = pending.body["name"]
    cancelled = await call(http, gateway, "POST", f"/v1/{name}:cancel", json_body={}, headers=runner)
    assert cancelled.status == 200 and cancelled.body["state"] == "CANCELLED"
    again = await call(http, gateway, "POST", f"/v1/{name}:continue", json_body={}, headers=runner)
    assert again.status == 400 and again.body["code"] == 9  # FAILED_PRECONDITION → 400
    streamed = await watch(http, gateway, name, bearer)
    assert streamed[-1]["state"] == "CANCELLED"
