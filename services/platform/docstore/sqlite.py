"""The embedded document store: one SQLite file in WAL mode, shared safely by several processes.

* One writer connection and one reader connection per store, each on a thread of its own
  (:class:`~services.platform.sqlite_connection.SqliteConnection`): an operation is ONE job on that thread —
  a conditional write with its checks is one transaction — and concurrent writes are committed together
  (group commit), each in a savepoint of its own. Across processes writes are serialised by
  ``BEGIN IMMEDIATE`` (with ``busy_timeout``); WAL readers never block the writer.
* Conditional writes are ``UPDATE … WHERE … AND etag = ?`` checked through the changed-row count.
* Schema versions live in ``PRAGMA user_version``; :data:`_MIGRATIONS` only ever grows.
* Indexes on JSON fields are declared by whoever opens the store (``indexes``, per collection: the orders it is
  queried in and the fields its background scans filter on, the way Cosmos DB containers take composite indexes):
  each one is ``(collection, json_extract(body, '<key>') [DESC]…, id, partition) WHERE collection = '<name>'``
  (and the key present, for :class:`~services.platform.query.indexes.Present`), created
  idempotently at open and never dropped by a process that does not declare it (several processes share the file).
* Other adapters may keep their own tables in the same file: use :attr:`SqliteDocumentStore.path`, or
  :meth:`SqliteDocumentStore.run_in_transaction` to write in the same transactions as the documents.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from services.platform.docstore.codec import (
    SortValue,
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
from services.platform.docstore.sqlite_filter import (
    compile_predicate,
    index_columns,
    keyset_after,
    order_by_clause,
    value_of,
)
from services.platform.errors import Unavailable
from services.platform.query.indexes import Indexes, IndexSpec, Present
from services.platform.query.predicate import Predicate, SortKey
from services.platform.sqlite_connection import SqliteConnection, require_wal

__all__ = ["SCHEMA_VERSION", "SqliteDocumentCollection", "SqliteDocumentStore", "index_name", "index_statement"]

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """
        CREATE TABLE IF NOT EXISTS documents (
            collection TEXT NOT NULL,
            partition  TEXT NOT NULL,
            id         TEXT NOT NULL,
            etag       TEXT NOT NULL,
            body       TEXT NOT NULL CHECK (json_valid(body)),
            PRIMARY KEY (collection, partition, id)
        )
        """,
        "CREATE INDEX IF NOT EXISTS documents_by_id ON documents (collection, id, partition)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)
_COLLECTION_RE = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,254}")
_DEFAULT_BUSY_TIMEOUT_MS = 10_000
_EXISTS_SQL = "SELECT 1 FROM documents WHERE collection = ? AND partition = ? AND id = ?"
_INSERT_NEW_SQL = (
    "INSERT INTO documents (collection, partition, id, etag, body) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (collection, partition, id) DO NOTHING"
)

T = TypeVar("T")


@contextmanager
def _translate_errors() -> Iterator[None]:
    """Lock contention beyond ``busy_timeout`` becomes UNAVAILABLE (retryable)."""
    try:
        yield
    except sqlite3.OperationalError as exc:
        text = str(exc).lower()
        if "locked" in text or "busy" in text:
            raise Unavailable("the document store is busy; retry") from exc
        raise


def _new_etag() -> str:
    return os.urandom(16).hex()


class SqliteDocumentStore:
    """A :class:`~services.platform.docstore.port.DocumentStore` on one SQLite file."""

    def __init__(self, path: Path, writer: SqliteConnection, reader: SqliteConnection) -> None:
        self._path = path
        self._writer = writer
        self._reader = reader
        self._collections: dict[str, SqliteDocumentCollection] = {}
        self._closed = False

    @classmethod
    async def open(
        cls, path: Path, *, indexes: Indexes | None = None, busy_timeout_ms: int = _DEFAULT_BUSY_TIMEOUT_MS
    ) -> SqliteDocumentStore:
        """Open (creating and migrating if needed) the store at ``path``, with every index of ``indexes`` (per
        collection, see :mod:`services.platform.query.indexes` and :func:`index_statement`) created if missing."""
        path = Path(path)
        statements = list(
            dict.fromkeys(
                index_statement(collection, index) for collection, specs in (indexes or {}).items() for index in specs
            )
        )
        writer = await SqliteConnection.open(path, busy_timeout_ms=busy_timeout_ms)
        try:
            with _translate_errors():
                await writer.call(lambda conn: require_wal(path, conn.execute("PRAGMA journal_mode=WAL").fetchone()))
                await writer.call(lambda conn: _migrate(conn, statements))
            reader = await SqliteConnection.open(path, busy_timeout_ms=busy_timeout_ms, read_only=True)
        except BaseException:
            await writer.close()
            raise
        return cls(path, writer, reader)

    @property
    def path(self) -> Path:
        """The database file (other adapters may add their own tables to it)."""
        return self._path

    @property
    def schema_version(self) -> int:
        """The schema version this code writes (``PRAGMA user_version``)."""
        return SCHEMA_VERSION

    def collection(self, name: str) -> SqliteDocumentCollection:
        """The collection ``name`` (letters, digits, ``_`` and ``-``; created lazily)."""
        if not _COLLECTION_RE.fullmatch(name):
            raise ValueError(f"invalid collection name {name!r}")
        found = self._collections.get(name)
        if found is None:
            found = self._collections[name] = SqliteDocumentCollection(self, name)
        return found

    async def close(self) -> None:
        """Close both connections (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self._reader.close()
        await self._writer.close()

    async def run_in_transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the writer's thread inside a write transaction (committed with the
        document writes around it; rolled back alone if ``fn`` raises). For adapters that share this file."""
        self._check_open()
        with _translate_errors():
            return await self._writer.transaction(fn)

    async def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        self._check_open()
        with _translate_errors():
            return await self._reader.call(lambda conn: conn.execute(sql, params).fetchall())

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        self._check_open()
        with _translate_errors():
            return await self._writer.transaction(fn)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the document store is closed")


def _check_schema_version(current: int) -> None:
    if current > SCHEMA_VERSION:
        raise RuntimeError(f"the document store schema is version {current}, newer than this code ({SCHEMA_VERSION})")


def index_statement(collection: str, index: IndexSpec) -> str:
    """``CREATE INDEX IF NOT EXISTS`` for ``index`` in ``collection``: ``(collection, json_extract(body, '<key>')
    [DESC]…, id, partition) WHERE collection = '<collection>'`` (for :class:`Present`, one key and ``AND
    json_extract(body, '<key>') IS NOT NULL``), the expressions exactly as the filter compiler writes them and the
    condition as every query of the collection states it (otherwise SQLite cannot use it). Partial: it lists only
    that collection's documents and no other collection's query can take it. Its name is :func:`index_name`."""
    name, definition = _index(collection, index)
    return f"CREATE INDEX IF NOT EXISTS {name} {definition}"


def index_name(collection: str, index: IndexSpec) -> str:
    """The name of ``index`` in ``collection`` (as SQLite's query plans show it): a digest of its definition, so
    the same declaration is the same index in every process."""
    return _index(collection, index)[0]


def _index(collection: str, index: IndexSpec) -> tuple[str, str]:
    order = (SortKey(index.path),) if isinstance(index, Present) else tuple(index)
    if not order:
        raise ValueError("an index needs at least one key")
    condition = _collection_is(collection)
    if isinstance(index, Present):
        condition += f" AND {value_of(index.path)} IS NOT NULL"
    definition = f"ON documents ({index_columns(order)}) WHERE {condition}"
    return f"documents_by_{hashlib.sha256(definition.encode()).hexdigest()[:16]}", definition


def _collection_is(collection: str) -> str:
    """``collection = '<name>'``: the name is code-given and validated (letters, digits, ``_``, ``-``), and a
    literal lets SQLite match the partial indexes of that collection."""
    if not _COLLECTION_RE.fullmatch(collection):
        raise ValueError(f"invalid collection name {collection!r}")
    return f"collection = '{collection}'"


def _migrate(conn: sqlite3.Connection, indexes: Sequence[str] = ()) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute("PRAGMA user_version").fetchone()
        current = int(row[0]) if row else 0
        _check_schema_version(current)
        for statements in _MIGRATIONS[current:]:
            for statement in statements:
                conn.execute(statement)
        if current != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        for statement in indexes:
            conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


class SqliteDocumentCollection:
    """A :class:`~services.platform.docstore.port.DocumentCollection` stored as rows of ``documents``."""

    def __init__(self, store: SqliteDocumentStore, name: str) -> None:
        self._store = store
        self._name = name

    @property
    def name(self) -> str:
        """The collection name."""
        return self._name

    async def create(self, partition: str, id: str, body: Mapping[str, Any]) -> Document:
        """Insert a new document; AlreadyExists(DOCUMENT_EXISTS) when the id is taken."""
        key, text, etag = self._prepare(partition, id, body)

        def insert(conn: sqlite3.Connection) -> None:
            if conn.execute(_INSERT_NEW_SQL, (*key, etag, text)).rowcount != 1:
                raise document_exists(id)

        await self._store._write(insert)
        return Document.from_json(id, partition, text, etag)

    async def create_missing(self, partition: str, documents: Mapping[str, Mapping[str, Any]]) -> list[Document]:
        """Insert the documents whose id is not taken, all in one write transaction; the ones created."""
        prepared = [(id, *self._prepare(partition, id, body)) for id, body in documents.items()]
        if not prepared:
            return []

        def insert(conn: sqlite3.Connection) -> list[Document]:
            return [
                Document.from_json(id, partition, text, etag)
                for id, key, text, etag in prepared
                if conn.execute(_INSERT_NEW_SQL, (*key, etag, text)).rowcount == 1
            ]

        return await self._store._write(insert)

    async def read(self, partition: str, id: str) -> Document | None:
        """The document, or None."""
        validate_key("partition", partition)
        validate_key("id", id)
        rows = await self._store._read(
            "SELECT etag, body FROM documents WHERE collection = ? AND partition = ? AND id = ?",
            (self._name, partition, id),
        )
        if not rows:
            return None
        return Document(id=id, partition=partition, body=load_body(rows[0][1]), etag=rows[0][0])

    async def replace(self, partition: str, id: str, body: Mapping[str, Any], *, if_match: str | None) -> Document:
        """Overwrite; Aborted(ETAG_MISMATCH) or NotFound(DOCUMENT_NOT_FOUND)."""
        key, text, etag = self._prepare(partition, id, body)
        where, condition = self._match(if_match)
        await self._change(
            key, f"UPDATE documents SET etag = ?, body = ? WHERE {where}", (etag, text, *key, *condition)
        )
        return Document.from_json(id, partition, text, etag)

    async def delete(self, partition: str, id: str, *, if_match: str | None = None) -> None:
        """Remove; Aborted(ETAG_MISMATCH) or NotFound(DOCUMENT_NOT_FOUND)."""
        validate_key("partition", partition)
        validate_key("id", id)
        key = (self._name, partition, id)
        where, condition = self._match(if_match)
        await self._change(key, f"DELETE FROM documents WHERE {where}", (*key, *condition))

    def _prepare(self, partition: str, id: str, body: Mapping[str, Any]) -> tuple[tuple[str, str, str], str, str]:
        validate_key("partition", partition)
        validate_key("id", id)
        return (self._name, partition, id), dump_body(body), _new_etag()

    @staticmethod
    def _match(if_match: str | None) -> tuple[str, tuple[str, ...]]:
        where = "collection = ? AND partition = ? AND id = ?"
        if if_match is None:
            return where, ()
        return where + " AND etag = ?", (if_match,)

    async def _change(self, key: tuple[str, str, str], sql: str, params: tuple[Any, ...]) -> None:
        """Run a conditional UPDATE/DELETE of one row; tell a stale etag from a missing document."""

        def change(conn: sqlite3.Connection) -> None:
            if conn.execute(sql, params).rowcount == 1:
                return
            exists = conn.execute(_EXISTS_SQL, key).fetchone() is not None
            raise etag_mismatch(key[2]) if exists else document_not_found(key[2])

        await self._store._write(change)

    def _select(self, query: Query, query_fingerprint: str) -> tuple[str, list[Any]]:
        if not 1 <= query.limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_QUERY_LIMIT}")
        order_by = tuple(query.order_by)
        selects, select_params, order_sql = order_by_clause(order_by)
        where_sql, where_params = self._where(query.partition, query.where)
        if query.continuation is not None:
            values, last_id, last_partition = decode_continuation(query.continuation, query_fingerprint, len(order_by))
            keyset_sql, keyset_params = keyset_after(order_by, values, last_id, last_partition)
            where_sql += " AND " + keyset_sql
            where_params += keyset_params
        columns = ", ".join(["id", "partition", "etag", "body", *selects])
        sql = f"SELECT {columns} FROM documents WHERE {where_sql} {order_sql} LIMIT ?"
        return sql, [*select_params, *where_params, query.limit + 1]

    async def explain(self, query: Query) -> list[str]:
        """SQLite's plan for :meth:`query` (``EXPLAIN QUERY PLAN`` details, e.g. ``SEARCH documents USING INDEX
        …``): which index serves it, or that it scans. A diagnostic of this adapter, not part of the port."""
        sql, params = self._select(query, fingerprint(self._name, query))
        rows = await self._store._read("EXPLAIN QUERY PLAN " + sql, params)
        return [str(row[3]) for row in rows]

    async def query(self, query: Query) -> QueryPage:
        """One page, ordered by ``order_by`` then id then partition; keyset continuation."""
        order_by = tuple(query.order_by)
        query_fingerprint = fingerprint(self._name, query)
        sql, params = self._select(query, query_fingerprint)
        rows = await self._store._read(sql, params)
        documents = [
            Document(id=row[0], partition=row[1], etag=row[2], body=load_body(row[3])) for row in rows[: query.limit]
        ]
        continuation = None
        if len(rows) > query.limit:
            last = rows[query.limit - 1]
            sort_values: list[SortValue] = [last[4 + i] for i in range(len(order_by))]
            continuation = encode_continuation(query_fingerprint, sort_values, last[0], last[1])
        return QueryPage(documents=documents, continuation=continuation)

    async def count(self, *, partition: str | None = None, where: Predicate | None = None) -> int:
        """How many documents match."""
        where_sql, params = self._where(partition, where)
        rows = await self._store._read(f"SELECT COUNT(*) FROM documents WHERE {where_sql}", params)
        return int(rows[0][0])

    def _where(self, partition: str | None, predicate: Predicate | None) -> tuple[str, list[Any]]:
        clauses = [_collection_is(self._name)]
        params: list[Any] = []
        if partition is not None:
            validate_key("partition", partition)
            clauses.append("partition = ?")
            params.append(partition)
        if predicate is not None:
            sql, predicate_params = compile_predicate(predicate)
            clauses.append(sql)
            params.extend(predicate_params)
        return " AND ".join(clauses), params
