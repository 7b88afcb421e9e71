"""Wires the catalog service: adapters for the configured backend, use cases, servicer and gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from exthub.catalog.v1 import catalog_service_pb2, catalog_service_pb2_grpc
from exthub.execution.v1 import execution_service_pb2
from services.catalog.adapters.documents import COLLECTION
from services.catalog.adapters.memory_search import MemorySearchIndex
from services.catalog.adapters.search_feed import IndexedCollection, SearchFeed
from services.catalog.adapters.sqlite_search import SqliteChangeProbe, drop_legacy_fts_index
from services.catalog.handlers.context import CatalogContext
from services.catalog.repository import CatalogRepository
from services.catalog.servicer import CatalogServicer
from services.platform.auth.access import access_rules_from_descriptors
from services.platform.auth.verifier import TokenVerifier
from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.entrypoint import BackendNotAvailable
from services.platform.paging import PageTokenCodec
from services.platform.server import RunningServer, start_grpc_server
from services.platform.settings import Settings

SERVICE = catalog_service_pb2.DESCRIPTOR.services_by_name["CatalogService"]
PUBLIC_NEIGHBOUR = execution_service_pb2.DESCRIPTOR.services_by_name["ExecutionService"]
DATABASE_FILE = "catalog.sqlite3"


@dataclass
class CatalogApp:
    """A running catalog service and the resources it owns."""

    server: RunningServer
    store: SqliteDocumentStore
    search_feed: SearchFeed
    change_probe: SqliteChangeProbe
    _closed: bool = False

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC server."""
        return self.server.address

    async def stop(self, grace: float | None = None) -> None:
        """Drains the server, then stops the search feed and closes the store (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self.server.stop(grace)
        await self.search_feed.stop()
        await self.change_probe.close()
        await self.store.close()


async def start_catalog(settings: Settings, *, port: int | None = None) -> CatalogApp:
    """Opens the backend, builds the use cases and starts serving on ``port`` (default: the settings')."""
    if settings.backend != "local":
        raise BackendNotAvailable(
            "the catalog's azure backend (Cosmos DB adapter) is not part of this build yet; use EXTHUB_BACKEND=local"
        )
    await asyncio.to_thread(settings.data_dir.mkdir, parents=True, exist_ok=True)
    page_key = await asyncio.to_thread(settings.page_token_key)
    store = await SqliteDocumentStore.open(settings.data_dir / DATABASE_FILE)
    try:
        await drop_legacy_fts_index(store)
        probe = await SqliteChangeProbe.open(store.path)
    except BaseException:
        await store.close()
        raise
    collection = store.collection(COLLECTION)
    feed = SearchFeed(
        collection,
        MemorySearchIndex(cache_entries=settings.catalog_search_cache_entries),
        poll_seconds=settings.catalog_search_poll_seconds,
        overlap_seconds=settings.catalog_search_overlap_seconds,
        resync_seconds=settings.catalog_search_resync_seconds,
        change_probe=probe,
    )
    ctx = CatalogContext(
        repository=CatalogRepository(IndexedCollection(collection, feed)),
        search_index=feed.index,
        page_tokens=PageTokenCodec(page_key),
        egress=settings.egress.policy(),
    )

    def register(server: grpc.aio.Server) -> Sequence[str]:
        catalog_service_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(ctx), server)
        return [SERVICE.full_name]

    try:
        await feed.load()
        server = await start_grpc_server(
            name="catalog",
            settings=settings,
            port=settings.catalog_port if port is None else port,
            register=register,
            verifier=TokenVerifier(settings.auth),
            access_rules=access_rules_from_descriptors([SERVICE]),
            # the gateway routes server reflection here: describe the whole public API of its port
            reflect_also=[PUBLIC_NEIGHBOUR.full_name],
        )
    except BaseException:
        await probe.close()
        await store.close()
        raise
    feed.start()
    return CatalogApp(server=server, store=store, search_feed=feed, change_probe=probe)
