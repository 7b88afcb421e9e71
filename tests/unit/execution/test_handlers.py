"""The execution use cases on the in-memory document store with fakes of the catalog, agent, objects, queue
and clock: creating (profile choice, inputs), continuing, cancelling, reporting, claiming, the synchronous
path's outcomes and the outbox."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from exthub.contract.roles import EXECUTIONS_RUN
from services.execution.domain import EventType, ExecutionState
from services.execution.domain.codes import Code
from services.execution.domain.model import Execution, ExecutionError, ObjectDefinition, Priority
from services.execution.domain.outcomes import AttemptResult
from services.execution.handlers import commands, create, dead_letters, queries, report
from services.execution.handlers.create import ExecutionDraft
from services.execution.handlers.ports import AttemptOutcome, AttemptTask
from services.execution.handlers.views import render
from services.execution.invariants import check_invariants
from services.execution.repository import ExecutionRepository
from services.execution.sweeper import Sweeper
from services.objects.port import ObjectRef
from services.platform.auth.principal import Principal
from services.platform.errors import (
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.platform.timefmt import from_storage
from services.platform.workqueue.port import DeadLetter, WorkMessage
from tests.unit.execution.builders import HTTP_JSON_ASYNC
from tests.unit.execution.fakes import Fakes, blocking, build, echo_version, profile

S = ExecutionState
ALICE = Principal(subject="alice", tenant="tenant-a", user="alice", roles=frozenset({EXECUTIONS_RUN}))
MALLORY = Principal(subject="mallory", tenant="tenant-b", user="mallory", roles=frozenset({EXECUTIONS_RUN}))
ECHO = "extensions/echo/versions/1.0.0"


@pytest.fixture
def hub(tmp_path: Path) -> Fakes:
    fakes = build(tmp_path)
    fakes.catalog.add(echo_version())
    return fakes


async def run(
    hub: Fakes,
    version: str = ECHO,
    *,
    principal: Principal = ALICE,
    request_id: str = "",
    wait: timedelta | None = None,
    caller_remaining: float | None = None,
    **draft: Any,
) -> Execution:
    return await create.create_execution(
        hub.ctx,
        principal,
        ExecutionDraft(extension_version=version, **draft),
        request_id=request_id,
        authorization="Bearer caller",
        caller_remaining=caller_remaining,
        wait=wait,
    )


async def events_of(hub: Fakes, execution: Execution) -> list[tuple[EventType, S, int]]:
    events, _ = await queries.list_events(hub.ctx, ALICE, execution.id, page_size=100, page_token="")
    return [(e.type, e.state, e.attempt) for e in events]


# -- which profile -------------------------------------------------------------------------------------


async def test_no_profile_named_uses_default(hub: Fakes) -> None:
    done = await run(hub)
    assert (done.request.profile, done.state) == ("default", S.SUCCEEDED)
    assert hub.catalog.authorizations == ["Bearer caller"], "the caller's authorization reaches the catalog"


async def test_no_profile_named_and_no_default_uses_the_only_profile(hub: Fakes) -> None:
    hub.catalog.add(echo_version("single", profiles=(profile("only", model=HTTP_JSON_ASYNC),)))
    queued = await run(hub, "extensions/single/versions/1.0.0")
    assert (queued.request.profile, queued.state) == ("only", S.QUEUED)


async def test_no_profile_named_among_several_without_default_is_invalid(hub: Fakes) -> None:
    hub.catalog.add(echo_version("several", profiles=(profile("fast"), profile("slow", model=HTTP_JSON_ASYNC))))
    with pytest.raises(InvalidArgument) as raised:
        await run(hub, "extensions/several/versions/1.0.0")
    assert [v.field for v in raised.value.field_violations] == ["execution.profile"]
    assert "fast, slow" in raised.value.field_violations[0].description
    assert await hub.repository.list_executions(where=None, order_by=(), limit=10, continuation=None) == ([], None)


async def test_a_named_profile_the_version_lacks_is_invalid(hub: Fakes) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await run(hub, profile="nope")
    assert [v.field for v in raised.value.field_violations] == ["execution.profile"]


async def test_priority_and_activity_of_the_profile_are_checked(hub: Fakes) -> None:
    hub.catalog.add(
        echo_version(
            "picky",
            profiles=(profile("default", supported_priorities=frozenset({Priority.LOW})), profile("off", active=False)),
        )
    )
    with pytest.raises(FailedPrecondition) as raised:
        await run(hub, "extensions/picky/versions/1.0.0", priority=Priority.HIGH)
    assert (raised.value.reason, raised.value.metadata["supported"]) == ("PRIORITY_NOT_SUPPORTED", "LOW")
    with pytest.raises(FailedPrecondition) as raised:
        await run(hub, "extensions/picky/versions/1.0.0", profile="off")
    assert raised.value.reason == "PROFILE_NOT_ACTIVE"


# -- inputs ----------------------------------------------------------------------------------------------


async def test_an_optional_input_nobody_expects_does_not_hold_the_execution(hub: Fakes) -> None:
    done = await run(hub, request={"message": "hi"})
    assert done.state is S.SUCCEEDED
    assert done.outcome.result == {"echo": {"message": "hi"}}
    ((task, _),) = hub.agent.calls
    (document,) = task.inputs
    assert (document.definition.name, document.provided, document.accessor) == ("document", False, None)
    assert [binding.accessor is not None for binding in task.outputs] == [True], "outputs always get one"


async def test_an_expected_optional_input_waits_until_continue(hub: Fakes) -> None:
    pending = await run(hub, expected_inputs=("document",))
    assert pending.state is S.PENDING_INPUTS and not hub.agent.calls
    view = await render(hub.ctx, pending)
    upload = view.upload("document")
    assert upload is not None and upload.method == "PUT"
    with pytest.raises(FailedPrecondition) as raised:  # nothing uploaded yet: the expected input is checked
        await commands.continue_execution(hub.ctx, ALICE, pending.id, [], caller_remaining=None)
    assert (raised.value.reason, raised.value.metadata["missingInputs"]) == ("INPUTS_MISSING", "document")
    assert [(v.type, v.subject) for v in raised.value.precondition_violations] == [("INPUT_NOT_UPLOADED", "document")]
    hub.objects.upload(ObjectRef(pending.id, "input", "document"))
    done = await commands.continue_execution(hub.ctx, ALICE, pending.id, [], caller_remaining=None)
    assert done.state is S.SUCCEEDED
    ((task, _),) = hub.agent.calls
    (document,) = task.inputs
    assert document.provided and document.accessor is not None and document.accessor.method == "GET"


async def test_continue_records_the_sealed_size_and_digest_of_each_input(hub: Fakes) -> None:
    pending = await run(hub, expected_inputs=("document",))
    ref = ObjectRef(pending.id, "input", "document")
    hub.objects.upload(ref, b"first bytes")
    done = await commands.continue_execution(hub.ctx, ALICE, pending.id, [], caller_remaining=None)
    (document,) = done.inputs
    assert (document.size, document.sha256) == (11, hashlib.sha256(b"first bytes").hexdigest())
    hub.objects.upload(ref, b"a later PUT through the old upload accessor")
    assert await hub.objects.size(ref) == 11  # the extension reads what was sealed
    stored = await hub.ctx.repository.get(pending.id)
    assert stored.inputs == done.inputs


async def test_a_required_input_always_waits(hub: Fakes) -> None:
    hub.catalog.add(echo_version("strict", inputs=(ObjectDefinition("document", required=True),)))
    pending = await run(hub, "extensions/strict/versions/1.0.0")
    assert pending.state is S.PENDING_INPUTS
    with pytest.raises(FailedPrecondition):
        await commands.continue_execution(hub.ctx, ALICE, pending.id, [], caller_remaining=None)


async def test_expected_inputs_must_be_declared(hub: Fakes) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await run(hub, expected_inputs=("document", "nope"))
    assert [v.field for v in raised.value.field_violations] == ["execution.expected_inputs[1]"]


async def test_a_late_continue_returns_the_execution_whatever_its_state(hub: Fakes) -> None:
    hub.catalog.add(echo_version("queued", profiles=(profile("default", model=HTTP_JSON_ASYNC),)))
    pending = await run(hub, "extensions/queued/versions/1.0.0", expected_inputs=("document",))
    hub.objects.upload(ObjectRef(pending.id, "input", "document"))
    queued = await commands.continue_execution(hub.ctx, ALICE, pending.id, ["document"], caller_remaining=None)
    assert queued.state is S.QUEUED
    claimed, _ = await report.claim_execution(hub.ctx, pending.id, 1, "agent-1")
    again = await commands.continue_execution(hub.ctx, ALICE, pending.id, ["document"], caller_remaining=None)
    assert (again.state, again.attempt, again.etag) == (S.RUNNING, 1, claimed.etag), "a RUNNING one is not requeued"
    finished = await run(hub)
    repeat = await commands.continue_execution(hub.ctx, ALICE, finished.id, [], caller_remaining=None)
    assert (repeat.state, repeat.etag) == (S.SUCCEEDED, finished.etag)
    with pytest.raises(InvalidArgument):  # a malformed request is still refused
        await commands.continue_execution(hub.ctx, ALICE, finished.id, ["nope"], caller_remaining=None)


# -- the synchronous path and the injected clock ---------------------------------------------------------


async def test_the_agent_call_is_bounded_by_the_execution_deadline_on_the_injected_clock(hub: Fakes) -> None:
    done = await run(hub)
    ((task, timeout),) = hub.agent.calls
    assert task.deadline == hub.clock.now + timedelta(minutes=5)  # the version's execution timeout
    assert timeout == pytest.approx(300)
    (report_binding,) = task.outputs
    assert report_binding.accessor is not None and report_binding.accessor.expire_time == task.deadline
    assert task.status_url == f"http://hub.test/v1/executions/{done.id}:reportStatus"
    assert done.record.create_time == hub.clock()


async def test_a_version_without_execution_timeout_gets_the_one_hour_default(hub: Fakes) -> None:
    hub.catalog.add(echo_version("unbounded", execution_timeout=None))
    await run(hub, "extensions/unbounded/versions/1.0.0")
    ((task, timeout),) = hub.agent.calls
    assert task.deadline == hub.clock.now + timedelta(hours=1) and timeout == pytest.approx(3600)


def outcome(result: AttemptResult, reason: str = "", **metadata: str) -> AttemptOutcome:
    error = ExecutionError(Code.UNAVAILABLE, "boom", reason, metadata) if reason else None
    return AttemptOutcome(result, error=error, http_status=503 if reason else 0)


@pytest.mark.parametrize(
    ("answer", "state", "reason"),
    [
        (outcome(AttemptResult.RETRYABLE_FAILURE, "EXTENSION_FAILED"), S.FAILED, "EXTENSION_FAILED"),
        (outcome(AttemptResult.FAILED, "EXECUTION_DEADLINE_EXCEEDED"), S.TIMED_OUT, "EXECUTION_DEADLINE_EXCEEDED"),
        (
            outcome(AttemptResult.RETRYABLE_FAILURE, "EXTENSION_TIMEOUT", timeoutBound="call"),
            S.FAILED,
            "EXTENSION_TIMEOUT",
        ),
        (
            outcome(AttemptResult.RETRYABLE_FAILURE, "EXTENSION_TIMEOUT", timeoutBound="deadline"),
            S.TIMED_OUT,
            "EXTENSION_TIMEOUT",
        ),
        (AttemptOutcome(AttemptResult.FAILED), S.FAILED, "EXTENSION_FAILED"),
        (AttemptOutcome(AttemptResult.ACCEPTED), S.RUNNING, None),
        (AttemptOutcome(AttemptResult.VALIDATION_SUCCEEDED), S.VALIDATION_SUCCEEDED, None),
    ],
)
async def test_what_an_agent_outcome_does_to_a_synchronous_execution(
    hub: Fakes, answer: AttemptOutcome, state: S, reason: str | None
) -> None:
    async def answer_with(task: AttemptTask) -> AttemptOutcome:
        return answer

    hub.agent.script = answer_with
    done = await run(hub)
    assert done.state is state
    assert (done.error.reason if done.error else None) == reason
    if reason == "EXTENSION_FAILED" and answer.http_status:
        assert done.error is not None and done.error.metadata["httpStatus"] == "503"


@pytest.mark.parametrize(
    ("failure", "state", "reason", "code"),
    [
        (DeadlineExceeded("late"), S.TIMED_OUT, "EXECUTION_TIMEOUT", Code.DEADLINE_EXCEEDED),
        (
            Unavailable("down", reason="AGENT_UNAVAILABLE", metadata={"grpcCode": "UNAVAILABLE"}),
            S.FAILED,
            "AGENT_UNAVAILABLE",
            Code.UNAVAILABLE,
        ),
    ],
)
async def test_an_agent_that_cannot_answer_ends_the_execution_not_the_call(
    hub: Fakes, failure: Exception, state: S, reason: str, code: Code
) -> None:
    async def fail(task: AttemptTask) -> AttemptOutcome:
        raise failure

    hub.agent.script = fail
    done = await run(hub)
    assert done.error is not None
    assert (done.state, done.error.reason, done.error.code) == (state, reason, code)


async def test_cancel_aborts_a_running_synchronous_call(hub: Fakes) -> None:
    with blocking(hub.agent):
        running = asyncio.ensure_future(run(hub))
        await hub.agent.called.wait()
        (task, _) = hub.agent.calls[0]
        execution_id = task.execution.removeprefix("executions/")
        cancelled = await commands.cancel_execution(hub.ctx, ALICE, execution_id)
        assert cancelled.state is S.CANCELLED
        assert (await running).state is S.CANCELLED


# -- asynchronous executions -----------------------------------------------------------------------------


async def test_an_async_execution_is_published_claimed_retried_and_fails_with_the_last_error(hub: Fakes) -> None:
    queued = await run(hub, profile="async", priority=Priority.HIGH, labels={"env": "test"})
    assert queued.state is S.QUEUED and queued.outbox.dispatch is not None
    await hub.relay.settle()
    message = hub.queue.published[f"{queued.id}:1"]
    assert json.loads(message.body) == {"execution": queued.name, "attempt": 1}
    assert message.priority is Priority.HIGH
    assert dict(message.properties) == {
        "model": HTTP_JSON_ASYNC,
        "profile": "async",
        "priority": "HIGH",
        "tenant": "tenant-a",
    }
    failure = ExecutionError(Code.UNAVAILABLE, "boom", "EXTENSION_FAILED", {"httpStatus": "503"})
    for attempt in (1, 2, 3):
        await hub.relay.settle()  # an agent claims an attempt once it was published
        assert f"{queued.id}:{attempt}" in hub.queue.published
        claimed, task = await report.claim_execution(hub.ctx, queued.id, attempt, "agent-1")
        assert (claimed.state, claimed.agent_id, task.attempt) == (S.RUNNING, "agent-1", attempt)
        assert (
            task.status_update_key
            and claimed.status_key_hash
            and task.status_update_key not in json.dumps(dataclasses.asdict(claimed.request))
        )
        transient = report.StatusReport(
            attempt=attempt, state=S.QUEUED, status_key=task.status_update_key, error=failure
        )
        reported = await report.report_status(hub.ctx, queued.id, transient)
        if attempt < 3:  # the ended attempt's key proves nothing any more
            with pytest.raises(PermissionDenied):
                await report.report_status(hub.ctx, queued.id, transient)
        if attempt < 3:  # the default policy: 3 attempts, 1 s then 2 s backoff
            assert (reported.state, reported.attempt) == (S.QUEUED, attempt + 1)
            assert reported.outbox.dispatch is not None and reported.outbox.dispatch.not_before is not None
            backoff = from_storage(reported.outbox.dispatch.not_before) - hub.clock.now
            assert backoff == timedelta(seconds=attempt)
    assert reported.state is S.FAILED and reported.error is not None
    assert (reported.error.message, reported.error.reason, reported.error.metadata["attempts"]) == (
        "boom",
        "EXTENSION_FAILED",
        "3",
    )
    await hub.relay.settle()
    assert sorted(hub.queue.published) == [f"{queued.id}:{n}" for n in (1, 2, 3)]
    assert await check_invariants(hub.repository, accepted=[queued.name], outbox_settled=True) == []


async def test_a_failure_report_keeps_the_agents_error(hub: Fakes) -> None:
    queued = await run(hub, profile="async")
    _, task = await report.claim_execution(hub.ctx, queued.id, 1, "agent-1")
    rejected = ExecutionError(Code.FAILED_PRECONDITION, "404 from echo", "EXTENSION_REJECTED", {"httpStatus": "404"})
    failed = report.StatusReport(attempt=1, state=S.FAILED, status_key=task.status_update_key, error=rejected)
    done = await report.report_status(hub.ctx, queued.id, failed)
    assert done.state is S.FAILED and done.error == rejected


async def test_a_lost_agents_attempt_is_released_as_a_transient_failure(hub: Fakes) -> None:
    queued = await run(hub, profile="async")
    _, task = await report.claim_execution(hub.ctx, queued.id, 1, "agent-1")
    released = await report.release_lost_attempt(hub.ctx, queued.id, 1, "agent-2")
    assert (released.state, released.attempt) == (S.QUEUED, 2)
    assert released.error is not None and released.error.reason == "AGENT_LOST"
    assert released.error.metadata["releasedBy"] == "agent-2"
    late = report.StatusReport(attempt=1, state=S.SUCCEEDED, status_key=task.status_update_key)
    with pytest.raises(PermissionDenied):
        await report.report_status(hub.ctx, queued.id, late)


async def test_an_unacknowledged_cancel_is_ended_by_the_sweeper_on_the_injected_clock(hub: Fakes) -> None:
    queued = await run(hub, profile="async")
    await report.claim_execution(hub.ctx, queued.id, 1, "agent-1")
    requested = await commands.cancel_execution(hub.ctx, ALICE, queued.id)
    assert requested.state is S.RUNNING and requested.cancel.requested
    assert requested.cancel.deadline is not None and requested.due_time == requested.cancel.deadline
    beat = await report.heartbeat(hub.ctx, queued.id, 1, "agent-1")
    assert beat.cancel_requested and not beat.abort
    sweeper = Sweeper(hub.ctx, hub.relay, interval_seconds=60)
    assert await sweeper.sweep_once() == 0
    hub.clock.advance(61)
    assert await sweeper.sweep_once() == 1
    done = await hub.repository.get(queued.id)
    assert done.state is S.CANCELLED and done.cancel.deadline is None
    assert (await report.heartbeat(hub.ctx, queued.id, 1, "agent-1")).abort


async def test_an_execution_waiting_for_inputs_times_out(hub: Fakes) -> None:
    pending = await run(hub, expected_inputs=("document",))
    sweeper = Sweeper(hub.ctx, hub.relay, interval_seconds=60)
    hub.clock.advance(timedelta(hours=24).total_seconds())
    assert await sweeper.sweep_once() == 1
    done = await hub.repository.get(pending.id)
    assert done.state is S.TIMED_OUT and done.error is not None and done.error.reason == "INPUT_TIMEOUT"


# -- visibility, idempotency, events, dead letters -----------------------------------------------------------


async def test_another_tenants_execution_is_not_found(hub: Fakes) -> None:
    done = await run(hub)
    with pytest.raises(NotFound) as raised:
        await queries.get_execution(hub.ctx, MALLORY, done.id)
    assert raised.value.reason == "EXECUTION_NOT_FOUND"


async def test_the_same_request_id_returns_the_same_execution(hub: Fakes) -> None:
    request_id = "6f1c1f4e-8a52-4c8a-9d1b-8e9b3c0d2a11"
    first = await run(hub, request_id=request_id)
    again = await run(hub, request_id=request_id.upper())
    assert again.id == first.id and len(hub.agent.calls) == 1


async def test_events_are_visible_before_and_after_the_relay(hub: Fakes) -> None:
    done = await run(hub)
    expected = [(EventType.CREATED, S.RUNNING, 1), (EventType.STATE_CHANGED, S.SUCCEEDED, 1)]
    assert await events_of(hub, done) == expected  # (whatever the relay has done so far)
    await hub.relay.settle()
    assert (await hub.repository.get(done.id)).outbox.empty
    assert await events_of(hub, done) == expected
    watched = [
        (e.type, e.state, e.attempt) async for e in queries.watch_execution(hub.ctx, ALICE, done.id, from_sequence=0)
    ]
    assert watched == expected


async def test_dead_letters_come_from_the_queue(hub: Fakes) -> None:
    message = WorkMessage("x:1", b"{}", {}, Priority.LOW, hub.clock.now, 10)
    hub.queue.dead_letters.append(DeadLetter(message, "MaxDeliveryCountExceeded", "poison", hub.clock.now))
    letters, token = await dead_letters.list_dead_letters(hub.ctx, page_size=10, page_token="")
    assert [(letter.message.message_id, letter.reason) for letter in letters] == [("x:1", "MaxDeliveryCountExceeded")]
    assert token == ""


# -- waiting ------------------------------------------------------------------------------------------------


async def test_wait_sees_a_change_another_process_wrote_through_its_poll(hub: Fakes) -> None:
    pending = await run(hub, expected_inputs=["document"])
    assert pending.state is S.PENDING_INPUTS
    # another process: the same store, its own repository, so this process's notifier hears nothing
    elsewhere = dataclasses.replace(hub.ctx, repository=ExecutionRepository(hub.repository.collection))
    waiter = dataclasses.replace(hub.ctx, watch_poll_seconds=0.05)
    waiting = asyncio.ensure_future(
        queries.wait_execution(waiter, ALICE, pending.id, at_most=timedelta(seconds=20), caller_remaining=None)
    )
    for _ in range(50):  # let the wait read the execution and park on its notifier (no clock involved)
        await asyncio.sleep(0)
    assert not waiting.done()
    await commands.cancel_execution(elsewhere, ALICE, pending.id)
    done = await asyncio.wait_for(waiting, 5)
    assert done.state is S.CANCELLED


async def test_wait_is_bounded_by_its_own_maximum_and_the_callers_deadline(hub: Fakes) -> None:
    pending = await run(hub, expected_inputs=["document"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    waited = await queries.wait_execution(hub.ctx, ALICE, pending.id, at_most=timedelta(hours=1), caller_remaining=0.3)
    assert waited.state is S.PENDING_INPUTS
    assert loop.time() - started < 0.3, "answered before the caller's deadline"
    with pytest.raises(InvalidArgument) as raised:
        await queries.wait_execution(hub.ctx, ALICE, pending.id, at_most=timedelta(seconds=-1), caller_remaining=None)
    assert raised.value.field_violations[0].field == "timeout"
    with pytest.raises(NotFound):
        await queries.wait_execution(hub.ctx, MALLORY, pending.id, at_most=timedelta(0), caller_remaining=None)


class ReadCounting:
    """A collection that counts the reads of documents (the real one underneath)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def read(self, partition: str, id: str) -> Any:
        self.reads += 1
        return await self.inner.read(partition, id)


