"""The SQLite FTS5 search index for the embedded backend.

The FTS table lives in the same database file as the document store and is maintained by triggers on the
documents table, so an extension's index entry changes in the same transaction as the extension itself:
the index can never miss a write or show one that did not happen.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

import aiosqlite

from services.catalog.adapters.documents import COLLECTION, KIND_EXTENSION
from services.catalog.search import FACET_FIELDS, FacetValue, SearchHits
from services.platform.docstore.sqlite_filter import compile_predicate
from services.platform.query.predicate import Predicate
from services.platform.sqlite_connection import connect

_FTS = "catalog_search"
_MAX_TERMS = 16
_MAX_FACET_VALUES = 50
_TOKEN = re.compile(r"\w+", re.UNICODE)
# bm25 column weights: extension_id, display_name, tags, description, category, publisher.
_WEIGHTS = "10.0, 10.0, 4.0, 1.0, 2.0, 2.0"
_IS_EXTENSION = f"NEW.collection = '{COLLECTION}' AND json_extract(NEW.body, '$.kind') = '{KIND_EXTENSION}'"
_OLD_IS_EXTENSION = f"OLD.collection = '{COLLECTION}' AND json_extract(OLD.body, '$.kind') = '{KIND_EXTENSION}'"
_ROW_VALUES = """
    json_extract({row}.body, '$.extension_id'),
    json_extract({row}.body, '$.display_name'),
    (SELECT group_concat(value, ' ') FROM json_each({row}.body, '$.tags')),
    json_extract({row}.body, '$.description'),
    json_extract({row}.body, '$.category'),
    json_extract({row}.body, '$.publisher')
