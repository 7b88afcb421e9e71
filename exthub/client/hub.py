"""``HubClient``: the catalog and execution stubs on one configured channel, and helpers for common flows."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

import aiohttp
import grpc

from exthub.catalog.v1 import catalog_service_pb2_grpc
from exthub.client.channel import DEFAULT_TIMEOUT_SECONDS, Target, open_channel
from exthub.client.errors import ExecutionWaitTimeout, ObjectTransferError
from exthub.client.objects import DEFAULT_TRANSFER_TIMEOUT, download_object, upload_object
from exthub.client.tokens import TokenProvider
from exthub.contract.states import is_terminal_state, state_name
from exthub.execution.v1 import execution_pb2, execution_service_pb2, execution_service_pb2_grpc
from exthub.type.v1 import types_pb2

if TYPE_CHECKING:
    from exthub.catalog.v1.catalog_service_pb2_grpc import CatalogServiceAsyncStub
    from exthub.execution.v1.execution_service_pb2_grpc import ExecutionServiceAsyncStub

__all__ = ["DEFAULT_WAIT_SECONDS", "EventCallback", "HubClient", "connect", "with_expected_inputs"]

Execution = execution_pb2.Execution
ExecutionEvent = execution_pb2.ExecutionEvent
EventCallback = Callable[[ExecutionEvent], None]
DEFAULT_WAIT_SECONDS = 300.0
CREATE_ATTEMPTS = 3
WATCH_RECONNECTS = 5
#: The longest one WaitExecution call of :meth:`HubClient.wait` asks for (the hub waits at most 30 s per call).
WAIT_CALL_SECONDS = 30.0
_WAIT_CALL_MARGIN_SECONDS = 5.0
_BACKOFF_SECONDS = 0.2
_ACCESSOR_MARGIN = timedelta(seconds=10)


def with_expected_inputs(execution: Execution, names: Iterable[str]) -> Execution:
    """A copy of ``execution`` whose ``expected_inputs`` also names ``names`` (the inputs the client will upload)."""
    copy = Execution()
    copy.CopyFrom(execution)
    copy.expected_inputs.extend(name for name in dict.fromkeys(names) if name not in copy.expected_inputs)
    return copy


def _safe_object_name(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise ObjectTransferError(f"refusing to write an object named {name!r} to disk")
    return name


class HubClient:
    """A connection to the hub: ``catalog`` and ``executions`` stubs plus flow helpers.

    Every call carries a bearer token from the provider and a default deadline; reads are retried on
    UNAVAILABLE by the channel (see :mod:`exthub.client.channel`). Use ``async with connect(...) as hub``.
    """

    def __init__(
        self,
        execution_channel: grpc.aio.Channel,
        catalog_channel: grpc.aio.Channel | None = None,
        *,
        token_provider: TokenProvider | None = None,
        target: Target | None = None,
        transfer_timeout: aiohttp.ClientTimeout = DEFAULT_TRANSFER_TIMEOUT,
        transfer_ssl: ssl.SSLContext | None = None,
    ) -> None:
        self._channels = [execution_channel] if catalog_channel is None else [execution_channel, catalog_channel]
        self.catalog: CatalogServiceAsyncStub = catalog_service_pb2_grpc.CatalogServiceStub(
            catalog_channel or execution_channel
        )
        self.executions: ExecutionServiceAsyncStub = execution_service_pb2_grpc.ExecutionServiceStub(execution_channel)
        self.target = target
        self._tokens = token_provider
        self._transfer_timeout = transfer_timeout
        self._transfer_ssl = transfer_ssl
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> HubClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channels, the HTTP session and the token provider."""
        if self._session is not None:
            await self._session.close()
            self._session = None
        for channel in self._channels:
            await channel.close()
        if self._tokens is not None:
            await self._tokens.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._transfer_ssl) if self._transfer_ssl is not None else None
            self._session = aiohttp.ClientSession(timeout=self._transfer_timeout, connector=connector)
        return self._session

    # -- executions ---------------------------------------------------------------------------------------

    async def create_execution(
        self,
        execution: Execution,
        *,
        request_id: str | None = None,
        call_timeout: float | None = None,
        wait: float | None = None,
    ) -> Execution:
        """CreateExecution with a ``request_id`` (a new UUID unless given), retried on UNAVAILABLE.

        The request id makes the create idempotent on the hub (the same id returns the same execution), so
        repeating it after a broken connection cannot start a second run. ``call_timeout`` bounds each attempt;
        a synchronous profile runs the extension during the call, so give it the run's budget. ``wait`` (seconds,
        the hub waits at most 30 s) asks the hub to answer once the execution has ended, or as it is after
        ``wait`` (``wait_timeout``); the hub answers before ``call_timeout``, which defaults to ``wait`` plus a
        margin then. The answer's state says whether it has ended.
        """
        request = execution_service_pb2.CreateExecutionRequest(
            execution=execution, request_id=request_id or str(uuid.uuid4())
        )
        if wait is not None:
            request.wait_timeout.FromNanoseconds(int(max(wait, 0.0) * 1e9))
            if call_timeout is None:
                call_timeout = min(wait, WAIT_CALL_SECONDS) + _WAIT_CALL_MARGIN_SECONDS
        for attempt in range(1, CREATE_ATTEMPTS + 1):
            try:
                return await self.executions.CreateExecution(request, timeout=call_timeout)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or attempt == CREATE_ATTEMPTS:
                    raise
                await asyncio.sleep(_BACKOFF_SECONDS * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def get_execution(self, name: str) -> Execution:
        """GetExecution (fresh object accessors)."""
        return await self.executions.GetExecution(execution_service_pb2.GetExecutionRequest(name=name))

    async def watch(self, name: str, *, from_sequence: int = 1) -> AsyncGenerator[ExecutionEvent, None]:
        """The execution's events from ``from_sequence`` on, ending after the terminal event.

        A stream broken by UNAVAILABLE, or closed by a proxy before the terminal event, is resumed after the
        last event seen (up to a few times in a row), so no event is lost or repeated. No deadline of its own:
        bound it with ``asyncio.timeout`` (see :meth:`wait`).
        """
        next_sequence = from_sequence
        reconnects = 0
        while True:
            call = self.executions.WatchExecution(
                execution_service_pb2.WatchExecutionRequest(name=name, from_sequence=next_sequence)
            )
            received = False
            try:
                async for event in call:
                    received, reconnects = True, 0
                    next_sequence = event.sequence + 1
                    yield event
                    if is_terminal_state(event.state):
                        return
                if not received:
                    return  # nothing more to say (e.g. ``from_sequence`` is past the end)
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or reconnects >= WATCH_RECONNECTS:
                    raise
            finally:
                call.cancel()  # a no-op once the stream has ended; stops it when the caller leaves early
            reconnects += 1
            await asyncio.sleep(_BACKOFF_SECONDS * 2 ** (reconnects - 1))

    async def wait(
        self, name: str, *, max_wait: float = DEFAULT_WAIT_SECONDS, on_event: EventCallback | None = None
    ) -> Execution:
        """Wait until the execution has ended, then return it (fresh accessors).

        Without ``on_event`` it asks WaitExecution, again while the execution runs (each call waits at most
        :data:`WAIT_CALL_SECONDS`); with ``on_event``, which sees every event (progress bars), it follows
        WatchExecution. Raises :class:`ExecutionWaitTimeout` after ``max_wait`` seconds; the execution itself
        is not cancelled.
        """
        if on_event is not None:
            return await self._follow(name, max_wait, on_event)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max_wait
        while True:
            remaining = deadline - loop.time()
            seconds = max(0.0, min(remaining, WAIT_CALL_SECONDS))
            request = execution_service_pb2.WaitExecutionRequest(name=name)
            request.timeout.FromNanoseconds(int(seconds * 1e9))
            # the hub answers by the requested timeout; the call's deadline only guards against a lost answer
            execution = await self.executions.WaitExecution(request, timeout=seconds + _WAIT_CALL_MARGIN_SECONDS)
            if is_terminal_state(execution.state):
                return execution
            if loop.time() >= deadline:
                raise ExecutionWaitTimeout(name, state_name(execution.state), max_wait)

    async def _follow(self, name: str, max_wait: float, on_event: EventCallback) -> Execution:
        """Follow WatchExecution until the terminal event, then return the execution (fresh accessors)."""
        last_state = "UNKNOWN"
        try:
            async with asyncio.timeout(max_wait), contextlib.aclosing(self.watch(name)) as events:
                async for event in events:
                    last_state = state_name(event.state)
                    on_event(event)
                return await self.get_execution(name)
        except TimeoutError:
            raise ExecutionWaitTimeout(name, last_state, max_wait) from None

    async def create_and_wait(
        self,
        execution: Execution,
        *,
        inputs: Mapping[str, Path] | None = None,
        max_wait: float = DEFAULT_WAIT_SECONDS,
        on_event: EventCallback | None = None,
        request_id: str | None = None,
    ) -> Execution:
        """Create, upload ``inputs`` and continue if the version declares inputs, then wait for the end.

        The names of ``inputs`` are added to the execution's ``expected_inputs``, so the hub waits for them
        even when they are optional. Continues even without inputs (every declared input may be optional; the
        hub answers FAILED_PRECONDITION ``INPUTS_MISSING`` if a required one is absent). The whole flow is
        bounded by ``max_wait``; a DIRECT execution returns at once (its token is its outcome).

        Without ``inputs`` or ``on_event`` the create itself waits for the end (``wait_timeout``, at most
        :data:`WAIT_CALL_SECONDS` and ``max_wait``): one call when the execution ends within it; otherwise
        :meth:`wait` goes on from its answer.
        """
        deadline = time.monotonic() + max_wait
        if inputs:
            execution = with_expected_inputs(execution, inputs)
        wait = None if inputs or on_event is not None else min(max_wait, WAIT_CALL_SECONDS)
        created = await self.create_execution(execution, request_id=request_id, call_timeout=max_wait, wait=wait)
        current = created
        if current.state == Execution.PENDING_INPUTS:
            remaining = max(deadline - time.monotonic(), 0.1)
            current = await self.upload_inputs(current, inputs or {}, call_timeout=remaining)
        elif inputs:
            raise ObjectTransferError(f"{created.extension_version} declares no inputs; nothing to upload")
        if is_terminal_state(current.state):
            return current
        return await self.wait(current.name, max_wait=max(deadline - time.monotonic(), 0.1), on_event=on_event)

    async def upload_inputs(
        self,
        execution: Execution,
        files: Mapping[str, Path],
        *,
        continue_execution: bool = True,
        call_timeout: float | None = None,
    ) -> Execution:
        """Upload each ``{input name: file}`` through its accessor, then ContinueExecution with those names.

        Unknown input names are refused before anything is sent. With ``continue_execution=False`` only the
        uploads happen and the execution is returned as given. ``call_timeout`` bounds the continue call, which
        runs a synchronous extension.
        """
        declared = {item.name: item for item in execution.inputs}
        unknown = sorted(set(files) - set(declared))
        if unknown:
            raise ObjectTransferError(
                f"{execution.extension_version} has no input named {', '.join(unknown)}"
                f" (declared: {', '.join(sorted(declared)) or 'none'})"
            )
        if files and any(self._expiring(declared[n].upload) for n in files):
            fresh = await self.get_execution(execution.name)
            declared = {item.name: item for item in fresh.inputs}
        for name, path in files.items():
            await upload_object(self._http(), declared[name].upload, path)
        if not continue_execution:
            return execution
        return await self.executions.ContinueExecution(
            execution_service_pb2.ContinueExecutionRequest(name=execution.name, provided_inputs=list(files)),
            timeout=call_timeout,
        )

    async def download_outputs(self, execution: Execution, directory: Path) -> dict[str, Path]:
        """Download every provided output into ``directory`` (created if needed) as a file named after it."""
        outputs = [o for o in execution.outputs if o.provided]
        if any(self._expiring(o.download) for o in outputs):
            outputs = [o for o in (await self.get_execution(execution.name)).outputs if o.provided]
        await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
        saved: dict[str, Path] = {}
        for output in outputs:
            path = directory / _safe_object_name(output.name)
            await download_object(self._http(), output.download, path)
            saved[output.name] = path
        return saved

    @staticmethod
    def _expiring(accessor: types_pb2.ObjectAccessor) -> bool:
        """Whether an accessor is missing or expires within the safety margin (then fetch fresh ones)."""
        if not accessor.uri:
            return True
        if not accessor.HasField("expire_time"):
            return False
        expires_at = accessor.expire_time.ToDatetime(tzinfo=UTC)
        return expires_at - _ACCESSOR_MARGIN <= datetime.now(UTC)


def connect(
    target: str,
    *,
    token_provider: TokenProvider | None = None,
    catalog_target: str | None = None,
    default_timeout: float | None = DEFAULT_TIMEOUT_SECONDS,
    default_stream_timeout: float | None = None,
    transfer_timeout: aiohttp.ClientTimeout = DEFAULT_TRANSFER_TIMEOUT,
    transfer_ssl: ssl.SSLContext | None = None,
) -> HubClient:
    """A :class:`HubClient` for the gateway URL (``http://127.0.0.1:8080``) or a service's ``host:port``.

    The gateway serves both services on one port; when talking to the services directly, give the catalog's
    address as ``catalog_target``. Call from a coroutine (the channels bind to the running event loop).
    ``transfer_ssl`` is the TLS context of object uploads and downloads (default: the system's trust store), e.g.
    one that also trusts a private CA in front of Blob Storage.
    """
    execution = Target.parse(target)
    catalog = Target.parse(catalog_target) if catalog_target else None

    def channel(where: Target) -> grpc.aio.Channel:
        return open_channel(
            where,
            token_provider=token_provider,
            default_timeout=default_timeout,
            default_stream_timeout=default_stream_timeout,
        )

    return HubClient(
        channel(execution),
        channel(catalog) if catalog is not None and catalog != execution else None,
        token_provider=token_provider,
        target=execution,
        transfer_timeout=transfer_timeout,
        transfer_ssl=transfer_ssl,
    )
