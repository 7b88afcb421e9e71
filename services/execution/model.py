"""The stored shape of an execution: one document per execution plus its events, in the partition of its id.

The execution document (id :data:`EXECUTION_DOC_ID`) holds the state machine's
:class:`~services.execution.domain.ExecutionRecord` flattened at the top level (so ``state`` and
``create_time`` are filterable), the immutable request, a snapshot of the resolved version and profile (what
a later attempt needs without asking the catalog again), and the outcome. The status-update key is stored
only as its SHA-256 hash.

Events are written with the state they describe, in ONE conditional replace of the execution document: they
go to its **outbox** (``outbox.events``, with ``outbox.events_pending``), and the outbox relay
(:mod:`services.execution.outbox`) later copies them to event documents ``event:{sequence:010d}`` of the same
partition and trims them. The outbox also holds the dispatch marker of a QUEUED attempt (``outbox.dispatch``:
the attempt to publish to the work queue). Readers see event documents and outbox events together.
"""

from __future__ import annotations

import copy
import uuid
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


def new_view_etag() -> str:
    """A fresh client-visible etag (the document's own etag also changes on the outbox relay's bookkeeping)."""
    return uuid.uuid4().hex


def empty_outbox() -> dict[str, Any]:
    """The outbox of a document with nothing to relay."""
    return {"events": [], "events_pending": False, "dispatch": None}


def outbox_of(body: dict[str, Any]) -> dict[str, Any]:
    """The outbox of a body (created empty in place if the document predates it)."""
    outbox = body.get("outbox")
    if not isinstance(outbox, dict):
        outbox = body["outbox"] = empty_outbox()
    return outbox


def outbox_events(body: dict[str, Any]) -> list[ExecutionEvent]:
    """The events waiting in the outbox, in sequence order."""
    outbox = body.get("outbox")
    if not isinstance(outbox, dict):
        return []
    return sorted((ExecutionEvent.from_document(e) for e in outbox.get("events") or []), key=lambda e: e.sequence)


def append_events(body: dict[str, Any], events: list[ExecutionEvent]) -> None:
    """Add ``events`` to the outbox of ``body`` (in place)."""
    outbox = outbox_of(body)
    outbox["events"] = [*(outbox.get("events") or []), *(event.to_document() for event in events)]
    outbox["events_pending"] = bool(outbox["events"])


def remove_events(body: dict[str, Any], sequences: set[int]) -> None:
    """Drop the outbox events with these sequences (in place): they are stored and published."""
    outbox = outbox_of(body)
    outbox["events"] = [e for e in outbox.get("events") or [] if int(e["sequence"]) not in sequences]
    outbox["events_pending"] = bool(outbox["events"])


def dispatch_of(body: dict[str, Any]) -> dict[str, Any] | None:
    """The dispatch marker ``{attempt, not_before}``, if an attempt waits to be published."""
    outbox = body.get("outbox")
    marker = outbox.get("dispatch") if isinstance(outbox, dict) else None
    return marker if isinstance(marker, dict) else None


def set_dispatch(body: dict[str, Any], attempt: int | None, not_before: str | None = None) -> None:
    """Mark ``attempt`` for publishing to the work queue (``None`` clears the marker), in place."""
    outbox_of(body)["dispatch"] = None if attempt is None else {"attempt": attempt, "not_before": not_before}


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
    def view_etag(self) -> str:
        """The etag clients see: it changes with every write except the outbox relay's bookkeeping."""
        return str(self.body.get("etag") or self.etag)

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
