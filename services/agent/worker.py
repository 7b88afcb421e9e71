"""The agent's queue worker: runs asynchronous attempts from the work queue.

Per message (``{"execution", "attempt"}``, see :mod:`exthub.contract.queue`), in one of ``slots``
concurrent slots:

1. **Claim** — ``ClaimExecution(name, attempt, agent_id)``: QUEUED → RUNNING, fenced by the attempt; the answer
   carries the task and in it the attempt's status-update key, the proof every report of the attempt carries
   (secrets never ride the queue). A refused claim (cancelled, timed out, stale, already running) completes
   the message — except a *redelivered* message (``delivery_count > 1``) whose attempt is still RUNNING: its
   previous holder lost the lease (crashed, was killed, hung), so this agent releases the attempt
   (``ReleaseExecution``: a transient failure, ``AGENT_LOST``); the execution service then queues attempt + 1
   (or FAILED when none is left), which any agent finishes. The lost agent's late reports are refused (its
   key belonged to the released attempt).
2. **Run** — the adapter of the task's model, bounded by the remaining execution time and the call timeout
   (the adapter's budget). Meanwhile a **heartbeat** every ``heartbeat_seconds`` renews the queue lease and
   asks ``HeartbeatExecution``: ``abort`` (stale attempt, or the execution ended — cancelled while QUEUED,
   timed out by the sweeper) stops the call without a report; ``cancel_requested`` stops it and reports
   CANCELLED. A lost lease stops the call too (another agent may take over).
3. **Report** — ``ReportExecutionStatus`` with the attempt and its key: SUCCEEDED / VALIDATION_* / FAILED (permanent) /
   TIMED_OUT (the execution deadline passed) / QUEUED (a transient failure: the *execution service* decides
   retry, FAILED or TIMED_OUT from the profile's retry policy). 202 (long-running) reports nothing: the
   extension reports through ``statusUrl``.
4. **Settle** — complete the message; dead-letter it (``RetriesExhausted``, the last error) when a transient
   failure ended the execution FAILED. A report that cannot be delivered abandons the message (it comes
   back, and the takeover above resolves it). A malformed message is dead-lettered (``MalformedMessage``).

Claims and reports of the attempts under way go out through the client's natural batching (see
:mod:`services.agent.execution_client`): alone when none is in flight, together (``BatchClaimExecutions``,
``BatchReportExecutionStatus``) with the others that arrive meanwhile; each keeps its own answer, so nothing here
depends on it.

Why a separate ``HeartbeatExecution`` RPC rather than ``ReportExecutionStatus``: a heartbeat must write nothing
(the queue lease already proves the agent is alive, and a write per heartbeat would contend with real state
changes), and the ``Execution`` resource has no field that says "cancel requested" or "your attempt is over".

Reachability: when a call to the execution service fails for a transient reason (it is restarting, unreachable,
too slow), the worker stops receiving until the service's health check answers SERVING again (probed with a
back-off from :data:`UNREACHABLE_BACKOFF_SECONDS` up to :data:`UNREACHABLE_BACKOFF_MAX_SECONDS`). Every receive
counts a delivery, and a message delivered ``max_delivery_count`` times is dead-lettered: receiving work that
cannot be claimed during a short outage would dead-letter it.

Stopping: no new message is received; attempts under way get ``grace`` seconds, then they are aborted and
reported as a transient failure (``AGENT_STOPPED``) so another agent retries them at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc

from exthub.agent.v1 import agent_service_pb2 as agent_pb
from exthub.contract.errors import error_info, error_status
from exthub.contract.execution import EXTENSION_FAILED, TIMEOUT_BOUND, state_after_outcome
from exthub.contract.queue import PRIORITY_PROPERTY, parse_message
from exthub.execution.v1 import agent_task_service_pb2, execution_pb2, execution_service_pb2
from services.agent.adapters.registry import AdapterRegistry
from services.agent.execution_client import CallRefused
from services.agent.outcomes import unsupported_model
from services.platform import telemetry
from services.platform.errors import HubError
from services.platform.logging import execution_context, get_logger
from services.platform.workqueue.port import WORK_QUEUE_NAME, LeasedMessage, LeaseLost, WorkQueue

__all__ = [
    "AGENT_STOPPED",
    "MALFORMED_MESSAGE",
    "RETRIES_EXHAUSTED",
    "AbortReason",
    "QueueWorker",
    "WorkerClient",
    "WorkerConfig",
    "report_for_outcome",
    "settlement_for",
]

_log = get_logger("exthub.agent.worker")

Outcome = agent_pb.ExecuteResponse.Outcome
State = execution_pb2.Execution.State
pb = execution_service_pb2
tasks_pb = agent_task_service_pb2

AGENT_STOPPED = "AGENT_STOPPED"
RETRIES_EXHAUSTED = "RetriesExhausted"
MALFORMED_MESSAGE = "MalformedMessage"
REPORT_TRIES = 4
REPORT_BACKOFF_SECONDS = 0.2
RECEIVE_ERROR_BACKOFF_SECONDS = 0.5
UNREACHABLE_BACKOFF_SECONDS = 0.1
UNREACHABLE_BACKOFF_MAX_SECONDS = 2.0
#: At most this many messages per receive (the work queue port's limit).
MAX_RECEIVE = 100
ALL_PRIORITIES = ("HIGH", "NORMAL", "LOW")


class WorkerClient(Protocol):
    """The execution service calls of the worker (``ExecutionServiceClient`` in production).

    Permanent refusals raise :class:`~services.agent.execution_client.CallRefused`; transient failures raise
    ``grpc.aio.AioRpcError``.
    """

    async def claim(self, execution: str, attempt: int, agent_id: str) -> tasks_pb.ClaimExecutionResponse:
        """QUEUED → RUNNING for ``attempt``; the task."""
        ...

    async def heartbeat(self, execution: str, attempt: int, agent_id: str) -> tasks_pb.HeartbeatExecutionResponse:
        """Go on, abort or cancel."""
        ...

    async def report(self, request: pb.ReportExecutionStatusRequest) -> execution_pb2.Execution:
        """Report the attempt's outcome (the request carries its key); the execution as it now is."""
        ...

    async def release(self, execution: str, attempt: int, agent_id: str) -> execution_pb2.Execution:
        """End a RUNNING attempt whose agent was lost; the execution as it now is."""
        ...

    async def reachable(self) -> bool:
        """Whether the execution service answers (its health check), bounded by a short timeout."""
        ...


