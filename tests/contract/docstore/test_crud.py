"""Contract: create/read/replace/delete, etags, transactions, partitions, hostile values."""

from __future__ import annotations

import pytest

from services.platform.docstore.port import CreateOp, DeleteOp, DocumentCollection, DocumentStore, ReplaceOp
from services.platform.errors import Aborted, AlreadyExists, NotFound


async def test_create_then_read(collection: DocumentCollection) -> None:
    created = await collection.create("p1", "a", {"name": "alpha", "nested": {"x": [1, 2]}})
    assert created.id == "a"
    assert created.partition == "p1"
    assert created.body == {"name": "alpha", "nested": {"x": [1, 2]}}
    assert created.etag
    read = await collection.read("p1", "a")
    assert read == created


async def test_read_missing_is_none(collection: DocumentCollection) -> None:
    assert await collection.read("p1", "nope") is None


async def test_bodies_are_copied_in_and_out(collection: DocumentCollection) -> None:
    body = {"list": [1], "map": {"k": "v"}}
    created = await collection.create("p1", "a", body)
    body["list"].append(2)  # type: ignore[attr-defined]
    created.body["map"]["k"] = "changed"
    read = await collection.read("p1", "a")
    assert read is not None
    assert read.body == {"list": [1], "map": {"k": "v"}}
    read.body["list"].append(3)
    again = await collection.read("p1", "a")
    assert again is not None
    assert again.body["list"] == [1]


async def test_duplicate_create_is_already_exists(collection: DocumentCollection) -> None:
    await collection.create("p1", "a", {"v": 1})
    with pytest.raises(AlreadyExists) as err:
        await collection.create("p1", "a", {"v": 2})
    assert err.value.reason == "DOCUMENT_EXISTS"
    doc = await collection.read("p1", "a")
    assert doc is not None
    assert doc.body == {"v": 1}


async def test_replace_with_right_etag_changes_etag(collection: DocumentCollection) -> None:
    created = await collection.create("p1", "a", {"v": 1})
    replaced = await collection.replace("p1", "a", {"v": 2}, if_match=created.etag)
    assert replaced.etag != created.etag
    assert replaced.body == {"v": 2}
    read = await collection.read("p1", "a")
    assert read == replaced


async def test_replace_with_stale_etag_is_aborted(collection: DocumentCollection) -> None:
    created = await collection.create("p1", "a", {"v": 1})
    await collection.replace("p1", "a", {"v": 2}, if_match=created.etag)
    with pytest.raises(Aborted) as err:
        await collection.replace("p1", "a", {"v": 3}, if_match=created.etag)
    assert err.value.reason == "ETAG_MISMATCH"
    read = await collection.read("p1", "a")
    assert read is not None
    assert read.body == {"v": 2}


async def test_unconditional_replace_and_every_write_changes_etag(collection: DocumentCollection) -> None:
    created = await collection.create("p1", "a", {"v": 1})
    first = await collection.replace("p1", "a", {"v": 1}, if_match=None)
    second = await collection.replace("p1", "a", {"v": 1}, if_match=None)
    assert len({created.etag, first.etag, second.etag}) == 3


async def test_replace_missing_is_not_found(collection: DocumentCollection) -> None:
    with pytest.raises(NotFound) as err:
        await collection.replace("p1", "missing", {"v": 1}, if_match=None)
    assert err.value.reason == "DOCUMENT_NOT_FOUND"
    with pytest.raises(NotFound):
        await collection.replace("p1", "missing", {"v": 1}, if_match="whatever")


async def test_delete_conditional(collection: DocumentCollection) -> None:
    created = await collection.create("p1", "a", {"v": 1})
    updated = await collection.replace("p1", "a", {"v": 2}, if_match=None)
    with pytest.raises(Aborted) as err:
        await collection.delete("p1", "a", if_match=created.etag)
    assert err.value.reason == "ETAG_MISMATCH"
    assert await collection.read("p1", "a") is not None
    await collection.delete("p1", "a", if_match=updated.etag)
    assert await collection.read("p1", "a") is None
    with pytest.raises(NotFound) as missing:
        await collection.delete("p1", "a")
    assert missing.value.reason == "DOCUMENT_NOT_FOUND"


