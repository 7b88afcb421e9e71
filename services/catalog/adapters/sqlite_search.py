"""SQLite-specific parts of catalog search on the embedded backend.

* :func:`drop_legacy_fts_index` retires the FTS5 table and triggers that earlier builds kept inside the
  catalog's database file (search now lives in each replica's memory, fed from the document store like on
  every backend; the triggers would otherwise keep rewriting an unused table on every extension write).
* :class:`SqliteChangeProbe` tells the search feed whether anything was committed to the file since it
  last asked (``PRAGMA data_version``), so an idle catalog does not re-scan its documents every poll.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.sqlite_connection import SqliteConnection

__all__ = ["SqliteChangeProbe", "drop_legacy_fts_index"]

_LEGACY_TABLE = "catalog_search"
_LEGACY_TRIGGERS = ("catalog_search_insert", "catalog_search_update", "catalog_search_delete")


async def drop_legacy_fts_index(store: SqliteDocumentStore) -> None:
    """Drops the old FTS5 table and its triggers when they exist (safe to run on every start)."""

    def drop(connection: sqlite3.Connection) -> None:
        for trigger in _LEGACY_TRIGGERS:
            connection.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        connection.execute(f"DROP TABLE IF EXISTS {_LEGACY_TABLE}")

    await store.run_in_transaction(drop)


class SqliteChangeProbe:
    """``await probe()`` is True when a commit reached the database file since the previous call (and on
    the first call). Its own connection never writes, so every commit counts, from any process."""

    def __init__(self, connection: SqliteConnection) -> None:
        self._connection = connection
        self._last: int | None = None

    @classmethod
    async def open(cls, path: Path) -> SqliteChangeProbe:
        """A probe on the database file at ``path``."""
        return cls(await SqliteConnection.open(path, read_only=True))

    async def __call__(self) -> bool:
        row = await self._connection.call(lambda connection: connection.execute("PRAGMA data_version").fetchone())
        version = int(row[0]) if row else -1
        changed = version != self._last
        self._last = version
        return changed

    async def close(self) -> None:
        """Closes the probe's connection."""
        await self._connection.close()
