"""Contract: conditional writes under concurrency — coroutines, two store instances, two processes."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import uuid
from pathlib import Path

import pytest

from services.platform.docstore.port import Document, DocumentCollection
from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.errors import Aborted
from tests.contract.docstore import _mp_worker
from tests.contract.docstore.conftest import StoreFactory


async def _race(writers: list[DocumentCollection], doc: Document) -> list[Document | BaseException]:
    return await asyncio.gather(
        *(
            writers[i % len(writers)].replace(doc.partition, doc.id, {"winner": i}, if_match=doc.etag)
            for i in range(10)
        ),
        return_exceptions=True,
    )


def _check_one_winner(results: list[Document | BaseException]) -> Document:
    winners = [r for r in results if isinstance(r, Document)]
    losers = [r for r in results if not isinstance(r, Document)]
    assert len(winners) == 1, results
    assert len(losers) == 9
    for loser in losers:
        assert isinstance(loser, Aborted)
        assert loser.reason == "ETAG_MISMATCH"
    return winners[0]


async def test_ten_concurrent_replaces_one_wins(collection: DocumentCollection) -> None:
    doc = await collection.create("p", "hot", {"winner": None})
    winner = _check_one_winner(await _race([collection], doc))
    assert await collection.read("p", "hot") == winner


async def test_two_instances_share_writes(store_factory: StoreFactory) -> None:
    name = f"c{uuid.uuid4().hex[:12]}"
    first, second = (await store_factory()).collection(name), (await store_factory()).collection(name)
    created = await first.create("p", "a", {"v": 1})
    assert await second.read("p", "a") == created
    replaced = await second.replace("p", "a", {"v": 2}, if_match=created.etag)
    assert await first.read("p", "a") == replaced
    with pytest.raises(Aborted):
        await first.replace("p", "a", {"v": 3}, if_match=created.etag)
    await first.delete("p", "a", if_match=replaced.etag)
    assert await second.read("p", "a") is None


async def test_two_instances_race_correctly(store_factory: StoreFactory) -> None:
    name = f"c{uuid.uuid4().hex[:12]}"
    first, second = (await store_factory()).collection(name), (await store_factory()).collection(name)
    doc = await first.create("p", "hot", {"winner": None})
    winner = _check_one_winner(await _race([first, second], doc))
    assert await first.read("p", "hot") == winner
    assert await second.read("p", "hot") == winner


async def test_concurrent_creates_same_id_one_wins(store_factory: StoreFactory) -> None:
    name = f"c{uuid.uuid4().hex[:12]}"
    cols = [(await store_factory()).collection(name) for _ in range(2)]
    results = await asyncio.gather(
        *(cols[i % 2].create("p", "same", {"i": i}) for i in range(8)), return_exceptions=True
    )
    assert sum(isinstance(r, Document) for r in results) == 1


def test_two_processes_conditional_increments(tmp_path: Path) -> None:
    """Two processes on one SQLite file (the embedded backend's deployment: every service process opens it)."""
    db = tmp_path / "docs.db"
    times = 50

    async def setup() -> None:
        store = await SqliteDocumentStore.open(db)
        try:
            await store.collection("counters").create("p", "counter", {"n": 0})
        finally:
            await store.close()

    async def final() -> int:
        store = await SqliteDocumentStore.open(db)
        try:
            doc = await store.collection("counters").read("p", "counter")
            assert doc is not None
            return int(doc.body["n"])
        finally:
            await store.close()

    asyncio.run(setup())
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    results = ctx.Queue()
    procs = [
        ctx.Process(target=_mp_worker.increment, args=(str(db), "counters", times, barrier, results)) for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    try:
        conflicts = [results.get(timeout=60) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    assert [proc.exitcode for proc in procs] == [0, 0]
    assert asyncio.run(final()) == 2 * times
    assert all(c >= 0 for c in conflicts)


async def test_cancelled_writes_leave_the_store_usable(collection: DocumentCollection) -> None:
    doc = await collection.create("p", "hot", {"n": 0})
    for i in range(15):
        write = (
            collection.create("p", f"a{i}", {"i": i})
            if i % 2
            else collection.replace("p", "hot", {"n": i}, if_match=doc.etag)
        )
        task: asyncio.Task[Document] = asyncio.create_task(write)
        for _ in range(i):
            await asyncio.sleep(0)  # cancel at a different point each round
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        current = await collection.read("p", "hot")
        assert current is not None
        if current.etag != doc.etag:  # a replace landed whole: new body and new etag together
            # a remote store may apply a cancelled request after the cancel returned: any replace issued so far
            assert current.body in [{"n": j} for j in range(0, i + 1, 2)]
            doc = current
        assert current == doc
        created = await collection.read("p", f"a{i}")
        assert created is None or created.body == {"i": i}
        done = await collection.create("p", f"after{i}", {"ok": True})
        assert await collection.read("p", f"after{i}") == done