async def test_wait_starts_from_the_version_this_process_wrote_without_reading_the_store(hub: Fakes) -> None:
    counting = ReadCounting(hub.repository.collection)
    counted = dataclasses.replace(hub, ctx=dataclasses.replace(hub.ctx, repository=ExecutionRepository(counting)))
    pending = await run(counted, expected_inputs=["document"])
    reads = counting.reads
    waited = await queries.wait_execution(counted.ctx, ALICE, pending.id, at_most=timedelta(0), caller_remaining=None)
    assert waited == counted.repository.recent(pending.id)
    assert counting.reads == reads, "the version this process just wrote: no read"
    with pytest.raises(NotFound):  # the remembered version is checked like a stored one
        await queries.wait_execution(counted.ctx, MALLORY, pending.id, at_most=timedelta(0), caller_remaining=None)
    elsewhere = dataclasses.replace(counted.ctx, repository=ExecutionRepository(counting))  # remembers nothing
    waited = await queries.wait_execution(elsewhere, ALICE, pending.id, at_most=timedelta(0), caller_remaining=None)
    assert waited.id == pending.id
    assert counting.reads == reads + 1, "another process reads the store"


# -- a create that waits for the end (wait_timeout) ----------------------------------------------------------


async def park(task: asyncio.Future[Any]) -> None:
    """Let ``task`` run until it parks (no clock involved); it must still be waiting."""
    for _ in range(50):
        await asyncio.sleep(0)
    assert not task.done()


