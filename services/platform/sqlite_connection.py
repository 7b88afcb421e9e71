"""Opening SQLite connections the same way for every embedded adapter (document store, work queue, search)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiosqlite

DEFAULT_BUSY_TIMEOUT_MS = 10_000


async def connect(path: Path, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> aiosqlite.Connection:
    """An autocommit connection (transactions are explicit) with a busy timeout, foreign keys and
    ``synchronous=NORMAL`` (safe with WAL: a crash can lose the last commits, never corrupt the file)."""
    conn = await aiosqlite.connect(path, isolation_level=None)
    try:
        await conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        await conn.close()
        raise
    return conn


def require_wal(path: Path, row: Any) -> None:
    """Fails unless ``PRAGMA journal_mode=WAL`` answered ``wal`` (readers then never block the writer)."""
    if row is None or str(row[0]).lower() != "wal":
        raise RuntimeError(f"could not switch {path} to WAL mode")