@dataclass(frozen=True)
class WorkerConfig:
    """The worker's knobs (from the settings ``agent_worker_*``, ``agent_lease_seconds`` …)."""

    agent_id: str
    slots: int = 16
    lease_seconds: float = 30.0
    heartbeat_seconds: float = 10.0
    receive_wait_seconds: float = 5.0
    poll_seconds: float = 0.1
    priorities: Sequence[str] = ALL_PRIORITIES

    def __post_init__(self) -> None:
        if self.slots < 1:
            raise ValueError("slots must be 1 or more")
        if not 0 < self.heartbeat_seconds < self.lease_seconds:
            raise ValueError("the heartbeat must be shorter than the lease")


class AbortReason(enum.Enum):
    """Why a running attempt was stopped before the adapter answered."""

    CANCELLED = "cancelled"  # the client cancelled: report CANCELLED
    ENDED = "ended"  # stale attempt or the execution ended elsewhere: report nothing
    LEASE_LOST = "lease_lost"  # another agent may take over: report nothing
    STOPPING = "stopping"  # this agent stops: report a transient failure


@dataclass(frozen=True)
class _Delivery:
    """What a report (or a release) says, for settling the message and the logs."""

    execution: str
    attempt: int
    state: State.ValueType
    status_message: str


@dataclass
class _Attempt:
    lease: LeasedMessage
    abort: asyncio.Future[AbortReason]
    ended: bool = False
    """The call returned or was stopped: the heartbeat must not go on (even if its cancellation was lost)."""


def _report(task: execution_pb2.ExecutionTask, **fields: Any) -> pb.ReportExecutionStatusRequest:
    """A report of the claimed attempt, proven by its status-update key."""
    return pb.ReportExecutionStatusRequest(
        name=task.execution, attempt=task.attempt, status_update_key=task.status_update_key, **fields
    )


def report_for_outcome(
    task: execution_pb2.ExecutionTask, response: agent_pb.ExecuteResponse
) -> pb.ReportExecutionStatusRequest | None:
    """The report of an attempt's outcome (``None`` for ACCEPTED: the extension reports itself).

    The state is the contract's :func:`~exthub.contract.execution.state_after_outcome`: a failure the execution's
    deadline ended is TIMED_OUT, another transient failure is reported as QUEUED (the execution service decides
    about the retry).
    """
    info = error_info(response.error) if response.HasField("error") else None
    state = state_after_outcome(
        Outcome.Name(response.outcome),
        reason=info.reason if info is not None else "",
        timeout_bound=info.metadata.get(TIMEOUT_BOUND, "") if info is not None else "",
        retryable=True,
    )
    if state is None:
        return None
    request = _report(task, state=State.Value(state))
    if state == "SUCCEEDED":
        request.status_message = "succeeded"
        request.percent_complete = 100
        request.result.CopyFrom(response.result)
        request.provided_outputs.extend(response.provided_outputs)
    elif state == "VALIDATION_SUCCEEDED":
        request.status_message = "the request is valid"
    elif state == "VALIDATION_FAILED":
        request.status_message = "the request is invalid"
        request.validation_errors.extend(response.validation_errors)
    else:
        error = (
            response.error
            if response.HasField("error")
            else error_status(grpc.StatusCode.UNKNOWN, "the attempt failed", EXTENSION_FAILED)
        )
        request.error.CopyFrom(error)
        request.status_message = error.message
    return request


