"""The SQLite FTS5 search index for the embedded backend.

The FTS table lives in the same database file as the document store and is maintained by triggers on the
documents table, so an extension's index entry changes in the same transaction as the extension itself:
the index can never miss a write or show one that did not happen.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiosqlite

from services.catalog.adapters.documents import COLLECTION, KIND_EXTENSION
from services.catalog.search import FACET_FIELDS, FacetValue, SearchHits
from services.platform.docstore.sqlite_filter import compile_predicate
from services.platform.query.predicate import Predicate

_FTS = "catalog_search"
_MAX_TERMS = 16
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
    """FTS5 ranking (tiered: id/display name > tags > description, then bm25) and facet counts."""

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._db = connection

    @classmethod
    async def open(cls, path: Path) -> SqliteSearchIndex:
        """Opens the index inside the document store's database file, creating and filling it if new."""
        connection = await aiosqlite.connect(path, isolation_level=None)
        await connection.execute("PRAGMA busy_timeout = 10000")
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
            await connection.close()
            raise
        return cls(connection)

    async def search(self, text: str, *, where: Predicate | None, limit: int, offset: int) -> SearchHits:
        """One ranked page, the total number of matches and facets over all of them."""
        match = fts_query(text)
        filter_sql, filter_params = ("1", []) if where is None else compile_predicate(where)
        if match is None:
            matched = (
                "SELECT d.rowid AS rid, 0 AS tier, 0.0 AS score, d.partition AS ext, d.body AS body "
                "FROM documents d WHERE d.collection = ? AND json_extract(d.body, '$.kind') = ?"
            )
            matched_params: list[Any] = [COLLECTION, KIND_EXTENSION]
        else:
            name_match = f"{{extension_id display_name}} : ({match})"
            tags_match = f"{{tags}} : ({match})"
            matched = f"""
                SELECT d.rowid AS rid,
                       CASE WHEN f.rowid IN (SELECT rowid FROM {_FTS} WHERE {_FTS} MATCH ?) THEN 0
                            WHEN f.rowid IN (SELECT rowid FROM {_FTS} WHERE {_FTS} MATCH ?) THEN 1
                            ELSE 2 END AS tier,
                       bm25({_FTS}, {_WEIGHTS}) AS score,
                       d.partition AS ext, d.body AS body
                FROM {_FTS} f JOIN documents d ON d.rowid = f.rowid
                WHERE {_FTS} MATCH ?"""
            matched_params = [name_match, tags_match, match]
        base = f"WITH matched AS ({matched}) SELECT * FROM matched WHERE {filter_sql}"
        params = [*matched_params, *filter_params]
        cursor = await self._db.execute(f"{base} ORDER BY tier, score, ext LIMIT ? OFFSET ?", [*params, limit, offset])
        ids = [row[3] for row in await cursor.fetchall()]
        cursor = await self._db.execute(f"SELECT count(*) FROM ({base})", params)
        total_row = await cursor.fetchone()
        facets = {name: await self._facet(base, params, name) for name in FACET_FIELDS}
        return SearchHits(ids, int(total_row[0]) if total_row else 0, facets)

    async def _facet(self, base: str, params: list[Any], field: str) -> list[FacetValue]:
        if field == "tags":
            sql = (
                f"SELECT t.value AS v, count(*) AS n FROM ({base}) m, json_each(m.body, '$.tags') t "
                "GROUP BY v ORDER BY n DESC, v LIMIT 50"
            )
        else:
            sql = (
                f"SELECT json_extract(m.body, '$.{field}') AS v, count(*) AS n FROM ({base}) m "
                "WHERE v IS NOT NULL AND v != '' GROUP BY v ORDER BY n DESC, v LIMIT 50"
            )
        cursor = await self._db.execute(sql, params)
        return [FacetValue(str(value), int(count)) for value, count in await cursor.fetchall()]

    async def close(self) -> None:
        """Closes the index's connection."""
        await self._db.close()
