"""The local/v1 object app over real HTTP: signed PUT/GET URLs, refusals, traversal, size limit."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from services.objects.http import create_object_app
from services.objects.local import LocalObjectProvider
from services.objects.port import ObjectRef

TIMEOUT = aiohttp.ClientTimeout(total=10)
EXEC_A = "0b6f5d7e-1111-4c5e-8f70-1a2b3c4d5e6f"
EXEC_B = "0b6f5d7e-2222-4c5e-8f70-1a2b3c4d5e6f"
MINUTE = timedelta(minutes=1)
LIMIT = 64 * 1024


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Served:
    provider: LocalObjectProvider
    clock: FakeClock
    session: aiohttp.ClientSession
    port: int
    data_dir: Path
    tmp: Path


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Served]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    clock = FakeClock()
    data_dir = tmp_path / "data"
    provider = await LocalObjectProvider.open(data_dir, f"http://127.0.0.1:{port}", max_object_bytes=LIMIT, clock=clock)
    runner = web.AppRunner(create_object_app(provider))
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
            yield Served(provider, clock, session, port, data_dir, tmp_path)
    finally:
        await runner.cleanup()


async def send(served: Served, method: str, uri: str, body: bytes | None = None) -> tuple[int, bytes]:
    async with served.session.request(method, URL(uri, encoded=True), data=body) as response:
        return response.status, await response.read()


async def raw_request(port: int, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send the request target byte for byte (no client-side normalisation of ``..`` or escapes)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    try:
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split(b" ")[1]), rest.partition(b"\r\n\r\n")[2]


def with_path(uri: str, path: str) -> str:
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def target_of(uri: str) -> str:
    parts = urlsplit(uri)
    return f"{parts.path}?{parts.query}"


def files_outside(root: Path, base: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for dirpath, _, filenames in os.walk(base):
        for filename in filenames:
            path = Path(dirpath) / filename
            if not path.resolve().is_relative_to(root):
                found[str(path)] = path.read_bytes()
    return found


async def test_upload_then_download_round_trips(served: Served) -> None:
    ref = ObjectRef(EXEC_A, "input", "data.bin")
    payload = os.urandom(LIMIT - 1) + b"\x00"
    put = await served.provider.upload_accessor(ref, MINUTE)
    status, body = await send(served, put.method, put.uri, payload)
    assert status == 201
    assert json.loads(body) == {"size": len(payload), "sha256": hashlib.sha256(payload).hexdigest()}
    assert await served.provider.exists(ref)
    assert await served.provider.size(ref) == len(payload)
    # an input is uploaded to its upload file; sealing moves it to the file downloads read
    objects = served.data_dir / "objects" / EXEC_A
    assert (objects / "upload" / "data.bin").read_bytes() == payload
    assert not (objects / "input" / "data.bin").exists()
    sealed = await served.provider.seal_input(ref)
    assert sealed is not None
    assert (sealed.size, sealed.sha256) == (len(payload), hashlib.sha256(payload).hexdigest())
    get = await served.provider.download_accessor(ref, MINUTE)
    async with served.session.get(URL(get.uri, encoded=True)) as response:
        assert response.status == 200
        assert response.content_length == len(payload)
        assert response.headers["Content-Type"] == "application/octet-stream"
        assert await response.read() == payload
    assert (objects / "input" / "data.bin").read_bytes() == payload
    assert not (objects / "upload" / "data.bin").exists()


async def test_a_sealed_input_refuses_uploads(served: Served) -> None:
    ref = ObjectRef(EXEC_A, "input", "doc")
    put = await served.provider.upload_accessor(ref, MINUTE)
    assert (await send(served, "PUT", put.uri, b"v1"))[0] == 201
    await served.provider.seal_input(ref)
    status, body = await send(served, "PUT", put.uri, b"v2")
    assert status == 403
    assert b'"OBJECT_SEALED"' in body
    objects = served.data_dir / "objects" / EXEC_A
    assert (objects / "input" / "doc").read_bytes() == b"v1"
    assert not (objects / "upload" / "doc").exists()


async def test_a_server_that_decodes_bodies_refuses_encoded_uploads(tmp_path: Path) -> None:
    """Mounted under a root app without OBJECT_HANDLER_ARGS, aiohttp would gunzip uploads: refused, not kept."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    provider = await LocalObjectProvider.open(tmp_path / "data", base)
    root = web.Application()
    root.add_subapp("/objects/", create_object_app(provider))
    runner = web.AppRunner(root)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        ref = ObjectRef(EXEC_A, "input", "table.csv")
        put = await provider.upload_accessor(ref, MINUTE)
        compressed = gzip.compress(b"a,b\n" * 1000)
        async with (
            aiohttp.ClientSession(timeout=TIMEOUT) as session,
            session.put(URL(put.uri, encoded=True), data=compressed, headers={"Content-Encoding": "gzip"}) as reply,
        ):
            assert reply.status == 415
            assert b'"CONTENT_ENCODING_NOT_KEPT"' in await reply.read()
        assert not await provider.exists(ref)
    finally:
        await runner.cleanup()


