"""Synchronous calls lost with their execution service process: the instance leases, the owner of a call, and
the recovery that ends such executions FAILED (EXECUTION_INTERRUPTED) — and nothing else.

The "previous process" is a context of its own over the same store (its own instance id), whose running calls
are cancelled as a crash would cut them short; where its process lives is told to the keepers by a probe.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from exthub.contract.roles import EXECUTIONS_RUN
from services.execution.domain import EventType, ExecutionState
from services.execution.domain.codes import Code
from services.execution.domain.instances import (
    EXECUTION_INTERRUPTED,
    INSTANCE_LEASE,
    InstanceLease,
    instance_gone,
)
from services.execution.domain.model import Execution
from services.execution.domain.outcomes import AttemptResult
from services.execution.handlers import create
from services.execution.handlers.context import ExecutionContext
from services.execution.handlers.create import ExecutionDraft
from services.execution.handlers.ports import AttemptOutcome, AttemptTask
from services.execution.instances import InstanceKeeper
from services.execution.invariants import check_invariants
from services.execution.repository import InstanceRegistry
from services.platform.auth.principal import Principal
from services.platform.errors import FailedPrecondition
from tests.unit.execution.fakes import Fakes, build, echo_version

S = ExecutionState
ALICE = Principal(subject="alice", tenant="tenant-a", user="alice", roles=frozenset({EXECUTIONS_RUN}))
ECHO = "extensions/echo/versions/1.0.0"
HERE = "host-a"
T0 = "2030-01-02T03:04:05.000000Z"


@pytest.fixture
def hub(tmp_path: Path) -> Fakes:
    fakes = build(tmp_path)
    fakes.catalog.add(echo_version())
    return fakes


class Processes:
    """Which (pid, start) processes run on ``HERE``: the keepers' probe."""

    def __init__(self) -> None:
        self.running: set[tuple[int, str]] = set()

    def __call__(self, pid: int, start: str) -> bool:
        return (pid, start) in self.running


def registry(hub: Fakes) -> InstanceRegistry:
    return InstanceRegistry(hub.repository.collection)


def keeper(ctx: ExecutionContext, hub: Fakes, processes: Processes, *, pid: int, host: str = HERE) -> InstanceKeeper:
    processes.running.add((pid, f"start-{pid}"))
    return InstanceKeeper(
        ctx, registry(hub), host=host, pid=pid, process_start=f"start-{pid}", process_running=processes
    )


def other_process(hub: Fakes) -> ExecutionContext:
    """A second execution service process over the same store (its own instance and background runs)."""
    return dataclasses.replace(hub.ctx, instance="previous-process", inflight={}, background=set())


async def start_sync(ctx: ExecutionContext, hub: Fakes, request: dict[str, object] | None = None) -> Execution:
    """Start a synchronous execution in ``ctx`` whose agent call never answers; return it once the call is out."""
    called = asyncio.Event()

    async def hang(task: AttemptTask) -> AttemptOutcome:
        called.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    hub.agent.script = hang
    creating = asyncio.ensure_future(
        create.create_execution(
            ctx,
            ALICE,
            ExecutionDraft(extension_version=ECHO, request=request or {"delaySeconds": 30}),
            request_id="",
            authorization="Bearer caller",
            caller_remaining=None,
        )
    )
    async with asyncio.timeout(5):
        await called.wait()
    (task, _) = hub.agent.calls[-1]
    creating.cancel()
    return await hub.repository.get(task.execution.removeprefix("executions/"))


async def crash(ctx: ExecutionContext) -> None:
    """What SIGKILL does to a process's calls: they stop, and nothing is written."""
    for task in list(ctx.background):
        task.cancel()
    await asyncio.gather(*ctx.background, return_exceptions=True)


async def test_a_sync_execution_names_its_call_owner_until_it_ends(hub: Fakes) -> None:
    running = await start_sync(hub.ctx, hub)
    assert running.state is S.RUNNING and running.sync_call_owner == hub.ctx.instance
    await crash(hub.ctx)

    async def succeed(task: AttemptTask) -> AttemptOutcome:
        return AttemptOutcome(AttemptResult.SUCCEEDED, output={}, http_status=200)

    hub.agent.script = succeed
    done = await create.create_execution(
        hub.ctx, ALICE, ExecutionDraft(extension_version=ECHO), request_id="", authorization="", caller_remaining=None
    )
    assert done.state is S.SUCCEEDED and done.sync_call_owner == ""
    assert (await hub.repository.get(done.id)).sync_call_owner == ""


async def test_an_extension_that_answered_202_releases_the_call(hub: Fakes) -> None:
    async def accepted(task: AttemptTask) -> AttemptOutcome:
        return AttemptOutcome(AttemptResult.ACCEPTED, http_status=202)

    hub.agent.script = accepted
    running = await create.create_execution(
        hub.ctx, ALICE, ExecutionDraft(extension_version=ECHO), request_id="", authorization="", caller_remaining=None
    )
    assert running.state is S.RUNNING
    stored = await hub.repository.get(running.id)
    assert stored.sync_call_owner == "" and stored.etag == running.etag  # bookkeeping: clients see no change


