"""The agent's call-time egress check (services.platform.egress): at the agent's service port, an attempt whose
URL points at an internal address fails for good and nothing is sent there; a host name is resolved once and the
call goes to that checked address (DNS rebinding cannot move it); redirects are not followed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from exthub.agent.v1 import agent_service_pb2 as agent_pb
from exthub.contract.errors import error_info
from services.agent.adapters import HttpJsonAdapter
from services.agent.app import AgentApp
from services.agent.extension_services import default_extension_services
from services.platform.egress import EgressPolicy
from services.platform.settings import Settings
from tests.component.agent.conftest import AgentFactory, Metadata, StubFactory, make_task

if TYPE_CHECKING:
    from exthub.agent.v1.agent_service_pb2_grpc import AgentServiceAsyncStub

CALL_TIMEOUT = 10.0


@dataclass
class Trap:
    """An HTTP server that records every request it gets (it must get none when the agent refuses)."""

    host: str
    port: int
    requests: list[tuple[str, str]] = field(default_factory=list)  # (path, Host header)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


async def _trap(host: str, port: int = 0, *, redirect_to: str | None = None) -> tuple[Trap, TestServer]:
    state = Trap(host, 0)

    async def handle(request: web.Request) -> web.StreamResponse:
        state.requests.append((request.path, request.headers.get("Host", "")))
        if redirect_to is not None:
            raise web.HTTPTemporaryRedirect(redirect_to)
        return web.json_response({"responseData": {"served": True}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    server = TestServer(app, host=host, port=port)
    await server.start_server()
    state.port = server.port or 0
    return state, server


@pytest.fixture
async def trap() -> AsyncIterator[Trap]:
    state, server = await _trap("127.0.0.1")
    try:
        yield state
    finally:
        await server.close()


def reason_of(response: agent_pb.ExecuteResponse) -> str:
    info = error_info(response.error)
    assert info is not None, response.error
    return str(info.reason)


@pytest.fixture
async def strict_agent(start: AgentFactory, settings: Settings) -> AgentApp:
    """An agent of a deployment without an egress allow-list (the production default)."""
    return await start(settings=settings.model_copy(update={"egress": Settings().egress}), sign=False)


async def test_an_internal_url_fails_the_attempt_at_the_agent_port_and_is_never_called(
    strict_agent: AgentApp, connect: StubFactory, agent_token: Metadata, trap: Trap
) -> None:
    stub: AgentServiceAsyncStub = await connect(strict_agent)
    for url in (trap.url, f"http://localhost:{trap.port}", f"http://[::ffff:127.0.0.1]:{trap.port}"):
        response = await stub.Execute(
            agent_pb.ExecuteRequest(task=make_task(f"{url}/execute")), metadata=agent_token, timeout=CALL_TIMEOUT
        )
        assert response.outcome == agent_pb.ExecuteResponse.FAILED, url
        assert reason_of(response) == "EGRESS_REFUSED"
        assert str(trap.port) not in response.error.message and "127.0.0.1" not in response.error.message
    assert trap.requests == []


@dataclass
class FlippingResolver:
    """DNS that answers ``first`` once and ``then`` afterwards (a rebinding attack), counting the lookups."""

    first: Sequence[str]
    then: Sequence[str]
    lookups: list[tuple[str, int]] = field(default_factory=list)

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append((host, port))
        return self.first if len(self.lookups) == 1 else self.then


async def _execute(adapter: HttpJsonAdapter, url: str) -> agent_pb.ExecuteResponse:
    return await adapter.execute(make_task(url), time_limit=CALL_TIMEOUT)


async def test_the_resolved_address_is_pinned_for_the_call(trap: Trap) -> None:
    """``ext.test`` resolves to the allowed address once; the call goes there with ``Host: ext.test:PORT``,
    and a second answer (an internal address with its own server) is never asked for nor used."""
    inner, inner_server = await _trap("127.0.0.2", trap.port)
    try:
        resolver = FlippingResolver(first=["127.0.0.1"], then=["127.0.0.2"])
        policy = EgressPolicy([f"127.0.0.1:{trap.port}"], resolver=resolver)
        async with aiohttp.ClientSession() as session:
            adapter = HttpJsonAdapter(session, services=default_extension_services(), sign=False, egress=policy)
            response = await _execute(adapter, f"http://ext.test:{trap.port}/execute")
        assert response.outcome == agent_pb.ExecuteResponse.SUCCEEDED, response
        assert trap.requests == [("/execute", f"ext.test:{trap.port}")]
        assert resolver.lookups == [("ext.test", trap.port)]
        assert inner.requests == []
    finally:
        await inner_server.close()


async def test_a_name_that_also_resolves_to_an_internal_address_is_refused(trap: Trap) -> None:
    resolver = FlippingResolver(first=["93.184.215.14", "127.0.0.1"], then=[])
    async with aiohttp.ClientSession() as session:
        adapter = HttpJsonAdapter(
            session, services=default_extension_services(), sign=False, egress=EgressPolicy(resolver=resolver)
        )
        response = await _execute(adapter, f"http://ext.test:{trap.port}/execute")
    assert response.outcome == agent_pb.ExecuteResponse.FAILED
    assert reason_of(response) == "EGRESS_REFUSED"
    assert trap.requests == []


async def test_an_unresolvable_host_is_a_transient_failure() -> None:
    async def nowhere(host: str, port: int) -> Sequence[str]:
        raise OSError("no such host")

    async with aiohttp.ClientSession() as session:
        adapter = HttpJsonAdapter(
            session, services=default_extension_services(), sign=False, egress=EgressPolicy(resolver=nowhere)
        )
        response = await _execute(adapter, "http://ext.test/execute")
    assert response.outcome == agent_pb.ExecuteResponse.RETRYABLE_FAILURE
    assert reason_of(response) == "EXTENSION_UNREACHABLE"


async def test_redirects_are_not_followed(trap: Trap) -> None:
    """An allowed extension answering 307 to an internal address: the agent does not go there."""
    bouncer, bouncer_server = await _trap("127.0.0.1", redirect_to=f"{trap.url}/execute")
    try:
        async with aiohttp.ClientSession() as session:
            adapter = HttpJsonAdapter(
                session,
                services=default_extension_services(),
                sign=False,
                egress=EgressPolicy([f"127.0.0.1:{bouncer.port}"]),
            )
            response = await _execute(adapter, f"{bouncer.url}/execute")
        assert response.outcome == agent_pb.ExecuteResponse.FAILED
        assert reason_of(response) == "EXTENSION_PROTOCOL_ERROR"
        assert len(bouncer.requests) == 1
        assert trap.requests == []
    finally:
        await bouncer_server.close()


async def test_a_reply_nested_too_deeply_is_a_protocol_error(trap: Trap) -> None:
    """An extension's result obeys the Struct limits too (it is listed later with the execution)."""
    deep: dict[str, object] = {"leaf": 1}
    for _ in range(40):
        deep = {"a": deep}

    async def reply(request: web.Request) -> web.Response:
        return web.json_response({"responseData": deep})

    app = web.Application()
    app.router.add_post("/execute", reply)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            adapter = HttpJsonAdapter(
                session,
                services=default_extension_services(),
                sign=False,
                egress=EgressPolicy([f"127.0.0.1:{server.port}"]),
            )
            response = await _execute(adapter, f"http://127.0.0.1:{server.port}/execute")
        assert response.outcome == agent_pb.ExecuteResponse.FAILED
        assert reason_of(response) == "EXTENSION_PROTOCOL_ERROR"
        assert "32 levels" in response.error.message
    finally:
        await server.close()