async def test_overwrite_replaces_and_empty_objects_work(served: Served) -> None:
    ref = ObjectRef(EXEC_A, "output", "r.json")
    put = await served.provider.upload_accessor(ref, MINUTE)
    assert (await send(served, "PUT", put.uri, b"first"))[0] == 201
    assert (await send(served, "PUT", put.uri, b""))[0] == 201
    assert await served.provider.size(ref) == 0
    get = await served.provider.download_accessor(ref, MINUTE)
    assert await send(served, "GET", get.uri) == (200, b"")


async def test_get_before_upload_is_404(served: Served) -> None:
    get = await served.provider.download_accessor(ObjectRef(EXEC_A, "output", "later"), MINUTE)
    status, body = await send(served, "GET", get.uri)
    assert status == 404
    assert b'"OBJECT_NOT_FOUND"' in body


async def test_methods_are_bound_to_the_url(served: Served) -> None:
    ref = ObjectRef(EXEC_A, "input", "a")
    put = await served.provider.upload_accessor(ref, MINUTE)
    get = await served.provider.download_accessor(ref, MINUTE)
    status, body = await send(served, "GET", put.uri)
    assert status == 403
    assert b'"METHOD_NOT_ALLOWED"' in body
    status, _ = await send(served, "PUT", get.uri, b"sneaky")
    assert status == 403
    assert not await served.provider.exists(ref)


async def test_other_methods_are_405(served: Served) -> None:
    ref = ObjectRef(EXEC_A, "input", "a")
    get = await served.provider.download_accessor(ref, MINUTE)
    for method in ("HEAD", "POST", "DELETE", "PATCH"):
        async with served.session.request(method, URL(get.uri, encoded=True)) as response:
            assert response.status == 405, method
            assert response.headers["Allow"] == "GET, PUT"


async def test_expired_urls_are_403(served: Served) -> None:
    ref = ObjectRef(EXEC_A, "input", "a")
    put = await served.provider.upload_accessor(ref, timedelta(seconds=30))
    get = await served.provider.download_accessor(ref, timedelta(seconds=60))
    served.clock.now += 31
    status, body = await send(served, "PUT", put.uri, b"late")
    assert status == 403
    assert b'"URL_EXPIRED"' in body
    assert not await served.provider.exists(ref)
    await served.provider.write_object(ref, _chunks(b"data"))
    assert (await send(served, "GET", get.uri))[0] == 200
    served.clock.now += 30
    assert (await send(served, "GET", get.uri))[0] == 403


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


@pytest.mark.parametrize(
    ("old", "new"),
    [("method=PUT", "method=GET"), ("exp=", "exp=1"), ("kid=k1", "kid=k9"), ("&sig=", "&sig=A"), ("&sig=", "&x=")],
)
async def test_tampered_query_is_403(served: Served, old: str, new: str) -> None:
    ref = ObjectRef(EXEC_A, "input", "a")
    put = await served.provider.upload_accessor(ref, MINUTE)
    tampered = put.uri.replace(old, new, 1)
    assert tampered != put.uri
    method = "GET" if "method=GET" in tampered else "PUT"
    status, body = await send(served, method, tampered, b"x" if method == "PUT" else None)
    assert status == 403
    assert body.startswith(b'{"error"')
    assert not await served.provider.exists(ref)


async def test_unsigned_url_is_403(served: Served) -> None:
    status, body = await send(served, "GET", f"http://127.0.0.1:{served.port}/objects/v1/{EXEC_A}/input/a")
    assert status == 403
    assert b'"SIGNATURE_MISSING"' in body


