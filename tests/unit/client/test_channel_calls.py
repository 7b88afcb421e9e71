"""The client's channel against a real gRPC server on loopback: token and default deadline on every call,
retries only for safe methods, idempotent create retried with the same request id, watch resumed without gaps.

The server is a small ExecutionService that records what reaches it and fails on cue (UNAVAILABLE): the only
way to show retries deterministically. It speaks real gRPC on 127.0.0.1 through the generated stubs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from exthub.client import (
    ExecutionWaitTimeout,
    HubClient,
    ObjectTransferError,
    StaticTokenProvider,
    connect,
    with_expected_inputs,
)
from exthub.execution.v1 import execution_pb2, execution_service_pb2, execution_service_pb2_grpc

Context = grpc.aio.ServicerContext[object, object]
E = execution_pb2.Execution
Event = execution_pb2.ExecutionEvent
DEFAULT_TIMEOUT = 7.0


@dataclass
class Seen:
    """One call as the server saw it."""

    authorization: str | None
    time_remaining: float | None
    request: object


@dataclass
class RecordingExecutionService(execution_service_pb2_grpc.ExecutionServiceServicer):
    """Records calls; ``failures[method]`` calls of a method answer UNAVAILABLE before it works."""

    calls: dict[str, list[Seen]] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)
    watch_break: str = "unavailable"  # how the first watch stream stops after one event: "unavailable" or "end"
    running_waits: int = 2  # the first calls of WaitExecution (failed ones included) answer RUNNING
    create_waits_to_the_end: bool = False  # a create with wait_timeout answers SUCCEEDED (else RUNNING)

    async def _record(self, method: str, request: object, context: Context) -> None:
        metadata = dict(context.invocation_metadata() or ())
        authorization = metadata.get("authorization")
        seen = Seen(str(authorization) if authorization is not None else None, context.time_remaining(), request)
        self.calls.setdefault(method, []).append(seen)
        if self.failures.get(method, 0) > 0:
            self.failures[method] -= 1
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the backend blinked")

    async def GetExecution(self, request: execution_service_pb2.GetExecutionRequest, context: Context) -> E:
        await self._record("GetExecution", request, context)
        return E(name=request.name, state=E.SUCCEEDED)

    async def CancelExecution(self, request: execution_service_pb2.CancelExecutionRequest, context: Context) -> E:
        await self._record("CancelExecution", request, context)
        return E(name=request.name, state=E.CANCELLED)

    async def CreateExecution(self, request: execution_service_pb2.CreateExecutionRequest, context: Context) -> E:
        await self._record("CreateExecution", request, context)
        ended = self.create_waits_to_the_end and request.HasField("wait_timeout")
        return E(name="executions/" + request.request_id, state=E.SUCCEEDED if ended else E.RUNNING)

    async def WaitExecution(self, request: execution_service_pb2.WaitExecutionRequest, context: Context) -> E:
        await self._record("WaitExecution", request, context)
        if len(self.calls["WaitExecution"]) > self.running_waits:
            return E(name=request.name, state=E.SUCCEEDED)
        # the hub's wait, played out; it may answer before the timeout asked (the client must ask again)
        await asyncio.sleep(min(request.timeout.ToTimedelta().total_seconds(), 0.05))
        return E(name=request.name, state=E.RUNNING)

    async def WatchExecution(
        self, request: execution_service_pb2.WatchExecutionRequest, context: Context
    ) -> AsyncIterator[Event]:
        metadata = dict(context.invocation_metadata() or ())
        authorization = metadata.get("authorization")
        calls = self.calls.setdefault("WatchExecution", [])
        calls.append(Seen(str(authorization) if authorization is not None else None, context.time_remaining(), request))
        states = {1: E.RUNNING, 2: E.RUNNING, 3: E.SUCCEEDED}
        for sequence in range(max(request.from_sequence, 1), 4):
            yield Event(sequence=sequence, state=states[sequence], percent_complete=50 * (sequence - 1))
            if len(calls) == 1 and sequence == 1:  # the first stream breaks after one event
                if self.watch_break == "end":
                    return
                await context.abort(grpc.StatusCode.UNAVAILABLE, "connection reset")


@dataclass
class Server:
    service: RecordingExecutionService
    address: str


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    service = RecordingExecutionService()  # type: ignore[abstract]  # the methods not used answer UNIMPLEMENTED
    grpc_server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
    execution_service_pb2_grpc.add_ExecutionServiceServicer_to_server(service, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    try:
        yield Server(service, f"127.0.0.1:{port}")
    finally:
        await grpc_server.stop(0)


@pytest.fixture
async def client(server: Server) -> AsyncIterator[HubClient]:
    async with connect(
        f"http://{server.address}", token_provider=StaticTokenProvider("tok-1"), default_timeout=DEFAULT_TIMEOUT
    ) as hub:
        yield hub


async def test_every_call_carries_the_token_and_a_default_deadline(server: Server, client: HubClient) -> None:
    await client.get_execution("executions/a")
    await client.executions.GetExecution(execution_service_pb2.GetExecutionRequest(name="executions/b"), timeout=100)
    await client.executions.GetExecution(
        execution_service_pb2.GetExecutionRequest(name="executions/c"),
        metadata=(("authorization", "Bearer caller-chose"),),
    )
    default, explicit, own = server.service.calls["GetExecution"]
    assert default.authorization == "Bearer tok-1"
    # gRPC rounds deadlines on the wire, so allow a little either side
    assert default.time_remaining is not None and DEFAULT_TIMEOUT - 3 < default.time_remaining < DEFAULT_TIMEOUT + 1
    assert explicit.time_remaining is not None and explicit.time_remaining > 50  # the caller's timeout wins
    assert own.authorization == "Bearer caller-chose"  # never a second authorization header


async def test_streams_carry_the_token_but_no_default_deadline(server: Server, client: HubClient) -> None:
    events = [e async for e in client.watch("executions/w")]
    assert [e.sequence for e in events] == [1, 2, 3]
    first = server.service.calls["WatchExecution"][0]
    assert first.authorization == "Bearer tok-1" and first.time_remaining is None


async def test_without_a_provider_no_authorization_is_sent(server: Server) -> None:
    async with connect(server.address) as anonymous:
        await anonymous.get_execution("executions/a")
    assert server.service.calls["GetExecution"][0].authorization is None


async def test_reads_are_retried_on_unavailable_by_the_channel(server: Server, client: HubClient) -> None:
    server.service.failures["GetExecution"] = 2
    got = await client.get_execution("executions/r")
    assert got.state == E.SUCCEEDED
    assert len(server.service.calls["GetExecution"]) == 3


async def test_mutations_are_not_retried(server: Server, client: HubClient) -> None:
    server.service.failures["CancelExecution"] = 1
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await client.executions.CancelExecution(execution_service_pb2.CancelExecutionRequest(name="executions/x"))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(server.service.calls["CancelExecution"]) == 1


async def test_create_is_retried_with_the_same_request_id(server: Server, client: HubClient) -> None:
    server.service.failures["CreateExecution"] = 1
    created = await client.create_execution(E(extension_version="extensions/e/versions/1.0.0"))
    attempts = server.service.calls["CreateExecution"]
    assert len(attempts) == 2
    ids = {
        a.request.request_id for a in attempts if isinstance(a.request, execution_service_pb2.CreateExecutionRequest)
    }
    assert len(ids) == 1 and created.name == "executions/" + ids.pop()


@pytest.mark.parametrize("how", ["unavailable", "end"])
async def test_a_broken_watch_resumes_after_the_last_event(server: Server, client: HubClient, how: str) -> None:
    server.service.watch_break = how
    seen: list[int] = []
    done = await client.wait("executions/w", max_wait=10, on_event=lambda e: seen.append(e.sequence))
    assert seen == [1, 2, 3]  # no gap, no repeat
    watches = server.service.calls["WatchExecution"]
    assert [
        w.request.from_sequence for w in watches if isinstance(w.request, execution_service_pb2.WatchExecutionRequest)
    ] == [1, 2]
    assert done.state == E.SUCCEEDED  # the final GetExecution


async def test_create_and_wait_names_the_inputs_it_will_upload(
    server: Server, client: HubClient, tmp_path: Path
) -> None:
    asked = E(extension_version="extensions/e/versions/1.0.0", expected_inputs=["document"])
    document = tmp_path / "document.txt"
    document.write_text("x")
    # the recording server answers RUNNING (no input declared): the client refuses to upload, after the create
    with pytest.raises(ObjectTransferError, match="declares no inputs"):
        await client.create_and_wait(asked, inputs={"document": document, "extra": document}, max_wait=5)
    (seen,) = server.service.calls["CreateExecution"]
    assert isinstance(seen.request, execution_service_pb2.CreateExecutionRequest)
    assert list(seen.request.execution.expected_inputs) == ["document", "extra"]
    assert not seen.request.HasField("wait_timeout"), "inputs are uploaded first: the create does not wait"
    assert list(asked.expected_inputs) == ["document"]  # the caller's message is left as it was
    assert list(with_expected_inputs(asked, ["extra", "extra"]).expected_inputs) == ["document", "extra"]


async def test_wait_asks_wait_execution_again_while_the_execution_runs(server: Server, client: HubClient) -> None:
    server.service.failures["WaitExecution"] = 1  # retried by the channel: WaitExecution is a read
    done = await client.wait("executions/x", max_wait=10)
    assert done.state == E.SUCCEEDED
    waits = server.service.calls["WaitExecution"]
    assert len(waits) == 3 and "WatchExecution" not in server.service.calls
    asked = [w.request.timeout.ToTimedelta().total_seconds() for w in waits]  # type: ignore[attr-defined]
    assert all(9 < seconds <= 10 for seconds in asked), asked
    assert all(w.authorization == "Bearer tok-1" for w in waits)


async def test_wait_gives_up_after_max_wait_and_says_the_last_state(server: Server, client: HubClient) -> None:
    server.service.running_waits = 100
    with pytest.raises(ExecutionWaitTimeout, match="RUNNING"):
        await client.wait("executions/slow", max_wait=0.3)
    asked = [w.request.timeout.ToTimedelta().total_seconds() for w in server.service.calls["WaitExecution"]]  # type: ignore[attr-defined]
    assert asked and asked[0] == pytest.approx(0.3, abs=0.05)


def wait_timeouts(server: Server) -> list[float | None]:
    """The ``wait_timeout`` of each CreateExecution, in seconds (None: not asked)."""
    asked: list[float | None] = []
    for seen in server.service.calls["CreateExecution"]:
        assert isinstance(seen.request, execution_service_pb2.CreateExecutionRequest)
        has = seen.request.HasField("wait_timeout")
        asked.append(seen.request.wait_timeout.ToTimedelta().total_seconds() if has else None)
    return asked


async def test_create_and_wait_is_one_call_when_the_create_answers_the_end(server: Server, client: HubClient) -> None:
    server.service.create_waits_to_the_end = True
    done = await client.create_and_wait(E(extension_version="extensions/e/versions/1.0.0"), max_wait=10)
    assert done.state == E.SUCCEEDED
    assert set(server.service.calls) == {"CreateExecution"}, "no WaitExecution, no WatchExecution"
    assert wait_timeouts(server) == [10.0]
    (seen,) = server.service.calls["CreateExecution"]
    # the call is bounded by max_wait (gRPC rounds deadlines on the wire: a little either side)
    assert seen.time_remaining is not None and 8 < seen.time_remaining < 11
    await client.create_and_wait(E(extension_version="extensions/e/versions/1.0.0"), max_wait=100)
    assert wait_timeouts(server) == [10.0, 30.0], "at most WAIT_CALL_SECONDS"


async def test_create_and_wait_goes_on_with_wait_execution_while_it_runs(server: Server, client: HubClient) -> None:
    done = await client.create_and_wait(E(extension_version="extensions/e/versions/1.0.0"), max_wait=10)
    assert done.state == E.SUCCEEDED
    assert wait_timeouts(server) == [10.0]
    waits = server.service.calls["WaitExecution"]
    assert len(waits) == 3 and all(isinstance(w.request, execution_service_pb2.WaitExecutionRequest) for w in waits)
    assert {w.request.name for w in waits} == {done.name}  # type: ignore[attr-defined]


async def test_create_and_wait_with_on_event_follows_the_watch_without_a_waiting_create(
    server: Server, client: HubClient
) -> None:
    server.service.create_waits_to_the_end = True  # (it would, if asked)
    seen: list[int] = []
    done = await client.create_and_wait(
        E(extension_version="extensions/e/versions/1.0.0"), max_wait=10, on_event=lambda e: seen.append(e.sequence)
    )
    assert done.state == E.SUCCEEDED and seen == [1, 2, 3]
    assert wait_timeouts(server) == [None]
