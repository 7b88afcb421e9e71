"""The catalog's queries on the embedded store use the indexes it declares (``SQLITE_INDEXES``) where they help,
and never where the partition's primary key is the better path (an extension's versions)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.catalog.adapters.documents import COLLECTION
from services.catalog.adapters.memory_search import MemorySearchIndex
from services.catalog.adapters.search_feed import SearchFeed
from services.catalog.repository import CatalogRepository
from services.platform.backends import SQLITE_INDEXES
from services.platform.docstore.sqlite import SqliteDocumentCollection, SqliteDocumentStore
from services.platform.docstore.sqlite import index_name as sqlite_index_name
from services.platform.query.indexes import Present
from services.platform.query.predicate import SortKey
from tests.support.recording import RecordingCollection


def index_name(index: tuple[SortKey, ...] | Present) -> str:
    return sqlite_index_name(COLLECTION, index)


@pytest.fixture
async def collection(tmp_path: Path) -> AsyncIterator[SqliteDocumentCollection]:
    store = await SqliteDocumentStore.open(tmp_path / "catalog.sqlite3", indexes=SQLITE_INDEXES)
    try:
        yield store.collection(COLLECTION)
    finally:
        await store.close()


async def test_versions_are_read_through_the_partition(collection: SqliteDocumentCollection) -> None:
    recording = RecordingCollection(collection)
    repository = CatalogRepository(recording)
    await repository.list_versions("echo", where=None, limit=50, continuation=None)
    await repository.latest_version_id("echo")
    assert len(recording.queries) == 3  # the page, then the latest version (twice: the page asks for it too)
    for query in recording.queries:
        plan = await collection.explain(query)
        assert any("USING INDEX sqlite_autoindex_documents_1 (collection=? AND partition=?)" in s for s in plan), plan


async def test_the_search_feed_poll_and_the_extension_list_seek_their_index(
    collection: SqliteDocumentCollection,
) -> None:
    recording = RecordingCollection(collection)
    await SearchFeed(recording, MemorySearchIndex()).poll()
    await CatalogRepository(recording).list_extensions(
        where=None, order_by=(SortKey(("extension_id",)),), limit=50, continuation=None
    )
    poll, listing = [await collection.explain(query) for query in recording.queries]
    by_update = f"SEARCH documents USING INDEX {index_name(Present(('update_time',)))} (collection=? AND <expr>>?)"
    assert by_update in poll, poll
    assert listing == [f"SEARCH documents USING INDEX {index_name((SortKey(('extension_id',)),))} (collection=?)"]
