"""The search feed: a replica's index kept current from a real document store by change polling.

Two store instances on one database (one SQLite file, or one database of the Cosmos DB emulator) play two
catalog replicas: writes through "the other replica" reach the index only through polling; writes through
this replica's :class:`IndexedCollection` reach it at once. The same code runs on both backends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from exthub.contract.dev_tokens import DevIssuer
from services.catalog.adapters.documents import COLLECTION, EXTENSION_DOC_ID, extension_to_body
from services.catalog.adapters.memory_search import MemorySearchIndex
from services.catalog.adapters.search_feed import IndexedCollection, SearchFeed
from services.catalog.adapters.sqlite_search import SqliteChangeProbe
from services.catalog.domain.model import Extension, ExtensionState
from services.catalog.repository import CatalogRepository
from services.platform.docstore.cosmos import CosmosDocumentStore
from services.platform.docstore.port import DocumentCollection, DocumentStore, Query, QueryPage
from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.errors import Unavailable
from services.platform.query.predicate import Compare, Op
from services.platform.timefmt import to_storage
from tests.support.cosmos import DevTokenCredential
from tools.emulators.cosmos import CosmosEmulator

ACTIVE = Compare(("state",), Op.EQ, "ACTIVE")
T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    """The feed's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@dataclasses.dataclass
class Replicas:
    here: DocumentStore
    there: DocumentStore

    def other(self) -> CatalogRepository:
        """The catalog repository of another replica (its writes reach us only by polling)."""
        return CatalogRepository(self.there.collection(COLLECTION))


@pytest.fixture(params=["sqlite", "cosmos"])
async def replicas(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Replicas]:
    opened: list[DocumentStore] = []
    database = f"t{uuid.uuid4().hex[:16]}"

    async def open_store() -> DocumentStore:
        store: DocumentStore
        if request.param == "sqlite":
            store = await SqliteDocumentStore.open(tmp_path / "catalog.sqlite3")
        else:
            emulator: CosmosEmulator = request.getfixturevalue("cosmos_emulator")
            issuer: DevIssuer = request.getfixturevalue("cosmos_token_issuer")
            store = await CosmosDocumentStore.open(emulator.endpoint, database, DevTokenCredential(issuer))
        opened.append(store)
        return store

    try:
        yield Replicas(await open_store(), await open_store())
    finally:
        for store in reversed(opened):
            await store.close()


@dataclasses.dataclass
class SqliteReplicas(Replicas):
    here: SqliteDocumentStore


@pytest.fixture
async def sqlite_replicas(tmp_path: Path) -> AsyncIterator[SqliteReplicas]:
    here = await SqliteDocumentStore.open(tmp_path / "catalog.sqlite3")
    there = await SqliteDocumentStore.open(tmp_path / "catalog.sqlite3")
    try:
        yield SqliteReplicas(here, there)
    finally:
        await there.close()
        await here.close()


def ext(extension_id: str, display_name: str, written: datetime, **fields: object) -> Extension:
    stamp = to_storage(written)
    return Extension(
        extension_id=extension_id,
        display_name=display_name,
        publisher="Acme",
        create_time=stamp,
        update_time=stamp,
        **fields,  # type: ignore[arg-type]
    )


async def found(index: MemorySearchIndex, text: str) -> list[str]:
    hits = await index.search(text, where=ACTIVE, limit=100, offset=0)
    return [e.extension_id for e in hits.extensions]


async def wait_until(condition: Callable[[], Awaitable[bool]], *, within: float) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_load_then_polls_pick_up_another_replicas_writes(replicas: Replicas) -> None:
    other = replicas.other()
    await other.create_extension(ext("before", "Photo Before", T0))
    clock = Clock()
    feed = SearchFeed(replicas.here.collection(COLLECTION), MemorySearchIndex(), clock=clock)
    assert await feed.load() == 1
    assert await found(feed.index, "photo") == ["before"]
    await other.create_extension(ext("after", "Photo After", T0))
    assert await found(feed.index, "photo") == ["before"]  # not polled yet
    assert await feed.poll() == 1
    assert await found(feed.index, "photo") == ["after", "before"]
    assert await feed.poll() == 0  # the same window again: deduplicated by etag


