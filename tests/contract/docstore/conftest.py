"""Fixtures for the document store contract suite.

Every adapter of :class:`services.platform.docstore.port.DocumentStore` runs the same tests. To add one,
append its name to ``ADAPTERS`` and open it in :func:`_open_store`. ``shared`` is one dict per test: what
the stores of that test share (the in-memory database; an emulator's endpoint), so that a second store
opened in the same test sees the same documents, like another process.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from services.platform.docstore.memory import MemoryDatabase, MemoryDocumentStore
from services.platform.docstore.port import DocumentCollection, DocumentStore
from services.platform.docstore.sqlite import SqliteDocumentStore

# The adapters under contract: add a name here and a branch in _open_store.
ADAPTERS = ["sqlite", "memory"]

StoreFactory = Callable[[], Awaitable[DocumentStore]]


async def _open_store(adapter: str, tmp_path: Path, shared: dict[str, Any]) -> DocumentStore:
    if adapter == "sqlite":
        return await SqliteDocumentStore.open(tmp_path / "docs.db")
    if adapter == "memory":
        return MemoryDocumentStore(shared.setdefault("memory", MemoryDatabase()))
    raise AssertionError(f"unknown adapter {adapter}")


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    """The adapter under test."""
    return str(request.param)


@pytest.fixture
async def store_factory(adapter: str, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens further store instances on the SAME database (another connection, like another process)."""
    opened: list[DocumentStore] = []
    shared: dict[str, Any] = {}

    async def factory() -> DocumentStore:
        store = await _open_store(adapter, tmp_path, shared)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        await store.close()


@pytest.fixture
async def store(store_factory: StoreFactory) -> DocumentStore:
    """A store instance on a fresh database."""
    return await store_factory()


@pytest.fixture
def collection(store: DocumentStore) -> DocumentCollection:
    """A fresh collection (unique name, so shared backends such as Cosmos stay isolated)."""
    return store.collection(f"c{uuid.uuid4().hex[:12]}")
