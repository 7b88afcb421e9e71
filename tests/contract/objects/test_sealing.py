"""Object provider contract: inputs are sealed at ``:continue`` and stored as sent."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
from datetime import timedelta

import pytest

from services.objects.port import ObjectRef, SealedObject
from services.platform.errors import InvalidArgument
from tests.contract.objects.conftest import Harness

MINUTE = timedelta(minutes=1)
UPLOADED = (200, 201)


def _digest(payload: bytes) -> SealedObject:
    return SealedObject(size=len(payload), sha256=hashlib.sha256(payload).hexdigest())


async def _upload(harness: Harness, ref: ObjectRef, payload: bytes, **headers: str) -> None:
    reply = await harness.put(await harness.provider.upload_accessor(ref, MINUTE), payload, headers)
    assert reply.status in UPLOADED, reply.body[:300]


async def test_sealing_records_size_and_sha256(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "input", "data.csv")
    payload = os.urandom(300_000)
    await _upload(harness, ref, payload)
    sealed = await harness.provider.seal_input(ref)
    assert sealed == _digest(payload)
    reply = await harness.get(await harness.provider.download_accessor(ref, MINUTE))
    assert (reply.status, reply.body) == (200, payload)
    assert await harness.provider.exists(ref)
    assert await harness.provider.size(ref) == len(payload)
    assert await harness.provider.seal_input(ref) == sealed  # idempotent


async def test_an_input_is_readable_only_once_sealed(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "input", "doc")
    get = await harness.provider.download_accessor(ref, MINUTE)
    await _upload(harness, ref, b"uploaded")
    assert (await harness.get(get)).status == 404
    await harness.provider.seal_input(ref)
    assert (await harness.get(get)).body == b"uploaded"  # the same accessor now reads the sealed object


async def test_a_put_after_sealing_changes_nothing(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "input", "report.pdf")
    old_put = await harness.provider.upload_accessor(ref, MINUTE)
    assert (await harness.put(old_put, b"version 1")).status in UPLOADED
    sealed = await harness.provider.seal_input(ref)
    assert sealed == _digest(b"version 1")
    get = await harness.provider.download_accessor(ref, MINUTE)
    # the old upload URL (and even a new one) may answer, but what a download returns never changes
    late = await harness.put(old_put, b"version 2: swapped after continue")
    assert late.status in (*UPLOADED, 403)
    newer = await harness.put(await harness.provider.upload_accessor(ref, MINUTE), b"version 3")
    assert newer.status in (*UPLOADED, 403)
    assert (await harness.get(get)).body == b"version 1"
    assert (await harness.get(await harness.provider.download_accessor(ref, MINUTE))).body == b"version 1"
    assert await harness.provider.seal_input(ref) == sealed
    assert await harness.provider.size(ref) == len(b"version 1")


async def test_the_last_upload_before_sealing_wins(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "input", "doc")
    put = await harness.provider.upload_accessor(ref, MINUTE)
    for version in (b"first", b"second", b"third and last"):
        assert (await harness.put(put, version)).status in UPLOADED
    assert await harness.provider.seal_input(ref) == _digest(b"third and last")


async def test_sealing_nothing_and_sealing_outputs(harness: Harness) -> None:
    execution = harness.execution()
    assert await harness.provider.seal_input(ObjectRef(execution, "input", "never")) is None
    with pytest.raises(InvalidArgument):
        await harness.provider.seal_input(ObjectRef(execution, "output", "out"))


async def test_an_empty_input_seals(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "input", "empty")
    await _upload(harness, ref, b"")
    assert await harness.provider.seal_input(ref) == _digest(b"")
    assert (await harness.get(await harness.provider.download_accessor(ref, MINUTE))).body == b""


async def test_concurrent_seals_agree(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "input", "doc")
    payload = os.urandom(50_000)
    await _upload(harness, ref, payload)
    results = await asyncio.gather(*(harness.provider.seal_input(ref) for _ in range(4)))
    assert results == [_digest(payload)] * 4


async def test_gzip_bodies_are_stored_as_sent(harness: Harness) -> None:
    ref = ObjectRef(harness.execution(), "input", "table.csv")
    plain = b"id,value\n" + b"".join(f"{i},{i * i}\n".encode() for i in range(2000))
    compressed = gzip.compress(plain)
    await _upload(harness, ref, compressed, **{"Content-Encoding": "gzip", "Content-Type": "text/csv"})
    assert await harness.provider.seal_input(ref) == _digest(compressed)
    reply = await harness.get(await harness.provider.download_accessor(ref, MINUTE))
    assert reply.status == 200
    assert reply.body == compressed  # the raw bytes: nothing was decompressed on the way in
    assert gzip.decompress(reply.body) == plain
    output = ObjectRef(ref.execution, "output", "table.csv.gz")
    put = await harness.provider.upload_accessor(output, MINUTE)
    assert (await harness.put(put, compressed, {"Content-Encoding": "gzip"})).status in UPLOADED
    assert await harness.provider.size(output) == len(compressed)
