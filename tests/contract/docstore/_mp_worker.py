"""Worker for the multi-process test (module level so ``spawn`` children can import it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.errors import Aborted, Unavailable


async def _increment(db_path: str, collection: str, times: int, barrier: Any) -> int:
    store = await SqliteDocumentStore.open(Path(db_path))
    conflicts = 0
    try:
        col = store.collection(collection)
        barrier.wait(30)
        done = 0
        while done < times:
            doc = await col.read("p", "counter")
            assert doc is not None
            try:
                await col.replace("p", "counter", {"n": doc.body["n"] + 1}, if_match=doc.etag)
            except (Aborted, Unavailable):
                conflicts += 1
                continue
            done += 1
    finally:
        await store.close()
    return conflicts


def increment(db_path: str, collection: str, times: int, barrier: Any, results: Any) -> None:
    """Increment ``counter.n`` ``times`` times with conditional writes, retrying lost races."""
    results.put(asyncio.run(_increment(db_path, collection, times, barrier)))
