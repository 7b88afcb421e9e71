"""Cosmos DB specific behaviour, on the emulator: identity, item shape, containers and their indexes, request
units, throttling, 5xx, the emulator stopped and back, and ordered range queries for change polling."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from azure.cosmos import PartitionKey
from azure.cosmos.aio import CosmosClient

from exthub.contract.dev_tokens import DevIssuer
from services.platform.docstore.cosmos import CosmosDocumentStore, CosmosStoreError
from services.platform.docstore.cosmos_filter import composite_index
from services.platform.docstore.port import MAX_DOCUMENT_BYTES, Document, Query
from services.platform.errors import InvalidArgument, Unavailable
from services.platform.query.predicate import And, Compare, Op, SortKey
from tests.contract.docstore import test_query as contract
from tests.support.cosmos import DevTokenCredential
from tools.emulators.cosmos import CosmosEmulator, start_cosmos_emulator

UPDATED = ("update_time",)
UNAVAILABLE_WITHIN = 20.0  # seconds: the operation timeout or the SDK's connection retries, with room for load
BY_UPDATE = (SortKey(UPDATED),)


def stamp(second: int) -> str:
    return f"2026-03-01T10:00:{second:02d}.000000Z"


async def open_store(emulator: CosmosEmulator, issuer: DevIssuer, **options: Any) -> CosmosDocumentStore:
    return await CosmosDocumentStore.open(
        emulator.endpoint, f"t{uuid.uuid4().hex[:16]}", DevTokenCredential(issuer), **options
    )


@pytest.fixture
async def store(cosmos_emulator: CosmosEmulator, dev_issuer: DevIssuer) -> AsyncIterator[CosmosDocumentStore]:
    opened = await open_store(cosmos_emulator, dev_issuer, sort_orders={"catalog": [BY_UPDATE]})
    yield opened
    await opened.close()


@pytest.fixture
async def raw_client(cosmos_emulator: CosmosEmulator, dev_issuer: DevIssuer) -> AsyncIterator[CosmosClient]:
    """A plain SDK client on the same emulator, to look at what the adapter stored."""
    async with CosmosClient(cosmos_emulator.endpoint, credential=DevTokenCredential(dev_issuer)) as client:
        yield client


@pytest.fixture(scope="module")
def faulty_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CosmosEmulator]:
    """An emulator of its own that can answer with injected 429s and 5xx."""
    emulator = start_cosmos_emulator(tmp_path_factory.mktemp("cosmos-faults"), faults=True)
    yield emulator
    emulator.stop()


async def test_the_token_credential_is_used_and_no_key(cosmos_emulator: CosmosEmulator, dev_issuer: DevIssuer) -> None:
    credential = DevTokenCredential(dev_issuer)
    store = await CosmosDocumentStore.open(cosmos_emulator.endpoint, f"t{uuid.uuid4().hex[:16]}", credential)
    try:
        await store.collection("c").create("p", "a", {"v": 1})
    finally:
        await store.close()
    assert credential.scopes
    assert set(credential.scopes) == {("https://127.0.0.1/.default",)}


async def test_items_have_the_documented_shape(store: CosmosDocumentStore, raw_client: CosmosClient) -> None:
    created = await store.collection("catalog").create("ext-1", "ext-1", {"id": "shadow", "_etag": "x", "n": 1})
    container = raw_client.get_database_client(store.database).get_container_client("catalog")
    item = await container.read_item("ext-1", partition_key="ext-1")
    assert {k: item[k] for k in ("id", "partition", "body")} == {
        "id": "ext-1",
        "partition": "ext-1",
        "body": {"id": "shadow", "_etag": "x", "n": 1},
    }
    assert item["_etag"] == created.etag
    assert set(item) - {"id", "partition", "body"} <= {"_etag", "_rid", "_self", "_ts", "_attachments"}
    properties = await container.read()
    assert properties["partitionKey"]["paths"] == ["/partition"]
    assert properties["indexingPolicy"]["compositeIndexes"] == [composite_index(()), composite_index(BY_UPDATE)]


async def test_request_units_are_counted_and_logged(
    store: CosmosDocumentStore, caplog: pytest.LogCaptureFixture
) -> None:
    collection = store.collection("catalog")
    await collection.create("p", "warm", {})  # creates the database and container first
    before_total, before_requests = store.charges.total, store.charges.requests
    with caplog.at_level(logging.DEBUG, logger="services.platform.docstore.cosmos"):
        doc = await collection.create("p", "a", {"v": 1})
        await collection.read("p", "a")
        await collection.replace("p", "a", {"v": 2}, if_match=doc.etag)
        await collection.query(Query(partition="p", limit=10))
        await collection.count()
    # the emulator charges 1 RU per request; Cosmos DB charges what the operation cost
    assert store.charges.requests - before_requests == 5
    assert store.charges.total - before_total == pytest.approx(5.0)
    assert {"create", "read", "replace", "query", "count"} <= set(store.charges.by_operation)
    lines = [r.getMessage() for r in caplog.records if "RU" in r.getMessage()]
    assert len(lines) == 5
    assert lines[0].startswith("cosmos create catalog: 1.00 RU in 1 request(s)")


async def test_undeclared_orders_are_sorted_in_the_service_like_indexed_ones(
    cosmos_emulator: CosmosEmulator, dev_issuer: DevIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    store = await open_store(cosmos_emulator, dev_issuer)  # no sort order declared: no composite index
    try:
        collection = store.collection("c")
        for doc_partition, doc_id, body in contract.DOCS:
            await collection.create(doc_partition, doc_id, body)
        with caplog.at_level(logging.WARNING, logger="services.platform.docstore.cosmos"):
            for order_by in contract.ORDERS:
                for partition in (None, "p1"):
                    got = await contract.all_pages(collection, Query(partition=partition, order_by=order_by, limit=3))
                    assert contract.keys(got) == contract.expected_order(order_by, partition), order_by
        warnings = [r.getMessage() for r in caplog.records if "without a composite index" in r.getMessage()]
        assert len(warnings) == len([o for o in contract.ORDERS if o])  # once per order; the empty one is indexed
        assert '"/body/name", "order": "descending"' in "".join(warnings)
    finally:
        await store.close()


async def test_an_undeclared_order_reads_at_most_the_scan_limit(
    cosmos_emulator: CosmosEmulator, dev_issuer: DevIssuer
) -> None:
    store = await open_store(cosmos_emulator, dev_issuer, sort_orders={"c": [BY_UPDATE]}, unindexed_scan_limit=5)
    try:
        collection = store.collection("c")
        for i in range(6):
            await collection.create(f"p{i}", "a", {"update_time": stamp(i), "name": f"n{i}"})
        by_name = (SortKey(("name",)),)
        with pytest.raises(InvalidArgument) as err:
            await collection.query(Query(order_by=by_name))
        assert [v.field for v in err.value.field_violations] == ["order_by"]
        page = await collection.query(Query(where=Compare(("name",), Op.LT, "n5"), order_by=by_name))
        assert [d.partition for d in page.documents] == ["p0", "p1", "p2", "p3", "p4"]
        indexed = await collection.query(Query(order_by=BY_UPDATE, limit=1000))
        assert len(indexed.documents) == 6
    finally:
        await store.close()


async def test_an_existing_container_without_the_indexes_is_reported_and_the_emulator_enforces_them(
    store: CosmosDocumentStore, raw_client: CosmosClient, caplog: pytest.LogCaptureFixture
) -> None:
    database = await raw_client.create_database_if_not_exists(store.database)
    await database.create_container("catalog", partition_key=PartitionKey("/partition"))
    collection = store.collection("catalog")
    with caplog.at_level(logging.WARNING, logger="services.platform.docstore.cosmos"):
        await collection.create("p", "a", {"update_time": stamp(1)})
    assert any("lacks 2 composite index(es)" in r.getMessage() for r in caplog.records)
    with pytest.raises(CosmosStoreError, match=r"status 400"):
        await collection.query(Query(order_by=BY_UPDATE))


async def test_a_container_partitioned_differently_is_refused(
    store: CosmosDocumentStore, raw_client: CosmosClient
) -> None:
    database = await raw_client.create_database_if_not_exists(store.database)
    await database.create_container("wrong", partition_key=PartitionKey("/id"))
    with pytest.raises(CosmosStoreError, match="partitioned by"):
        await store.collection("wrong").read("p", "a")


async def test_too_large_documents_are_refused_before_sending(store: CosmosDocumentStore) -> None:
    requests = store.charges.requests
    with pytest.raises(InvalidArgument) as err:
        await store.collection("catalog").create("p", "big", {"blob": "x" * MAX_DOCUMENT_BYTES})
    assert err.value.reason == "DOCUMENT_TOO_LARGE"
    assert store.charges.requests == requests


async def test_invalid_collection_names_are_refused(store: CosmosDocumentStore) -> None:
    for bad in ["", "a/b", "1abc", "a b", "x" * 256]:
        with pytest.raises(ValueError, match="collection"):
            store.collection(bad)


async def test_ordered_range_queries_on_a_top_level_field_page_correctly(store: CosmosDocumentStore) -> None:
    """The change polling of the catalog search: ``update_time > t`` ordered by ``update_time``, across
    partitions, in small pages, while newer documents keep arriving."""
    collection = store.collection("catalog")
    written: list[tuple[str, str, str]] = []
    for i in range(24):
        partition, doc_id, when = f"ext-{i % 7}", f"v{i:02d}", stamp(i // 3)  # three documents per second
        await collection.create(partition, doc_id, {"update_time": when, "i": i})
        written.append((when, doc_id, partition))
    await collection.create("ext-0", "no-time", {"i": -1})
    await collection.create("ext-1", "odd-time", {"update_time": 5, "i": -2})

    since = stamp(2)
    seen: list[Document] = []
    continuation: str | None = None
    while True:
        page = await collection.query(
            Query(where=Compare(UPDATED, Op.GT, since), order_by=BY_UPDATE, limit=4, continuation=continuation)
        )
        seen.extend(page.documents)
        if len(seen) == 8:  # documents written between pages show up in order, none twice
            await collection.create("ext-9", "late", {"update_time": stamp(59), "i": 99})
            written.append((stamp(59), "late", "ext-9"))
        continuation = page.continuation
        if continuation is None:
            break
    want = sorted(w for w in written if w[0] > since)
    assert [(d.body["update_time"], d.id, d.partition) for d in seen] == want

    in_window = And((Compare(UPDATED, Op.GT, since), Compare(UPDATED, Op.LE, stamp(4))))
    assert await collection.count(where=in_window) == 6


async def test_throttling_is_retried_after_the_time_the_service_asks(
    faulty_emulator: CosmosEmulator, dev_issuer: DevIssuer
) -> None:
    store = await open_store(faulty_emulator, dev_issuer, throttle_retries=5)
    try:
        collection = store.collection("c")
        created = await collection.create("p", "a", {"v": 1})
        requests = store.charges.requests
        faulty_emulator.inject_faults(status=429, count=3, retry_after_ms=200)
        started = time.monotonic()
        assert await collection.read("p", "a") == created
        assert time.monotonic() - started >= 0.6  # three waits of x-ms-retry-after-ms
        assert faulty_emulator.faults_served() == 3
        assert store.charges.requests - requests == 4
    finally:
        faulty_emulator.clear_faults()
        await store.close()


async def test_throttling_beyond_the_retries_is_unavailable(
    faulty_emulator: CosmosEmulator, dev_issuer: DevIssuer
) -> None:
    store = await open_store(faulty_emulator, dev_issuer, throttle_retries=2)
    try:
        collection = store.collection("c")
        await collection.create("p", "a", {"v": 1})
        faulty_emulator.inject_faults(status=429, count=100, retry_after_ms=10)
        with pytest.raises(Unavailable) as err:
            await collection.replace("p", "a", {"v": 2}, if_match=None)
        assert err.value.reason == "BACKEND_UNAVAILABLE"
        assert faulty_emulator.faults_served() == 3  # the request and two retries
        faulty_emulator.clear_faults()
        doc = await collection.read("p", "a")
        assert doc is not None
        assert doc.body == {"v": 1}
    finally:
        faulty_emulator.clear_faults()
        await store.close()


async def test_server_errors_are_unavailable_and_say_nothing_of_the_cause(
    faulty_emulator: CosmosEmulator, dev_issuer: DevIssuer
) -> None:
    store = await open_store(faulty_emulator, dev_issuer, operation_timeout=10)
    try:
        collection = store.collection("c")
        doc = await collection.create("p", "a", {"v": 1})
        operations: dict[str, Callable[[], Awaitable[object]]] = {
            "read": lambda: collection.read("p", "a"),
            "create": lambda: collection.create("p", "b", {}),
            "replace": lambda: collection.replace("p", "a", {"v": 2}, if_match=doc.etag),
            "delete": lambda: collection.delete("p", "a"),
            "query": lambda: collection.query(Query(limit=5)),
            "count": lambda: collection.count(),
        }
        for status in (503, 500):
            faulty_emulator.inject_faults(status=status, count=1000)
            results = await asyncio.gather(*(operation() for operation in operations.values()), return_exceptions=True)
            for name, result in zip(operations, results, strict=True):
                assert isinstance(result, Unavailable), (name, result)
                assert result.reason == "BACKEND_UNAVAILABLE"
                assert "test tooling" not in str(result)
            assert faulty_emulator.faults_served() >= len(operations)
        faulty_emulator.clear_faults()
        assert await collection.read("p", "a") == doc
    finally:
        faulty_emulator.clear_faults()
        await store.close()


@pytest.fixture
def own_emulator(tmp_path: Path) -> Iterator[CosmosEmulator]:
    """An emulator only this test stops and starts."""
    emulator = start_cosmos_emulator(tmp_path / "cosmos")
    yield emulator
    emulator.stop()


async def _until_unavailable(*operations: Callable[[], Awaitable[object]]) -> None:
    """Each operation (run side by side) fails with BACKEND_UNAVAILABLE within a bound (else TimeoutError)."""
    results = await asyncio.wait_for(
        asyncio.gather(*(operation() for operation in operations), return_exceptions=True), UNAVAILABLE_WITHIN
    )
    for result in results:
        assert isinstance(result, Unavailable), result
        assert result.reason == "BACKEND_UNAVAILABLE"


async def test_a_paused_emulator_is_unavailable_within_the_timeout_then_works_again(
    own_emulator: CosmosEmulator, dev_issuer: DevIssuer
) -> None:
    store = await open_store(own_emulator, dev_issuer, operation_timeout=2)
    try:
        collection = store.collection("c")
        doc = await collection.create("p", "a", {"v": 1})
        own_emulator.pause()  # the process is stopped: connections hang
        try:
            await _until_unavailable(
                lambda: collection.read("p", "a"),
                lambda: collection.replace("p", "a", {"v": 2}, if_match=doc.etag),
            )
        finally:
            own_emulator.resume()
        # a write that timed out has an unknown outcome: the paused process may still apply it once resumed
        current = await collection.read("p", "a")
        assert current is not None
        assert current.body in ({"v": 1}, {"v": 2})
        replaced = await collection.replace("p", "a", {"v": 3}, if_match=current.etag)
        assert await collection.read("p", "a") == replaced
    finally:
        await store.close()


async def test_a_stopped_emulator_is_unavailable_and_a_restarted_one_is_used_again(
    own_emulator: CosmosEmulator, dev_issuer: DevIssuer, tmp_path: Path
) -> None:
    store = await open_store(own_emulator, dev_issuer, operation_timeout=5)
    restarted: CosmosEmulator | None = None
    try:
        collection = store.collection("c")
        await collection.create("p", "a", {"v": 1})
        own_emulator.stop()
        await _until_unavailable(
            lambda: collection.read("p", "a"),
            lambda: collection.create("p", "b", {}),
            lambda: collection.query(Query()),
        )
        # back on the same port; it starts empty (the emulator keeps nothing), so the adapter re-creates its
        # database and container on the first request that finds them missing
        restarted = start_cosmos_emulator(tmp_path / "cosmos-again", port=own_emulator.port)
        assert await collection.read("p", "a") is None
        created = await collection.create("p", "b", {"v": 2})
        assert await collection.read("p", "b") == created
        assert [d.id for d in (await collection.query(Query())).documents] == ["b"]
    finally:
        await store.close()
        if restarted is not None:
            restarted.stop()
