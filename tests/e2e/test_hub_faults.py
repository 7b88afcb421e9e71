"""Faults under `exthub up`: parts killed (SIGKILL) while work is in flight, through the real gateway.

* A synchronous call cut by a killed execution service ends FAILED (``EXECUTION_INTERRUPTED``) as soon as the
  supervisor has restarted the service on the same data directory — not after its one-hour timeout — with
  gap-free events; a synchronous execution whose extension answered 202 (long-running) is not touched and
  still ends by the extension's own report.
* Asynchronous load (a mix of priorities and delays) survives SIGKILLs of the agent and then of the execution
  service: the hub stays up, every create (retried with its request id) ends with an OK, every execution ends
  exactly once, and ``exthub check`` finds no violation.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import struct_pb2

from exthub.client import is_terminal_state
from exthub.contract.errors import call_error_info
from exthub.contract.roles import EXECUTIONS_RUN
from exthub.execution.v1 import execution_pb2, execution_service_pb2, execution_service_pb2_grpc
from exthub.type.v1 import types_pb2
from tests.e2e.exthub_up import (
    EXTHUB,
    PARTS,
    RunningHub,
    dev_token,
    part_pid,
    poll_interval,
    wait_new_pid,
)

CALL_TIMEOUT = 10.0
#: How long after a restart the interrupted call may take to be ended (its timeout would be an hour).
INTERRUPTED_WITHIN = 20.0
LONG_RUNNING_DELAY_SECONDS = 15
ECHO_PLAIN = "extensions/echo-plain/versions/latest"
State = execution_pb2.Execution.State
#: Short leases and polls so lost attempts come back in seconds (every part inherits them).
FAST = {
    "EXTHUB_AGENT_LEASE_SECONDS": "2",
    "EXTHUB_AGENT_HEARTBEAT_SECONDS": "0.5",
    "EXTHUB_AGENT_RECEIVE_WAIT_SECONDS": "0.5",
    "EXTHUB_QUEUE_POLL_SECONDS": "0.05",
    "EXTHUB_EXECUTION_SWEEP_SECONDS": "0.5",
    "EXTHUB_SHUTDOWN_GRACE_SECONDS": "1",
}


# -- REST through the gateway -----------------------------------------------------------------------------------


def rest(
    hub: RunningHub, token: str, method: str, path: str, body: object = None, *, timeout: float = CALL_TIMEOUT
) -> tuple[int, dict[str, Any]]:
    """One REST call; ``(status, JSON body)`` whatever the status."""
    request = urllib.request.Request(  # noqa: S310 - the hub's loopback URL
        f"{hub.url}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"authorization": f"Bearer {token}", "content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        text = error.read()
        try:
            document = json.loads(text) if text else {}
        except ValueError:
            document = {"body": text.decode("utf-8", "replace")}
        return error.code, document


def reason_of(execution: dict[str, Any]) -> str:
    """The ErrorInfo reason of an execution's ``error``."""
    for detail in execution.get("error", {}).get("details", []):
        if detail.get("@type", "").endswith("google.rpc.ErrorInfo"):
            return str(detail.get("reason", ""))
    return ""


def wait_for(hub: RunningHub, what: str, condition: Callable[[], Any], *, within: float) -> Any:
    """``condition()``'s first truthy value, looked at between poll intervals; AssertionError after ``within``."""
    deadline = time.monotonic() + within
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as error:
            last = error  # the hub is restarting a part
        else:
            if last:
                return last
        poll_interval(hub)
    raise AssertionError(f"{what} within {within}s (last: {last}):\n{hub.log.read_text()[-3000:]}")


def _reason(error: grpc.aio.AioRpcError) -> str:
    info = call_error_info(error)
    return info.reason if info is not None else ""


