"""Keeps a catalog replica's search index current from the document store by change polling.

Every write of an extension sets its ``update_time`` (the writing replica's clock). Every
``poll_seconds`` the feed asks the store, through the document-store port's ordinary ``query`` (so every
backend serves it the same way), for the extensions whose ``update_time`` is at or after the poll's start
minus ``overlap_seconds``. The overlap absorbs clock skew between replicas and slow commits: a write
stamped before the previous poll but committed after it still falls inside the next window. Etags dedupe
what successive windows show again. A full read every ``resync_seconds`` is the backstop for anything
older than the window (a commit slower than the overlap, a clock stepped back) and for documents removed
from the store. A backend that can tell cheaply that nothing was committed since the last poll (an
optional ``change_probe``) lets the feed skip polls that could only find the same state.

Writes made through this replica reach its index at once (:class:`IndexedCollection`), so a client reads
its own writes. A poll that began before such a write does not override it (the poll's copy may be the
older one); the next poll settles the document from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from services.catalog.adapters.documents import EXTENSION_DOC_ID, KIND_EXTENSION, extension_from_document
from services.catalog.adapters.memory_search import MemorySearchIndex
from services.platform.docstore.port import Document, DocumentCollection, Query, QueryPage
from services.platform.logging import get_logger
from services.platform.query.predicate import And, Compare, Op, Predicate
from services.platform.timefmt import to_storage, utcnow

__all__ = ["IndexedCollection", "SearchFeed"]

_log = get_logger("exthub.catalog.search")
_IS_EXTENSION = Compare(("kind",), Op.EQ, KIND_EXTENSION)
_MAX_BACKOFF_SECONDS = 5.0


class SearchFeed:
    """Fills a :class:`MemorySearchIndex` from one catalog collection and keeps it fresh."""

    def __init__(
        self,
        collection: DocumentCollection,
        index: MemorySearchIndex,
        *,
        poll_seconds: float = 0.5,
        overlap_seconds: float = 5.0,
        resync_seconds: float = 300.0,
        page_size: int = 500,
        clock: Callable[[], datetime] = utcnow,
        change_probe: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        self._collection = collection
        self._index = index
        self._poll_seconds = poll_seconds
        self._overlap = timedelta(seconds=overlap_seconds)
        self._resync_seconds = resync_seconds
        self._page_size = page_size
        self._clock = clock
        self._change_probe = change_probe
        self._lock = asyncio.Lock()
        self._writes = 0  # counts this replica's own writes
        self._written: dict[str, int] = {}  # extension id → the count at its latest own write
        self._task: asyncio.Task[None] | None = None
        self._last_full = float("-inf")

    @property
    def index(self) -> MemorySearchIndex:
        """The index this feed fills."""
        return self._index

    async def load(self) -> int:
        """Reads every extension (call before serving); returns how many changed the index."""
        return await self.poll(full=True)

    def start(self) -> None:
        """Starts polling in the background (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="catalog-search-feed")

    async def stop(self) -> None:
        """Stops polling (idempotent)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def poll(self, *, full: bool = False) -> int:
        """One pass over the window (or, ``full``, over every extension); returns how many documents
        changed the index. Passes never overlap."""
        async with self._lock:
            writes_before = self._writes
            where: Predicate = _IS_EXTENSION
            if not full:
                since = to_storage(self._clock() - self._overlap)
                where = And((_IS_EXTENSION, Compare(("update_time",), Op.GE, since)))
            started = time.monotonic()
            seen: set[str] = set()
            applied = 0
            continuation: str | None = None
            while True:
                page: QueryPage = await self._collection.query(
                    Query(where=where, limit=self._page_size, continuation=continuation)
                )
                for document in page.documents:
                    if full:
                        seen.add(document.partition)
                    if self._offer(document, writes_before):
                        applied += 1
                continuation = page.continuation
                if continuation is None:
                    break
            if full:
                for extension_id in self._index.extension_ids():
                    if extension_id not in seen and self._written.get(extension_id, -1) <= writes_before:
                        applied += self._index.remove(extension_id)
                self._last_full = started
            # own writes counted before this pass are settled by it: forget them
            self._written = {k: v for k, v in self._written.items() if v > writes_before}
            return applied

    def observe(self, document: Document) -> None:
        """A write this replica just made: index it now."""
        if document.id != EXTENSION_DOC_ID or document.body.get("kind") != KIND_EXTENSION:
            return
        self._writes += 1
        self._written[document.partition] = self._writes
        self._index.put(extension_from_document(document))

    def forget(self, extension_id: str) -> None:
        """This replica removed an extension's document from the store."""
        self._writes += 1
        self._written[extension_id] = self._writes
        self._index.remove(extension_id)

    def _offer(self, document: Document, writes_before: int) -> bool:
        if document.id != EXTENSION_DOC_ID:
            return False
        current = self._index.get(document.partition)
        if current is not None and current.etag == document.etag:
            return False
        if self._written.get(document.partition, -1) > writes_before:
            return False  # written here after this pass began: the store's newer state comes next pass
        return self._index.put(extension_from_document(document))

    async def refresh(self) -> int | None:
        """One step of the background loop: the full read when it is due, else a poll, unless the change
        probe says nothing was committed since the last step (then None)."""
        full = time.monotonic() - self._last_full >= self._resync_seconds
        if not full and self._change_probe is not None and not await self._change_probe():
            return None
        return await self.poll(full=full)

    async def _run(self) -> None:
        delay = self._poll_seconds
        while True:
            await asyncio.sleep(delay)
            try:
                await self.refresh()
            except Exception as error:  # the store may be briefly unavailable: keep serving, retry
                delay = min(max(delay, self._poll_seconds) * 2, _MAX_BACKOFF_SECONDS)
                _log.warning("search index refresh failed", error=type(error).__name__, retry_in_seconds=delay)
            else:
                delay = self._poll_seconds


class IndexedCollection:
    """The catalog collection, with every extension written through it handed to the search feed."""

    def __init__(self, inner: DocumentCollection, feed: SearchFeed) -> None:
        self._inner = inner
        self._feed = feed

    @property
    def name(self) -> str:
        """The collection name."""
        return self._inner.name

    async def create(self, partition: str, id: str, body: Mapping[str, Any]) -> Document:
        """See :class:`DocumentCollection`."""
        document = await self._inner.create(partition, id, body)
        self._feed.observe(document)
        return document

    async def create_missing(self, partition: str, documents: Mapping[str, Mapping[str, Any]]) -> list[Document]:
        """See :class:`DocumentCollection`."""
        created = await self._inner.create_missing(partition, documents)
        for document in created:
            self._feed.observe(document)
        return created

    async def read(self, partition: str, id: str) -> Document | None:
        """See :class:`DocumentCollection`."""
        return await self._inner.read(partition, id)

    async def replace(self, partition: str, id: str, body: Mapping[str, Any], *, if_match: str | None) -> Document:
        """See :class:`DocumentCollection`."""
        document = await self._inner.replace(partition, id, body, if_match=if_match)
        self._feed.observe(document)
        return document

    async def delete(self, partition: str, id: str, *, if_match: str | None = None) -> None:
        """See :class:`DocumentCollection`."""
        await self._inner.delete(partition, id, if_match=if_match)
        if id == EXTENSION_DOC_ID:
            self._feed.forget(partition)

    async def query(self, query: Query) -> QueryPage:
        """See :class:`DocumentCollection`."""
        return await self._inner.query(query)

    async def count(self, *, partition: str | None = None, where: Predicate | None = None) -> int:
        """See :class:`DocumentCollection`."""
        return await self._inner.count(partition=partition, where=where)
