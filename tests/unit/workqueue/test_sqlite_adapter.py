"""Unit: behaviour specific to the SQLite work queue (schema, shared files, duplicate window, a model check)."""

from __future__ import annotations

import sqlite3
import tempfile
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.workqueue.port import Priority, WorkQueue
from services.platform.workqueue.sqlite import SCHEMA_VERSION, SqliteWorkQueue


class Clock:
    """A settable clock."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def test_is_a_work_queue(tmp_path: Path) -> None:
    queue = await SqliteWorkQueue.open(tmp_path / "q.db")
    try:
        assert isinstance(queue, WorkQueue)
        assert queue.path == tmp_path / "q.db"
        assert queue.ageing_seconds == 60
    finally:
        await queue.close()


async def test_messages_survive_reopen(tmp_path: Path) -> None:
    queue = await SqliteWorkQueue.open(tmp_path / "q.db")
    await queue.publish("m", b"x", priority=Priority.HIGH, properties={"model": "a"})
    await queue.close()
    queue = await SqliteWorkQueue.open(tmp_path / "q.db")
    try:
        [lease] = await queue.receive(lease_seconds=5)
        assert lease.message.body == b"x"
    finally:
        await queue.close()


async def test_shares_a_file_with_the_document_store(tmp_path: Path) -> None:
    path = tmp_path / "hub.db"
    store = await SqliteDocumentStore.open(path)
    queue = await SqliteWorkQueue.open(path)
    try:
        await store.collection("c").create("p", "d", {"a": 1})
        await queue.publish("m", b"x", priority=Priority.LOW, properties={})
        assert len(await queue.receive(lease_seconds=5)) == 1
        assert await store.collection("c").read("p", "d") is not None
    finally:
        await queue.close()
        await store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == store.schema_version  # untouched
        assert conn.execute("SELECT version FROM queue_schema").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    await (await SqliteWorkQueue.open(path)).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE queue_schema SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(RuntimeError, match="newer"):
        await SqliteWorkQueue.open(path)


@pytest.mark.parametrize(
    "options",
    [
        {"ageing_seconds": 0},
        {"max_delivery_count": 0},
        {"max_delivery_count": True},
        {"duplicate_window_seconds": -1},
        {"poll_interval_seconds": 0},
    ],
)
async def test_open_validates_options(tmp_path: Path, options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        await SqliteWorkQueue.open(tmp_path / "q.db", **options)  # type: ignore[arg-type]


async def test_closed_queue_refuses_calls(tmp_path: Path) -> None:
    queue = await SqliteWorkQueue.open(tmp_path / "q.db")
    await queue.close()
    with pytest.raises(RuntimeError, match="closed"):
        await queue.publish("m", b"", priority=Priority.LOW, properties={})
    with pytest.raises(RuntimeError, match="closed"):
        await queue.list_dead_letters()


async def test_naive_clock_is_refused(tmp_path: Path) -> None:
    queue = await SqliteWorkQueue.open(tmp_path / "q.db", clock=lambda: datetime(2026, 1, 1))
    try:
        with pytest.raises(RuntimeError, match="aware"):
            await queue.publish("m", b"", priority=Priority.LOW, properties={})
    finally:
        await queue.close()


async def test_duplicate_detection_window(tmp_path: Path) -> None:
    clock = Clock()
    queue = await SqliteWorkQueue.open(tmp_path / "q.db", clock=clock, duplicate_window_seconds=600)
    try:
        await queue.publish("m", b"1", priority=Priority.LOW, properties={})
        [lease] = await queue.receive(lease_seconds=5)
        await queue.complete(lease)
        clock.now += timedelta(seconds=599)
        await queue.publish("m", b"2", priority=Priority.LOW, properties={})  # within the window: dropped
        assert await queue.receive(lease_seconds=5) == []
        clock.now += timedelta(seconds=1)
        await queue.publish("m", b"3", priority=Priority.LOW, properties={})  # window over: a new message
        [lease] = await queue.receive(lease_seconds=5)
        assert lease.message.body == b"3"
    finally:
        await queue.close()


async def test_duplicate_window_zero_only_dedupes_live_messages(tmp_path: Path) -> None:
    queue = await SqliteWorkQueue.open(tmp_path / "q.db", duplicate_window_seconds=0)
    try:
        await queue.publish("m", b"1", priority=Priority.LOW, properties={})
        await queue.publish("m", b"2", priority=Priority.LOW, properties={})
        [lease] = await queue.receive(lease_seconds=5)
        assert lease.message.body == b"1"
        await queue.complete(lease)
        await queue.publish("m", b"3", priority=Priority.LOW, properties={})
        [lease] = await queue.receive(lease_seconds=5)
        assert lease.message.body == b"3"
    finally:
        await queue.close()


async def test_invalid_priority_is_refused(tmp_path: Path) -> None:
    from services.platform.errors import InvalidArgument

    queue = await SqliteWorkQueue.open(tmp_path / "q.db")
    try:
        with pytest.raises(InvalidArgument):
            await queue.publish("m", b"", priority=0, properties={})  # type: ignore[arg-type]
    finally:
        await queue.close()


_batches = st.lists(
    st.tuples(st.sampled_from(list(Priority)), st.integers(min_value=0, max_value=300)), min_size=1, max_size=15
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=_batches, receive_after=st.integers(min_value=0, max_value=400))
async def test_receive_order_matches_the_ageing_model(batch: list[tuple[Priority, int]], receive_after: int) -> None:
    """Publish at increasing times, then drain: the order is by (level + waited/period) desc, then FIFO."""
    clock = Clock()
    start = clock.now
    ageing = 60.0
    with tempfile.TemporaryDirectory() as directory:
        queue = await SqliteWorkQueue.open(Path(directory) / "q.db", clock=clock, ageing_seconds=ageing)
        try:
            published: list[tuple[str, Priority, datetime]] = []
            offset = 0
            for i, (priority, gap) in enumerate(batch):
                offset += gap
                clock.now = start + timedelta(seconds=offset)
                await queue.publish(f"m{i:02d}", b"", priority=priority, properties={})
                published.append((f"m{i:02d}", priority, clock.now))
            clock.now += timedelta(seconds=receive_after)
            now = clock.now
            expected = [
                message_id
                for message_id, _, _ in sorted(
                    published,
                    key=lambda m: (-(m[1].level + Fraction(int((now - m[2]).total_seconds()), 60)), m[2], m[0]),
                )
            ]
            got: list[str] = []
            while leases := await queue.receive(lease_seconds=5):
                got.extend(lease.message.message_id for lease in leases)
            assert got == expected
        finally:
            await queue.close()
