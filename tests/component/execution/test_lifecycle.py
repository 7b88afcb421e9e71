"""Long-running reports, objects, direct tokens, tenancy, idempotency, watch, cancel and retry."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import uuid
from datetime import timedelta
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format
from yarl import URL

from exthub.contract.errors import call_error_info
from exthub.contract.roles import AGENT, HUB_ADMIN
from exthub.contract.signatures import verify_direct_token
from exthub.execution.v1 import agent_task_service_pb2, execution_pb2, execution_service_pb2
from services.objects.port import ObjectRef
from tests.component.execution.test_sync import VERSION, create, events_of, reason_of, struct
from tests.support.hub import Hub

E = execution_pb2.Execution
pb = execution_service_pb2
tasks_pb = agent_task_service_pb2
OBJECTS_VERSION = "extensions/echo/versions/1.0.0"
HTTP = aiohttp.ClientTimeout(total=10)


async def watch_all(hub: Hub, name: str, from_sequence: int = 0) -> list[execution_pb2.ExecutionEvent]:
    async with asyncio.timeout(20):
        return [
            event
            async for event in hub.stub.WatchExecution(
                pb.WatchExecutionRequest(name=name, from_sequence=from_sequence), metadata=hub.token()
            )
        ]


async def test_long_running_202_then_progress_and_completion_through_status_url(hub: Hub) -> None:
    # the delay holds the terminal report back until CreateExecution has answered with the accepted state
    execution = await create(hub, request=struct(longRunning=True, delaySeconds=0.5))
    assert execution.state == E.RUNNING
    events = await watch_all(hub, execution.name)  # ends after the terminal event
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert [e.state for e in events] == [E.RUNNING, E.RUNNING, E.SUCCEEDED]
    assert events[1].type == execution_pb2.ExecutionEvent.PROGRESS and events[1].percent_complete == 50
    done = await hub.stub.GetExecution(pb.GetExecutionRequest(name=execution.name), metadata=hub.token())
    assert done.state == E.SUCCEEDED and json_format.MessageToDict(done.result)["echo"] == {
        "longRunning": True,
        "delaySeconds": 0.5,
    }
    # the same terminal report again (with the attempt's key) is a no-op; a conflicting one is refused
    key = hub.calls_of(execution.name)[0].status_update_key
    again = await hub.stub.ReportExecutionStatus(
        pb.ReportExecutionStatusRequest(name=execution.name, attempt=1, state=E.SUCCEEDED, status_update_key=key)
    )
    assert again.etag == done.etag
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await hub.stub.ReportExecutionStatus(
            pb.ReportExecutionStatusRequest(name=execution.name, attempt=1, state=E.FAILED, status_update_key=key)
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(await events_of(hub, execution.name)) == 3


async def test_wrong_status_key_and_stale_attempt_are_refused(hub: Hub) -> None:
    execution = await create(hub, request=struct(longRunning=True, delaySeconds=0))
    await watch_all(hub, execution.name)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await hub.stub.ReportExecutionStatus(
            pb.ReportExecutionStatusRequest(
                name=execution.name, attempt=1, state=E.FAILED, status_update_key="not-the-key"
            )
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # no key (a token does not replace it)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await hub.stub.ReportExecutionStatus(
            pb.ReportExecutionStatusRequest(name=execution.name, attempt=1, state=E.FAILED), metadata=hub.token()
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # attempt fencing: an async execution is claimed once; after a retry report, attempt 1 is stale
    queued = await create(hub, profile="async")
    assert queued.state == E.QUEUED
    agent = hub.token(roles=(AGENT,), tenant="exthub", user="agent")
    claimed = await hub.tasks.ClaimExecution(
        tasks_pb.ClaimExecutionRequest(name=queued.name, attempt=1, agent_id="a1"), metadata=agent
    )
    assert claimed.execution.state == E.RUNNING and claimed.task.status_update_key
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await hub.tasks.ClaimExecution(
            tasks_pb.ClaimExecutionRequest(name=queued.name, attempt=1, agent_id="a2"), metadata=agent
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    retry = await hub.stub.ReportExecutionStatus(
        pb.ReportExecutionStatusRequest(
            name=queued.name, attempt=1, state=E.QUEUED, status_update_key=claimed.task.status_update_key
        )
    )
    assert retry.state == E.QUEUED and retry.attempt == 2
    with pytest.raises(grpc.aio.AioRpcError) as raised:  # the ended attempt's key proves nothing any more
        await hub.stub.ReportExecutionStatus(
            pb.ReportExecutionStatusRequest(
                name=queued.name, attempt=1, state=E.SUCCEEDED, status_update_key=claimed.task.status_update_key
            ),
            metadata=agent,
        )
    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(json_format.Parse("{}", execution_pb2.Execution()).error) == ""
    events = await events_of(hub, queued.name)
    assert [(e.sequence, e.state) for e in events] == [(1, E.QUEUED), (2, E.RUNNING), (3, E.QUEUED)]


async def test_inputs_upload_continue_and_outputs_download(hub: Hub) -> None:
    execution = await create(
        hub, extension_version=OBJECTS_VERSION, request=struct(kind="objects"), expected_inputs=["document"]
    )
    assert execution.state == E.PENDING_INPUTS and list(execution.expected_inputs) == ["document"]
    (document,) = execution.inputs
    assert document.name == "document" and not document.required and document.upload.method == "PUT"
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await hub.stub.ContinueExecution(
            pb.ContinueExecutionRequest(name=execution.name, provided_inputs=["document"]), metadata=hub.token()
        )
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    info = call_error_info(raised.value)
    assert info is not None and info.reason == "INPUTS_MISSING"
    content = b"hello objects" * 100
    async with aiohttp.ClientSession(timeout=HTTP) as session:
        assert (await use(session, document.upload, content))[0] in (200, 201)
        done = await hub.stub.ContinueExecution(
            pb.ContinueExecutionRequest(name=execution.name, provided_inputs=["document"]), metadata=hub.token()
        )
        assert done.state == E.SUCCEEDED, done
        result = json_format.MessageToDict(done.result)
        assert result["inputs"]["document"] == {"size": len(content), "sha256": hashlib.sha256(content).hexdigest()}
        (report,) = done.outputs
        assert report.provided and report.download.method == "GET"
        status, body = await use(session, report.download)
        assert status == 200
        assert json.loads(body) == {"kind": "objects"}


async def test_continue_seals_inputs_and_the_old_upload_url_changes_nothing(hub: Hub) -> None:
    execution = await create(
        hub, extension_version=OBJECTS_VERSION, request=struct(kind="objects"), expected_inputs=["document"]
    )
    (document,) = execution.inputs
    content = gzip.compress(b"sealed bytes" * 50)  # stored as sent: never decoded on the way in
    async with aiohttp.ClientSession(timeout=HTTP, auto_decompress=False) as session:
        assert (await use(session, document.upload, content, {"Content-Encoding": "gzip"}))[0] in (200, 201)
        done = await hub.stub.ContinueExecution(
            pb.ContinueExecutionRequest(name=execution.name, provided_inputs=["document"]), metadata=hub.token()
        )
        assert done.state == E.SUCCEEDED, done
        (sealed,) = done.inputs
        assert (sealed.size_bytes, sealed.sha256) == (len(content), hashlib.sha256(content).hexdigest())
        assert not sealed.HasField("upload")  # no accessor once the execution moved on
        status, _ = await use(session, document.upload, b"replaced later")
        # local/v1 refuses it; a user-delegation SAS cannot be revoked, so az-blob/v1's lands on the staging blob
        assert status == (403 if hub.profile == "embedded" else 201)
        ref = ObjectRef(execution.name.removeprefix("executions/"), "input", "document")
        reads = await hub.execution.context.objects.download_accessor(ref, timedelta(minutes=5))
        assert await use(session, reads) == (200, content)  # what the extension reads is what was sealed
    again = await hub.stub.GetExecution(pb.GetExecutionRequest(name=execution.name), metadata=hub.token())
    assert (again.inputs[0].size_bytes, again.inputs[0].sha256) == (sealed.size_bytes, sealed.sha256)


async def use(
    session: aiohttp.ClientSession, accessor: Any, data: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    """An accessor used exactly as a client must: its method, its URI as given (a SAS is already encoded) and its
    headers (plus ``headers`` of the body's own, e.g. its Content-Encoding); the status and body of the answer."""
    async with session.request(
        accessor.method,
        URL(accessor.uri, encoded=True),
        data=data,
        headers={**dict(accessor.headers), **(headers or {})},
    ) as response:
        return response.status, await response.read()


async def test_direct_token_verifies_with_get_signing_keys(hub: Hub) -> None:
    execution = await create(hub, extension_version=OBJECTS_VERSION, profile="direct")
    assert execution.state == E.DIRECT_TOKEN_ISSUED and execution.mode == E.DIRECT
    keys = await hub.stub.GetSigningKeys(pb.GetSigningKeysRequest())
    jwks = {"keys": [json_format.MessageToDict(k, preserving_proto_field_name=True) for k in keys.keys]}
    claims = verify_direct_token(execution.direct_token, jwks, issuer="exthub-local", audience="extensions/echo")
    assert claims["execution"] == execution.name and claims["tid"] == "tenant-a" and claims["oid"] == "user-1"


async def test_another_tenant_sees_not_found_and_admin_sees_all(hub: Hub) -> None:
    execution = await create(hub)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await hub.stub.GetExecution(pb.GetExecutionRequest(name=execution.name), metadata=hub.token(tenant="b"))
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    info = call_error_info(raised.value)
    assert info is not None and info.reason == "EXECUTION_NOT_FOUND"
    admin = await hub.stub.GetExecution(
        pb.GetExecutionRequest(name=execution.name), metadata=hub.token(roles=(HUB_ADMIN,), tenant="b")
    )
    assert admin.name == execution.name
    mine = await hub.stub.ListExecutions(pb.ListExecutionsRequest(filter="state = SUCCEEDED"), metadata=hub.token())
    assert [e.name for e in mine.executions] == [execution.name]
    theirs = await hub.stub.ListExecutions(pb.ListExecutionsRequest(), metadata=hub.token(tenant="b"))
    assert not theirs.executions


async def test_same_request_id_twice_gives_one_execution(hub: Hub) -> None:
    request_id = str(uuid.uuid4())
    first, second = await asyncio.gather(create(hub, request_id=request_id), create(hub, request_id=request_id))
    assert first.name == second.name
    listed = await hub.stub.ListExecutions(pb.ListExecutionsRequest(), metadata=hub.token())
    assert len(listed.executions) == 1


async def test_list_filters_and_pages(hub: Hub) -> None:
    for env in ("a", "b", "a"):
        await create(hub, labels={"env": env})
    page = await hub.stub.ListExecutions(
        pb.ListExecutionsRequest(filter='labels.env = "a"', page_size=1), metadata=hub.token()
    )
    assert len(page.executions) == 1 and page.next_page_token
    rest = await hub.stub.ListExecutions(
        pb.ListExecutionsRequest(filter='labels.env = "a"', page_size=1, page_token=page.next_page_token),
        metadata=hub.token(),
    )
    assert len(rest.executions) == 1 and rest.executions[0].name != page.executions[0].name
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await hub.stub.ListExecutions(pb.ListExecutionsRequest(filter="nope = 1"), metadata=hub.token())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_cancel_and_retry(hub: Hub) -> None:
    pending = await create(hub, extension_version=OBJECTS_VERSION, expected_inputs=["document"])
    cancelled = await hub.stub.CancelExecution(pb.CancelExecutionRequest(name=pending.name), metadata=hub.token())
    assert cancelled.state == E.CANCELLED
    # a continue after the execution moved on changes nothing and answers with the execution as it is
    again = await hub.stub.ContinueExecution(pb.ContinueExecutionRequest(name=pending.name), metadata=hub.token())
    assert again.state == E.CANCELLED and again.etag == cancelled.etag
    retried = await hub.stub.RetryExecution(pb.RetryExecutionRequest(name=pending.name), metadata=hub.token())
    assert retried.retried_from == pending.name and retried.state == E.PENDING_INPUTS
    assert list(retried.expected_inputs) == ["document"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await hub.stub.RetryExecution(pb.RetryExecutionRequest(name=retried.name), metadata=hub.token())
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # a running long-running sync execution is cancelled at once
    running = await create(hub, request=struct(longRunning=True, delaySeconds=5))
    assert running.state == E.RUNNING
    stopped = await hub.stub.CancelExecution(pb.CancelExecutionRequest(name=running.name), metadata=hub.token())
    assert stopped.state == E.CANCELLED
    assert (await watch_all(hub, running.name))[-1].state == E.CANCELLED


async def test_agent_unreachable_ends_failed_not_internal(hub: Hub) -> None:
    await hub.agent.stop(0)
    execution = await create(hub)
    assert execution.state == E.FAILED
    assert reason_of(execution.error) == "AGENT_UNAVAILABLE"


async def test_version_must_be_given(hub: Hub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await create(hub, extension_version="")
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert VERSION