async def the_only_execution(hub: Fakes) -> Execution:
    page = await queries.list_executions(hub.ctx, ALICE, filter_text="", order_by="", page_size=10, page_token="")
    [execution] = page.executions
    return execution


async def finish(hub: Fakes, execution_id: str) -> Execution:
    """What an agent does: claim attempt 1 and report SUCCEEDED."""
    _, task = await report.claim_execution(hub.ctx, execution_id, 1, "agent-1")
    done = report.StatusReport(attempt=1, state=S.SUCCEEDED, status_key=task.status_update_key, result={"ok": 1})
    return await report.report_status(hub.ctx, execution_id, done)


async def test_a_create_with_wait_timeout_answers_once_the_execution_has_ended(hub: Fakes) -> None:
    creating = asyncio.ensure_future(run(hub, profile="async", wait=timedelta(seconds=20)))
    await park(creating)
    queued = await the_only_execution(hub)
    assert queued.state is S.QUEUED
    await finish(hub, queued.id)
    done = await asyncio.wait_for(creating, 5)
    assert (done.id, done.state) == (queued.id, S.SUCCEEDED)


async def test_a_create_without_wait_timeout_answers_at_once(hub: Fakes) -> None:
    for wait in (None, timedelta(0)):
        queued = await asyncio.wait_for(run(hub, profile="async", wait=wait), 5)
        assert queued.state is S.QUEUED