def settlement_for(reported: State.ValueType, resulting: State.ValueType) -> str:
    """``"dead_letter"`` when a transient failure ended the execution FAILED (retries exhausted), else
    ``"complete"``."""
    if reported == State.QUEUED and resulting == State.FAILED:
        return "dead_letter"
    return "complete"


class QueueWorker:
    """Consumes the work queue with ``config.slots`` concurrent attempts (see the module docstring)."""

    def __init__(self, queue: WorkQueue, client: WorkerClient, adapters: AdapterRegistry, config: WorkerConfig) -> None:
        self._queue = queue
        self._client = client
        self._adapters = adapters
        self._config = config
        self._slots = asyncio.Semaphore(config.slots)
        self._attempts: dict[str, _Attempt] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        self._unreachable = False
        wanted = [p for p in ALL_PRIORITIES if p in set(config.priorities)]
        self._filters: list[dict[str, str] | None] = (
            [None] if len(wanted) == len(ALL_PRIORITIES) else [{PRIORITY_PROPERTY: p} for p in wanted]
        )

    @property
    def in_flight(self) -> int:
        """Attempts running now."""
        return len(self._attempts)

    # -- receiving ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Run :meth:`run` in the background (stopped by :meth:`stop`)."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self.run())

    async def run(self) -> None:
        """Receive and run messages until :meth:`stop`: one receive asks for as many messages as slots are free."""
        while not self._stopping.is_set():
            await self._slots.acquire()
            free = 1
            while not self._slots.locked():  # the other free slots, without waiting
                await self._slots.acquire()
                free += 1
            try:
                await self._until_reachable()
                leases = await self._receive(free)
            except HubError as error:  # the queue is briefly busy
                self._release(free)
                _log.warning("receive failed", reason=error.reason)
                await self._pause(RECEIVE_ERROR_BACKOFF_SECONDS)
                continue
            except BaseException:
                self._release(free)
                raise
            self._release(free - len(leases))
            for lease in leases:
                handler = asyncio.get_running_loop().create_task(self._handle(lease))
                self._handlers.add(handler)
                handler.add_done_callback(self._handler_done)

    def _release(self, slots: int) -> None:
        for _ in range(slots):
            self._slots.release()

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            _log.error("attempt handler failed", error=repr(task.exception()))

    async def _receive(self, count: int) -> list[LeasedMessage]:
        lease = self._config.lease_seconds
        count = min(count, MAX_RECEIVE)
        if self._filters == [None]:
            return await self._queue.receive(
                max_messages=count, lease_seconds=lease, wait_seconds=self._config.receive_wait_seconds
            )
        for wanted in self._filters:  # a subset of the priorities: highest first
            found = await self._queue.receive(max_messages=count, lease_seconds=lease, wait_seconds=0, filter=wanted)
            if found:
                return found
        await self._pause(self._config.poll_seconds)
        return []

    async def _until_reachable(self) -> None:
        """Wait (probing with back-off) while the execution service is known to be unreachable."""
        backoff = UNREACHABLE_BACKOFF_SECONDS
        while self._unreachable and not self._stopping.is_set():
            if await self._client.reachable():
                _log.info("the execution service answers again")
                self._unreachable = False
                return
            await self._pause(backoff)
            backoff = min(backoff * 2, UNREACHABLE_BACKOFF_MAX_SECONDS)

    def _call_failed(self, error: grpc.aio.AioRpcError) -> None:
        """A transient failure of a call to the execution service: receive nothing until it answers again."""
        if not self._unreachable:
            _log.warning("the execution service does not answer; pausing receives", code=error.code().name)
        self._unreachable = True

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    # -- one message --------------------------------------------------------------------------------

    async def _handle(self, lease: LeasedMessage) -> None:
        message = lease.message
        # one span per message, in the trace of the execution that published it (its W3C properties)
        with telemetry.consumer_span(
            WORK_QUEUE_NAME,
            message.properties,
            {"messaging.message.id": message.message_id, "messaging.delivery_count": message.delivery_count},
        ):
            try:
                execution, attempt = parse_message(message.body)
            except ValueError as exc:
                _log.warning("malformed message", message_id=message.message_id, error=str(exc))
                await self._settle(lease, "dead_letter", reason=MALFORMED_MESSAGE, description=str(exc))
                return
            telemetry.annotate({"exthub.execution": execution, "exthub.attempt": attempt})
            with execution_context(execution, attempt):
                await self._claim_and_run(lease, execution, attempt)

    async def _claim_and_run(self, lease: LeasedMessage, execution: str, attempt: int) -> None:
        message = lease.message
        try:
            claimed = await self._client.claim(execution, attempt, self._config.agent_id)
        except CallRefused as refused:
            await self._claim_refused(lease, execution, attempt, refused)
            return
        except grpc.aio.AioRpcError as error:
            _log.warning("claim failed", execution=execution, attempt=attempt, code=error.code().name)
            self._call_failed(error)
            await self._abandon(lease, RECEIVE_ERROR_BACKOFF_SECONDS)
            return
        _log.info("attempt claimed", execution=execution, attempt=attempt, delivery=message.delivery_count)
        await self._run(lease, claimed.task)

    async def _claim_refused(self, lease: LeasedMessage, execution: str, attempt: int, refused: CallRefused) -> None:
        still_running = refused.reason == "INVALID_TRANSITION" and refused.metadata.get("from") == "RUNNING"
        if still_running and lease.message.delivery_count > 1:
            # The previous holder of this message stopped renewing its lease while running the attempt.
            _log.warning("releasing a lost attempt", execution=execution, attempt=attempt)
            await self._release_and_settle(lease, execution, attempt)
            return
        _log.info("claim refused", execution=execution, attempt=attempt, reason=refused.reason)
        await self._settle(lease, "complete")

    async def _run(self, lease: LeasedMessage, task: execution_pb2.ExecutionTask) -> None:
        loop = asyncio.get_running_loop()
        attempt = _Attempt(lease, loop.create_future())
        self._attempts[lease.message.message_id] = attempt
        try:
            adapter = self._adapters.get(task.execution_model)
            if adapter is None:
                response = unsupported_model(task, self._adapters.models)
            else:
                call = loop.create_task(adapter.execute(task))
                beat = loop.create_task(self._heartbeat(attempt, task))
                waiters: set[asyncio.Future[Any]] = {call, attempt.abort}
                try:
                    await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    attempt.ended = True
                    beat.cancel()
                    finished = call.done() and not call.cancelled()
                    if not finished:
                        call.cancel()
                    await asyncio.gather(call, beat, return_exceptions=True)
                if not finished:
                    await self._aborted(lease, task, attempt.abort.result())
                    return
                response = call.result()
        finally:
            self._attempts.pop(lease.message.message_id, None)
        request = report_for_outcome(task, response)
        if request is None:  # long-running: the extension reports through statusUrl
            await self._settle(lease, "complete")
            return
        await self._report_and_settle(lease, request)

    async def _aborted(self, lease: LeasedMessage, task: execution_pb2.ExecutionTask, reason: AbortReason) -> None:
        _log.info("attempt aborted", execution=task.execution, attempt=task.attempt, reason=reason.value)
        if reason is AbortReason.CANCELLED:
            request = _report(task, state=State.CANCELLED, status_message="cancelled by the client")
            await self._report_and_settle(lease, request)
        elif reason is AbortReason.STOPPING:
            message = "the agent stopped during the attempt"
            request = _report(
                task,
                state=State.QUEUED,
                status_message=message,
                error=error_status(grpc.StatusCode.UNAVAILABLE, message, AGENT_STOPPED, {"attempt": str(task.attempt)}),
            )
            await self._report_and_settle(lease, request)
        elif reason is AbortReason.ENDED:
            await self._settle(lease, "complete")
        # LEASE_LOST: the message is no longer ours to settle.

    async def _heartbeat(self, attempt: _Attempt, task: execution_pb2.ExecutionTask) -> None:
        """Renew the lease and ask the execution service, every ``heartbeat_seconds``, until the attempt ends.

        Cancelling this task is how the attempt stops it, but a library may swallow a cancellation (it then returns
        as if nothing happened): the loop also checks after every step that the attempt is still under way.
        """
        while not self._beat_over(attempt, task):
            await asyncio.sleep(self._config.heartbeat_seconds)  # the period of the heartbeat itself
            if self._beat_over(attempt, task):
                return
            try:
                await self._queue.renew(attempt.lease)
            except LeaseLost:
                _abort(attempt, AbortReason.LEASE_LOST)
                return
            except HubError as error:
                _log.warning("lease renewal failed", execution=task.execution, reason=error.reason)
            if self._beat_over(attempt, task):
                return
            try:
                beat = await self._client.heartbeat(task.execution, task.attempt, self._config.agent_id)
            except CallRefused as refused:
                _log.info("heartbeat refused", execution=task.execution, reason=refused.reason)
                _abort(attempt, AbortReason.ENDED)
                return
            except grpc.aio.AioRpcError as error:
                _log.warning("heartbeat failed", execution=task.execution, code=error.code().name)
                self._call_failed(error)
                continue
            if self._beat_over(attempt, task):
                return
            if beat.abort:
                _abort(attempt, AbortReason.ENDED)
                return
            if beat.cancel_requested:
                _abort(attempt, AbortReason.CANCELLED)
                return

    @staticmethod
    def _beat_over(attempt: _Attempt, task: execution_pb2.ExecutionTask) -> bool:
        if attempt.ended:
            _log.warning("heartbeat outlived its attempt (its cancellation was lost)", execution=task.execution)
            return True
        return attempt.abort.done()

    # -- reporting and settling ---------------------------------------------------------------------

    async def _report_and_settle(self, lease: LeasedMessage, request: pb.ReportExecutionStatusRequest) -> None:
        await self._deliver_and_settle(
            lease,
            _Delivery(request.name, request.attempt, request.state, request.status_message),
            lambda: self._client.report(request),
        )

    async def _release_and_settle(self, lease: LeasedMessage, execution: str, attempt: int) -> None:
        await self._deliver_and_settle(
            lease,
            _Delivery(execution, attempt, State.QUEUED, "the agent running this attempt stopped renewing its lease"),
            lambda: self._client.release(execution, attempt, self._config.agent_id),
        )

    async def _deliver_and_settle(
        self, lease: LeasedMessage, what: _Delivery, call: Callable[[], Awaitable[execution_pb2.Execution]]
    ) -> None:
        """Deliver a report (or a release), trying again after transient failures, then settle the message."""
        for attempt in range(REPORT_TRIES):
            try:
                execution = await call()
            except CallRefused as refused:  # stale attempt, or the execution ended meanwhile
                _log.info("report refused", execution=what.execution, attempt=what.attempt, reason=refused.reason)
                await self._settle(lease, "complete")
                return
            except grpc.aio.AioRpcError as error:
                _log.warning("report failed", execution=what.execution, code=error.code().name, try_=attempt + 1)
                self._call_failed(error)
                await asyncio.sleep(REPORT_BACKOFF_SECONDS * 2**attempt)  # backoff between tries
                continue
            action = settlement_for(what.state, execution.state)
            _log.info(
                "attempt reported",
                execution=what.execution,
                attempt=what.attempt,
                reported=State.Name(what.state),
                state=State.Name(execution.state),
            )
            await self._settle(
                lease,
                action,
                reason=RETRIES_EXHAUSTED,
                description=execution.error.message or what.status_message,
            )
            return
        await self._abandon(lease, 0)

    async def _settle(self, lease: LeasedMessage, action: str, *, reason: str = "", description: str = "") -> None:
        try:
            if action == "dead_letter":
                await self._queue.dead_letter(lease, reason=reason, description=description)
            else:
                await self._queue.complete(lease)
        except LeaseLost:
            _log.info("lease lost before settling", message_id=lease.message.message_id)
        except HubError as error:
            _log.warning("settling failed", message_id=lease.message.message_id, reason=error.reason)

    async def _abandon(self, lease: LeasedMessage, delay_seconds: float) -> None:
        try:
            await self._queue.abandon(lease, delay_seconds=delay_seconds)
        except HubError as error:
            _log.info("abandon failed", message_id=lease.message.message_id, reason=error.reason)

    # -- stopping -----------------------------------------------------------------------------------

    async def stop(self, grace: float) -> None:
        """Stop receiving; give attempts under way ``grace`` seconds, then abort them (reported as transient)."""
        self._stopping.set()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._handlers:
            _, pending = await asyncio.wait(set(self._handlers), timeout=grace)
            for attempt in list(self._attempts.values()):
                _abort(attempt, AbortReason.STOPPING)
            if pending:
                _, still = await asyncio.wait(pending, timeout=max(grace, 1.0))
                for handler in still:
                    handler.cancel()
                await asyncio.gather(*still, return_exceptions=True)


def _abort(attempt: _Attempt, reason: AbortReason) -> None:
    if not attempt.abort.done():
        attempt.abort.set_result(reason)