async def test_a_restarted_process_fails_the_calls_its_previous_process_left_at_once(hub: Fakes) -> None:
    processes = Processes()
    before = other_process(hub)
    old = keeper(before, hub, processes, pid=100)
    await old.register()
    lost = await start_sync(before, hub)
    await crash(before)
    processes.running.discard((100, "start-100"))  # killed; its lease has not expired yet

    new = keeper(hub.ctx, hub, processes, pid=101)
    await new.register()
    ended = await new.check_once()

    assert [e.name for e in ended] == [lost.name]
    failed = await hub.repository.get(lost.id)
    assert failed.state is S.FAILED and failed.sync_call_owner == ""
    assert failed.error is not None
    assert (failed.error.reason, failed.error.code) == (EXECUTION_INTERRUPTED, Code.UNAVAILABLE)
    assert "restarted during this synchronous call" in failed.error.message
    events = await hub.repository.list_events(lost.id)
    assert [(e.sequence, e.type, e.state) for e in events] == [
        (1, EventType.CREATED, S.RUNNING),
        (2, EventType.STATE_CHANGED, S.FAILED),
    ]
    assert await check_invariants(hub.repository, require_terminal=True) == []
    assert [lease.instance for lease in await registry(hub).all()] == [hub.ctx.instance]  # the gone lease is removed


async def test_a_long_running_call_left_by_a_killed_process_is_not_touched(hub: Fakes) -> None:
    processes = Processes()
    before = other_process(hub)
    old = keeper(before, hub, processes, pid=100)
    await old.register()

    async def accepted(task: AttemptTask) -> AttemptOutcome:
        return AttemptOutcome(AttemptResult.ACCEPTED, http_status=202)

    hub.agent.script = accepted
    long_running = await create.create_execution(
        before, ALICE, ExecutionDraft(extension_version=ECHO), request_id="", authorization="", caller_remaining=None
    )
    lost = await start_sync(before, hub)
    await crash(before)
    processes.running.clear()

    new = keeper(hub.ctx, hub, processes, pid=101)
    await new.register()
    assert [e.name for e in await new.check_once()] == [lost.name]
    untouched = await hub.repository.get(long_running.id)
    assert untouched.state is S.RUNNING and untouched.etag == long_running.etag


async def test_calls_of_live_instances_are_not_touched(hub: Fakes) -> None:
    processes = Processes()
    elsewhere = other_process(hub)
    remote = keeper(elsewhere, hub, processes, pid=100, host="host-b")  # another replica, lease valid
    await remote.register()
    remote_call = await start_sync(elsewhere, hub)
    mine = keeper(hub.ctx, hub, processes, pid=101)
    await mine.register()
    own_call = await start_sync(hub.ctx, hub)

    assert await mine.check_once() == []
    assert (await hub.repository.get(remote_call.id)).state is S.RUNNING
    assert (await hub.repository.get(own_call.id)).state is S.RUNNING
    await crash(elsewhere)
    await crash(hub.ctx)


async def test_a_replica_that_stops_renewing_is_recovered_by_another_once_its_lease_expires(hub: Fakes) -> None:
    processes = Processes()
    elsewhere = other_process(hub)
    remote = keeper(elsewhere, hub, processes, pid=100, host="host-b")
    await remote.register()
    lost = await start_sync(elsewhere, hub)
    await crash(elsewhere)  # host-b vanished: its process is not visible from here, its lease runs on
    mine = keeper(hub.ctx, hub, processes, pid=101)
    await mine.register()

    hub.clock.advance(INSTANCE_LEASE.total_seconds() - 1)
    assert await mine.check_once() == []
    hub.clock.advance(2)
    assert [e.name for e in await mine.check_once()] == [lost.name]
    assert (await hub.repository.get(lost.id)).state is S.FAILED


async def test_two_replicas_starting_at_once_end_a_lost_call_once(hub: Fakes) -> None:
    processes = Processes()
    before = other_process(hub)
    old = keeper(before, hub, processes, pid=100)
    await old.register()
    lost = [await start_sync(before, hub) for _ in range(5)]
    await crash(before)
    processes.running.clear()

    first = dataclasses.replace(hub.ctx, instance="replica-1")
    second = dataclasses.replace(hub.ctx, instance="replica-2")
    keepers = [keeper(first, hub, processes, pid=201), keeper(second, hub, processes, pid=202)]
    for k in keepers:
        await k.register()
    ended = await asyncio.gather(*(k.check_once() for k in keepers))

    names = sorted(e.name for batch in ended for e in batch)
    assert names == sorted(e.name for e in lost)  # each ended by exactly one of them
    for execution in lost:
        events = await hub.repository.list_events(execution.id)
        assert [e.state for e in events] == [S.RUNNING, S.FAILED]
    assert await check_invariants(hub.repository, require_terminal=True) == []