async def test_a_create_answers_at_its_wait_timeout_with_the_running_execution(hub: Fakes) -> None:
    request_id = "0b6f3c52-7d1e-4a8b-9c3d-2e5f6a7b8c9d"
    queued = await run(hub, profile="async", request_id=request_id)
    await report.claim_execution(hub.ctx, queued.id, 1, "agent-1")
    loop = asyncio.get_running_loop()
    started = loop.time()
    again = await run(hub, profile="async", request_id=request_id, wait=timedelta(seconds=0.2))
    assert (again.id, again.state) == (queued.id, S.RUNNING)
    assert loop.time() - started >= 0.2, "waited its wait_timeout"


async def test_a_repeated_create_waits_on_the_execution_it_returns(hub: Fakes) -> None:
    request_id = "3c0f5a1e-2b4d-4e6f-8a9b-0c1d2e3f4a5b"
    queued = await run(hub, profile="async", request_id=request_id)
    repeating = asyncio.ensure_future(run(hub, profile="async", request_id=request_id, wait=timedelta(seconds=20)))
    await park(repeating)
    await finish(hub, queued.id)
    again = await asyncio.wait_for(repeating, 5)
    assert (again.id, again.state) == (queued.id, S.SUCCEEDED)
    assert (
        len(
            (
                await queries.list_executions(hub.ctx, ALICE, filter_text="", order_by="", page_size=10, page_token="")
            ).executions
        )
        == 1
    )


