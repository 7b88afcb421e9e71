"""SQLite-specific behaviour: file format, schema version, WAL, the shared-file hook."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from services.platform.docstore.sqlite import SCHEMA_VERSION, SqliteDocumentStore


async def test_schema_version_and_wal(tmp_path: Path) -> None:
    store = await SqliteDocumentStore.open(tmp_path / "sub" / "docs.db")
    try:
        await store.collection("c").create("p", "a", {"v": 1})
        assert store.path == tmp_path / "sub" / "docs.db"
        assert store.schema_version == SCHEMA_VERSION
    finally:
        await store.close()
    with sqlite3.connect(tmp_path / "sub" / "docs.db") as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("SELECT collection, partition, id FROM documents").fetchall() == [("c", "p", "a")]
    raw.close()


async def test_reopen_keeps_data(tmp_path: Path) -> None:
    store = await SqliteDocumentStore.open(tmp_path / "docs.db")
    created = await store.collection("c").create("p", "a", {"v": 1})
    await store.close()
    await store.close()  # idempotent
    again = await SqliteDocumentStore.open(tmp_path / "docs.db")
    try:
        assert await again.collection("c").read("p", "a") == created
    finally:
        await again.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "docs.db") as raw:
        raw.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(RuntimeError, match="newer"):
        await SqliteDocumentStore.open(tmp_path / "docs.db")


async def test_write_transaction_hook_rolls_back_with_documents(tmp_path: Path) -> None:
    store = await SqliteDocumentStore.open(tmp_path / "docs.db")
    try:
        await store.run_in_transaction(lambda conn: conn.execute("CREATE TABLE side (k TEXT PRIMARY KEY)"))

        def failing_write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT INTO side (k) VALUES (?)", ("x",))
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            await store.run_in_transaction(failing_write)
        row = await store.run_in_transaction(lambda conn: conn.execute("SELECT COUNT(*) FROM side").fetchone())
        assert row is not None
        assert row[0] == 0
        await store.collection("c").create("p", "a", {"v": 1})
    finally:
        await store.close()


async def test_invalid_bodies_and_names(tmp_path: Path) -> None:
    store = await SqliteDocumentStore.open(tmp_path / "docs.db")
    try:
        with pytest.raises(ValueError, match="collection"):
            store.collection("bad name")
        col = store.collection("c")
        with pytest.raises(ValueError, match="JSON"):
            await col.create("p", "a", {"v": float("nan")})
        with pytest.raises(ValueError, match="JSON"):
            await col.create("p", "a", {"v": "\ud800"})
        with pytest.raises(TypeError):
            await col.create("p", "a", ["not", "an", "object"])  # type: ignore[arg-type]
        assert await col.count() == 0
    finally:
        await store.close()