async def test_a_cleanly_stopped_instance_expires_its_lease(hub: Fakes) -> None:
    processes = Processes()
    before = other_process(hub)
    old = keeper(before, hub, processes, pid=100, host="host-b")
    await old.register()
    lost = await start_sync(before, hub)
    await crash(before)
    await old.release()

    mine = keeper(hub.ctx, hub, processes, pid=101)
    await mine.register()
    assert [e.name for e in await mine.check_once()] == [lost.name]


async def test_an_owner_without_a_lease_is_gone_and_a_removed_live_lease_comes_back(hub: Fakes) -> None:
    processes = Processes()
    mine = keeper(hub.ctx, hub, processes, pid=101)
    await mine.register()
    leases = registry(hub)
    assert mine.lease is not None
    await leases.remove(mine.lease)  # as a replica that thought it gone would
    await mine.check_once()
    assert [lease.instance for lease in await leases.all()] == [hub.ctx.instance]

    ctx = other_process(hub)
    orphan = await start_sync(ctx, hub)  # its owner never registered
    await crash(ctx)
    fresh = keeper(dataclasses.replace(hub.ctx, instance="fresh"), hub, processes, pid=102)
    await fresh.register()
    assert [e.name for e in await fresh.check_once()] == [orphan.name]


@pytest.mark.parametrize(
    ("lease", "host", "running", "gone"),
    [
        (None, HERE, True, True),
        (InstanceLease("i", "host-b", 7, "s", T0, "2030-01-02T03:04:35.000000Z"), HERE, False, False),
        (InstanceLease("i", HERE, 7, "s", T0, "2030-01-02T03:04:35.000000Z"), HERE, True, False),
        (InstanceLease("i", HERE, 7, "s", T0, "2030-01-02T03:04:35.000000Z"), HERE, False, True),
        (InstanceLease("i", "host-b", 7, "s", T0, "2030-01-02T03:04:05.000000Z"), HERE, True, True),
    ],
)
def test_when_an_instance_is_gone(lease: InstanceLease | None, host: str, running: bool, gone: bool) -> None:
    assert instance_gone(lease, now=T0, host=host, process_running=lambda pid, start: running) is gone


async def test_leases_beside_the_executions_are_never_listed_as_executions(hub: Fakes) -> None:
    processes = Processes()
    mine = keeper(hub.ctx, hub, processes, pid=101)
    await mine.register()
    assert [e async for e in hub.repository.query_executions()] == []
    assert [e async for e in hub.repository.sync_calls_in_flight()] == []


# -- request ids held by a create that died with its process ------------------------------------------------------


async def create_with(hub: Fakes, request_id: str) -> Execution:
    return await create.create_execution(
        hub.ctx,
        ALICE,
        ExecutionDraft(extension_version=ECHO, profile="async"),
        request_id=request_id,
        authorization="Bearer caller",
        caller_remaining=None,
    )


async def test_a_request_id_held_by_a_create_that_died_is_taken_over(hub: Fakes) -> None:
    processes = Processes()
    mine = keeper(hub.ctx, hub, processes, pid=101)
    await mine.register()
    request_id = "6d3c1ef0-6d9c-4b44-9a55-1d0f0c0f6a10"
    # the crashed create had claimed the request id, and died before storing its execution
    held = await hub.repository.claim_request_id(
        "tenant-a", request_id, "never-stored", now=hub.clock(), instance="dead"
    )
    assert held is None

    created = await create_with(hub, request_id)
    assert created.state is S.QUEUED
    again = await create_with(hub, request_id)
    assert again.id == created.id  # from now on the request id names the new execution
    assert [e.id async for e in hub.repository.query_executions()] == [created.id]


async def test_a_request_id_held_by_a_live_create_is_not_taken_over(
    hub: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(create, "DEDUP_WAIT_SECONDS", 0.3)
    processes = Processes()
    elsewhere = other_process(hub)
    remote = keeper(elsewhere, hub, processes, pid=100, host="host-b")
    await remote.register()
    mine = keeper(hub.ctx, hub, processes, pid=101)
    await mine.register()
    request_id = "0f8d1d8e-4f0e-4e39-9b1c-2b0d5b7f5c21"
    held = await hub.repository.claim_request_id(
        "tenant-a", request_id, "being-stored", now=hub.clock(), instance=elsewhere.instance
    )
    assert held is None

    with pytest.raises(FailedPrecondition) as refused:
        await create_with(hub, request_id)
    assert refused.value.reason == "REQUEST_IN_PROGRESS"
    assert [e async for e in hub.repository.query_executions()] == []