async def test_a_create_waits_at_most_until_the_callers_deadline(hub: Fakes) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    queued = await run(hub, profile="async", wait=timedelta(hours=1), caller_remaining=0.5)
    assert queued.state is S.QUEUED
    assert 0.2 <= loop.time() - started < 0.5, "waited, and answered before the caller's deadline"


async def test_a_negative_wait_timeout_is_a_field_violation_and_creates_nothing(hub: Fakes) -> None:
    with pytest.raises(InvalidArgument) as raised:
        await run(hub, profile="async", wait=timedelta(seconds=-1))
    assert [v.field for v in raised.value.field_violations] == ["wait_timeout"]
    page = await queries.list_executions(hub.ctx, ALICE, filter_text="", order_by="", page_size=10, page_token="")
    assert page.executions == []


async def test_validate_only_pending_inputs_and_ended_creates_answer_without_waiting(hub: Fakes) -> None:
    forever = timedelta(seconds=30)
    validating = await asyncio.wait_for(run(hub, profile="async", validate_only=True, wait=forever), 5)
    assert validating.state is S.QUEUED and validating.request.validate_only
    pending = await asyncio.wait_for(run(hub, profile="async", expected_inputs=["document"], wait=forever), 5)
    assert pending.state is S.PENDING_INPUTS
    synchronous = await asyncio.wait_for(run(hub, wait=forever), 5)
    assert synchronous.state is S.SUCCEEDED and len(hub.agent.calls) == 1
    direct = await asyncio.wait_for(run(hub, profile="direct", wait=forever), 5)
    assert direct.state is S.DIRECT_TOKEN_ISSUED


