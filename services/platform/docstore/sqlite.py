"""The embedded document store: one SQLite file in WAL mode, shared safely by several processes.

* One writer connection per store, serialised in-process by an ``asyncio.Lock`` and across processes by
  ``BEGIN IMMEDIATE`` (with ``busy_timeout``); one reader connection (WAL readers never block the writer).
* Conditional writes are ``UPDATE … WHERE … AND etag = ?`` checked through the changed-row count.
* Schema versions live in ``PRAGMA user_version``; :data:`_MIGRATIONS` only ever grows.
* Other adapters may keep their own tables in the same file (e.g. the catalog's FTS5 index): use
  :attr:`SqliteDocumentStore.path`, or :meth:`SqliteDocumentStore.write_transaction` to write in the
  same transaction lock as the documents.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import re
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from services.platform.docstore.port import (
    MAX_BATCH_OPERATIONS,
    MAX_DOCUMENT_BYTES,
    MAX_QUERY_LIMIT,
    CreateOp,
    DeleteOp,
    Document,
    Query,
    QueryPage,
    ReplaceOp,
    WriteOp,
    document_exists,
    document_not_found,
    etag_mismatch,
    validate_key,
)
from services.platform.docstore.sqlite_filter import (
    SortValue,
    compile_predicate,
    keyset_after,
    order_by_clause,
)
from services.platform.errors import InvalidArgument, Unavailable
from services.platform.paging import invalid_page_token
from services.platform.query.predicate import Predicate
from services.platform.sqlite_connection import connect, require_wal

__all__ = ["SCHEMA_VERSION", "SqliteDocumentCollection", "SqliteDocumentStore"]

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
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,8192}")


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


def _dump(body: Mapping[str, Any]) -> str:
    if not isinstance(body, Mapping):
        raise TypeError("a document body must be a JSON object (a mapping)")
    try:
        text = json.dumps(dict(body), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        size = len(text.encode("utf-8"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"the document body is not valid JSON: {exc}") from None
    if size > MAX_DOCUMENT_BYTES:
        raise InvalidArgument(
            f"the document is too large ({size} bytes, at most {MAX_DOCUMENT_BYTES})",
            reason="DOCUMENT_TOO_LARGE",
        )
    return text


def _load(text: str) -> dict[str, Any]:
    value = json.loads(text)
    assert isinstance(value, dict)
    return value


def _new_etag() -> str:
    return uuid.uuid4().hex


class SqliteDocumentStore:
    """A :class:`~services.platform.docstore.port.DocumentStore` on one SQLite file."""

    def __init__(self, path: Path, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._path = path
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()
        self._collections: dict[str, SqliteDocumentCollection] = {}
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, busy_timeout_ms: int = _DEFAULT_BUSY_TIMEOUT_MS) -> SqliteDocumentStore:
        """Open (creating and migrating if needed) the store at ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = await connect(path, busy_timeout_ms)
        try:
            with _translate_errors():
                async with writer.execute("PRAGMA journal_mode=WAL") as cur:
                    row = await cur.fetchone()
                require_wal(path, row)
                await _migrate(writer)
            reader = await connect(path, busy_timeout_ms)
            await reader.execute("PRAGMA query_only=ON")
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
        async with self._lock:
            await self._reader.close()
            await self._writer.close()

    @asynccontextmanager
    async def write_transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Run statements in one ``BEGIN IMMEDIATE`` transaction under the write lock; commit on success,
        roll back on any exception. For adapters that share this file (e.g. a search index)."""
        async with self._lock:
            conn = self._writer
            try:
                # BEGIN sits inside the try: if we are cancelled while it is queued, the rollback below is
                # queued after it on the same connection thread, so no transaction is left open.
                with _translate_errors():
                    if conn.in_transaction:
                        await conn.rollback()
                    await conn.execute("BEGIN IMMEDIATE")
                yield conn
            except BaseException:
                await conn.rollback()
                raise
            with _translate_errors():
                try:
                    await conn.commit()
                except BaseException:
                    await conn.rollback()
                    raise

    async def _read(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with _translate_errors():
            return [tuple(row) for row in await self._reader.execute_fetchall(sql, params)]


def _check_schema_version(current: int) -> None:
    if current > SCHEMA_VERSION:
        raise RuntimeError(f"the document store schema is version {current}, newer than this code ({SCHEMA_VERSION})")


async def _migrate(conn: aiosqlite.Connection) -> None:
    await conn.execute("BEGIN IMMEDIATE")
    try:
        async with conn.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        current = int(row[0]) if row else 0
        _check_schema_version(current)
        for statements in _MIGRATIONS[current:]:
            for statement in statements:
                await conn.execute(statement)
        if current != SCHEMA_VERSION:
            await conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        await conn.commit()
    except BaseException:
        await conn.rollback()
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
        result = await self.transact(partition, [CreateOp(id, body)])
        doc = result[0]
        assert doc is not None
        return doc

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
        return Document(id=id, partition=partition, body=_load(rows[0][1]), etag=rows[0][0])

    async def replace(self, partition: str, id: str, body: Mapping[str, Any], *, if_match: str | None) -> Document:
        """Overwrite; Aborted(ETAG_MISMATCH) or NotFound(DOCUMENT_NOT_FOUND)."""
        result = await self.transact(partition, [ReplaceOp(id, body, if_match)])
        doc = result[0]
        assert doc is not None
        return doc

    async def delete(self, partition: str, id: str, *, if_match: str | None = None) -> None:
        """Remove; Aborted(ETAG_MISMATCH) or NotFound(DOCUMENT_NOT_FOUND)."""
        await self.transact(partition, [DeleteOp(id, if_match)])

    async def transact(self, partition: str, ops: Sequence[WriteOp]) -> list[Document | None]:
        """All-or-nothing writes in one partition (at most 100 ops, like a Cosmos batch)."""
        validate_key("partition", partition)
        if not ops:
            return []
        if len(ops) > MAX_BATCH_OPERATIONS:
            raise ValueError(f"at most {MAX_BATCH_OPERATIONS} operations per transaction")
        prepared: list[tuple[WriteOp, str | None, str]] = []
        for op in ops:
            validate_key("id", op.id)
            text = None if isinstance(op, DeleteOp) else _dump(op.body)
            prepared.append((op, text, _new_etag()))
        results: list[Document | None] = []
        async with self._store.write_transaction() as conn:
            for op, text, etag in prepared:
                results.append(await self._apply(conn, partition, op, text, etag))
        return results

    async def _apply(
        self, conn: aiosqlite.Connection, partition: str, op: WriteOp, text: str | None, etag: str
    ) -> Document | None:
        key = (self._name, partition, op.id)
        with _translate_errors():
            if isinstance(op, CreateOp):
                assert text is not None
                async with conn.execute(
                    "INSERT INTO documents (collection, partition, id, etag, body) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (collection, partition, id) DO NOTHING",
                    (*key, etag, text),
                ) as cur:
                    if cur.rowcount != 1:
                        raise document_exists(op.id)
                return Document(op.id, partition, _load(text), etag)
            where = "collection = ? AND partition = ? AND id = ?"
            condition: tuple[str, ...] = ()
            if op.if_match is not None:
                where += " AND etag = ?"
                condition = (op.if_match,)
            if isinstance(op, ReplaceOp):
                assert text is not None
                sql = f"UPDATE documents SET etag = ?, body = ? WHERE {where}"
                params: tuple[Any, ...] = (etag, text, *key, *condition)
            else:
                sql = f"DELETE FROM documents WHERE {where}"
                params = (*key, *condition)
            async with conn.execute(sql, params) as cur:
                changed = cur.rowcount
            if changed != 1:
                async with conn.execute(
                    "SELECT 1 FROM documents WHERE collection = ? AND partition = ? AND id = ?", key
                ) as cur:
                    exists = await cur.fetchone() is not None
                raise etag_mismatch(op.id) if exists else document_not_found(op.id)
        if isinstance(op, ReplaceOp):
            assert text is not None
            return Document(op.id, partition, _load(text), etag)
        return None

    async def query(self, query: Query) -> QueryPage:
        """One page, ordered by ``order_by`` then id then partition; keyset continuation."""
        if not 1 <= query.limit <= MAX_QUERY_LIMIT:
            raise ValueError(f"limit must be between 1 and {MAX_QUERY_LIMIT}")
        order_by = tuple(query.order_by)
        selects, select_params, order_sql = order_by_clause(order_by)
        where_sql, where_params = self._where(query.partition, query.where)
        fingerprint = self._fingerprint(query)
        if query.continuation is not None:
            values, last_id, last_partition = _decode_continuation(query.continuation, fingerprint, len(order_by))
            keyset_sql, keyset_params = keyset_after(order_by, values, last_id, last_partition)
            where_sql += " AND " + keyset_sql
            where_params += keyset_params
        columns = ", ".join(["id", "partition", "etag", "body", *selects])
        sql = f"SELECT {columns} FROM documents WHERE {where_sql} {order_sql} LIMIT ?"
        rows = await self._store._read(sql, [*select_params, *where_params, query.limit + 1])
        documents = [
            Document(id=row[0], partition=row[1], etag=row[2], body=_load(row[3])) for row in rows[: query.limit]
        ]
        continuation = None
        if len(rows) > query.limit:
            last = rows[query.limit - 1]
            sort_values: list[SortValue] = [last[4 + i] for i in range(len(order_by))]
            continuation = _encode_continuation(fingerprint, sort_values, last[0], last[1])
        return QueryPage(documents=documents, continuation=continuation)

    async def count(self, *, partition: str | None = None, where: Predicate | None = None) -> int:
        """How many documents match."""
        where_sql, params = self._where(partition, where)
        rows = await self._store._read(f"SELECT COUNT(*) FROM documents WHERE {where_sql}", params)
        return int(rows[0][0])

    def _where(self, partition: str | None, predicate: Predicate | None) -> tuple[str, list[Any]]:
        clauses = ["collection = ?"]
        params: list[Any] = [self._name]
        if partition is not None:
            validate_key("partition", partition)
            clauses.append("partition = ?")
            params.append(partition)
        if predicate is not None:
            sql, predicate_params = compile_predicate(predicate)
            clauses.append(sql)
            params.extend(predicate_params)
        return " AND ".join(clauses), params

    def _fingerprint(self, query: Query) -> str:
        shape = [
            self._name,
            query.partition,
            repr(query.where),
            [[list(key.path), key.descending] for key in query.order_by],
        ]
        digest = hashlib.sha256(json.dumps(shape, separators=(",", ":")).encode()).digest()[:12]
        return base64.urlsafe_b64encode(digest).decode("ascii")


def _encode_continuation(fingerprint: str, values: list[SortValue], id: str, partition: str) -> str:
    payload = {"f": fingerprint, "k": values, "i": id, "p": partition}
    raw = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_continuation(token: str, fingerprint: str, n_keys: int) -> tuple[list[SortValue], str, str]:
    if not _TOKEN_RE.fullmatch(token):
        raise invalid_page_token("malformed continuation")
    try:
        payload = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (ValueError, binascii.Error):
        raise invalid_page_token("malformed continuation") from None
    if not isinstance(payload, dict) or payload.get("f") != fingerprint:
        raise invalid_page_token("the continuation belongs to a different query")
    values, last_id, last_partition = payload.get("k"), payload.get("i"), payload.get("p")
    if not isinstance(values, list) or len(values) != n_keys:
        raise invalid_page_token("malformed continuation")
    if not isinstance(last_id, str) or not isinstance(last_partition, str):
        raise invalid_page_token("malformed continuation")
    for value in values:
        if isinstance(value, bool) or not (value is None or isinstance(value, str | int | float)):
            raise invalid_page_token("malformed continuation")
        if isinstance(value, float) and not math.isfinite(value):
            raise invalid_page_token("malformed continuation")
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise invalid_page_token("malformed continuation")
    return values, last_id, last_partition
