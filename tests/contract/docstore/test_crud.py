"""Contract: create/read/replace/delete, etags, single-document writes, partitions, hostile values."""

from __future__ import annotations

import pytest

from services.platform.docstore.codec import PartlyEncoded, encode_members
from services.platform.docstore.port import DocumentCollection, DocumentStore
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


async def test_a_failed_write_changes_nothing(collection: DocumentCollection) -> None:
    kept = await collection.create("p1", "kept", {"v": 0})
    with pytest.raises(AlreadyExists):
        await collection.create("p1", "kept", {"v": 1})
    with pytest.raises(Aborted):
        await collection.replace("p1", "kept", {"v": 2}, if_match="stale")
    with pytest.raises(Aborted):
        await collection.delete("p1", "kept", if_match="stale")
    with pytest.raises(NotFound):
        await collection.replace("p1", "missing", {"v": 3}, if_match=kept.etag)
    assert await collection.read("p1", "kept") == kept
    assert await collection.read("p1", "missing") is None
    assert await collection.count() == 1


def test_no_adapter_offers_a_multi_document_transaction(collection: DocumentCollection) -> None:
    # Each write touches one document (Cosmos DB's emulator has no transactional batch): a caller that needs
    # atomicity keeps the parts in one document, so nothing may come to rely on a batch one adapter offers.
    assert not hasattr(DocumentCollection, "transact")
    assert not hasattr(collection, "transact")


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


async def test_create_missing_creates_only_what_is_not_there(collection: DocumentCollection) -> None:
    existing = await collection.create("p1", "b", {"v": "first"})
    created = await collection.create_missing("p1", {"a": {"v": 1}, "b": {"v": "second"}, "c": {"v": [3]}})
    assert [(d.id, d.partition, d.body) for d in created] == [("a", "p1", {"v": 1}), ("c", "p1", {"v": [3]})]
    assert all(d.etag for d in created)
    for document in created:
        assert await collection.read("p1", document.id) == document
    assert await collection.read("p1", "b") == existing, "an existing document is left as it is"
    assert await collection.create_missing("p1", {"a": {"v": 2}, "c": {}}) == [], "calling again changes nothing"
    assert (await collection.read("p1", "a")) == created[0]
    assert await collection.create_missing("p1", {}) == []
    assert await collection.create_missing("p2", {"a": {"v": "other partition"}}) != []
    assert await collection.count(partition="p1") == 3


async def test_create_missing_refuses_what_create_refuses(collection: DocumentCollection) -> None:
    with pytest.raises(ValueError, match="invalid document id"):
        await collection.create_missing("p", {"ok": {}, "a/b": {}})
    with pytest.raises(ValueError, match="invalid document partition"):
        await collection.create_missing("", {"ok": {}})


async def test_a_partly_encoded_body_is_stored_like_the_plain_one(collection: DocumentCollection) -> None:
    fixed = {"name": "alpha", "nested": {"x": [1, 2.5, None]}, "text": "é ✓"}
    body = PartlyEncoded({"state": "RUNNING", "n": 2}, fixed, encode_members(fixed))
    plain = {"state": "RUNNING", "n": 2, **fixed}
    assert dict(body) == plain
    created = await collection.create("p1", "a", body)
    assert created.body == plain
    assert (await collection.read("p1", "a")) == created
    replaced = await collection.replace("p1", "a", PartlyEncoded({}, fixed, encode_members(fixed)), if_match=None)
    assert replaced.body == fixed
    assert (await collection.read("p1", "a")) == replaced
    with pytest.raises(ValueError, match="not valid JSON"):
        encode_members({"bad": float("nan")})
