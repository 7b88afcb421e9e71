"""Object provider contract: accessors upload and download, and refuse everything else."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest

from services.objects.port import Accessor, ObjectProvider, ObjectRef
from services.platform.errors import InvalidArgument
from tests.contract.objects.conftest import MAX_TTL_SECONDS, Harness

MINUTE = timedelta(minutes=1)
REFUSED = (400, 403)


async def _upload_output(harness: Harness, ref: ObjectRef, payload: bytes) -> None:
    reply = await harness.put(await harness.provider.upload_accessor(ref, MINUTE), payload)
    assert reply.status in (200, 201), reply.body[:300]


async def test_the_provider_satisfies_the_port(harness: Harness) -> None:
    assert isinstance(harness.provider, ObjectProvider)
    assert harness.provider.name == {"local": "local/v1", "az-blob": "az-blob/v1"}[harness.name]


async def test_upload_then_download_round_trips(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "output", "result.bin")
    payload = os.urandom(200_000) + b"\x00"
    await _upload_output(harness, ref, payload)
    reply = await harness.get(await harness.provider.download_accessor(ref, MINUTE))
    assert reply.status == 200
    assert reply.body == payload
    assert await harness.provider.exists(ref)
    assert await harness.provider.size(ref) == len(payload)


async def test_overwrite_and_empty_objects(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "output", "r.json")
    put = await harness.provider.upload_accessor(ref, MINUTE)
    assert (await harness.put(put, b"first")).status in (200, 201)
    assert (await harness.put(put, b"")).status in (200, 201)
    assert await harness.provider.size(ref) == 0
    reply = await harness.get(await harness.provider.download_accessor(ref, MINUTE))
    assert (reply.status, reply.body) == (200, b"")


async def test_accessor_shapes(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "output", "a.txt")
    before = datetime.now(UTC)
    put = await harness.provider.upload_accessor(ref, timedelta(minutes=10))
    get = await harness.provider.download_accessor(ref, timedelta(minutes=5))
    assert (put.method, put.access_mode) == ("PUT", "WRITE_ONLY")
    assert (get.method, get.access_mode) == ("GET", "READ_ONLY")
    assert get.headers == {}
    assert put.uri.startswith("http")
    for accessor, ttl in ((put, timedelta(minutes=10)), (get, timedelta(minutes=5))):
        assert accessor.expire_time.tzinfo is not None
        assert (
            before + ttl - timedelta(seconds=2)
            <= accessor.expire_time
            <= datetime.now(UTC) + ttl + timedelta(seconds=1)
        )
        assert accessor.to_json()["expireTime"].endswith("Z")


async def test_ttl_must_be_positive_and_is_capped(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "input", "a")
    with pytest.raises(InvalidArgument):
        await harness.provider.upload_accessor(ref, timedelta(0))
    with pytest.raises(InvalidArgument):
        await harness.provider.download_accessor(ref, timedelta(seconds=-5))
    accessor = await harness.provider.download_accessor(ref, timedelta(days=365))
    assert accessor.expire_time <= datetime.now(UTC) + timedelta(days=7, seconds=1)
    if harness.name == "az-blob":
        assert accessor.expire_time <= datetime.now(UTC) + timedelta(seconds=MAX_TTL_SECONDS + 1)


async def test_get_before_upload_is_not_found(harness: Harness) -> None:
    reply = await harness.get(
        await harness.provider.download_accessor(ObjectRef(harness.execution(), "output", "later"), MINUTE)
    )
    assert reply.status == 404


async def test_write_only_cannot_read(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "output", "secret.txt")
    payload = b"only for readers " * 10
    put = await harness.provider.upload_accessor(ref, MINUTE)
    assert (await harness.put(put, payload)).status in (200, 201)
    reply = await harness.send("GET", put.uri)
    assert reply.status == 403
    assert payload not in reply.body


async def test_read_only_cannot_write(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "output", "r.txt")
    await _upload_output(harness, ref, b"original")
    get = await harness.provider.download_accessor(ref, MINUTE)
    reply = await harness.send("PUT", get.uri, b"overwritten", {"x-ms-blob-type": "BlockBlob"})
    assert reply.status == 403
    assert (await harness.get(get)).body == b"original"
    # and a read-only accessor cannot create a new object either
    fresh = ObjectRef(ref.execution, "output", "new.txt")
    reply = await harness.send(
        "PUT", (await harness.provider.download_accessor(fresh, MINUTE)).uri, b"x", {"x-ms-blob-type": "BlockBlob"}
    )
    assert reply.status == 403
    assert not await harness.provider.exists(fresh)


def _moved(accessor: Accessor, other: Accessor) -> str:
    """``accessor``'s query (its signature) on ``other``'s path."""
    mine, theirs = urlsplit(accessor.uri), urlsplit(other.uri)
    return urlunsplit((mine.scheme, mine.netloc, theirs.path, mine.query, ""))


async def test_an_accessor_reaches_only_its_object(harness: Harness) -> None:
    execution, other_execution = harness.execution(), harness.execution()
    mine = ObjectRef(execution, "output", "mine")
    targets = [
        ObjectRef(other_execution, "output", "mine"),  # another execution
        ObjectRef(execution, "output", "other"),  # another object
        ObjectRef(execution, "input", "mine"),  # another kind
    ]
    for target in targets[:2]:
        await _upload_output(harness, target, b"someone else's data")
    get = await harness.provider.download_accessor(mine, MINUTE)
    put = await harness.provider.upload_accessor(mine, MINUTE)
    for target in targets:
        reply = await harness.send("GET", _moved(get, await harness.provider.download_accessor(target, MINUTE)))
        assert reply.status in REFUSED, target
        assert b"someone else" not in reply.body
        other_put = await harness.provider.upload_accessor(target, MINUTE)
        reply = await harness.send("PUT", _moved(put, other_put), b"tampered", put.headers)
        assert reply.status in REFUSED, target
    for target in targets[:2]:
        got = await harness.get(await harness.provider.download_accessor(target, MINUTE))
        assert got.body == b"someone else's data"
    assert not await harness.provider.exists(targets[2])


def _tampered(uri: str) -> list[tuple[str, str]]:
    """One URI per query parameter, with that parameter's value changed in its last letter or digit."""
    parts = urlsplit(uri)
    query = parse_qsl(parts.query, keep_blank_values=True)
    variants = []
    for index, (name, value) in enumerate(query):
        position = max((i for i, c in enumerate(value) if c.isalnum()), default=-1)
        if position < 0:
            continue
        char = value[position]
        if char.isdigit():
            changed = str((int(char) + 1) % 10)
        elif char.isupper():
            changed = "A" if char == "Z" else chr(ord(char) + 1)
        else:
            changed = "a" if char == "z" else chr(ord(char) + 1)
        edited = [*query]
        edited[index] = (name, value[:position] + changed + value[position + 1 :])
        variants.append((name, urlunsplit((*parts[:3], urlencode(edited, quote_via=quote), ""))))
    return variants


