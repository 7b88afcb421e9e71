"""Consumer for the multi-process test (module level so ``spawn`` children can import it)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from services.platform.errors import Unavailable
from services.platform.workqueue.sqlite import SqliteWorkQueue


async def _consume(db_path: str, expected: int, barrier: Any, done: Any) -> list[tuple[str, int]]:
    queue = await SqliteWorkQueue.open(Path(db_path), poll_interval_seconds=0.01)
    completed: list[tuple[str, int]] = []
    try:
        barrier.wait(30)
        while done.value < expected:
            try:
                leases = await queue.receive(max_messages=5, lease_seconds=60, wait_seconds=0.05)
                for lease in leases:
                    await queue.complete(lease)
                    completed.append((lease.message.message_id, lease.message.delivery_count))
                    with done.get_lock():
                        done.value += 1
            except Unavailable:
                continue
    finally:
        await queue.close()
    return completed


def consume(db_path: str, expected: int, barrier: Any, done: Any, results: Any) -> None:
    """Receive and complete until ``done`` (shared by all consumers) reaches ``expected``."""
    results.put(asyncio.run(_consume(db_path, expected, barrier, done)))
