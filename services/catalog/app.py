"""Wires the catalog service: adapters for the configured backend, use cases, servicer and gRPC server."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from exthub.catalog.v1 import catalog_service_pb2, catalog_service_pb2_grpc
from exthub.execution.v1 import execution_service_pb2
from services.catalog.adapters.documents import COLLECTION
from services.catalog.adapters.sqlite_search import SqliteSearchIndex
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
    search_index: SqliteSearchIndex
    _closed: bool = False

    @property
    def address(self) -> str:
        """``host:port`` of the gRPC server."""
        return self.server.address

    async def stop(self, grace: float | None = None) -> None:
        """Drains the server, then closes the index and the store (idempotent)."""
        if self._closed:
            return
        self._closed = True
        await self.server.stop(grace)
        await self.search_index.close()
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
    search_index = await SqliteSearchIndex.open(store.path)
    ctx = CatalogContext(
        repository=CatalogRepository(store.collection(COLLECTION)),
        search_index=search_index,
        page_tokens=PageTokenCodec(page_key),
        egress=settings.egress.policy(),
    )

    def register(server: grpc.aio.Server) -> Sequence[str]:
        catalog_service_pb2_grpc.add_CatalogServiceServicer_to_server(CatalogServicer(ctx), server)
        return [SERVICE.full_name]

    try:
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
        await search_index.close()
        await store.close()
        raise
    return CatalogApp(server=server, store=store, search_index=search_index)
