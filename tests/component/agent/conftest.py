"""A real agent on 127.0.0.1:0, the real echo extension verifying a test hub key ring, and helpers.

The hub's signing keys come from a test ``SigningKeyRing``; its JWKS is written to a file that echo reads
(``FileJwksSource``, the same source as ``--jwks-file``). Most tests sign through a ``KeyRingBodySigner`` over
that ring; ``signing_service`` is a stand-in AgentTaskService serving only ``SignExtensionRequest`` (with the
real auth interceptor) for the agent's production signer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from google.protobuf import struct_pb2, timestamp_pb2

from exthub.agent.v1 import agent_service_pb2 as agent_pb
from exthub.agent.v1 import agent_service_pb2_grpc as agent_grpc
from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.roles import AGENT
from exthub.execution.v1 import agent_task_service_pb2, execution_pb2
from exthub.type.v1 import types_pb2
from services.agent.adapters import KeyRingBodySigner
from services.agent.adapters.signing import audience_of
from services.agent.app import AgentApp, start_agent
from services.echo import EchoConfig, FileJwksSource, create_echo_app
from services.execution.signing import SigningKeyRing
from services.platform.auth.access import access_rules_from_descriptors, require_principal
from services.platform.auth.verifier import TokenVerifier
from services.platform.errors import FailedPrecondition
from services.platform.server import start_grpc_server
from services.platform.settings import Settings

if TYPE_CHECKING:
    from exthub.agent.v1.agent_service_pb2_grpc import AgentServiceAsyncStub

Metadata = tuple[tuple[str, str], ...]
STATUS_KEY = "status-key-0123456789abcdef"
EXECUTION_ID = "9d2f4b4a-5e6f-4a1b-8c2d-3e4f5a6b7c8d"
CALL_TIMEOUT = 15.0


@dataclass
class StatusHub:
    """A fake ``statusUrl`` receiver recording long-running reports."""

    url: str
    reports: list[dict[str, Any]] = field(default_factory=list)
    terminal: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Capture:
    """A tiny extension recording what it receives and answering with a configurable reply."""

    url: str
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    status: int = 200
    reply: bytes = b'{"responseData": {}, "providedOutputs": []}'
    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event | None = None  # when set, requests wait for it before answering

    @property
    def last_body(self) -> dict[str, Any]:
        document = json.loads(self.requests[-1][1])
        assert isinstance(document, dict)
        return document


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    # the test extensions (echo, capture servers) listen on loopback: this deployment allow-lists it
    return Settings.local_defaults(data_dir, agent_port=0, log_format="console", egress={"allow": ["127.0.0.0/8"]})


@pytest.fixture
def ring(tmp_path: Path) -> SigningKeyRing:
    return SigningKeyRing.load_or_create(tmp_path / "hub-keys", hub_id="test-hub")


@pytest.fixture
def jwks_file(tmp_path: Path, ring: SigningKeyRing) -> Path:
    path = tmp_path / "hub-jwks.json"
    path.write_text(json.dumps(ring.jwks()))
    return path


@pytest.fixture
async def status_hub() -> AsyncIterator[StatusHub]:
    state = StatusHub(url="")

    async def report(request: web.Request) -> web.Response:
        document = await request.json()
        state.reports.append(document)
        if document.get("state") in ("SUCCEEDED", "FAILED"):
            state.terminal.set()
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/v1/executions/{execution}:reportStatus", report)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    state.url = str(server.make_url(f"/v1/executions/{EXECUTION_ID}:reportStatus"))
    try:
        yield state
    finally:
        await server.close()


@pytest.fixture
async def echo_url(jwks_file: Path) -> AsyncIterator[str]:
    """The real echo app; a client that gives up cancels its handler (no stray sleeps at teardown)."""
    app = create_echo_app(FileJwksSource(jwks_file), config=EchoConfig(outbound_timeout=5, status_timeout=5))
    server = TestServer(app, host="127.0.0.1", port=0, handler_cancellation=True, shutdown_timeout=1)
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def capture() -> AsyncIterator[Capture]:
    state = Capture(url="")

    async def handle(request: web.Request) -> web.Response:
        state.requests.append((dict(request.headers), await request.read()))
        state.entered.set()
        if state.release is not None:
            await state.release.wait()
        return web.Response(status=state.status, body=state.reply, content_type="application/json")

    app = web.Application()
    app.router.add_post("/execute", handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    state.url = str(server.make_url("/execute"))
    try:
        yield state
    finally:
        await server.close()


@dataclass
class SigningService:
    """A stand-in AgentTaskService: signs with the test ring, records calls, can refuse (STALE_ATTEMPT)."""

    address: str
    ring: SigningKeyRing
    calls: list[tuple[str, int, bytes, str]] = field(default_factory=list)  # name, attempt, body, caller
    refuse: bool = False


async def _sign(
    state: SigningService, request: agent_task_service_pb2.SignExtensionRequestRequest
) -> agent_task_service_pb2.SignExtensionRequestResponse:
    principal = require_principal()
    state.calls.append((request.name, request.attempt, request.body, principal.user))
    if state.refuse:
        raise FailedPrecondition("attempt 1 is not the current attempt 2", reason="STALE_ATTEMPT")
    return agent_task_service_pb2.SignExtensionRequestResponse(
        signature=state.ring.sign_extension_request(
            request.body,
            audience=audience_of(request.body),
            execution=request.name,
            attempt=request.attempt,
            now=datetime.now(UTC),
        ),
        key_id=state.ring.current_kid,
    )


@pytest.fixture
async def signing_service(settings: Settings, ring: SigningKeyRing) -> AsyncIterator[SigningService]:
    state = SigningService(address="", ring=ring)
    descriptor = agent_task_service_pb2.DESCRIPTOR.services_by_name["AgentTaskService"]

    async def sign(
        request: agent_task_service_pb2.SignExtensionRequestRequest, context: object
    ) -> agent_task_service_pb2.SignExtensionRequestResponse:
        return await _sign(state, request)

    def register(server: grpc.aio.Server) -> list[str]:
        handler = grpc.unary_unary_rpc_method_handler(
            sign,
            request_deserializer=agent_task_service_pb2.SignExtensionRequestRequest.FromString,
            response_serializer=agent_task_service_pb2.SignExtensionRequestResponse.SerializeToString,
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(descriptor.full_name, {"SignExtensionRequest": handler}),)
        )
        return [descriptor.full_name]

    await asyncio.to_thread(DevIssuer.load_or_create, settings.data_dir)
    running = await start_grpc_server(
        name="fake-execution",
        settings=settings,
        port=0,
        register=register,
        verifier=TokenVerifier(settings.auth),
        access_rules=access_rules_from_descriptors([descriptor]),
    )
    state.address = running.address
    try:
        yield state
    finally:
        await running.stop(0)


AgentFactory = Callable[..., Awaitable[AgentApp]]


@pytest.fixture
async def start(settings: Settings) -> AsyncIterator[AgentFactory]:
    """``await start(signer=..., sign=...)`` → a running agent, stopped at teardown."""
    apps: list[AgentApp] = []

    async def make(**kwargs: Any) -> AgentApp:
        app = await start_agent(kwargs.pop("settings", settings), port=0, **kwargs)
        apps.append(app)
        return app

    try:
        yield make
    finally:
        for app in apps:
            await app.stop(0)


@pytest.fixture
async def agent(start: AgentFactory, ring: SigningKeyRing) -> AgentApp:
    return await start(signer=KeyRingBodySigner(ring))


async def _stub(app: AgentApp) -> tuple[grpc.aio.Channel, AgentServiceAsyncStub]:
    channel = grpc.aio.insecure_channel(app.address)
    await asyncio.wait_for(channel.channel_ready(), CALL_TIMEOUT)
    return channel, agent_grpc.AgentServiceStub(channel)


StubFactory = Callable[[AgentApp], Awaitable["AgentServiceAsyncStub"]]


@pytest.fixture
async def connect() -> AsyncIterator[StubFactory]:
    """``await connect(app)`` → an AgentService stub on a channel closed at teardown."""
    channels: list[grpc.aio.Channel] = []

    async def make(app: AgentApp) -> AgentServiceAsyncStub:
        channel, stub = await _stub(app)
        channels.append(channel)
        return stub

    try:
        yield make
    finally:
        for channel in channels:
            await channel.close()


@pytest.fixture
async def stub(agent: AgentApp, connect: StubFactory) -> AgentServiceAsyncStub:
    return await connect(agent)


@pytest.fixture
def issuer(data_dir: Path) -> DevIssuer:
    return DevIssuer.load_or_create(data_dir)


@pytest.fixture
def token(issuer: DevIssuer) -> Callable[..., Metadata]:
    def make(*, roles: tuple[str, ...] = (AGENT,), tenant: str = "tenant-1", user: str = "user-1") -> Metadata:
        return (("authorization", f"Bearer {issuer.issue(tenant=tenant, user=user, roles=list(roles))}"),)

    return make


@pytest.fixture
def agent_token(token: Callable[..., Metadata]) -> Metadata:
    return token()


def make_task(
    url: str,
    params: dict[str, Any] | None = None,
    *,
    model: str = "http-json/sync/v1",
    validate_only: bool = False,
    deadline_in: float = 60.0,
    call_timeout: float | None = None,
    services: dict[str, dict[str, Any]] | None = None,
    status_url: str = "",
    outputs: tuple[str, ...] = (),
    attempt: int = 1,
) -> execution_pb2.ExecutionTask:
    """An attempt of ``extensions/echo/versions/1.0.0`` against ``url`` (``/execute`` and ``/validate``)."""
    request = struct_pb2.Struct()
    request.update(params or {})
    deadline = timestamp_pb2.Timestamp()
    deadline.FromDatetime(datetime.now(UTC) + timedelta(seconds=deadline_in))
    base = url.removesuffix("/execute")
    task = execution_pb2.ExecutionTask(
        execution=f"executions/{EXECUTION_ID}",
        attempt=attempt,
        extension="extensions/echo",
        extension_version="extensions/echo/versions/1.0.0",
        profile="default",
        execution_model=model,
        priority=types_pb2.NORMAL,
        validate_only=validate_only,
        request=request,
        labels={"team": "qa"},
        tenant="tenant-1",
        user="user-1",
        extension_settings={"execution_url": f"{base}/execute", "validation_url": f"{base}/validate"},
        deadline=deadline,
        status_url=status_url,
        status_update_key=STATUS_KEY if status_url else "",
    )
    for name, config in (services or {}).items():
        task.services[name].update(config)
    for name in outputs:
        task.outputs.add().definition.name = name
    if call_timeout is not None:
        task.call_timeout.FromTimedelta(timedelta(seconds=call_timeout))
    return task


def execute_request(task: execution_pb2.ExecutionTask) -> agent_pb.ExecuteRequest:
    return agent_pb.ExecuteRequest(task=task)
