"""The stored shape of an execution: one document per execution plus its events, in the partition of its id.

The execution document (id :data:`EXECUTION_DOC_ID`) holds the state machine's
:class:`~services.execution.domain.ExecutionRecord` flattened at the top level (so ``state`` and
``create_time`` are filterable), the immutable request, a snapshot of the resolved version and profile (what
a later attempt needs without asking the catalog again), and the outcome. The status-update key is stored
only as its SHA-256 hash. Events are documents ``event:{sequence:010d}`` of the same partition, written in the
same transactional batch as the state they describe.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from services.execution.domain import ExecutionEvent, ExecutionRecord, ExecutionState

COLLECTION = "executions"
EXECUTION_DOC_ID = "execution"
KIND_EXECUTION = "execution"
KIND_EVENT = "event"
KIND_REQUEST = "request"

MODE_SYNC = "SYNC"
MODE_ASYNC = "ASYNC"
MODE_DIRECT = "DIRECT"

MODEL_SYNC = "http-json/sync/v1"
MODEL_ASYNC = "http-json/async/v1"


def event_doc_id(sequence: int) -> str:
    """The document id of an event (zero-padded so id order is sequence order)."""
    return f"event:{sequence:010d}"


def request_partition(tenant: str) -> str:
    """The partition of a tenant's idempotency documents."""
    return f"requests:{tenant}"


def event_body(execution_id: str, event: ExecutionEvent) -> dict[str, Any]:
    """The stored JSON of an event."""
    return {"kind": KIND_EVENT, "execution_id": execution_id, **event.to_document()}


@dataclass(frozen=True)
class StoredExecution:
    """An execution document and its etag. ``body`` is private to this object: use :meth:`evolve`."""

    id: str
    body: dict[str, Any]
    etag: str

    @property
    def name(self) -> str:
        """``executions/{id}``."""
        return f"executions/{self.id}"

    @property
    def record(self) -> ExecutionRecord:
        """The state machine's view."""
        return ExecutionRecord.from_document(self.body)

    @property
    def state(self) -> ExecutionState:
        """The current state."""
        return ExecutionState(self.body["state"])

    @property
    def tenant(self) -> str:
        """The owning tenant."""
        return str(self.body["tenant"])

    @property
    def mode(self) -> str:
        """SYNC, ASYNC or DIRECT."""
        return str(self.body["mode"])

    @property
    def attempt(self) -> int:
        """The current attempt."""
        return int(self.body["attempt"])

    def get(self, key: str, default: Any = None) -> Any:
        """A top-level field of the body."""
        return self.body.get(key, default)

    def evolve(self, record: ExecutionRecord | None = None, **fields: Any) -> dict[str, Any]:
        """A new body: a deep copy with ``record`` (flattened) and ``fields`` applied."""
        body = copy.deepcopy(self.body)
        if record is not None:
            body.update(record.to_document())
        body.update(fields)
        return body