async def test_the_overlap_catches_late_commits_and_the_resync_catches_the_rest(replicas: Replicas) -> None:
    other = replicas.other()
    clock = Clock()
    feed = SearchFeed(replicas.here.collection(COLLECTION), MemorySearchIndex(), overlap_seconds=5, clock=clock)
    await feed.load()
    clock.now = T0 + timedelta(seconds=10)
    assert await feed.poll() == 0
    # stamped 3 s before that poll (a writer whose clock lags, or a slow commit), committed after it
    await other.create_extension(ext("late", "Scanner", clock.now - timedelta(seconds=3)))
    clock.now += timedelta(seconds=0.5)
    assert await feed.poll() == 1
    assert await found(feed.index, "scanner") == ["late"]
    # stamped further back than the overlap: the window misses it, the full resync does not
    await other.create_extension(ext("very-late", "Scanner Pro", clock.now - timedelta(seconds=30)))
    clock.now += timedelta(seconds=0.5)
    assert await feed.poll() == 0
    assert await found(feed.index, "scanner") == ["late"]
    assert await feed.poll(full=True) == 1
    assert sorted(await found(feed.index, "scanner")) == ["late", "very-late"]


async def test_updates_deletes_and_undeletes_of_another_replica(replicas: Replicas) -> None:
    other = replicas.other()
    clock = Clock()
    feed = SearchFeed(replicas.here.collection(COLLECTION), MemorySearchIndex(), clock=clock)
    first = await other.create_extension(ext("first", "Chart Maker", T0))
    second = await other.create_extension(ext("second", "Maker", T0, tags=("chart",)))
    await feed.load()
    assert await found(feed.index, "chart") == ["first", "second"]

    async def change(current: Extension, **fields: object) -> Extension:
        clock.now += timedelta(seconds=1)
        updated = dataclasses.replace(current, update_time=to_storage(clock.now), **fields)  # type: ignore[arg-type]
        changed = await other.replace_extension(updated, if_match=current.etag)
        assert await feed.poll() == 1
        return changed

    second = await change(second, display_name="Chart Chart")  # now ranks above "first"
    assert await found(feed.index, "chart") == ["second", "first"]
    first = await change(first, state=ExtensionState.DELETED, delete_time=to_storage(clock.now))
    assert await found(feed.index, "chart") == ["second"]
    first = await change(first, state=ExtensionState.ACTIVE, delete_time="")
    assert await found(feed.index, "chart") == ["second", "first"]


class PausedQueries:
    """The real collection, except that a query's answer is held back until the test releases it."""

    def __init__(self, inner: DocumentCollection) -> None:
        self.inner = inner
        self.answered = asyncio.Event()
        self.release = asyncio.Event()

    async def query(self, query: Query) -> QueryPage:
        page = await self.inner.query(query)
        self.answered.set()
        await self.release.wait()
        return page

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_a_poll_that_began_before_an_own_write_does_not_undo_it(replicas: Replicas) -> None:
    clock = Clock()
    paused = PausedQueries(replicas.here.collection(COLLECTION))
    feed = SearchFeed(paused, MemorySearchIndex(), clock=clock)  # type: ignore[arg-type]
    mine = CatalogRepository(IndexedCollection(replicas.here.collection(COLLECTION), feed))
    created = await mine.create_extension(ext("mine", "Ledger", T0))
    assert await found(feed.index, "ledger") == ["mine"]  # read-your-writes, no poll needed

    polling = asyncio.create_task(feed.poll())
    await asyncio.wait_for(paused.answered.wait(), 10)  # the poll holds the old copy now
    updated = dataclasses.replace(created, display_name="Journal", update_time=to_storage(T0 + timedelta(seconds=1)))
    await mine.replace_extension(updated, if_match=created.etag)
    assert await found(feed.index, "journal") == ["mine"]
    paused.release.set()
    await asyncio.wait_for(polling, 10)
    assert await found(feed.index, "journal") == ["mine"]  # the older copy from the poll was not applied
    assert await found(feed.index, "ledger") == []
    await feed.poll()
    assert await found(feed.index, "journal") == ["mine"]


async def test_the_full_resync_drops_documents_removed_from_the_store(replicas: Replicas) -> None:
    other = replicas.other()
    await other.create_extension(ext("doomed", "Archive", T0))
    feed = SearchFeed(replicas.here.collection(COLLECTION), MemorySearchIndex(), clock=Clock())
    await feed.load()
    await replicas.there.collection(COLLECTION).delete("doomed", EXTENSION_DOC_ID)
    await feed.poll()
    assert await found(feed.index, "archive") == ["doomed"]  # a removal leaves no trace in the window
    await feed.poll(full=True)
    assert await found(feed.index, "archive") == []