async def test_delete_unconditional_then_recreate(collection: DocumentCollection) -> None:
    await collection.create("p1", "a", {"v": 1})
    await collection.delete("p1", "a")
    again = await collection.create("p1", "a", {"v": 2})
    assert again.body == {"v": 2}


async def test_transact_applies_all_ops(collection: DocumentCollection) -> None:
    existing = await collection.create("p1", "x", {"v": 0})
    doomed = await collection.create("p1", "y", {"v": 0})
    results = await collection.transact(
        "p1",
        [
            CreateOp("a", {"v": 1}),
            ReplaceOp("x", {"v": 2}, if_match=existing.etag),
            DeleteOp("y", if_match=doomed.etag),
        ],
    )
    assert results[0] is not None
    assert results[0].body == {"v": 1}
    assert results[1] is not None
    assert results[1].etag != existing.etag
    assert results[2] is None
    assert await collection.read("p1", "y") is None
    assert await collection.read("p1", "a") == results[0]


@pytest.mark.parametrize(
    ("failing", "error"),
    [
        (CreateOp("dup", {"v": 9}), AlreadyExists),
        (ReplaceOp("dup", {"v": 9}, if_match="stale"), Aborted),
        (ReplaceOp("missing", {"v": 9}), NotFound),
        (DeleteOp("missing"), NotFound),
    ],
)
async def test_transact_is_all_or_nothing(
    collection: DocumentCollection, failing: CreateOp | ReplaceOp | DeleteOp, error: type[Exception]
) -> None:
    dup = await collection.create("p1", "dup", {"v": 0})
    with pytest.raises(error):
        await collection.transact(
            "p1", [CreateOp("first", {"v": 1}), ReplaceOp("dup", {"v": 5}, if_match=dup.etag), failing]
        )
    assert await collection.read("p1", "first") is None
    assert await collection.read("p1", "dup") == dup


async def test_transact_failing_second_op_writes_nothing(collection: DocumentCollection) -> None:
    with pytest.raises(AlreadyExists):
        await collection.transact("p1", [CreateOp("a", {"v": 1}), CreateOp("a", {"v": 2})])
    assert await collection.read("p1", "a") is None
    assert await collection.count() == 0


async def test_partition_isolation(collection: DocumentCollection) -> None:
    one = await collection.create("p1", "same", {"where": "p1"})
    two = await collection.create("p2", "same", {"where": "p2"})
    assert one.etag != two.etag
    read1, read2 = await collection.read("p1", "same"), await collection.read("p2", "same")
    assert read1 is not None
    assert read2 is not None
    assert read1.body == {"where": "p1"}
    assert read2.body == {"where": "p2"}
    await collection.delete("p1", "same")
    assert await collection.read("p2", "same") is not None
    assert await collection.count(partition="p1") == 0
    assert await collection.count(partition="p2") == 1


async def test_collections_are_isolated(store: DocumentStore) -> None:
    first, second = store.collection("first_c"), store.collection("second_c")
    await first.create("p", "a", {"v": 1})
    assert await second.read("p", "a") is None
    await second.create("p", "a", {"v": 2})
    assert await first.count() == 1


HOSTILE = [
    "' OR 1=1 --",
    '"); DROP TABLE documents; --',
    "Robert'); DROP TABLE documents;--",
    "naïve ☃ 日本語 🚀",
    "100% _literal_ \\ back\\slash",
    '$."labels"',
    "",
]


@pytest.mark.parametrize("value", HOSTILE)
async def test_hostile_values_round_trip(collection: DocumentCollection, value: str) -> None:
    doc_id = "id-" + str(HOSTILE.index(value)) + value.replace("/", "").replace("\\", "")[:20].replace("#", "")
    doc_id = doc_id.replace("?", "") or "x"
    body = {"name": value, "labels": {"k": value}, "tags": [value]}
    created = await collection.create(value or "empty", doc_id, body)
    read = await collection.read(value or "empty", doc_id)
    assert read == created
    assert read.body == body
    assert await collection.count() == 1


async def test_invalid_ids_are_refused(collection: DocumentCollection) -> None:
    for bad in ["", "a/b", "a\\b", "a?b", "a#b", "x" * 256]:
        with pytest.raises(ValueError, match="invalid document id"):
            await collection.create("p", bad, {})
