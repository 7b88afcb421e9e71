"""The execution service, as the agent sees it, with an Agent-role bearer token: ``AgentTaskService`` (sign the
extension request; for the queue worker also claim, heartbeat and release) and
``ExecutionService.ReportExecutionStatus`` (proven by the claimed attempt's status-update key).

Claims and reports are batched naturally (:class:`NaturalBatcher`): a claim (or a report) goes out at once, as
the single call, when none of its kind is in flight; those that arrive while one is in flight go together in the
next call, ``BatchClaimExecutions`` (``BatchReportExecutionStatus``), whose items are answered one by one. Under
light load nothing changes; under load one call carries many items, which saves both processes the per-call
cost (the RPC itself, authentication, the access log).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar

import grpc
from google.protobuf.message import Message
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from exthub.contract.dev_tokens import TokenSource
from exthub.contract.errors import call_error_info, error_info
from exthub.execution.v1 import (
    agent_task_service_pb2,
    agent_task_service_pb2_grpc,
    execution_pb2,
    execution_service_pb2,
    execution_service_pb2_grpc,
)
from services.agent.adapters.signing import SigningRefused
from services.platform import telemetry

if TYPE_CHECKING:
    from exthub.execution.v1.agent_task_service_pb2_grpc import AgentTaskServiceAsyncStub
    from exthub.execution.v1.execution_service_pb2_grpc import ExecutionServiceAsyncStub

__all__ = ["BATCH_MAX_BYTES", "BATCH_MAX_ITEMS", "CallRefused", "ExecutionServiceClient", "ExecutionServiceSigner"]

SIGN_TIMEOUT_SECONDS = 10.0
REACHABLE_TIMEOUT_SECONDS = 2.0
#: The most items of one batch call (the execution service's limit).
BATCH_MAX_ITEMS = 100
#: The most request bytes of one batch call (a report carries its result): far below the 4 MiB message limit, so
#: the answer (each item's execution, result included) fits too. A larger item goes out alone, as the single call.
BATCH_MAX_BYTES = 1024 * 1024
_REFUSAL_CODES = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.UNAUTHENTICATED,
    }
)
_PERMANENT_CODES = frozenset(
    {
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.PERMISSION_DENIED,
    }
)


class ExecutionServiceSigner:
    """A ``BodySigner`` calling ``AgentTaskService.SignExtensionRequest`` at ``address``.

    FAILED_PRECONDITION (stale attempt, not RUNNING), INVALID_ARGUMENT, NOT_FOUND and PERMISSION_DENIED become
    :class:`SigningRefused` (the attempt fails); anything else propagates (a transient failure).
    """

    def __init__(self, address: str, tokens: TokenSource, *, timeout: float = SIGN_TIMEOUT_SECONDS) -> None:
        self._channel = grpc.aio.insecure_channel(address)
        self._tasks: AgentTaskServiceAsyncStub = agent_task_service_pb2_grpc.AgentTaskServiceStub(self._channel)
        self._tokens = tokens
        self._timeout = timeout

    async def sign(self, execution: str, attempt: int, body: bytes) -> str:
        request = agent_task_service_pb2.SignExtensionRequestRequest(name=execution, attempt=attempt, body=body)
        try:
            response = await self._tasks.SignExtensionRequest(
                request,
                timeout=self._timeout,
                metadata=(("authorization", f"Bearer {self._tokens.token()}"),),
            )
        except grpc.aio.AioRpcError as error:
            if error.code() in _PERMANENT_CODES:
                raise SigningRefused(
                    f"the execution service refused to sign: {error.details() or error.code().name}",
                    reason=_error_info(error)[0] or error.code().name,
                ) from None
            raise
        if not response.signature:
            raise SigningRefused("the execution service returned no signature", reason="SIGNATURE_MISSING")
        return response.signature

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()


def _error_info(error: grpc.aio.AioRpcError) -> tuple[str, dict[str, str]]:
    """``(reason, metadata)`` of the ``ErrorInfo`` in the call's rich status (empty when there is none)."""
    info = call_error_info(error)
    return (info.reason, dict(info.metadata)) if info is not None else ("", {})


