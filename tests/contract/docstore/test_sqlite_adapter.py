"""SQLite-specific behaviour: file format, schema version, WAL, the shared-file hook, declared indexes, paths."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from services.platform.docstore.port import Query
from services.platform.docstore.sqlite import SCHEMA_VERSION, SqliteDocumentStore
from services.platform.query.indexes import IndexSpec, Present
from services.platform.query.predicate import ArrayContains, Compare, Exists, Op, Prefix, SortKey


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


BY_DUE = (SortKey(("due_time",)),)
ODD_PATHS = [("a'b",), ('a"b',), ("due_time') OR 1=1 --",), ("a", "b'); DROP TABLE documents; --"), ("a b",), ("",)]


async def _indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
        return {row[0] for row in rows}


async def test_declared_indexes_are_created_once_and_kept_by_a_process_that_does_not_declare_them(
    tmp_path: Path,
) -> None:
    path = tmp_path / "docs.db"
    declared: dict[str, list[IndexSpec]] = {
        "executions": [BY_DUE, (SortKey(("create_time",), descending=True),), Present(("due_time",))],
        "other": [BY_DUE],
    }
    store = await SqliteDocumentStore.open(path, indexes=declared)
    await store.close()
    created = await _indexes(path)
    assert len(created) == 5  # documents_by_id + one per collection and declaration
    assert any(
        """(collection, json_extract(body, '$."due_time"'), id, partition) WHERE collection = 'executions' """
        """AND json_extract(body, '$."due_time"') IS NOT NULL""" in sql
        for sql in created
    )
    assert any(
        """(collection, json_extract(body, '$."create_time"') DESC, id, partition) WHERE collection = 'executions'"""
        in sql
        for sql in created
    )
    again = await SqliteDocumentStore.open(path, indexes=declared)
    plain = await SqliteDocumentStore.open(path)
    await plain.close()
    await again.close()
    assert await _indexes(path) == created


@pytest.mark.parametrize("path", ODD_PATHS, ids=repr)
async def test_a_path_with_quotes_or_odd_characters_is_refused_everywhere(
    tmp_path: Path, path: tuple[str, ...]
) -> None:
    store = await SqliteDocumentStore.open(tmp_path / "docs.db")
    try:
        collection = store.collection("c")
        await collection.create("p", "d", {"a": 1})
        for query in (
            Query(where=Compare(path, Op.EQ, "x")),
            Query(where=Compare(path, Op.EQ, True)),
            Query(where=Exists(path)),
            Query(where=Prefix(path, "x")),
            Query(where=ArrayContains(path, "x")),
            Query(order_by=(SortKey(path),)),
        ):
            with pytest.raises(ValueError, match="path"):
                await collection.query(query)
        for index in ((SortKey(path),), Present(path)):
            with pytest.raises(ValueError, match="path"):
                await SqliteDocumentStore.open(tmp_path / "other.db", indexes={"c": [index]})
        assert [d.id for d in (await collection.query(Query())).documents] == ["d"]
    finally:
        await store.close()