"""
_COLUMNS = "rowid, extension_id, display_name, tags, description, category, publisher"

_SCHEMA = [
    f"""CREATE VIRTUAL TABLE IF NOT EXISTS {_FTS} USING fts5(
        extension_id, display_name, tags, description, category, publisher,
        tokenize = 'unicode61 remove_diacritics 2')""",
    f"""CREATE TRIGGER IF NOT EXISTS {_FTS}_insert AFTER INSERT ON documents WHEN {_IS_EXTENSION}
        BEGIN INSERT INTO {_FTS}({_COLUMNS}) VALUES (NEW.rowid, {_ROW_VALUES.format(row="NEW")}); END""",
    f"""CREATE TRIGGER IF NOT EXISTS {_FTS}_update AFTER UPDATE ON documents WHEN {_IS_EXTENSION}
        BEGIN
            DELETE FROM {_FTS} WHERE rowid = OLD.rowid;
            INSERT INTO {_FTS}({_COLUMNS}) VALUES (NEW.rowid, {_ROW_VALUES.format(row="NEW")});
        END""",
    f"""CREATE TRIGGER IF NOT EXISTS {_FTS}_delete AFTER DELETE ON documents WHEN {_OLD_IS_EXTENSION}
        BEGIN DELETE FROM {_FTS} WHERE rowid = OLD.rowid; END""",
]


def fts_query(text: str) -> str | None:
    """Turns free text into a safe FTS5 query: every word must match, as a prefix. None = match all."""
    terms = [t.lower() for t in _TOKEN.findall(text)][:_MAX_TERMS]
    if not terms:
        return None
    return " AND ".join(f'"{term}"*' for term in terms)


class SqliteSearchIndex:
    """FTS5 ranking (tiered: id/display name > tags > description, then bm25) and facet counts.

    One SQL pass per search returns every match with its tier, score and facet fields; ranking, paging and
    facet counting happen on that result, so the matching work is done once. Searches run on a small pool
    of reader connections (WAL readers do not block each other or the writer).
    """

    def __init__(self, readers: list[aiosqlite.Connection]) -> None:
        self._readers = readers
        self._idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        for reader in readers:
            self._idle.put_nowait(reader)

    @classmethod
    async def open(cls, path: Path, *, readers: int = 3) -> SqliteSearchIndex:
        """Opens the index inside the document store's database file, creating and filling it if new."""
        await _ensure_schema(path)
        connections = []
        try:
            for _ in range(readers):
                connection = await connect(path)
                await connection.execute("PRAGMA query_only = ON")
                connections.append(connection)
        except BaseException:
            for connection in connections:
                await connection.close()
            raise
        return cls(connections)

    async def search(self, text: str, *, where: Predicate | None, limit: int, offset: int) -> SearchHits:
        """One ranked page, the total number of matches and facets over all of them."""
        match = fts_query(text)
        filter_sql, filter_params = ("1", []) if where is None else compile_predicate(where)
        facet_columns = (
            "json_extract(d.body, '$.category'), json_extract(d.body, '$.publisher'), json_extract(d.body, '$.tags')"
        )
        if match is None:
            sql = (
                f"SELECT d.partition, 0, 0.0, {facet_columns} FROM documents d "
                f"WHERE d.collection = ? AND json_extract(d.body, '$.kind') = ? AND ({filter_sql})"
            )
            params: list[Any] = [COLLECTION, KIND_EXTENSION, *filter_params]
        else:
            sql = f"""
                SELECT d.partition,
                       CASE WHEN f.rowid IN (SELECT rowid FROM {_FTS} WHERE {_FTS} MATCH ?) THEN 0
                            WHEN f.rowid IN (SELECT rowid FROM {_FTS} WHERE {_FTS} MATCH ?) THEN 1
                            ELSE 2 END,
                       bm25({_FTS}, {_WEIGHTS}),
                       {facet_columns}
                FROM {_FTS} f JOIN documents d ON d.rowid = f.rowid
                WHERE {_FTS} MATCH ? AND ({filter_sql})"""
            params = [f"{{extension_id display_name}} : ({match})", f"{{tags}} : ({match})", match, *filter_params]
        reader = await self._idle.get()
        try:
            cursor = await reader.execute(sql, params)
            rows = await cursor.fetchall()
        finally:
            self._idle.put_nowait(reader)
        ranked = sorted(rows, key=lambda row: (row[1], row[2], row[0]))
        facets = _facets(ranked)
        return SearchHits([row[0] for row in ranked[offset : offset + limit]], len(ranked), facets)

    async def close(self) -> None:
        """Closes the reader connections."""
        for reader in self._readers:
            await reader.close()


def _facets(rows: list[Any]) -> dict[str, list[FacetValue]]:
    counters: dict[str, Counter[str]] = {name: Counter() for name in FACET_FIELDS}
    for row in rows:
        category, publisher, tags = row[3], row[4], row[5]
        if category:
            counters["category"][category] += 1
        if publisher:
            counters["publisher"][publisher] += 1
        for tag in set(json.loads(tags) if tags else ()):
            counters["tags"][tag] += 1
    return {
        name: [FacetValue(value, count) for value, count in sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))][
            :_MAX_FACET_VALUES
        ]
        for name, counter in counters.items()
    }


async def _ensure_schema(path: Path) -> None:
    connection = await connect(path)
    try:
        await connection.execute("BEGIN IMMEDIATE")
        try:
            cursor = await connection.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (_FTS,)
            )
            row = await cursor.fetchone()
            existed = bool(row and row[0])
            for statement in _SCHEMA:
                await connection.execute(statement)
            if not existed:
                await connection.execute(
                    f"""INSERT INTO {_FTS}({_COLUMNS})
                        SELECT rowid, {_ROW_VALUES.format(row="documents")} FROM documents
                        WHERE collection = ? AND json_extract(body, '$.kind') = ?""",
                    (COLLECTION, KIND_EXTENSION),
                )
            await connection.execute("COMMIT")
        except BaseException:
            await connection.execute("ROLLBACK")
            raise
    finally:
        await connection.close()
