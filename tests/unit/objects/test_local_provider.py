"""Unit tests of the local/v1 provider: signed-URL format and verification, keys, storage helpers.

What every provider must do is in the contract suite, ``tests/contract/objects/``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import stat
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from services.objects.local import (
    KEY_BYTES,
    BodyLengthMismatch,
    LocalObjectProvider,
    ObjectSealed,
    ObjectTooLarge,
    UrlRejected,
    canonical_string,
)
from services.objects.port import Accessor, ObjectRef

BASE = "http://127.0.0.1:8080"
EXECUTION = "3f2b8c1e-9a4d-4c5e-8f70-1a2b3c4d5e6f"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(tmp_path: Path, clock: FakeClock) -> LocalObjectProvider:
    return LocalObjectProvider(tmp_path / "data", BASE, max_object_bytes=1000, clock=clock)


def split(accessor: Accessor) -> tuple[str, list[tuple[str, str]]]:
    parts = urlsplit(accessor.uri)
    return parts.path, parse_qsl(parts.query, keep_blank_values=True)


async def chunks_of(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


# ---- accessors and the signed-URL format ---------------------------------------------------------------------


async def test_upload_accessor_shape_and_signature(provider: LocalObjectProvider, clock: FakeClock) -> None:
    ref = ObjectRef(EXECUTION, "input", "data.csv")
    accessor = await provider.upload_accessor(ref, timedelta(minutes=10))
    assert accessor.method == "PUT"
    assert accessor.access_mode == "WRITE_ONLY"
    assert accessor.headers == {}
    assert accessor.expire_time == datetime.fromtimestamp(clock.now + 600, UTC)
    assert accessor.uri.startswith(f"{BASE}/objects/v1/{EXECUTION}/input/data.csv?")
    path, query = split(accessor)
    params = dict(query)
    assert [k for k, _ in query] == ["method", "exp", "kid", "sig"]
    assert params["method"] == "PUT"
    assert params["exp"] == str(int(clock.now + 600))
    # the signature is HMAC-SHA256 of the documented canonical string under the key file named by kid
    key = (provider.keys.directory / f"{params['kid']}.key").read_bytes()
    canonical = f"exthub-object-url/v1\nPUT\n{path}\n{params['exp']}\n{params['kid']}".encode()
    assert canonical == canonical_string("PUT", path, int(params["exp"]), params["kid"])
    expected = base64.urlsafe_b64encode(hmac.new(key, canonical, hashlib.sha256).digest()).rstrip(b"=").decode()
    assert params["sig"] == expected
    assert accessor.to_json() == {
        "uri": accessor.uri,
        "method": "PUT",
        "headers": {},
        "expireTime": datetime.fromtimestamp(clock.now + 600, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "accessMode": "WRITE_ONLY",
    }


async def test_download_urls_are_signed_for_get(provider: LocalObjectProvider) -> None:
    accessor = await provider.download_accessor(ObjectRef(EXECUTION, "output", "result.json"), timedelta(minutes=1))
    assert "method=GET" in accessor.uri


async def test_ttl_is_capped_at_seven_days(provider: LocalObjectProvider, clock: FakeClock) -> None:
    ref = ObjectRef(EXECUTION, "input", "a")
    accessor = await provider.download_accessor(ref, timedelta(days=365))
    assert accessor.expire_time == datetime.fromtimestamp(clock.now + timedelta(days=7).total_seconds(), UTC)


@pytest.mark.parametrize(
    "base", ["ftp://host", "/relative", "http://host/?q=1", "http://user:pw@host", "http://host/#frag", "http://"]
)
def test_public_base_url_is_checked(tmp_path: Path, base: str) -> None:
    with pytest.raises(ValueError, match="public base URL"):
        LocalObjectProvider(tmp_path, base)


async def test_base_url_trailing_slash_and_prefix(tmp_path: Path) -> None:
    provider = LocalObjectProvider(tmp_path, "https://hub.example.com/prefix/")
    accessor = await provider.download_accessor(ObjectRef("e1", "input", "a"), timedelta(minutes=1))
    assert accessor.uri.startswith("https://hub.example.com/prefix/objects/v1/e1/input/a?method=GET&")


# ---- verification --------------------------------------------------------------------------------------------


async def test_verify_accepts_its_own_urls(provider: LocalObjectProvider) -> None:
    ref = ObjectRef(EXECUTION, "input", "data.csv")
    path, query = split(await provider.upload_accessor(ref, timedelta(minutes=1)))
    assert await provider.verify("PUT", path, query) == ref


async def test_verify_rejects_wrong_method(provider: LocalObjectProvider) -> None:
    path, query = split(await provider.upload_accessor(ObjectRef(EXECUTION, "input", "a"), timedelta(minutes=1)))
    with pytest.raises(UrlRejected) as info:
        await provider.verify("GET", path, query)
    assert (info.value.status, info.value.reason) == (403, "METHOD_NOT_ALLOWED")


async def test_verify_rejects_expired(provider: LocalObjectProvider, clock: FakeClock) -> None:
    path, query = split(await provider.download_accessor(ObjectRef(EXECUTION, "input", "a"), timedelta(seconds=30)))
    clock.now += 29
    assert await provider.verify("GET", path, query)
    clock.now += 1
    with pytest.raises(UrlRejected) as info:
        await provider.verify("GET", path, query)
    assert (info.value.status, info.value.reason) == (403, "URL_EXPIRED")


@pytest.mark.parametrize(
    ("param", "value"),
    [("method", "GET"), ("exp", "9999999999"), ("kid", "k2"), ("kid", "nope"), ("sig", "A" * 43), ("sig", "short")],
)
async def test_verify_rejects_tampered_query(provider: LocalObjectProvider, param: str, value: str) -> None:
    path, query = split(await provider.upload_accessor(ObjectRef(EXECUTION, "input", "a"), timedelta(minutes=1)))
    tampered = [(k, value if k == param else v) for k, v in query]
    with pytest.raises(UrlRejected) as info:
        await provider.verify("GET" if param == "method" else "PUT", path, tampered)
    assert info.value.status == 403


@pytest.mark.parametrize(
    "query_edit",
    [
        lambda q: [p for p in q if p[0] != "sig"],
        lambda q: [p for p in q if p[0] != "exp"],
        lambda q: [*q, ("sig", "x")],
        lambda q: [*q, ("extra", "1")],
        lambda q: [],
    ],
)
async def test_verify_rejects_missing_or_extra_params(provider: LocalObjectProvider, query_edit: object) -> None:
    path, query = split(await provider.upload_accessor(ObjectRef(EXECUTION, "input", "a"), timedelta(minutes=1)))
    assert callable(query_edit)
    with pytest.raises(UrlRejected) as info:
        await provider.verify("PUT", path, query_edit(query))
    assert info.value.status == 403


async def test_url_is_bound_to_one_object(provider: LocalObjectProvider) -> None:
    _, query = split(await provider.download_accessor(ObjectRef("exec-a", "output", "r"), timedelta(minutes=1)))
    for other in ["/objects/v1/exec-b/output/r", "/objects/v1/exec-a/input/r", "/objects/v1/exec-a/output/s"]:
        with pytest.raises(UrlRejected) as info:
            await provider.verify("GET", other, query)
        assert info.value.status == 403


@pytest.mark.parametrize(
    "path",
    [
        "/objects/v1/exec-a/output",
        "/objects/v1/exec-a/output/r/extra",
        "/objects/v1/exec-a/secret/r",
        "/objects/v1/../output/r",
        "/objects/v1/exec-a/output/..",
        "/objects/v1/exec-a/output/%2e%2e",
        "/objects/v1/exec-a/output/%2Fetc%2Fpasswd",
        "/objects/v1//etc/passwd",
        "/objects/v2/exec-a/output/r",
        "/etc/passwd",
    ],
)
async def test_malformed_paths_are_404(provider: LocalObjectProvider, path: str) -> None:
    _, query = split(await provider.download_accessor(ObjectRef("exec-a", "output", "r"), timedelta(minutes=1)))
    with pytest.raises(UrlRejected) as info:
        await provider.verify("GET", path, query)
    assert info.value.status == 404


# ---- keys ----------------------------------------------------------------------------------------------------


async def test_key_file_is_private_and_created_once(tmp_path: Path) -> None:
    first = LocalObjectProvider(tmp_path, BASE)
    key_file = tmp_path / "object-url-keys" / "k1.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes()) == KEY_BYTES
    before = key_file.read_bytes()
    second = LocalObjectProvider(tmp_path, BASE)
    assert key_file.read_bytes() == before
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["k1.key"]
    # a URL signed by one instance verifies in the other (same data directory)
    path, query = split(await first.upload_accessor(ObjectRef("e1", "input", "a"), timedelta(minutes=1)))
    assert await second.verify("PUT", path, query)


async def test_key_rotation_keeps_old_urls_valid(tmp_path: Path) -> None:
    signer = LocalObjectProvider(tmp_path, BASE)
    verifier = LocalObjectProvider(tmp_path, BASE)
    ref = ObjectRef("e1", "input", "a")
    old_path, old_query = split(await signer.upload_accessor(ref, timedelta(minutes=1)))
    assert signer.keys.rotate() == "k2"
    new_path, new_query = split(await signer.upload_accessor(ref, timedelta(minutes=1)))
    assert dict(new_query)["kid"] == "k2"
    # the verifier learns k2 from the key directory on first sight; k1 URLs still verify
    assert await verifier.verify("PUT", new_path, new_query) == ref
    assert await verifier.verify("PUT", old_path, old_query) == ref
    # retiring k1 (deleting its file) ends its URLs
    (tmp_path / "object-url-keys" / "k1.key").unlink()
    verifier.keys.reload()
    with pytest.raises(UrlRejected):
        await verifier.verify("PUT", old_path, old_query)


def test_corrupt_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "object-url-keys").mkdir()
    (tmp_path / "object-url-keys" / "k1.key").write_bytes(b"short")
    with pytest.raises(ValueError, match=r"k1\.key"):
        LocalObjectProvider(tmp_path, BASE)


# ---- storage -------------------------------------------------------------------------------------------------


async def test_write_object_and_open_object(provider: LocalObjectProvider) -> None:
    ref = ObjectRef(EXECUTION, "output", "r.bin")
    stored = await provider.write_object(ref, chunks_of(b"hello ", b"world"))
    assert stored.size == 11
    assert stored.sha256 == hashlib.sha256(b"hello world").hexdigest()
    reader = await provider.open_object(ref)
    assert reader is not None
    assert b"".join([c async for c in reader.chunks(4)]) == b"hello world"
    await reader.aclose()
    await provider.delete_execution(EXECUTION)
    assert await provider.open_object(ref) is None


async def test_an_input_written_by_the_hub_is_sealed_content(provider: LocalObjectProvider) -> None:
    ref = ObjectRef(EXECUTION, "input", "doc")
    await provider.write_object(ref, chunks_of(b"trusted"))
    assert await provider.is_sealed(ref)
    sealed = await provider.seal_input(ref)
    assert sealed is not None
    assert sealed.sha256 == hashlib.sha256(b"trusted").hexdigest()
    with pytest.raises(ObjectSealed):
        await provider.receive_upload(ref, chunks_of(b"client"))


async def test_receive_upload_refuses_a_body_of_another_length(provider: LocalObjectProvider) -> None:
    ref = ObjectRef(EXECUTION, "input", "doc")
    with pytest.raises(BodyLengthMismatch):
        await provider.receive_upload(ref, chunks_of(b"decoded body"), declared_bytes=5)
    assert not await provider.exists(ref)
    assert list((provider.root / EXECUTION / "upload").iterdir()) == []


async def test_write_past_the_limit_keeps_nothing(provider: LocalObjectProvider) -> None:
    ref = ObjectRef(EXECUTION, "input", "big")
    with pytest.raises(ObjectTooLarge):
        await provider.write_object(ref, chunks_of(b"x" * 600, b"x" * 600))
    assert not await provider.exists(ref)
    assert list((provider.root / EXECUTION / "input").iterdir()) == []


async def test_failed_overwrite_keeps_previous_version(provider: LocalObjectProvider) -> None:
    ref = ObjectRef(EXECUTION, "input", "doc")
    await provider.write_object(ref, chunks_of(b"v1"))
    with pytest.raises(ObjectTooLarge):
        await provider.write_object(ref, chunks_of(b"y" * 1001))
    assert await provider.size(ref) == 2