class CallRefused(Exception):
    """The execution service refused a worker call for good (stale attempt, invalid transition, not found…).

    ``reason`` and ``metadata`` are the answer's ``ErrorInfo``; ``code`` its gRPC code. Any other failure
    (UNAVAILABLE, DEADLINE_EXCEEDED, …) propagates as ``grpc.aio.AioRpcError``: it may be tried again.
    """

    def __init__(self, code: grpc.StatusCode, message: str, reason: str, metadata: dict[str, str]) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.metadata = metadata

    @classmethod
    def from_rpc(cls, error: grpc.aio.AioRpcError) -> CallRefused:
        """The refusal carried by ``error``."""
        reason, metadata = _error_info(error)
        return cls(error.code(), error.details() or error.code().name, reason or error.code().name, metadata)


Item = TypeVar("Item", bound=Message)
Answer = TypeVar("Answer")
Result = TypeVar("Result")


class NaturalBatcher(Generic[Item, Answer]):
    """Natural batching of one kind of call, with no added latency.

    :meth:`submit` queues an item; one sender takes the queued items in order, ``max_items`` and ``max_bytes``
    (the serialized request size; the first item is always taken) at a time, and awaits ``send`` on them. So an
    item goes out at once when no call is in flight, and the items that arrive during a call go together in the
    next one. ``send`` answers each item with its answer or the exception its caller gets. A caller that gives up
    (cancelled) before its item is sent is left out.

    Each call runs in the context of its first item's caller (its trace, its log context); a call of several items
    also opens the span ``name``, linked to every item's span.
    """

    def __init__(
        self,
        send: Callable[[Sequence[Item]], Awaitable[Sequence[Answer | BaseException]]],
        *,
        name: str = "batch",
        max_items: int = BATCH_MAX_ITEMS,
        max_bytes: int = BATCH_MAX_BYTES,
    ) -> None:
        self._send = send
        self._name = name
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._queued: deque[_Queued[Item, Answer]] = deque()
        self._sender: asyncio.Task[None] | None = None
        self.calls = 0
        """Calls sent so far (for the logs and the tests)."""

    async def submit(self, item: Item) -> Answer:
        """Send ``item`` with the next call; its answer (or its exception)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Answer] = loop.create_future()
        self._queued.append(_Queued(item, future, contextvars.copy_context()))
        if self._sender is None:
            self._sender = loop.create_task(self._run())
        return await future

    async def close(self) -> None:
        """Stop sending; the callers still waiting are cancelled."""
        sender, self._sender = self._sender, None
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
        while self._queued:
            self._queued.popleft().future.cancel()

    def _take(self) -> list[_Queued[Item, Answer]]:
        batch: list[_Queued[Item, Answer]] = []
        size = 0
        while self._queued and len(batch) < self._max_items:
            queued = self._queued[0]
            if queued.future.done():  # its caller gave up
                self._queued.popleft()
                continue
            item_size = queued.item.ByteSize()
            if batch and size + item_size > self._max_bytes:
                break
            batch.append(self._queued.popleft())
            size += item_size
        return batch

    async def _run(self) -> None:
        try:
            while batch := self._take():
                self.calls += 1
                call = asyncio.get_running_loop().create_task(self._call(batch), context=batch[0].context)
                try:
                    outcomes: Sequence[Answer | BaseException] = await call
                except Exception as error:  # the call failed as a whole: so did each item
                    outcomes = [error] * len(batch)
                except BaseException:
                    for queued in batch:
                        queued.future.cancel()
                    raise
                for queued, outcome in zip(batch, outcomes, strict=True):
                    if queued.future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        queued.future.set_exception(outcome)
                    else:
                        queued.future.set_result(outcome)
        finally:
            if self._sender is asyncio.current_task():
                self._sender = None

    async def _call(self, batch: Sequence[_Queued[Item, Answer]]) -> Sequence[Answer | BaseException]:
        items = [queued.item for queued in batch]
        if len(batch) == 1:
            return await self._send(items)
        with telemetry.linked_span(self._name, [queued.context for queued in batch]):
            return await self._send(items)


@dataclass(frozen=True)
class _Queued(Generic[Item, Answer]):
    """An item waiting for its call: its caller's future and context."""

    item: Item
    future: asyncio.Future[Answer]
    context: contextvars.Context


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _item_error(status: status_pb2.Status) -> Exception:
    """The exception a batch item's error status stands for: what the single call would have raised."""
    code = _CODES.get(status.code, grpc.StatusCode.UNKNOWN)
    if code in _REFUSAL_CODES:
        info = error_info(status)
        reason, metadata = (info.reason, dict(info.metadata)) if info is not None else ("", {})
        return CallRefused(code, status.message or code.name, reason or code.name, metadata)
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=status.message)


