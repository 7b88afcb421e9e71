"""The execution aggregate as typed values: what one execution document holds.

:class:`Execution` is the state machine's :class:`~services.execution.domain.state_machine.ExecutionRecord`
plus everything else the use cases need: the client's request, a snapshot of the resolved version and
profile (later attempts never ask the catalog again), the inputs and outputs, the outcome, the hashed
status-update key, the cancel bookkeeping and the outbox (events and the dispatch marker waiting to be
relayed). Values are immutable; a use case builds the next one with :func:`dataclasses.replace`.

The stored JSON form lives in ONE module, ``services/execution/adapters/documents.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from services.execution.domain.codes import Code
from services.execution.domain.modes import Mode, ProfileMode
from services.execution.domain.retry import RetrySettings
from services.execution.domain.scheduling import Timeouts, due_time, execution_deadline
from services.execution.domain.state_machine import ExecutionEvent, ExecutionRecord, next_deadline
from services.execution.domain.states import ExecutionState
from services.platform.timefmt import from_storage
from services.platform.workqueue.port import Priority

__all__ = [
    "CancelState",
    "DispatchMarker",
    "Execution",
    "ExecutionError",
    "ExecutionRequest",
    "InputState",
    "ObjectDefinition",
    "Outbox",
    "Outcome",
    "OutputState",
    "Priority",
    "ProfileSnapshot",
    "RetrySettings",
    "ValidationError",
    "VersionSnapshot",
    "VersionState",
    "inputs_to_wait_for",
]


class VersionState(StrEnum):
    """An extension version's lifecycle state (only ACTIVE versions run)."""

    ACTIVE = "ACTIVE"
    DEPRECATED = "DEPRECATED"
    DELETED = "DELETED"


@dataclass(frozen=True, slots=True)
class ObjectDefinition:
    """A declared input or output of a version."""

    name: str
    description: str = ""
    type_name: str = ""
    type_uri: str = ""
    required: bool = False


@dataclass(frozen=True, slots=True)
class ProfileSnapshot:
    """An execution profile of a version, as the execution service needs it."""

    name: str
    execution_model: str
    mode: ProfileMode = ProfileMode.GATEWAY
    object_provider: str = "local/v1"
    extension_settings: Mapping[str, str] = dataclasses.field(default_factory=dict)
    direct_token_ttl: timedelta | None = None
    call_timeout: timedelta | None = None
    queue_timeout: timedelta | None = None
    retry: RetrySettings = dataclasses.field(default_factory=RetrySettings)
    supported_priorities: frozenset[Priority] = frozenset(Priority)
    active: bool = True


@dataclass(frozen=True, slots=True)
class VersionSnapshot:
    """What every attempt needs of the resolved version and the chosen profile (stored with the execution).

    ``execution_timeout`` is ``None`` only when the catalog named none (the scheduler then uses its default).
    """

    supports_validation: bool
    execution_timeout: timedelta | None
    profile: ProfileSnapshot
    services: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    inputs: tuple[ObjectDefinition, ...] = ()
    outputs: tuple[ObjectDefinition, ...] = ()


@dataclass(frozen=True, slots=True)
class ExecutionRequest:
    """The client's immutable part of an execution, with who asked (tenant, user)."""

    extension_version: str
    extension: str
    profile: str
    priority: Priority
    tenant: str
    created_by: str
    validate_only: bool = False
    request: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    labels: Mapping[str, str] = dataclasses.field(default_factory=dict)
    expected_inputs: tuple[str, ...] = ()
    retried_from: str = ""


@dataclass(frozen=True, slots=True)
class InputState:
    """A declared input of one execution: whether it must be provided, and whether it was."""

    name: str
    required: bool
    provided: bool = False
    size: int | None = None
    sha256: str | None = None


def inputs_to_wait_for(inputs: tuple[InputState, ...], expected: tuple[str, ...]) -> tuple[InputState, ...]:
    """The inputs an execution waits for before it runs: every required one, and each optional one the client
    said (``expected_inputs``) it will upload. The others are simply absent when it runs."""
    named = set(expected)
    return tuple(item for item in inputs if item.required or item.name in named)


@dataclass(frozen=True, slots=True)
class OutputState:
    """A declared output of one execution, and whether the extension provided it."""

    name: str
    provided: bool = False


