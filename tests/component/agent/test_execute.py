"""``AgentService.Execute`` end to end: a real agent, the real echo extension, signed requests."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2

from exthub.agent.v1 import agent_service_pb2 as agent_pb
from exthub.contract.errors import ERROR_DOMAIN, call_status, field_violations
from exthub.contract.errors import error_info as status_error_info
from exthub.contract.roles import EXECUTIONS_RUN, HUB_ADMIN
from services.agent.adapters import KeyRingBodySigner
from services.agent.app import AgentApp
from services.execution.signing import SigningKeyRing
from services.platform.settings import Settings
from tests.component.agent.conftest import (
    CALL_TIMEOUT,
    EXECUTION_ID,
    STATUS_KEY,
    AgentFactory,
    Capture,
    Metadata,
    SigningService,
    StatusHub,
    StubFactory,
    execute_request,
    make_task,
)

if TYPE_CHECKING:
    from exthub.agent.v1.agent_service_pb2_grpc import AgentServiceAsyncStub

Outcome = agent_pb.ExecuteResponse.Outcome


def error_info(response: agent_pb.ExecuteResponse) -> error_details_pb2.ErrorInfo:
    info = status_error_info(response.error)
    assert info is not None, "the error carries no ErrorInfo"
    assert info.domain == ERROR_DOMAIN
    return info


async def execute(
    stub: AgentServiceAsyncStub,
    metadata: Metadata,
    request: agent_pb.ExecuteRequest,
    *,
    grpc_deadline: float = CALL_TIMEOUT,
) -> agent_pb.ExecuteResponse:
    return await stub.Execute(request, metadata=metadata, timeout=grpc_deadline)


async def test_success_returns_the_echo_result(
    stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str
) -> None:
    params = {"hello": "world", "n": 3, "nested": {"list": [1, 2.5, True, None]}}
    response = await execute(stub, agent_token, execute_request(make_task(echo_url, params)))
    assert response.outcome == Outcome.SUCCEEDED, response
    assert response.http_status == 200
    result = json_format.MessageToDict(response.result)
    assert result["echo"] == {"hello": "world", "n": 3, "nested": {"list": [1, 2.5, True, None]}}
    assert result["executionId"] == EXECUTION_ID
    assert result["attempt"] == 1
    assert not response.HasField("error")


@pytest.mark.parametrize("model", ["http-json/sync/v1", "http-json/async/v1"])
async def test_both_http_json_models_share_the_adapter(
    stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str, model: str
) -> None:
    response = await execute(stub, agent_token, execute_request(make_task(echo_url, {"x": 1}, model=model)))
    assert response.outcome == Outcome.SUCCEEDED


@pytest.mark.parametrize("code", [401, 403, 404, 409, 422])
async def test_4xx_is_a_permanent_failure(
    stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str, code: int
) -> None:
    response = await execute(stub, agent_token, execute_request(make_task(echo_url, {"failWith": code})))
    assert response.outcome == Outcome.FAILED
    assert response.http_status == code
    info = error_info(response)
    assert info.reason == "EXTENSION_REJECTED"
    assert info.metadata["httpStatus"] == str(code)
    assert info.metadata["extensionReason"] == "FAIL_WITH"
    assert info.metadata["execution"] == f"executions/{EXECUTION_ID}"
    assert f"HTTP {code}" in response.error.message


@pytest.mark.parametrize(
    ("code", "reason"),
    [(500, "EXTENSION_FAILED"), (503, "EXTENSION_FAILED"), (429, "EXTENSION_FAILED"), (408, "EXTENSION_TIMEOUT")],
)
async def test_5xx_429_408_are_retryable(
    stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str, code: int, reason: str
) -> None:
    response = await execute(stub, agent_token, execute_request(make_task(echo_url, {"failWith": code})))
    assert response.outcome == Outcome.RETRYABLE_FAILURE
    assert response.http_status == code
    assert error_info(response).reason == reason


async def test_fail_times_then_success_across_attempts(
    stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str
) -> None:
    first = await execute(stub, agent_token, execute_request(make_task(echo_url, {"failTimes": 1}, attempt=1)))
    second = await execute(stub, agent_token, execute_request(make_task(echo_url, {"failTimes": 1}, attempt=2)))
    assert first.outcome == Outcome.RETRYABLE_FAILURE
    assert first.http_status == 503
    assert second.outcome == Outcome.SUCCEEDED
    assert json_format.MessageToDict(second.result)["attempt"] == 2


async def test_validation_succeeds(stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str) -> None:
    response = await execute(stub, agent_token, execute_request(make_task(echo_url, {"a": 1}, validate_only=True)))
    assert response.outcome == Outcome.VALIDATION_SUCCEEDED
    assert response.http_status == 200


async def test_validation_fails_with_errors(stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str) -> None:
    task = make_task(echo_url, {"invalid": True}, validate_only=True)
    response = await execute(stub, agent_token, execute_request(task))
    assert response.outcome == Outcome.VALIDATION_FAILED
    assert response.http_status == 400
    assert [(e.code, e.field) for e in response.validation_errors] == [("INVALID", "invalid")]
    assert response.validation_errors[0].message


async def test_execute_400_with_validation_errors_is_validation_failed(
    stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str
) -> None:
    task = make_task(echo_url, {"failWith": 400, "invalid": True})
    response = await execute(stub, agent_token, execute_request(task))
    assert response.outcome == Outcome.VALIDATION_FAILED
    assert response.validation_errors[0].field == "invalid"


async def test_400_without_validation_errors_is_rejected(
    stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str
) -> None:
    response = await execute(stub, agent_token, execute_request(make_task(echo_url, {"failWith": 400})))
    assert response.outcome == Outcome.FAILED
    assert error_info(response).reason == "EXTENSION_REJECTED"


async def test_long_running_is_accepted_and_reports_with_the_key(
    stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str, status_hub: StatusHub
) -> None:
    task = make_task(echo_url, {"longRunning": True}, status_url=status_hub.url)
    response = await execute(stub, agent_token, execute_request(task))
    assert response.outcome == Outcome.ACCEPTED
    assert response.http_status == 202
    await asyncio.wait_for(status_hub.terminal.wait(), CALL_TIMEOUT)
    assert status_hub.reports[-1]["state"] == "SUCCEEDED"
    assert {report["statusUpdateKey"] for report in status_hub.reports} == {STATUS_KEY}


async def test_call_timeout_is_a_retryable_timeout(
    stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str
) -> None:
    task = make_task(echo_url, {"delaySeconds": 5}, call_timeout=0.3)
    started = time.monotonic()
    response = await execute(stub, agent_token, execute_request(task))
    elapsed = time.monotonic() - started
    assert response.outcome == Outcome.RETRYABLE_FAILURE
    info = error_info(response)
    assert info.reason == "EXTENSION_TIMEOUT"
    assert info.metadata["timeoutBound"] == "call_timeout"
    assert info.metadata["httpStatus"] == "0"
    assert 0.25 <= elapsed < 2.5


async def test_task_deadline_fails_without_retry(
    stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str
) -> None:
    task = make_task(echo_url, {"delaySeconds": 5}, deadline_in=0.3)
    started = time.monotonic()
    response = await execute(stub, agent_token, execute_request(task))
    assert time.monotonic() - started < 2.5
    assert response.outcome == Outcome.FAILED
    info = error_info(response)
    assert info.reason == "EXECUTION_DEADLINE_EXCEEDED"
    assert info.metadata["timeoutBound"] == "deadline"


async def test_past_deadline_fails_without_calling(
    stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str
) -> None:
    response = await execute(stub, agent_token, execute_request(make_task(echo_url, {}, deadline_in=-1)))
    assert response.outcome == Outcome.FAILED
    assert error_info(response).reason == "EXECUTION_DEADLINE_EXCEEDED"


async def test_grpc_deadline_bounds_the_call(stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str) -> None:
    task = make_task(echo_url, {"delaySeconds": 5})
    response = await execute(stub, agent_token, execute_request(task), grpc_deadline=1.0)
    assert response.outcome == Outcome.RETRYABLE_FAILURE
    info = error_info(response)
    assert info.reason == "EXTENSION_TIMEOUT"
    assert info.metadata["timeoutBound"] == "caller"


async def test_unreachable_extension_is_retryable(stub: AgentServiceAsyncStub, agent_token: Metadata) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    response = await execute(stub, agent_token, execute_request(make_task(f"http://127.0.0.1:{port}", {})))
    assert response.outcome == Outcome.RETRYABLE_FAILURE
    assert response.http_status == 0
    info = error_info(response)
    assert info.reason == "EXTENSION_UNREACHABLE"
    assert info.metadata["httpStatus"] == "0"


async def test_unknown_model_is_failed_not_a_grpc_error(
    stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str
) -> None:
    task = make_task(echo_url, {}, model="grpc/sync/v1")
    response = await execute(stub, agent_token, execute_request(task))
    assert response.outcome == Outcome.FAILED
    info = error_info(response)
    assert info.reason == "EXECUTION_MODEL_UNSUPPORTED"
    assert info.metadata["executionModel"] == "grpc/sync/v1"
    assert info.metadata["supportedModels"] == "http-json/async/v1,http-json/sync/v1"


async def test_missing_execution_url_is_misconfigured(
    stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str
) -> None:
    task = make_task(echo_url, {})
    del task.extension_settings["execution_url"]
    response = await execute(stub, agent_token, execute_request(task))
    assert response.outcome == Outcome.FAILED
    info = error_info(response)
    assert info.reason == "EXTENSION_MISCONFIGURED"
    assert info.metadata["setting"] == "execution_url"


async def test_wrongly_signed_body_is_refused_by_echo(
    start: AgentFactory, connect: StubFactory, agent_token: Metadata, echo_url: str, tmp_path: Path
) -> None:
    foreign = SigningKeyRing.load_or_create(tmp_path / "foreign-keys", hub_id="not-the-hub")
    app = await start(signer=KeyRingBodySigner(foreign))
    stub = await connect(app)
    response = await execute(stub, agent_token, execute_request(make_task(echo_url, {})))
    assert response.outcome == Outcome.FAILED
    assert response.http_status == 401
    info = error_info(response)
    assert info.reason == "EXTENSION_REJECTED"
    assert info.metadata["extensionReason"] == "SIGNATURE_INVALID"


async def test_default_signer_asks_the_execution_service(
    start: AgentFactory,
    connect: StubFactory,
    agent_token: Metadata,
    echo_url: str,
    settings: Settings,
    signing_service: SigningService,
) -> None:
    app = await start(settings=settings.model_copy(update={"execution_address": signing_service.address}))
    stub = await connect(app)
    response = await execute(stub, agent_token, execute_request(make_task(echo_url, {"x": 1})))
    assert response.outcome == Outcome.SUCCEEDED, response
    [(name, attempt, body, caller)] = signing_service.calls
    assert (name, attempt, caller) == (f"executions/{EXECUTION_ID}", 1, app.agent_id)
    assert json.loads(body)["executionId"] == EXECUTION_ID

    signing_service.refuse = True
    refused = await execute(stub, agent_token, execute_request(make_task(echo_url, {})))
    assert refused.outcome == Outcome.FAILED
    info = error_info(refused)
    assert (info.reason, info.metadata["signingReason"]) == ("REQUEST_SIGNING_REFUSED", "STALE_ATTEMPT")


async def test_unavailable_execution_service_is_retryable(
    start: AgentFactory, connect: StubFactory, agent_token: Metadata, echo_url: str, settings: Settings
) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{sock.getsockname()[1]}"
    stub = await connect(await start(settings=settings.model_copy(update={"execution_address": address})))
    response = await execute(stub, agent_token, execute_request(make_task(echo_url, {})))
    assert response.outcome == Outcome.RETRYABLE_FAILURE
    assert error_info(response).reason == "REQUEST_SIGNING_FAILED"


async def test_invalid_task_is_invalid_argument(
    stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str
) -> None:
    task = make_task(echo_url, {})
    task.ClearField("deadline")
    task.attempt = 0
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await execute(stub, agent_token, execute_request(task))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = call_status(caught.value)
    assert status is not None
    assert [field for field, _ in field_violations(status)] == ["task.attempt", "task.deadline"]


async def test_execute_needs_the_agent_role(
    stub: AgentServiceAsyncStub, token: Callable[..., Metadata], echo_url: str
) -> None:
    request = execute_request(make_task(echo_url, {}))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Execute(request, timeout=CALL_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Execute(request, metadata=token(roles=(EXECUTIONS_RUN,)), timeout=CALL_TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
    admin = await stub.Execute(request, metadata=token(roles=(HUB_ADMIN,)), timeout=CALL_TIMEOUT)
    assert admin.outcome == Outcome.SUCCEEDED


async def test_concurrent_attempts_share_the_session(
    agent: AgentApp, stub: AgentServiceAsyncStub, agent_token: Metadata, echo_url: str
) -> None:
    tasks = [execute(stub, agent_token, execute_request(make_task(echo_url, {"i": i}))) for i in range(20)]
    responses = await asyncio.gather(*tasks)
    assert [json_format.MessageToDict(r.result)["echo"]["i"] for r in responses] == list(range(20))
    assert agent.servicer.in_flight == 0
    assert not agent.session.closed


async def test_busy_agent_refuses_more_attempts(
    start: AgentFactory, connect: StubFactory, agent_token: Metadata, capture: Capture, settings: Settings
) -> None:
    app = await start(settings=settings.model_copy(update={"agent_max_in_flight": 1}), sign=False)
    stub = await connect(app)
    capture.release = asyncio.Event()
    first = asyncio.ensure_future(execute(stub, agent_token, execute_request(make_task(capture.url, {}))))
    await asyncio.wait_for(capture.entered.wait(), CALL_TIMEOUT)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await execute(stub, agent_token, execute_request(make_task(capture.url, {})))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    capture.release.set()
    assert (await first).outcome == Outcome.SUCCEEDED
    assert app.servicer.in_flight == 0
