"""Fixtures for the object provider contract suite: every provider runs the same tests.

- ``local``: :class:`LocalObjectProvider` behind its real HTTP endpoint (``create_object_app`` on loopback).
- ``az-blob``: :class:`AzureBlobObjectProvider` over the real ``azure-storage-blob`` aio SDK against Azurite
  (``--oauth basic``, HTTPS), authorised by a ``WorkloadIdentityCredential`` that gets its tokens from the
  local token authority. A fresh container per test. If Azurite or the authority cannot start, the tests fail.

Accessors are used exactly as a client would: ``method`` on ``uri`` with ``headers``, through a plain aiohttp
session that never decompresses (so the bytes seen are the bytes stored).
"""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from services.objects.azblob import AzureBlobObjectProvider
from services.objects.http import create_object_app
from services.objects.local import LocalObjectProvider
from services.objects.port import Accessor, ObjectProvider
from tests.support import azure_emulators
from tests.support.azure_emulators import Emulators
from tools.emulators.azurite import create_container

PROVIDERS = ["local", "az-blob"]
MAX_TTL_SECONDS = 6 * 3600
TIMEOUT = aiohttp.ClientTimeout(total=20)


class OffsetClock:
    """Real time plus a settable offset (to issue accessors that are already expired)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Reply:
    status: int
    body: bytes
    headers: Mapping[str, str]


@dataclass
class Harness:
    """A provider under contract and a client that uses its accessors."""

    name: str
    provider: ObjectProvider
    clock: OffsetClock
    session: aiohttp.ClientSession
    ssl_context: ssl.SSLContext | bool

    @staticmethod
    def execution() -> str:
        return str(uuid.uuid4())

    async def send(
        self,
        method: str,
        uri: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """``method`` on ``uri`` exactly as given (no re-encoding), returning the raw body."""
        async with self.session.request(
            method, URL(uri, encoded=True), data=body, headers=dict(headers or {}), ssl=self.ssl_context
        ) as response:
            return Reply(response.status, await response.read(), dict(response.headers))

    async def put(self, accessor: Accessor, body: bytes, headers: Mapping[str, str] | None = None) -> Reply:
        """Upload as a client does: the accessor's method, URI and headers (plus ``headers``)."""
        return await self.send(accessor.method, accessor.uri, body, {**accessor.headers, **(headers or {})})

    async def get(self, accessor: Accessor) -> Reply:
        return await self.send(accessor.method, accessor.uri, headers=accessor.headers)


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulators]:
    """The token authority and Azurite, started once for the session (failing to start fails the tests)."""
    started = azure_emulators.acquire(tmp_path_factory.mktemp("azure-emulators"))
    try:
        yield started
    finally:
        azure_emulators.release()


@pytest.fixture(params=PROVIDERS)
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    clock = OffsetClock()
    async with aiohttp.ClientSession(timeout=TIMEOUT, auto_decompress=False) as session:
        if request.param == "local":
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            base = f"http://127.0.0.1:{sock.getsockname()[1]}"
            local = await LocalObjectProvider.open(tmp_path / "data", base, clock=clock)
            runner = web.AppRunner(create_object_app(local), access_log=None)
            await runner.setup()
            await web.SockSite(runner, sock).start()
            try:
                yield Harness("local", local, clock, session, False)
            finally:
                await runner.cleanup()
            return
        emulators: Emulators = request.getfixturevalue("emulators")
        azurite = emulators.azurite()
        ca_file = str(emulators.certificates.ca_cert)
        container = f"t{uuid.uuid4().hex[:20]}"
        async with emulators.hub_credential() as credential:
            await create_container(azurite.account_url, container, credential, connection_verify=ca_file)
            blob = await AzureBlobObjectProvider.open(
                azurite.account_url, container, credential, clock=clock, connection_verify=ca_file
            )
            try:
                yield Harness("az-blob", blob, clock, session, ssl.create_default_context(cafile=ca_file))
            finally:
                await blob.close()
