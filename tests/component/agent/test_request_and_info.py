"""What the extension receives (through a capturing test extension), reply limits, GetAgentInfo, the entry point."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from exthub.agent.v1 import agent_service_pb2 as agent_pb
from exthub.agent.v1 import agent_service_pb2_grpc as agent_grpc
from exthub.contract.dev_tokens import DevIssuer
from exthub.contract.errors import error_info
from exthub.contract.roles import AGENT
from exthub.contract.signatures import verify_body_signature
from exthub.type.v1 import types_pb2
from services.agent.adapters import KeyRingBodySigner
from services.agent.identity import agent_version
from services.execution.signing import SigningKeyRing
from services.platform.settings import Settings
from tests.component.agent.conftest import (
    CALL_TIMEOUT,
    EXECUTION_ID,
    AgentFactory,
    Capture,
    Metadata,
    StubFactory,
    execute_request,
    make_task,
)

if TYPE_CHECKING:
    from exthub.agent.v1.agent_service_pb2_grpc import AgentServiceAsyncStub

Outcome = agent_pb.ExecuteResponse.Outcome
REPO_ROOT = Path(__file__).resolve().parents[3]


def reason(response: agent_pb.ExecuteResponse) -> str:
    info = error_info(response.error)
    assert info is not None, "the error carries no ErrorInfo"
    return str(info.reason)


@pytest.fixture
async def unsigned_stub(start: AgentFactory, connect: StubFactory) -> AgentServiceAsyncStub:
    return await connect(await start(sign=False))


async def test_body_carries_the_contract_fields_and_service_contexts(
    unsigned_stub: AgentServiceAsyncStub, agent_token: Metadata, capture: Capture
) -> None:
    services = {"config/v1": {"endpoint": "https://api.example", "retries": 3}, "greeting/v1": {}}
    task = make_task(capture.url, {"failWith": 404}, services=services, outputs=("report",), status_url="https://hub/s")
    response = await unsigned_stub.Execute(execute_request(task), metadata=agent_token, timeout=CALL_TIMEOUT)
    assert response.outcome == Outcome.SUCCEEDED
    headers, raw = capture.requests[-1]
    assert "Exthub-Signature" not in headers  # sign=False: explicitly unsigned
    assert headers["Content-Type"] == "application/json"
    body = capture.last_body
    assert raw == json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert body["executionId"] == EXECUTION_ID
    assert (body["extensionId"], body["extensionVersion"], body["profile"]) == ("echo", "1.0.0", "default")
    assert (body["priority"], body["attempt"], body["validateOnly"]) == ("NORMAL", 1, False)
    assert body["requestParameters"] == {"failWith": 404}  # an integer, not 404.0
    assert body["labels"] == {"team": "qa"}
    assert body["executor"] == {"tenantId": "tenant-1", "userId": "user-1"}
    assert body["services"] == {
        "config/v1": {"endpoint": "https://api.example", "retries": 3},
        "greeting/v1": {"message": "Hello, user-1 of tenant-1"},
    }
    assert body["outputs"]["report"]["accessor"] is None
    assert body["inputs"] == {}
    assert body["statusUrl"] == "https://hub/s"
    assert isinstance(body["statusUpdateKey"], str)
    assert body["deadline"].endswith("Z")


async def test_unknown_service_fails_before_calling(
    unsigned_stub: AgentServiceAsyncStub, agent_token: Metadata, capture: Capture
) -> None:
    task = make_task(capture.url, {}, services={"config/v1": {}, "billing/v2": {}})
    response = await unsigned_stub.Execute(execute_request(task), metadata=agent_token, timeout=CALL_TIMEOUT)
    assert response.outcome == Outcome.FAILED
    assert reason(response) == "EXTENSION_SERVICE_UNSUPPORTED"
    assert "billing/v2" in response.error.message
    assert capture.requests == []


async def test_signed_body_verifies_with_the_hub_jwks(
    start: AgentFactory, connect: StubFactory, agent_token: Metadata, capture: Capture, ring: SigningKeyRing
) -> None:
    stub = await connect(await start(signer=KeyRingBodySigner(ring)))
    await stub.Execute(execute_request(make_task(capture.url, {})), metadata=agent_token, timeout=CALL_TIMEOUT)
    headers, raw = capture.requests[-1]
    header = verify_body_signature(headers["Exthub-Signature"], raw, ring.jwks())
    assert header["kid"] == ring.current_kid


async def test_provided_outputs_keep_only_declared_names(
    unsigned_stub: AgentServiceAsyncStub, agent_token: Metadata, capture: Capture
) -> None:
    capture.reply = json.dumps({"responseData": {"ok": True}, "providedOutputs": ["report", "bogus"]}).encode()
    task = make_task(capture.url, {}, outputs=("report", "log"))
    response = await unsigned_stub.Execute(execute_request(task), metadata=agent_token, timeout=CALL_TIMEOUT)
    assert response.outcome == Outcome.SUCCEEDED
    assert list(response.provided_outputs) == ["report"]


@pytest.mark.parametrize(
    ("status", "reply", "expected"),
    [
        (200, b"not json", "EXTENSION_PROTOCOL_ERROR"),
        (200, b'{"responseData": [1, 2]}', "EXTENSION_PROTOCOL_ERROR"),
        (200, b'{"providedOutputs": "report"}', "EXTENSION_PROTOCOL_ERROR"),
        (302, b"{}", "EXTENSION_PROTOCOL_ERROR"),
        (200, b'{"responseData": {"big": "' + b"x" * (4 * 1024 * 1024) + b'"}}', "EXTENSION_RESPONSE_TOO_LARGE"),
    ],
)
async def test_bad_replies_fail_permanently(
    unsigned_stub: AgentServiceAsyncStub,
    agent_token: Metadata,
    capture: Capture,
    status: int,
    reply: bytes,
    expected: str,
) -> None:
    capture.status, capture.reply = status, reply
    response = await unsigned_stub.Execute(
        execute_request(make_task(capture.url, {})), metadata=agent_token, timeout=CALL_TIMEOUT
    )
    assert response.outcome == Outcome.FAILED
    assert response.http_status == status
    assert reason(response) == expected


async def test_agent_info(
    start: AgentFactory,
    connect: StubFactory,
    agent_token: Metadata,
    settings: Settings,
    capture: Capture,
) -> None:
    app = await start(sign=False)
    stub = await connect(app)
    info = await stub.GetAgentInfo(agent_pb.GetAgentInfoRequest(), metadata=agent_token, timeout=CALL_TIMEOUT)
    assert info.agent_id == app.agent_id
    assert info.agent_id.startswith("agent-")
    assert info.version == agent_version()
    assert list(info.execution_models) == ["http-json/async/v1", "http-json/sync/v1"]
    assert list(info.priorities) == [types_pb2.HIGH, types_pb2.NORMAL, types_pb2.LOW]
    assert info.in_flight == 0

    capture.release = asyncio.Event()
    slow = asyncio.ensure_future(
        stub.Execute(execute_request(make_task(capture.url, {})), metadata=agent_token, timeout=CALL_TIMEOUT)
    )
    await asyncio.wait_for(capture.entered.wait(), CALL_TIMEOUT)
    busy = await stub.GetAgentInfo(agent_pb.GetAgentInfoRequest(), metadata=agent_token, timeout=CALL_TIMEOUT)
    assert busy.in_flight == 1
    capture.release.set()
    assert (await slow).outcome == Outcome.SUCCEEDED

    # the id is kept in the data directory: a restarted agent has the same one
    again = await start()
    assert again.agent_id == app.agent_id
    configured = await start(
        settings=settings.model_copy(update={"agent_id": "agent-blue", "agent_priorities": ["LOW"]})
    )
    info = await (await connect(configured)).GetAgentInfo(
        agent_pb.GetAgentInfoRequest(), metadata=agent_token, timeout=CALL_TIMEOUT
    )
    assert (info.agent_id, list(info.priorities)) == ("agent-blue", [types_pb2.LOW])


async def test_agent_info_needs_the_agent_role(
    agent_token: Metadata, token: Callable[..., Metadata], stub: AgentServiceAsyncStub
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetAgentInfo(agent_pb.GetAgentInfoRequest(), timeout=CALL_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetAgentInfo(agent_pb.GetAgentInfoRequest(), metadata=token(roles=()), timeout=CALL_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_entry_point_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "EXTHUB_DATA_DIR": str(tmp_path / "data"),
        "EXTHUB_AGENT_PORT": "0",
        "EXTHUB_LOG_FORMAT": "console",
        "EXTHUB_AGENT_ID": "agent-main",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.agent",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        cwd=REPO_ROOT,
        env=env,
    )
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        assert line.startswith("agent serving on 127.0.0.1:")
        address = line.removeprefix("agent serving on ")
        jwt = DevIssuer.load_or_create(tmp_path / "data").issue(tenant="t", user="u", roles=[AGENT])
        async with grpc.aio.insecure_channel(address) as channel:
            info = await agent_grpc.AgentServiceStub(channel).GetAgentInfo(
                agent_pb.GetAgentInfoRequest(), metadata=(("authorization", f"Bearer {jwt}"),), timeout=CALL_TIMEOUT
            )
        assert info.agent_id == "agent-main"
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
