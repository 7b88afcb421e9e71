"""Fixtures for the document store contract suite.

Every adapter of :class:`services.platform.docstore.port.DocumentStore` runs the same tests: ``sqlite`` on a
fresh file per test, ``sqlite-indexed`` the same with an expression index for every order and filtered field of
the suite (so SQLite answers from the indexes, and must answer the same), ``memory`` on a fresh in-memory
database per test, ``cosmos`` on the Cosmos DB emulator
(one per session, started from ``node_modules`` by :mod:`tools.emulators.cosmos`; if it cannot start, the cosmos
tests fail) with a fresh database per test. Every store a test opens shares that test's database (like
another process). To add an adapter, append its name to ``ADAPTERS`` and open it in ``store_factory``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

from exthub.contract.dev_tokens import DevIssuer
from services.platform.docstore.cosmos import CosmosDocumentStore
from services.platform.docstore.memory import MemoryDatabase, MemoryDocumentStore
from services.platform.docstore.port import DocumentCollection, DocumentStore
from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.query.indexes import IndexSpec, Present
from services.platform.query.predicate import SortKey
from tests.support.cosmos import DevTokenCredential
from tools.emulators.cosmos import CosmosEmulator, start_cosmos_emulator

# The adapters under contract.
ADAPTERS = ["sqlite", "sqlite-indexed", "memory", "cosmos"]

StoreFactory = Callable[[], Awaitable[DocumentStore]]


def contract_sort_orders() -> list[tuple[SortKey, ...]]:
    """Every ``order_by`` the contract suite queries with (Cosmos DB needs a composite index for each)."""
    from tests.contract.docstore.test_query import ORDERS

    return [tuple(order) for order in ORDERS]


def contract_filter_indexes() -> list[IndexSpec]:
    """Indexes on each field the suite filters on: of every document, and of those where it is present."""
    from tests.contract.docstore.test_query import FILTERED_PATHS

    indexes: list[IndexSpec] = [(SortKey(path),) for path in FILTERED_PATHS]
    indexes.extend(Present(path) for path in FILTERED_PATHS)
    return indexes


@pytest.fixture(scope="session")
def cosmos_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CosmosEmulator]:
    """The Cosmos DB emulator for the whole session (in memory; stopped by its pid at the end)."""
    emulator = start_cosmos_emulator(tmp_path_factory.mktemp("cosmos-emulator"))
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def dev_issuer(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    """Signs the tokens the Cosmos DB adapter's credential hands out."""
    return DevIssuer.load_or_create(tmp_path_factory.mktemp("issuer"))


@pytest.fixture(params=ADAPTERS)
def adapter(request: pytest.FixtureRequest) -> str:
    """The adapter under test."""
    return str(request.param)


@pytest.fixture
def collection_name() -> str:
    """The name of the test's collection (unique, so shared backends such as Cosmos stay isolated)."""
    return f"c{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def store_factory(
    adapter: str, tmp_path: Path, request: pytest.FixtureRequest, collection_name: str
) -> AsyncIterator[StoreFactory]:
    """Opens further store instances on the SAME database (another connection, like another process)."""
    opened: list[DocumentStore] = []
    database = f"t{uuid.uuid4().hex[:16]}"
    memory = MemoryDatabase()

    async def factory() -> DocumentStore:
        store: DocumentStore
        if adapter == "sqlite":
            store = await SqliteDocumentStore.open(tmp_path / "docs.db")
        elif adapter == "sqlite-indexed":
            orders: list[IndexSpec] = [order for order in contract_sort_orders() if order]
            orders.extend(contract_filter_indexes())
            store = await SqliteDocumentStore.open(tmp_path / "docs.db", indexes={collection_name: orders})
        elif adapter == "memory":
            store = MemoryDocumentStore(memory)
        elif adapter == "cosmos":
            emulator: CosmosEmulator = request.getfixturevalue("cosmos_emulator")
            issuer: DevIssuer = request.getfixturevalue("dev_issuer")
            store = await CosmosDocumentStore.open(
                emulator.endpoint,
                database,
                DevTokenCredential(issuer),
                default_sort_orders=contract_sort_orders(),
            )
        else:
            raise AssertionError(f"unknown adapter {adapter}")
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
def collection(store: DocumentStore, collection_name: str) -> DocumentCollection:
    """A fresh collection (unique name, so shared backends such as Cosmos stay isolated)."""
    return store.collection(collection_name)