def exthub_check(data_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXTHUB, "check", "--data-dir", str(data_dir), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


# -- a synchronous call cut by a killed execution service -------------------------------------------------------


def test_a_sync_call_cut_by_a_killed_execution_service_fails_at_once_and_a_long_running_one_is_untouched(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "hub"
    hub = RunningHub(data_dir)
    try:
        token = dev_token(data_dir, EXECUTIONS_RUN)
        # answered 202 by echo, which reports 50 %, waits, then reports SUCCEEDED through the gateway
        status, long_running = rest(
            hub,
            token,
            "POST",
            "/v1/executions",
            {
                "extensionVersion": ECHO_PLAIN,
                "request": {"longRunning": True, "delaySeconds": LONG_RUNNING_DELAY_SECONDS},
            },
        )
        assert status == 200 and long_running["state"] == "RUNNING", long_running

        request_id = str(uuid.uuid4())
        create_path = f"/v1/executions?requestId={request_id}"
        cut_body = {"extensionVersion": ECHO_PLAIN, "request": {"delaySeconds": 60}, "labels": {"case": "cut"}}
        answers: list[object] = []

        def hanging_create() -> None:
            try:
                answers.append(rest(hub, token, "POST", create_path, cut_body, timeout=90))
            except Exception as error:  # the connection is cut with the service: any error is an answer
                answers.append(error)

        client = threading.Thread(target=hanging_create, daemon=True)
        client.start()
        query = urllib.parse.urlencode({"filter": 'labels.case = "cut"'})

        def cut_is_running() -> str:
            _, page = rest(hub, token, "GET", f"/v1/executions?{query}")
            found = [e for e in page.get("executions", []) if e["state"] == "RUNNING"]
            return str(found[0]["name"]) if found else ""

        name = wait_for(hub, "the synchronous call is running", cut_is_running, within=CALL_TIMEOUT)

        old = part_pid(hub, "execution")
        assert old is not None
        os.kill(old, signal.SIGKILL)
        wait_new_pid(hub, "execution", old)

        def failed() -> dict[str, Any] | None:
            status, execution = rest(hub, token, "GET", f"/v1/{name}")
            return execution if status == 200 and execution["state"] != "RUNNING" else None

        ended = wait_for(hub, "the interrupted call ends", failed, within=INTERRUPTED_WITHIN)
        assert ended["state"] == "FAILED", ended
        assert reason_of(ended) == "EXECUTION_INTERRUPTED", ended
        assert "restarted during this synchronous call" in ended["error"]["message"]
        status, page = rest(hub, token, "GET", f"/v1/{name}/events")
        assert status == 200
        assert [(e["sequence"], e["state"]) for e in page["events"]] == [("1", "RUNNING"), ("2", "FAILED")], page
        # the client that retries its create with the same request id learns the outcome
        status, again = rest(hub, token, "POST", create_path, cut_body)
        assert status == 200 and again["name"] == name and again["state"] == "FAILED", again
        client.join(timeout=CALL_TIMEOUT)
        assert answers, "the cut call never returned"

        # the long-running execution was not touched: it is still RUNNING, and echo's own report ends it
        status, still = rest(hub, token, "GET", f"/v1/{long_running['name']}")
        assert status == 200 and still["state"] == "RUNNING", still

        def succeeded() -> dict[str, Any] | None:
            _, execution = rest(hub, token, "GET", f"/v1/{long_running['name']}")
            return execution if execution.get("state") not in (None, "RUNNING") else None

        done = wait_for(hub, "the long-running execution ends", succeeded, within=LONG_RUNNING_DELAY_SECONDS + 30)
        assert done["state"] == "SUCCEEDED", done
        _, page = rest(hub, token, "GET", f"/v1/{long_running['name']}/events")
        assert [e["state"] for e in page["events"]][-1] == "SUCCEEDED"
        assert "FAILED" not in [e["state"] for e in page["events"]]

        check = exthub_check(data_dir, "--require-terminal")
        assert check.returncode == 0, check.stdout + check.stderr
        assert "no violation" in check.stdout
    finally:
        assert hub.stop() == 0


# -- asynchronous load while the agent and the execution service are killed ---------------------------------------

LOAD = 200
CREATE_CONCURRENCY = 16
CREATE_TRIES = 20
KILL_AGENT_AFTER = 60
KILL_EXECUTION_AFTER = 130
PRIORITIES = (types_pb2.LOW, types_pb2.NORMAL, types_pb2.HIGH)
DELAYS = (0.0, 0.2, 0.5, 1.0)
ALL_END_WITHIN = 45.0
RETRYABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL)


async def test_async_load_survives_killed_agent_and_execution_service(tmp_path: Path) -> None:
    data_dir = tmp_path / "hub"
    hub = await asyncio.to_thread(RunningHub, data_dir, env=FAST)
    started = time.monotonic()
    try:
        token = await asyncio.to_thread(dev_token, data_dir, EXECUTIONS_RUN)
        metadata = (("authorization", f"Bearer {token}"),)
        async with grpc.aio.insecure_channel(hub.address) as channel:
            stub = execution_service_pb2_grpc.ExecutionServiceStub(channel)
            accepted: list[str] = []
            refused: list[str] = []
            progressed = asyncio.Condition()

            async def create(index: int, gate: asyncio.Semaphore) -> None:
                request = struct_pb2.Struct()
                request.update({"delaySeconds": DELAYS[index % len(DELAYS)], "n": index})
                message = execution_service_pb2.CreateExecutionRequest(
                    execution=execution_pb2.Execution(
                        extension_version=ECHO_PLAIN,
                        profile="async",
                        priority=PRIORITIES[index % len(PRIORITIES)],
                        request=request,
                    ),
                    request_id=str(uuid.uuid4()),  # retried creates are the same create
                )
                async with gate:
                    for attempt in range(CREATE_TRIES):
                        try:
                            created = await stub.CreateExecution(message, metadata=metadata, timeout=CALL_TIMEOUT)
                        except grpc.aio.AioRpcError as error:
                            retry = error.code() in RETRYABLE or _reason(error) == "REQUEST_IN_PROGRESS"
                            if not retry or attempt == CREATE_TRIES - 1:
                                refused.append(f"{error.code().name}: {error.details()}")
                                return  # not accepted: the client saw no OK
                            await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))  # client back-off while it restarts
                            continue
                        async with progressed:
                            accepted.append(created.name)
                            progressed.notify_all()
                        return

            async def kill(part: str, after: int) -> None:
                async with progressed:
                    await progressed.wait_for(lambda: len(accepted) >= after)
                old = await asyncio.to_thread(part_pid, hub, part)
                assert old is not None, f"{part} is not running"
                os.kill(old, signal.SIGKILL)
                await asyncio.to_thread(wait_new_pid, hub, part, old)

            gate = asyncio.Semaphore(CREATE_CONCURRENCY)
            load = asyncio.gather(*(create(index, gate) for index in range(LOAD)))
            async with asyncio.timeout(60):
                await kill("agent", KILL_AGENT_AFTER)
                await kill("execution", KILL_EXECUTION_AFTER)
                await load
            # a create retried with its request id always ends with an OK, also when the execution service died
            # after reserving the request id and before storing the execution
            assert refused == [] and len(accepted) == LOAD, f"{refused}\n{hub.log.read_text()[-3000:]}"
            assert len(set(accepted)) == len(accepted)

            async def everything() -> list[execution_pb2.Execution]:
                listing = await stub.ListExecutions(
                    execution_service_pb2.ListExecutionsRequest(page_size=1000), metadata=metadata, timeout=CALL_TIMEOUT
                )
                assert not listing.next_page_token
                return list(listing.executions)

            deadline = time.monotonic() + ALL_END_WITHIN
            while True:
                try:
                    executions = await everything()
                except grpc.aio.AioRpcError as error:
                    if error.code() not in RETRYABLE:
                        raise
                    executions = []
                ended = {e.name for e in executions if is_terminal_state(e.state)}
                if executions and set(accepted) <= ended and len(ended) == len(executions):
                    break
                assert hub.process.poll() is None, hub.log.read_text()[-3000:]
                assert time.monotonic() < deadline, (
                    f"{len(set(accepted) - ended)} accepted executions did not end within {ALL_END_WITHIN}s; "
                    f"states: {sorted({State.Name(e.state) for e in executions if e.name not in ended})}; "
                    f"not ended: {sorted(set(accepted) - ended)[:5]}\n{hub.log.read_text()[-3000:]}"
                )
                await asyncio.sleep(0.5)  # poll interval while the work finishes (bounded by the deadline)

            all_ended = time.monotonic() - started
            gate = asyncio.Semaphore(CREATE_CONCURRENCY)

            async def terminal_events(name: str) -> int:
                async with gate:
                    response = await stub.ListExecutionEvents(
                        execution_service_pb2.ListExecutionEventsRequest(parent=name, page_size=1000),
                        metadata=metadata,
                        timeout=CALL_TIMEOUT,
                    )
                assert [e.sequence for e in response.events] == list(range(1, len(response.events) + 1)), name
                return sum(1 for event in response.events if is_terminal_state(event.state))

            assert await asyncio.gather(*(terminal_events(name) for name in accepted)) == [1] * len(accepted)

        accepted_file = tmp_path / "accepted.txt"
        accepted_file.write_text("\n".join(accepted) + "\n", encoding="utf-8")
        check = await asyncio.to_thread(exthub_check, data_dir, "--require-terminal", "--accepted", str(accepted_file))
        assert check.returncode == 0, check.stdout + check.stderr
        assert f"{len(executions)} executions" in check.stdout and "no violation" in check.stdout, check.stdout
        output = hub.log.read_text()
        for part in ("agent", "execution"):
            assert f"{part} exited unexpectedly" in output and f"{part} restarted on" in output, output[-3000:]
        assert hub.process.poll() is None, "the hub stays up"
        restarts = {part: output.count(f"{part} restarted on") for part in PARTS}
        print(
            f"async load with kills: {len(accepted)} accepted, {len(executions)} stored, each with one terminal "
            f"event; all ended {all_ended:.1f}s after the hub was up; restarts {restarts}; "
            f"{check.stdout.splitlines()[0]}"
        )
    finally:
        assert await asyncio.to_thread(hub.stop) == 0