class FailingFirst:
    """The real collection, except that the first ``failures`` queries fail as a busy backend would."""

    def __init__(self, inner: DocumentCollection, failures: int) -> None:
        self.inner = inner
        self.failures = failures

    async def query(self, query: Query) -> QueryPage:
        if self.failures:
            self.failures -= 1
            raise Unavailable("the document store is busy; retry")
        return await self.inner.query(query)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_background_polling_survives_store_errors(replicas: Replicas) -> None:
    flaky = FailingFirst(replicas.here.collection(COLLECTION), failures=0)
    feed = SearchFeed(flaky, MemorySearchIndex(), poll_seconds=0.05)  # type: ignore[arg-type]
    await feed.load()
    flaky.failures = 2
    feed.start()
    try:
        await replicas.other().create_extension(ext("eventually", "Forecast", datetime.now(UTC)))

        async def searchable() -> bool:
            return await found(feed.index, "forecast") == ["eventually"]

        await wait_until(searchable, within=10)
        assert flaky.failures == 0
    finally:
        await feed.stop()
        await feed.stop()


async def test_the_change_probe_sees_commits_from_any_connection(sqlite_replicas: SqliteReplicas) -> None:
    replicas = sqlite_replicas
    probe = await SqliteChangeProbe.open(replicas.here.path)
    try:
        assert await probe()  # the first call always says "changed"
        assert not await probe()
        await replicas.other().create_extension(ext("one", "One", T0))
        assert await probe()
        assert not await probe()
        await CatalogRepository(replicas.here.collection(COLLECTION)).create_extension(ext("two", "Two", T0))
        assert await probe()
    finally:
        await probe.close()


async def test_refresh_skips_polls_while_the_probe_sees_no_commit(sqlite_replicas: SqliteReplicas) -> None:
    replicas = sqlite_replicas
    probe = await SqliteChangeProbe.open(replicas.here.path)
    try:
        feed = SearchFeed(replicas.here.collection(COLLECTION), MemorySearchIndex(), change_probe=probe)
        await feed.load()
        assert await feed.refresh() == 0  # the probe's first answer is "changed"
        assert await feed.refresh() is None
        assert await feed.refresh() is None
        await replicas.other().create_extension(ext("seen", "Seen", datetime.now(UTC)))
        assert await feed.refresh() == 1
        assert await found(feed.index, "seen") == ["seen"]
        assert await feed.refresh() is None
    finally:
        await probe.close()


async def test_refresh_reads_everything_when_the_resync_is_due(sqlite_replicas: SqliteReplicas) -> None:
    replicas = sqlite_replicas
    probe = await SqliteChangeProbe.open(replicas.here.path)
    try:
        feed = SearchFeed(
            replicas.here.collection(COLLECTION), MemorySearchIndex(), resync_seconds=1e-9, change_probe=probe
        )
        await feed.load()
        await probe()
        await replicas.other().create_extension(ext("old", "Old", T0))  # far outside any window
        await probe()  # the probe has seen that commit: only the due resync can find the document
        assert await feed.refresh() == 1
        assert await found(feed.index, "old") == ["old"]
    finally:
        await probe.close()


async def test_documents_created_in_one_call_are_searchable_at_once_and_existing_ones_stay(replicas: Replicas) -> None:
    feed = SearchFeed(replicas.here.collection(COLLECTION), MemorySearchIndex(), clock=Clock())
    indexed = IndexedCollection(replicas.here.collection(COLLECTION), feed)
    await CatalogRepository(indexed).create_extension(ext("kept", "Ledger", T0))
    taken = extension_to_body(ext("kept", "Journal", T0))
    created = await indexed.create_missing("kept", {EXTENSION_DOC_ID: taken})
    assert created == []
    assert await found(feed.index, "ledger") == ["kept"]  # the existing document was neither replaced nor re-fed
    assert await found(feed.index, "journal") == []
    fresh = await indexed.create_missing("fresh", {EXTENSION_DOC_ID: extension_to_body(ext("fresh", "Almanac", T0))})
    assert [document.partition for document in fresh] == ["fresh"]
    assert await found(feed.index, "almanac") == ["fresh"]  # read-your-writes, no poll needed
