"""Opening the execution service's document store for the configured backend, for tools that read it beside the
service (``exthub check``): the SQLite file in the data directory, or the Cosmos DB database on Azure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from services.platform.backends import Backends
from services.platform.docstore.port import DocumentStore
from services.platform.settings import Settings

__all__ = ["DATABASE_FILE", "open_execution_store"]

DATABASE_FILE = "execution.sqlite3"


@contextlib.asynccontextmanager
async def open_execution_store(
    settings: Settings, *, must_exist: bool = False, environ: Mapping[str, str] | None = None
) -> AsyncIterator[DocumentStore]:
    """The execution service's document store for ``settings.backend`` (``must_exist``: refuse to create an empty
    SQLite file, for tools that only read it), closed with its backends on exit."""
    if settings.backend == "local":
        path = settings.data_dir / DATABASE_FILE
        if must_exist and not await asyncio.to_thread(path.exists):
            raise FileNotFoundError(f"no execution store at {path} (is --data-dir the hub's data directory?)")
    backends = await Backends.open(settings, environ=environ)
    try:
        yield await backends.document_store(sqlite_file=DATABASE_FILE)
    finally:
        await backends.close()
