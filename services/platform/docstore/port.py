"""The document store port: JSON documents in named collections, partitioned like Cosmos DB.

Contract (every adapter passes ``tests/contract/docstore``):

* A document is addressed by ``(collection, partition, id)``; ids are unique per partition.
* Bodies are JSON objects, deep-copied on the way in and out (no aliasing with callers).
* Etags are opaque strings that change on every write; ``if_match`` makes a write conditional
  (AIP-154): a mismatch raises ``Aborted(reason="ETAG_MISMATCH")``.
* ``query`` pages with opaque continuation tokens (keyset, never OFFSET); results are ordered by
  ``order_by`` and then by id (then partition for cross-partition queries).
* Every write touches ONE document; there is no multi-document transaction (the Cosmos DB emulator has no
  transactional batch). A caller that must change several things at once keeps them in one document
  (e.g. the execution's outbox of events, see ``services/execution/outbox.py``).
* Filters are :mod:`services.platform.query.predicate` trees; see that module for their semantics.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from services.platform.errors import Aborted, AlreadyExists, NotFound
from services.platform.query.predicate import Predicate, SortKey

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "MAX_QUERY_LIMIT",
    "Document",
    "DocumentCollection",
    "DocumentStore",
    "Query",
    "QueryPage",
    "document_exists",
    "document_not_found",
    "etag_mismatch",
    "validate_key",
]

MAX_DOCUMENT_BYTES = 2 * 1024 * 1024  # Cosmos DB item size limit (JSON text)
MAX_QUERY_LIMIT = 1000
_ID_RE = re.compile(r"[^/\\?#\x00-\x1f\x7f]{1,255}")
_PARTITION_RE = re.compile(r"[^\x00-\x1f\x7f]{1,1024}")


class Document:
    """A stored document and its current etag (immutable; ``body`` is the holder's own object).

    An adapter that has the stored JSON text builds it with :meth:`from_json`: the body is parsed when first
    used, so a writer that only needs the new etag never parses back what it has just serialised.
    """

    __slots__ = ("_body", "_json", "etag", "id", "partition")

    id: str
    partition: str
    etag: str
    _body: dict[str, Any] | None
    _json: str | None

    def __init__(self, id: str, partition: str, body: dict[str, Any], etag: str) -> None:
        object.__setattr__(self, "id", id)
        object.__setattr__(self, "partition", partition)
        object.__setattr__(self, "etag", etag)
        object.__setattr__(self, "_body", body)
        object.__setattr__(self, "_json", None)

    @classmethod
    def from_json(cls, id: str, partition: str, text: str, etag: str) -> Document:
        """A document whose body is the JSON object ``text`` (parsed on first use of :attr:`body`)."""
        document = cls.__new__(cls)
        object.__setattr__(document, "id", id)
        object.__setattr__(document, "partition", partition)
        object.__setattr__(document, "etag", etag)
        object.__setattr__(document, "_body", None)
        object.__setattr__(document, "_json", text)
        return document

    @property
    def body(self) -> dict[str, Any]:
        """The document's JSON object."""
        body = self._body
        if body is None:
            body = json.loads(self._json or "")
            if not isinstance(body, dict):
                raise TypeError("a stored document body is not a JSON object")
            object.__setattr__(self, "_body", body)
            object.__setattr__(self, "_json", None)
        return body

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Document is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Document is immutable: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Document)
        return (self.id, self.partition, self.etag, self.body) == (other.id, other.partition, other.etag, other.body)

    __hash__ = None  # type: ignore[assignment]  # the body is a dict

    def __repr__(self) -> str:
        return f"Document(id={self.id!r}, partition={self.partition!r}, body={self.body!r}, etag={self.etag!r})"


@dataclass(frozen=True)
class Query:
    """A query on one collection. ``partition=None`` means cross-partition."""

    partition: str | None = None
    where: Predicate | None = None
    order_by: tuple[SortKey, ...] = ()
    limit: int = 50
    continuation: str | None = None


@dataclass(frozen=True)
class QueryPage:
    """One page of results; ``continuation`` is None on the last page."""

    documents: list[Document]
    continuation: str | None


class DocumentCollection(Protocol):
    """One named collection (a Cosmos container)."""

    @property
    def name(self) -> str:
        """The collection name."""
        ...

    async def create(self, partition: str, id: str, body: Mapping[str, Any]) -> Document:
        """Insert a new document; AlreadyExists(reason="DOCUMENT_EXISTS") when the id is taken."""
        ...

    async def create_missing(self, partition: str, documents: Mapping[str, Mapping[str, Any]]) -> list[Document]:
        """Insert each document (id → body) of ``documents`` in ``partition`` whose id is not taken; one that
        exists is left as it is. The ones created, in the order given. Each document is written atomically on
        its own; the call as a whole is not: after an error some may exist (calling again completes it)."""
        ...

    async def read(self, partition: str, id: str) -> Document | None:
        """The document, or None when it does not exist."""
        ...

    async def replace(self, partition: str, id: str, body: Mapping[str, Any], *, if_match: str | None) -> Document:
        """Overwrite; Aborted(ETAG_MISMATCH) on a stale etag, NotFound(DOCUMENT_NOT_FOUND) if missing."""
        ...

    async def delete(self, partition: str, id: str, *, if_match: str | None = None) -> None:
        """Remove; the same errors as :meth:`replace`."""
        ...

    async def query(self, query: Query) -> QueryPage:
        """One page of matching documents, ordered by ``order_by`` then id."""
        ...

    async def count(self, *, partition: str | None = None, where: Predicate | None = None) -> int:
        """How many documents match."""
        ...


class DocumentStore(Protocol):
    """A database of collections."""

    def collection(self, name: str) -> DocumentCollection:
        """The collection ``name`` (created lazily)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...


def validate_key(kind: str, value: str) -> None:
    """Check an ``id`` (1-255 characters, none of ``/ \\ ? #``, like Cosmos) or a ``partition`` key
    (1-1024 characters); neither may hold control characters. Raises ValueError (a programming error:
    callers validate resource ids first)."""
    pattern = _ID_RE if kind == "id" else _PARTITION_RE
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ValueError(f"invalid document {kind} {value!r}")


def document_exists(id: str) -> AlreadyExists:
    """The error for a duplicate id."""
    return AlreadyExists(f"document {id!r} already exists", reason="DOCUMENT_EXISTS", metadata={"id": id})


def document_not_found(id: str) -> NotFound:
    """The error for a missing document."""
    return NotFound(f"document {id!r} not found", reason="DOCUMENT_NOT_FOUND", metadata={"id": id})


def etag_mismatch(id: str) -> Aborted:
    """The error for a stale etag."""
    return Aborted(
        f"document {id!r} was changed by someone else (etag mismatch)",
        reason="ETAG_MISMATCH",
        metadata={"id": id},
    )