async def accept(task: AttemptTask) -> AttemptOutcome:
    """A long-running extension: it accepts the call (202) and reports the outcome later."""
    return AttemptOutcome(AttemptResult.ACCEPTED)


async def test_a_long_running_synchronous_create_waits_for_the_report(hub: Fakes) -> None:
    hub.agent.script = accept
    creating = asyncio.ensure_future(run(hub, wait=timedelta(seconds=20)))
    await hub.agent.called.wait()
    await park(creating)
    running = await the_only_execution(hub)
    assert running.state is S.RUNNING
    task, _ = hub.agent.calls[0]
    done = report.StatusReport(attempt=1, state=S.SUCCEEDED, status_key=task.status_update_key)
    await report.report_status(hub.ctx, running.id, done)
    assert (await asyncio.wait_for(creating, 5)).state is S.SUCCEEDED


async def test_the_callers_deadline_counts_from_the_start_of_the_create(
    hub: Fakes, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def accept_later(task: AttemptTask) -> AttemptOutcome:
        await asyncio.sleep(0.3)  # the extension's run: the synchronous call uses 0.3 s of the caller's 1 s ...
        return await accept(task)

    waits: list[float] = []
    real_wait_for_end = queries.wait_for_end

    async def recording_wait_for_end(ctx: Any, execution: Execution, seconds: float, **kwargs: Any) -> Execution:
        waits.append(seconds)
        return await real_wait_for_end(ctx, execution, seconds, **kwargs)

    monkeypatch.setattr(create, "wait_for_end", recording_wait_for_end)
    hub.agent.script = accept_later
    created = await run(hub, wait=timedelta(seconds=20), caller_remaining=1.0)
    assert created.state is S.RUNNING
    # ... so the wait after it lasts at most 1 - 0.3 - the margin, not 1 - the margin
    assert waits and waits[0] <= 1.0 - 0.3 - queries.WAIT_DEADLINE_MARGIN_SECONDS
