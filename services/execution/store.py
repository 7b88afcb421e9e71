"""Opening the execution service's document store for the configured backend (the service and its tools)."""

from __future__ import annotations

import asyncio

from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.entrypoint import BackendNotAvailable
from services.platform.settings import Settings

__all__ = ["DATABASE_FILE", "open_execution_store"]

DATABASE_FILE = "execution.sqlite3"


async def open_execution_store(settings: Settings, *, must_exist: bool = False) -> SqliteDocumentStore:
    """The execution service's document store for ``settings.backend`` (``must_exist``: refuse to create an empty
    one, for tools that only read it)."""
    if settings.backend != "local":
        raise BackendNotAvailable(
            "the execution service's azure backend is not part of this build yet; use EXTHUB_BACKEND=local"
        )
    path = settings.data_dir / DATABASE_FILE
    if must_exist and not await asyncio.to_thread(path.exists):
        raise FileNotFoundError(f"no execution store at {path} (is --data-dir the hub's data directory?)")
    return await SqliteDocumentStore.open(path)
