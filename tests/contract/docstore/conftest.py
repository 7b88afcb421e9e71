"""Fixtures for the document store contract suite.

Every adapter of :class:`services.platform.docstore.port.DocumentStore` runs the same tests. To add one,
append its name to ``ADAPTERS`` and open it in :func:`_open_store` — that is where the Cosmos DB adapter
plugs in (e.g. ``"cosmos"``, against the emulator, skipped when ``EXTHUB_TEST_COSMOS_ENDPOINT`` is unset).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from services.platform.docstore.port import DocumentCollection, DocumentStore
from services.platform.docstore.sqlite import SqliteDocumentStore

# The adapters under contract. Cosmos DB plugs in here: add "cosmos" and a branch in _open_store.
ADAPTERS = ["sqlite"]

StoreFactory = Callable[[], Awaitable[DocumentStore]]


async def _open_store(adapter: str, tmp_path: Path) -> DocumentStore:
    if adapter == "sqlite":
        return await SqliteDocumentStore.open(tmp_path / "docs.db")
    raise AssertionError(f"unknown adapter {adapter}")


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    """The adapter under test."""
    return str(request.param)


@pytest.fixture
async def store_factory(adapter: str, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Opens further store instances on the SAME database (another connection, like another process)."""
    opened: list[DocumentStore] = []

    async def factory() -> DocumentStore:
        store = await _open_store(adapter, tmp_path)
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
