"""An in-memory document store: the port's semantics with no file and no server, for unit tests.

It passes the same contract suite as the SQLite and Cosmos DB adapters (``tests/contract/docstore``):
bodies are stored as their JSON text (so the same values are refused and nothing aliases a caller's
objects), etags change on every write, queries evaluate the predicate tree with the documented two-valued
semantics and order like the SQLite adapter (missing/null < numbers (booleans as 0/1) < text, then id, then
partition), and continuations are keyset tokens. Several :class:`MemoryDocumentStore` on one
:class:`MemoryDatabase` see the same documents, like two connections to one database.

Every operation completes without yielding to the event loop, so each write is atomic; nothing is kept
after the process ends. Not for production: nothing selects it from settings.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.platform.docstore.codec import (
    SortValue,
    check_path,
    decode_continuation,
    dump_body,
    encode_continuation,
    fingerprint,
    load_body,
)
from services.platform.docstore.port import (
    MAX_QUERY_LIMIT,
    Document,
    Query,
    QueryPage,
    document_exists,
    document_not_found,
    etag_mismatch,
    validate_key,
)
from services.platform.errors import AlreadyExists
from services.platform.query.predicate import (
    COMPARISONS,
    And,
    ArrayContains,
    Compare,
    Exists,
    MapHasKey,
    Not,
    Op,
    Or,
    Path,
    Predicate,
    Prefix,
    Scalar,
    same_json_kind,
)

__all__ = ["MemoryDatabase", "MemoryDocumentCollection", "MemoryDocumentStore"]

_COLLECTION_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,254}")
_MISSING = object()


@dataclass
class _Stored:
    etag: str
    text: str


@dataclass
class MemoryDatabase:
    """The documents every store opened on this database shares: collection → (partition, id) → document."""

    collections: dict[str, dict[tuple[str, str], _Stored]] = field(default_factory=dict)


class MemoryDocumentStore:
    """A :class:`~services.platform.docstore.port.DocumentStore` in memory (a fresh database unless given one)."""

    def __init__(self, database: MemoryDatabase | None = None) -> None:
        self._database = database if database is not None else MemoryDatabase()
        self._collections: dict[str, MemoryDocumentCollection] = {}

    @property
    def database(self) -> MemoryDatabase:
        """The shared documents (open another store on it to get a second "connection")."""
        return self._database

    def collection(self, name: str) -> MemoryDocumentCollection:
        """The collection ``name`` (letters, digits, ``_`` and ``-``; created lazily)."""
        if not _COLLECTION_RE.fullmatch(name):
            raise ValueError(f"invalid collection name {name!r}")
        found = self._collections.get(name)
        if found is None:
            rows = self._database.collections.setdefault(name, {})
            found = self._collections[name] = MemoryDocumentCollection(name, rows)
        return found

    async def close(self) -> None:
        """Nothing to release (the documents live as long as the database object)."""


class MemoryDocumentCollection:
    """A :class:`~services.platform.docstore.port.DocumentCollection` as a dict of JSON texts."""

    def __init__(self, name: str, rows: dict[tuple[str, str], _Stored]) -> None:
        self._name = name
        self._rows = rows

    @property
    def name(self) -> str:
        """The collection name."""
        return self._name

    async def create(self, partition: str, id: str, body: Mapping[str, Any]) -> Document:
        """Insert a new document; AlreadyExists(DOCUMENT_EXISTS) when the id is taken."""
        key = _key(partition, id)
        text = dump_body(body)
        if key in self._rows:
            raise document_exists(id)
        stored = self._rows[key] = _Stored(uuid.uuid4().hex, text)
        return Document.from_json(id, partition, text, stored.etag)

    async def create_missing(self, partition: str, documents: Mapping[str, Mapping[str, Any]]) -> list[Document]:
        """Insert the documents whose id is not taken; the ones created."""
        created: list[Document] = []
        for id, body in documents.items():
            with contextlib.suppress(AlreadyExists):
                created.append(await self.create(partition, id, body))
        return created

    async def read(self, partition: str, id: str) -> Document | None:
        """The document, or None."""
        stored = self._rows.get(_key(partition, id))
        return None if stored is None else Document(id, partition, load_body(stored.text), stored.etag)

    async def replace(self, partition: str, id: str, body: Mapping[str, Any], *, if_match: str | None) -> Document:
        """Overwrite; Aborted(ETAG_MISMATCH) or NotFound(DOCUMENT_NOT_FOUND)."""
        key = _key(partition, id)
        text = dump_body(body)
        self._check(key, if_match)
        stored = self._rows[key] = _Stored(uuid.uuid4().hex, text)
        return Document.from_json(id, partition, text, stored.etag)

    async def delete(self, partition: str, id: str, *, if_match: str | None = None) -> None:
        """Remove; Aborted(ETAG_MISMATCH) or NotFound(DOCUMENT_NOT_FOUND)."""
        key = _key(partition, id)
        self._check(key, if_match)
        del self._rows[key]

    def _check(self, key: tuple[str, str], if_match: str | None) -> None:
        stored = self._rows.get(key)
        if stored is None:
            raise document_not_found(key[1])
        if if_match is not None and stored.etag != if_match:
            raise etag_mismatch(key[1])

    async def query(self, query: Query) -> QueryPage:
        """One page, ordered by ``order_by`` then id then partition; keyset continuation."""
        if not 1 <= query.limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_QUERY_LIMIT}")
        descending = [key.descending for key in query.order_by]
        paths = [key.path for key in query.order_by]
        for path in paths:
            check_path(path)
        query_fingerprint = fingerprint(self._name, query)
        rows = [
            (_RowKey(_sort_values(body, paths), key[1], key[0]), Document(key[1], key[0], body, stored.etag))
            for key, stored, body in self._matching(query.partition, query.where)
        ]
        order = functools.partial(_compare_keys, descending=descending)

        def by_key(a: tuple[_RowKey, Document], b: tuple[_RowKey, Document]) -> int:
            return order(a[0], b[0])

        rows.sort(key=functools.cmp_to_key(by_key))
        if query.continuation is not None:
            values, last_id, last_partition = decode_continuation(query.continuation, query_fingerprint, len(paths))
            after = _RowKey(values, last_id, last_partition)
            rows = [row for row in rows if order(row[0], after) > 0]
        page = rows[: query.limit]
        documents = [document for _, document in page]
        continuation = None
        if len(rows) > query.limit:
            last = page[-1][0]
            continuation = encode_continuation(query_fingerprint, last.values, last.id, last.partition)
        return QueryPage(documents=documents, continuation=continuation)

    async def count(self, *, partition: str | None = None, where: Predicate | None = None) -> int:
        """How many documents match."""
        return sum(1 for _ in self._matching(partition, where))

    def _matching(
        self, partition: str | None, where: Predicate | None
    ) -> list[tuple[tuple[str, str], _Stored, dict[str, Any]]]:
        if partition is not None:
            validate_key("partition", partition)
        if where is not None:
            _check_predicate(where)
        found = []
        for key, stored in list(self._rows.items()):
            if partition is not None and key[0] != partition:
                continue
            body = load_body(stored.text)
            if where is None or _matches(body, where):
                found.append((key, stored, body))
        return found


def _key(partition: str, id: str) -> tuple[str, str]:
    validate_key("partition", partition)
    validate_key("id", id)
    return partition, id


# -- predicates (the semantics of services.platform.query.predicate) ---------------------------------


def _get(body: Mapping[str, Any], path: Path) -> Any:
    current: Any = body
    for segment in path:
        if not isinstance(current, dict) or segment not in current:
            return _MISSING
        current = current[segment]
    return current


def _check_value(value: Scalar) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("non-finite numbers cannot be compared")
    if not isinstance(value, str | int | float):
        raise TypeError(f"unsupported filter value {value!r}")


def _check_predicate(predicate: Predicate) -> None:
    """Refuse what the other adapters refuse: bad paths, non-finite numbers, ordering on booleans."""
    stack: list[Predicate] = [predicate]
    while stack:
        node = stack.pop()
        if isinstance(node, And | Or):
            stack.extend(node.items)
        elif isinstance(node, Not):
            stack.append(node.item)
        elif isinstance(node, MapHasKey):
            check_path((*node.path, node.key))
        else:
            check_path(node.path)
            if isinstance(node, Compare):
                _check_value(node.value)
                if isinstance(node.value, bool) and node.op not in (Op.EQ, Op.NE):
                    raise ValueError(f"booleans support only = and != (got {node.op.value})")
            elif isinstance(node, ArrayContains):
                _check_value(node.value)
            elif isinstance(node, Prefix) and not isinstance(node.prefix, str):
                raise TypeError("Prefix.prefix must be a string")


def _matches(body: Mapping[str, Any], predicate: Predicate) -> bool:
    if isinstance(predicate, Compare):
        value = _get(body, predicate.path)
        return (
            value is not _MISSING
            and value is not None
            and same_json_kind(value, predicate.value)
            and bool(COMPARISONS[predicate.op](value, predicate.value))
        )
    if isinstance(predicate, Prefix):
        value = _get(body, predicate.path)
        return isinstance(value, str) and value.startswith(predicate.prefix)
    if isinstance(predicate, ArrayContains):
        value = _get(body, predicate.path)
        wanted = predicate.value
        return isinstance(value, list) and any(same_json_kind(item, wanted) and item == wanted for item in value)
    if isinstance(predicate, MapHasKey):
        value = _get(body, predicate.path)
        return isinstance(value, dict) and predicate.key in value
    if isinstance(predicate, Exists):
        return _get(body, predicate.path) is not _MISSING
    if isinstance(predicate, And):
        return all(_matches(body, item) for item in predicate.items)
    if isinstance(predicate, Or):
        return any(_matches(body, item) for item in predicate.items)
    if isinstance(predicate, Not):
        return not _matches(body, predicate.item)
    raise TypeError(f"unknown predicate {predicate!r}")


# -- ordering ---------------------------------------------------------------------------------------------


def _sort_value(value: Any) -> SortValue:
    """A value as the store orders it: missing/null → None, booleans → 0/1, objects/arrays → their JSON."""
    if value is _MISSING or value is None:
        return None
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float | str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _sort_values(body: Mapping[str, Any], paths: Sequence[Path]) -> list[SortValue]:
    return [_sort_value(_get(body, path)) for path in paths]


def _rank(value: SortValue) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, str):
        return (2, value)
    return (1, value)


@dataclass(frozen=True)
class _RowKey:
    """Where a row sorts: its sort values, then its id, then its partition."""

    values: Sequence[SortValue]
    id: str
    partition: str


def _compare_keys(a: _RowKey, b: _RowKey, *, descending: Sequence[bool]) -> int:
    """-1, 0 or 1: the order of two rows."""
    for left, right, desc in zip(a.values, b.values, descending, strict=True):
        ranked_left, ranked_right = _rank(left), _rank(right)
        if ranked_left != ranked_right:
            result = -1 if ranked_left < ranked_right else 1
            return -result if desc else result
    for left_key, right_key in ((a.id, b.id), (a.partition, b.partition)):
        if left_key != right_key:
            return -1 if left_key < right_key else 1
    return 0