async def test_tampered_accessors_are_refused(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "output", "t.bin")
    await _upload_output(harness, ref, b"the real content")
    get = await harness.provider.download_accessor(ref, MINUTE)
    put = await harness.provider.upload_accessor(ref, MINUTE)
    variants = _tampered(get.uri)
    assert len(variants) >= 4
    for name, uri in variants:
        reply = await harness.send("GET", uri)
        assert reply.status in REFUSED, name
        assert b"the real content" not in reply.body
    for name, uri in _tampered(put.uri):
        reply = await harness.send("PUT", uri, b"tampered", put.headers)
        assert reply.status in REFUSED, name
    assert (await harness.get(get)).body == b"the real content"


async def test_expired_accessors_are_refused(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "output", "e.bin")
    await _upload_output(harness, ref, b"data")
    harness.clock.offset = -300.0  # issued five minutes ago, valid for one: expired four minutes ago
    expired_get = await harness.provider.download_accessor(ref, MINUTE)
    expired_put = await harness.provider.upload_accessor(ref, MINUTE)
    harness.clock.offset = 0.0
    assert expired_get.expire_time < datetime.now(UTC)
    reply = await harness.get(expired_get)
    assert reply.status == 403
    assert reply.body != b"data"
    assert (await harness.put(expired_put, b"late")).status == 403
    fresh = await harness.provider.download_accessor(ref, MINUTE)
    assert (await harness.get(fresh)).body == b"data"


async def test_exists_and_size(harness: Harness) -> None:
    execution = harness.execution()
    refs = [ObjectRef(execution, "output", f"f{i}") for i in range(3)]
    assert not await harness.provider.exists(refs[0])
    assert await harness.provider.size(refs[0]) is None
    for i, ref in enumerate(refs):
        await _upload_output(harness, ref, b"z" * (i * 10))
    assert [await harness.provider.size(ref) for ref in refs] == [0, 10, 20]
    assert all([await harness.provider.exists(ref) for ref in refs])
    assert not await harness.provider.exists(ObjectRef(execution, "output", "f3"))
    # an uploaded input exists (before it is sealed) with the size uploaded
    upload = ObjectRef(execution, "input", "doc")
    assert not await harness.provider.exists(upload)
    assert (await harness.put(await harness.provider.upload_accessor(upload, MINUTE), b"12345")).status in (200, 201)
    assert await harness.provider.exists(upload)
    assert await harness.provider.size(upload) == 5


async def test_delete_execution(harness: Harness) -> None:
    execution, other = harness.execution(), harness.execution()
    output = ObjectRef(execution, "output", "out")
    sealed = ObjectRef(execution, "input", "sealed")
    staged = ObjectRef(execution, "input", "staged")
    kept = ObjectRef(other, "output", "out")
    for ref in (output, kept):
        await _upload_output(harness, ref, b"o")
    for ref in (sealed, staged):
        assert (await harness.put(await harness.provider.upload_accessor(ref, MINUTE), b"i")).status in (200, 201)
    assert await harness.provider.seal_input(sealed) is not None
    await harness.provider.delete_execution(execution)
    for ref in (output, sealed, staged):
        assert not await harness.provider.exists(ref), ref
    assert (await harness.get(await harness.provider.download_accessor(output, MINUTE))).status == 404
    assert await harness.provider.seal_input(staged) is None
    assert await harness.provider.exists(kept)
    await harness.provider.delete_execution(execution)  # idempotent
    with pytest.raises(InvalidArgument):
        await harness.provider.delete_execution("../..")
