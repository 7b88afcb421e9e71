"""Wires the catalog service: adapters for the configured backend, use cases, servicer and gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
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
from services.platform.backends import Backends
from services.platform.docstore.port import DocumentStore
from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.paging import PageTokenCodec
from services.platform.server import RunningServer, start_grpc_server
from services.platform.settings import Settings

SERVICE = catalog_service_pb2.DESCRIPTOR.services_by_name["CatalogService"]
PUBLIC_NEIGHBOUR = execution_service_pb2.DESCRIPTOR.services_by_name["ExecutionService"]
DATABASE_FILE = "catalog.sqlite3"


@dataclass
class CatalogApp:
    """A running catalog service and the backends it opened (see :mod:`services.platform.backends`)."""

    server: RunningServer
    store: DocumentStore
    search_feed: SearchFeed
    backends: Backends
    change_probe: SqliteChangeProbe | None = None
    _closed: bool = False

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC server."""
        return self.server.address

    async def stop(self, grace: float | None = None) -> None:
        """Drains the server, then stops the search feed and closes the backends (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self.server.stop(grace)
        await self.search_feed.stop()
        if self.change_probe is not None:
            await self.change_probe.close()
        await self.backends.close()


async def start_catalog(
    settings: Settings, *, port: int | None = None, environ: Mapping[str, str] | None = None
) -> CatalogApp:
    """Opens the backend (``settings.backend``; ``environ``: the Azure identity's variables when not
    ``os.environ``), builds the use cases and starts serving on ``port`` (default: the settings')."""
    page_key = await asyncio.to_thread(settings.page_token_key)
    backends = await Backends.open(settings, environ=environ)
    probe: SqliteChangeProbe | None = None
    try:
        store = await backends.document_store(sqlite_file=DATABASE_FILE)
        if isinstance(store, SqliteDocumentStore):  # a cheap "anything committed?" between polls
            await drop_legacy_fts_index(store)
            probe = await SqliteChangeProbe.open(store.path)
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
        if probe is not None:
            await probe.close()
        await backends.close()
        raise
    feed.start()
    return CatalogApp(server=server, store=store, search_feed=feed, backends=backends, change_probe=probe)