async def _one_by_one(
    items: Sequence[Item], single: Callable[[Item], Awaitable[Answer]]
) -> list[Answer | BaseException]:
    """Each item through its single call, concurrently; each answer or exception."""
    return list(await asyncio.gather(*(single(item) for item in items), return_exceptions=True))


class ExecutionServiceClient(ExecutionServiceSigner):
    """The worker's side of the execution service: claim, heartbeat, report, release (and sign, as the signer).

    One channel, Agent-role bearer tokens, a timeout on every call. Permanent refusals raise
    :class:`CallRefused`; transient failures raise ``grpc.aio.AioRpcError``.
    """

    def __init__(self, address: str, tokens: TokenSource, *, timeout: float = SIGN_TIMEOUT_SECONDS) -> None:
        super().__init__(address, tokens, timeout=timeout)
        self._executions: ExecutionServiceAsyncStub = execution_service_pb2_grpc.ExecutionServiceStub(self._channel)
        self._batches_served = True  # until the execution service answers UNIMPLEMENTED (an older version)
        self.claims: NaturalBatcher[
            agent_task_service_pb2.ClaimExecutionRequest, agent_task_service_pb2.ClaimExecutionResponse
        ] = NaturalBatcher(self._send_claims, name="claim batch")
        self.reports: NaturalBatcher[execution_service_pb2.ReportExecutionStatusRequest, execution_pb2.Execution] = (
            NaturalBatcher(self._send_reports, name="report batch")
        )

    async def claim(self, execution: str, attempt: int, agent_id: str) -> agent_task_service_pb2.ClaimExecutionResponse:
        """``ClaimExecution``: QUEUED → RUNNING for ``attempt``, with the task to run (batched naturally)."""
        request = agent_task_service_pb2.ClaimExecutionRequest(
            name=execution, attempt=attempt, agent_id=agent_id, task_only=True
        )
        return await self.claims.submit(request)

    async def _claim_one(
        self, request: agent_task_service_pb2.ClaimExecutionRequest
    ) -> agent_task_service_pb2.ClaimExecutionResponse:
        with _refusals():
            return await self._tasks.ClaimExecution(request, timeout=self._timeout, metadata=self._metadata())

    async def _send_claims(
        self, requests: Sequence[agent_task_service_pb2.ClaimExecutionRequest]
    ) -> list[agent_task_service_pb2.ClaimExecutionResponse | BaseException]:
        async def batch(
            items: Sequence[agent_task_service_pb2.ClaimExecutionRequest],
        ) -> Sequence[agent_task_service_pb2.ClaimExecutionResult]:
            answer = await self._tasks.BatchClaimExecutions(
                agent_task_service_pb2.BatchClaimExecutionsRequest(requests=items),
                timeout=self._timeout,
                metadata=self._metadata(),
            )
            return answer.responses

        return await self._send_batch(
            requests,
            self._claim_one,
            batch,
            lambda result: _item_error(result.error) if result.HasField("error") else result.response,
        )

    async def heartbeat(
        self, execution: str, attempt: int, agent_id: str
    ) -> agent_task_service_pb2.HeartbeatExecutionResponse:
        """``HeartbeatExecution``: go on, abort, or cancel."""
        request = agent_task_service_pb2.HeartbeatExecutionRequest(name=execution, attempt=attempt, agent_id=agent_id)
        with _refusals():
            return await self._tasks.HeartbeatExecution(request, timeout=self._timeout, metadata=self._metadata())

    async def release(self, execution: str, attempt: int, agent_id: str) -> execution_pb2.Execution:
        """``ReleaseExecution``: end a RUNNING attempt whose agent was lost (``AGENT_LOST``); the execution now."""
        request = agent_task_service_pb2.ReleaseExecutionRequest(name=execution, attempt=attempt, agent_id=agent_id)
        with _refusals():
            return await self._tasks.ReleaseExecution(request, timeout=self._timeout, metadata=self._metadata())

    async def report(self, request: execution_service_pb2.ReportExecutionStatusRequest) -> execution_pb2.Execution:
        """``ReportExecutionStatus``; ``request`` carries the claimed attempt's status-update key (batched
        naturally)."""
        return await self.reports.submit(request)

    async def _report_one(self, request: execution_service_pb2.ReportExecutionStatusRequest) -> execution_pb2.Execution:
        with _refusals():
            return await self._executions.ReportExecutionStatus(
                request, timeout=self._timeout, metadata=self._metadata()
            )

    async def _send_reports(
        self, requests: Sequence[execution_service_pb2.ReportExecutionStatusRequest]
    ) -> list[execution_pb2.Execution | BaseException]:
        async def batch(
            items: Sequence[execution_service_pb2.ReportExecutionStatusRequest],
        ) -> Sequence[agent_task_service_pb2.ReportExecutionStatusResult]:
            answer = await self._tasks.BatchReportExecutionStatus(
                agent_task_service_pb2.BatchReportExecutionStatusRequest(requests=items),
                timeout=self._timeout,
                metadata=self._metadata(),
            )
            return answer.responses

        return await self._send_batch(
            requests,
            self._report_one,
            batch,
            lambda result: _item_error(result.error) if result.HasField("error") else result.execution,
        )

    async def _send_batch(
        self,
        requests: Sequence[Item],
        single: Callable[[Item], Awaitable[Answer]],
        batch: Callable[[Sequence[Item]], Awaitable[Sequence[Result]]],
        answer_of: Callable[[Result], Answer | BaseException],
    ) -> list[Answer | BaseException]:
        """One batch call for ``requests`` (one item, or a service without batch methods: the single call), each
        item answered with ``answer_of`` its result (its answer, or the exception of its own error); a batch
        refused as a whole goes out one by one (:meth:`_one_by_one_after`)."""
        if len(requests) == 1 or not self._batches_served:
            return await _one_by_one(requests, single)
        try:
            results = await batch(requests)
        except grpc.aio.AioRpcError as error:
            if not self._one_by_one_after(error):
                raise
            return await _one_by_one(requests, single)
        return [answer_of(result) for result in _exactly(results, len(requests))]

    def _one_by_one_after(self, error: grpc.aio.AioRpcError) -> bool:
        """Whether the items of a batch call that failed as a whole go out one by one, each for its own answer:
        yes when the service has no batch methods (UNIMPLEMENTED: no batch is tried again) or refused the call
        for good (one item broke an input limit, …); no for a transient failure (each item gets it)."""
        if error.code() == grpc.StatusCode.UNIMPLEMENTED:
            self._batches_served = False
            return True
        return error.code() in _REFUSAL_CODES

    async def reachable(self) -> bool:
        """Whether the execution service answers its health check with SERVING (a cheap probe: no token, no work)."""
        try:
            response = await health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(), timeout=REACHABLE_TIMEOUT_SECONDS
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(response.status == health_pb2.HealthCheckResponse.SERVING)

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self._tokens.token()}"),)

    async def close(self) -> None:
        """Stop batching (waiting callers are cancelled), then close the channel."""
        await self.claims.close()
        await self.reports.close()
        await super().close()


def _exactly(results: Sequence[Result], count: int) -> Sequence[Result]:
    """A batch answer's results, which must be one per item."""
    if len(results) != count:
        raise grpc.aio.AioRpcError(
            grpc.StatusCode.INTERNAL,
            grpc.aio.Metadata(),
            grpc.aio.Metadata(),
            details=f"the batch answer holds {len(results)} results for {count} items",
        )
    return results


@contextlib.contextmanager
def _refusals() -> Iterator[None]:
    """Turn a permanent refusal into :class:`CallRefused`; let transient failures through."""
    try:
        yield
    except grpc.aio.AioRpcError as error:
        if error.code() in _REFUSAL_CODES:
            raise CallRefused.from_rpc(error) from None
        raise