async def test_a_url_for_one_execution_cannot_reach_another(served: Served) -> None:
    ref_b = ObjectRef(EXEC_B, "output", "secret")
    await served.provider.write_object(ref_b, _chunks(b"B's data"))
    get_a = await served.provider.download_accessor(ObjectRef(EXEC_A, "output", "secret"), MINUTE)
    moved = with_path(get_a.uri, f"/objects/v1/{EXEC_B}/output/secret")
    status, body = await send(served, "GET", moved)
    assert status == 403
    assert b"B's data" not in body
    # nor another kind or name of the same execution
    assert (await send(served, "GET", with_path(get_a.uri, f"/objects/v1/{EXEC_A}/input/secret")))[0] == 403


@pytest.mark.parametrize(
    "path",
    [
        "/objects/v1/{a}/input/../../../../outside/victim",
        "/objects/v1/{a}/input/..%2f..%2f..%2f..%2foutside%2fvictim",
        "/objects/v1/{a}/input/%2e%2e/%2e%2e/%2e%2e/%2e%2e/outside/victim",
        "/objects/v1/%2e%2e/%2e%2e/outside/victim",
        "/objects/v1/{a}/input//outside/victim",
        "/objects/v1/{a}/input/%2Foutside%2Fvictim",
        "/objects/v1/../../outside/victim",
        "//outside/victim",
    ],
)
async def test_path_traversal_never_touches_files_outside_the_root(served: Served, path: str) -> None:
    outside = served.tmp / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"original")
    root = (served.data_dir / "objects").resolve()
    keys_before = {p.name: p.read_bytes() for p in (served.data_dir / "object-url-keys").iterdir()}
    before = files_outside(root, served.tmp)
    put = await served.provider.upload_accessor(ObjectRef(EXEC_A, "input", "a"), MINUTE)
    query = urlsplit(put.uri).query
    target = f"{path.format(a=EXEC_A)}?{query}"
    status, _ = await raw_request(served.port, "PUT", target, b"overwritten")
    assert status in (400, 403, 404)
    status, body = await raw_request(served.port, "GET", target.replace("method=PUT", "method=GET"))
    assert status in (400, 403, 404)
    assert b"original" not in body
    assert files_outside(root, served.tmp) == before
    assert (outside / "victim").read_bytes() == b"original"
    assert {p.name: p.read_bytes() for p in (served.data_dir / "object-url-keys").iterdir()} == keys_before


async def test_absolute_form_request_target(served: Served) -> None:
    put = await served.provider.upload_accessor(ObjectRef(EXEC_A, "input", "a"), MINUTE)
    query = urlsplit(put.uri).query
    status, _ = await raw_request(served.port, "PUT", f"http://127.0.0.1:{served.port}/etc/passwd?{query}", b"x")
    assert status in (400, 404)


@pytest.mark.parametrize(
    "path", ["/", "/healthz", "/objects", "/objects/v1/", "/v1/executions", "/objects/v2/e/input/a"]
)
async def test_unknown_paths_are_404(served: Served, path: str) -> None:
    status, body = await send(served, "GET", f"http://127.0.0.1:{served.port}{path}")
    assert status == 404
    assert body.startswith(b'{"error"')


async def test_size_limit_is_413(served: Served) -> None:
    ref = ObjectRef(EXEC_A, "input", "big")
    put = await served.provider.upload_accessor(ref, MINUTE)
    # declared too large: refused before reading
    status, body = await send(served, "PUT", put.uri, b"x" * (LIMIT + 1))
    assert status == 413
    assert b'"OBJECT_TOO_LARGE"' in body

    # streamed without a length: refused once the limit is passed, and nothing is kept
    async def stream() -> AsyncIterator[bytes]:
        for _ in range(5):
            yield b"y" * (LIMIT // 4)

    async with served.session.put(URL(put.uri, encoded=True), data=stream()) as response:
        assert response.status == 413
    assert not await served.provider.exists(ref)
    leftovers = list((served.data_dir / "objects" / EXEC_A / "upload").iterdir())
    assert leftovers == []


async def test_exists_and_size_follow_http_uploads(served: Served) -> None:
    refs = [ObjectRef(EXEC_A, "input", f"f{i}") for i in range(3)]
    for i, ref in enumerate(refs):
        put = await served.provider.upload_accessor(ref, MINUTE)
        assert (await send(served, "PUT", put.uri, b"z" * (i * 10)))[0] == 201
    assert [await served.provider.size(ref) for ref in refs] == [0, 10, 20]
    assert not await served.provider.exists(ObjectRef(EXEC_A, "input", "f3"))
    await served.provider.delete_execution(EXEC_A)
    assert not any([await served.provider.exists(ref) for ref in refs])