@dataclass(frozen=True, slots=True)
class ValidationError:
    """One validation error an extension reported."""

    code: str = ""
    message: str = ""
    field: str = ""
    data: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ExecutionError:
    """Why an execution FAILED or TIMED_OUT: a canonical code, a message, a reason and its metadata."""

    code: Code
    message: str
    reason: str
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def with_metadata(self, **extra: str) -> ExecutionError:
        """The same error with ``extra`` metadata added (replacing keys it has already)."""
        return ExecutionError(self.code, self.message, self.reason, {**self.metadata, **extra})


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the execution produced: the result, the validation errors, or the error."""

    result: Mapping[str, Any] | None = None
    validation_errors: tuple[ValidationError, ...] = ()
    error: ExecutionError | None = None


@dataclass(frozen=True, slots=True)
class CancelState:
    """A cancel asked of a RUNNING asynchronous execution, waiting for its agent (``deadline``: the sweeper's)."""

    requested: bool = False
    deadline: str | None = None


@dataclass(frozen=True, slots=True)
class DispatchMarker:
    """An attempt waiting to be published to the work queue (``not_before``: retry backoff)."""

    attempt: int
    not_before: str | None = None


@dataclass(frozen=True, slots=True)
class Outbox:
    """What a write left to relay: events to store (and publish), an attempt to publish.

    ``kept``: the events stay in the document for good — a finished execution's last events when nothing
    publishes events. No write follows a finished execution's, so the document is their final place: readers
    find them there (as they find any outbox event), and the relay only counts them instead of copying them to
    event documents and writing the document again to remove them.
    """

    events: tuple[ExecutionEvent, ...] = ()
    dispatch: DispatchMarker | None = None
    kept: bool = False

    @property
    def empty(self) -> bool:
        """Whether it holds nothing (kept events count: the relay still counts them)."""
        return not self.events and self.dispatch is None

    @property
    def events_pending(self) -> bool:
        """Whether it holds events the relay must store (and publish)."""
        return bool(self.events) and not self.kept

    def with_events(self, events: tuple[ExecutionEvent, ...]) -> Outbox:
        """This outbox with ``events`` appended."""
        return Outbox(self.events + events, self.dispatch, self.kept)

    def without_events(self, sequences: frozenset[int]) -> Outbox:
        """This outbox without the events of ``sequences`` (relayed)."""
        return Outbox(tuple(e for e in self.events if e.sequence not in sequences), self.dispatch, self.kept)


@dataclass(frozen=True, slots=True)
class Execution:
    """One execution (see the module docstring).

    ``etag`` is the entity tag clients see (a new one on every change they can see); ``revision`` is the
    store's etag of the document it was read from (conditional writes), empty for one not stored yet.
    ``sync_call_owner`` is the execution service instance waiting for this synchronous execution's agent call
    (empty when no call is in flight; see :mod:`services.execution.domain.instances`).
    """

    id: str
    record: ExecutionRecord
    request: ExecutionRequest
    mode: Mode
    version: VersionSnapshot
    inputs: tuple[InputState, ...] = ()
    outputs: tuple[OutputState, ...] = ()
    outcome: Outcome = dataclasses.field(default_factory=Outcome)
    status_key_hash: str = ""
    cancel: CancelState = dataclasses.field(default_factory=CancelState)
    direct_token: str = ""
    input_timeout: timedelta | None = None
    agent_id: str = ""
    sync_call_owner: str = ""
    outbox: Outbox = dataclasses.field(default_factory=Outbox)
    etag: str = ""
    revision: str = ""

    @property
    def name(self) -> str:
        """``executions/{id}``."""
        return f"executions/{self.id}"

    @property
    def state(self) -> ExecutionState:
        """The current state."""
        return self.record.state

    @property
    def attempt(self) -> int:
        """The current attempt (1-based)."""
        return self.record.attempt

    @property
    def tenant(self) -> str:
        """The owning tenant."""
        return self.request.tenant

    @property
    def profile(self) -> ProfileSnapshot:
        """The profile the execution runs with."""
        return self.version.profile

    @property
    def timeouts(self) -> Timeouts:
        """The bounds of this execution (queue and execution timeouts of its snapshot, the input timeout)."""
        return Timeouts(
            queue=self.version.profile.queue_timeout,
            execution=self.version.execution_timeout,
            inputs=self.input_timeout,
        )

    @property
    def end_time(self) -> str | None:
        """When it reached its terminal state."""
        return self.record.update_time if self.record.is_terminal else None

    @property
    def expire_time(self) -> str | None:
        """The deadline of the current state (input, queue or execution timeout), if it has one."""
        if self.record.is_terminal:
            return None
        timeouts = self.timeouts
        return next_deadline(
            self.record,
            queue_timeout=timeouts.queue,
            execution_timeout=timeouts.execution,
            input_timeout=timeouts.inputs,
        )

    @property
    def due_time(self) -> str | None:
        """When the sweeper must look at it again (a deadline, or an unacknowledged cancel's deadline)."""
        return due_time(self.record, self.timeouts, cancel_deadline_at=self.cancel.deadline)

    @property
    def deadline(self) -> datetime | None:
        """When the whole run times out (execution timeout from the first RUNNING), once it has started."""
        deadline = execution_deadline(self.record, self.timeouts.execution)
        return None if deadline is None else from_storage(deadline)

    @property
    def waiting_for(self) -> tuple[InputState, ...]:
        """The inputs this execution waits for (see :func:`inputs_to_wait_for`)."""
        return inputs_to_wait_for(self.inputs, self.request.expected_inputs)

    @property
    def error(self) -> ExecutionError | None:
        """The error of a FAILED/TIMED_OUT execution (or of an earlier attempt, while it retries)."""
        return self.outcome.error

    def is_running(self, attempt: int) -> bool:
        """Whether ``attempt`` is the one RUNNING now."""
        return self.record.state is ExecutionState.RUNNING and self.record.attempt == attempt
