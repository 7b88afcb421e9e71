"""The execution use cases' outbound ports: the catalog and the agent (plus the types they speak).

Ports speak domain values and raise :class:`~services.platform.errors.HubError`; their adapters
(``services/execution/adapters/{catalog,agent}.py``) import these and map protos, never the reverse. The
other ports the use cases use live with their platform: the document store (through
:class:`~services.execution.repository.ExecutionRepository`) and the object provider
(:mod:`services.objects.port`); of the work queue they read only the dead letters (:class:`DeadLetterQueue`);
the clock is a function returning storage timestamps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.execution.domain.model import (
    ExecutionError,
    ObjectDefinition,
    Priority,
    ProfileSnapshot,
    ValidationError,
    VersionSnapshot,
    VersionState,
)
from services.execution.domain.outcomes import AttemptResult
from services.objects.port import Accessor
from services.platform.workqueue.port import DeadLetter

__all__ = [
    "AgentPort",
    "AttemptOutcome",
    "AttemptTask",
    "CatalogPort",
    "CatalogVersion",
    "Clock",
    "DeadLetterQueue",
    "ObjectBinding",
]

#: Now, as a storage timestamp (``services.platform.timefmt``).
Clock = Callable[[], str]


@dataclass(frozen=True, slots=True)
class CatalogVersion:
    """An extension version as the catalog answers it (``name`` resolved: never ``…/latest``)."""

    name: str
    state: VersionState
    supports_validation: bool
    execution_timeout: timedelta | None
    profiles: tuple[ProfileSnapshot, ...]
    services: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    inputs: tuple[ObjectDefinition, ...] = ()
    outputs: tuple[ObjectDefinition, ...] = ()

    def profile(self, name: str) -> ProfileSnapshot | None:
        """The profile called ``name``, if the version has one."""
        return next((p for p in self.profiles if p.name == name), None)

    def snapshot(self, profile: ProfileSnapshot) -> VersionSnapshot:
        """What an execution with ``profile`` keeps of this version."""
        return VersionSnapshot(
            supports_validation=self.supports_validation,
            execution_timeout=self.execution_timeout,
            profile=profile,
            services=self.services,
            inputs=self.inputs,
            outputs=self.outputs,
        )


class DeadLetterQueue(Protocol):
    """The work queue's dead letters (:class:`~services.platform.workqueue.port.WorkQueue`)."""

    async def list_dead_letters(
        self, *, page_size: int = 0, page_token: str | None = None
    ) -> tuple[list[DeadLetter], str | None]:
        """A page of dead letters (oldest first) and the next page token (None on the last page)."""
        ...


class CatalogPort(Protocol):
    """Reads extension versions (``…/versions/latest`` resolved by the catalog)."""

    async def get_version(self, name: str, *, authorization: str) -> CatalogVersion:
        """The version, read with the caller's ``authorization`` (its bearer header, may be empty).

        Raises the catalog's refusal as a HubError (NOT_FOUND ``VERSION_NOT_FOUND`` …); UNAVAILABLE
        ``BACKEND_UNAVAILABLE`` when the catalog cannot answer.
        """
        ...


@dataclass(frozen=True, slots=True)
class ObjectBinding:
    """A declared input or output handed to the agent, with its accessor (inputs: only if provided)."""

    definition: ObjectDefinition
    accessor: Accessor | None = None
    provided: bool = False


@dataclass(frozen=True, slots=True)
class AttemptTask:
    """Everything an agent needs to run one attempt (the plain status-update key included: never store it)."""

    execution: str
    attempt: int
    extension: str
    extension_version: str
    profile: str
    execution_model: str
    priority: Priority
    validate_only: bool
    request: Mapping[str, Any]
    labels: Mapping[str, str]
    tenant: str
    user: str
    extension_settings: Mapping[str, str]
    services: Mapping[str, Mapping[str, Any]]
    deadline: datetime
    status_url: str
    status_update_key: str
    call_timeout: timedelta | None = None
    inputs: tuple[ObjectBinding, ...] = ()
    outputs: tuple[ObjectBinding, ...] = ()


@dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """How the agent says an attempt ended (see :mod:`services.execution.domain.outcomes`)."""

    result: AttemptResult
    output: Mapping[str, Any] | None = None
    provided_outputs: tuple[str, ...] = ()
    validation_errors: tuple[ValidationError, ...] = ()
    error: ExecutionError | None = None
    http_status: int = 0


class AgentPort(Protocol):
    """Runs one attempt synchronously (``AgentService.Execute``)."""

    async def execute(self, task: AttemptTask, *, timeout_seconds: float) -> AttemptOutcome:
        """The attempt's outcome.

        Raises ``DeadlineExceeded`` when no answer came within ``timeout_seconds``, and ``Unavailable``
        (reason ``AGENT_UNAVAILABLE``, metadata ``grpcCode``) when the agent cannot be reached or failed.
        """
        ...
