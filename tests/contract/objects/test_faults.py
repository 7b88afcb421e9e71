"""az-blob/v1 when Blob Storage or the identity provider goes away: UNAVAILABLE (BACKEND_UNAVAILABLE) within a
bounded time, never INTERNAL, and back to work by itself when they return.

The outage tests share an Azurite of their own (blobs kept on disk, so a restart on the same port keeps them);
the storage calls are bounded by ``OPERATION_TIMEOUT``.
"""

from __future__ import annotations

import socket
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import aiohttp
import grpc
import pytest
from azure.identity.aio import WorkloadIdentityCredential

from services.objects.azblob import AzureBlobObjectProvider
from services.objects.port import ObjectRef
from services.platform.errors import Unavailable
from tests.support.azure_emulators import HUB_CLIENT_ID, TENANT_ID, Emulators
from tools.emulators.azurite import AzuriteProcess, create_container

OPERATION_TIMEOUT = 3.0
BOUND = OPERATION_TIMEOUT + 2.0  # the deadline plus scheduling slack on a busy machine
RECOVERY_SECONDS = 30.0
MINUTE = timedelta(minutes=1)
T = TypeVar("T")


@pytest.fixture(scope="module")
def azurite(emulators: Emulators, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteProcess]:
    """An Azurite of this module's own (these tests pause, stop and restart it)."""
    base = tmp_path_factory.mktemp("faults")
    started = AzuriteProcess.start(base / "azurite", certs_dir=emulators.certs_dir, location=base / "blobs")
    try:
        yield started
    finally:
        started.stop()


@dataclass
class Storage:
    provider: AzureBlobObjectProvider
    azurite: AzuriteProcess
    session: aiohttp.ClientSession
    ssl_context: ssl.SSLContext

    async def upload(self, ref: ObjectRef, payload: bytes) -> None:
        put = await self.provider.upload_accessor(ref, MINUTE)
        async with self.session.put(put.uri, data=payload, headers=put.headers, ssl=self.ssl_context) as response:
            assert response.status == 201


@pytest.fixture
async def storage(emulators: Emulators, azurite: AzuriteProcess) -> AsyncIterator[Storage]:
    ca_file = str(emulators.certificates.ca_cert)
    container = f"f{uuid.uuid4().hex[:20]}"
    async with (
        emulators.hub_credential() as credential,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
    ):
        await create_container(azurite.account_url, container, credential, connection_verify=ca_file)
        provider = await AzureBlobObjectProvider.open(
            azurite.account_url,
            container,
            credential,
            operation_timeout=OPERATION_TIMEOUT,
            connection_verify=ca_file,
        )
        try:
            yield Storage(provider, azurite, session, ssl.create_default_context(cafile=ca_file))
        finally:
            await provider.close()


async def _unavailable(call: Callable[[], Awaitable[Any]]) -> float:
    """Run ``call``, which must fail with Unavailable(BACKEND_UNAVAILABLE); returns how long it took."""
    started = time.monotonic()
    with pytest.raises(Unavailable) as info:
        await call()
    elapsed = time.monotonic() - started
    assert info.value.reason == "BACKEND_UNAVAILABLE"
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert "storage" in info.value.message
    assert elapsed < BOUND
    return elapsed


async def _eventually(call: Callable[[], Awaitable[T]]) -> T:
    """The first result of ``call`` that is not Unavailable, within RECOVERY_SECONDS."""
    deadline = time.monotonic() + RECOVERY_SECONDS
    while True:
        try:
            return await call()
        except Unavailable:
            if time.monotonic() > deadline:
                raise


async def test_a_hung_storage_is_unavailable_then_recovers(storage: Storage) -> None:
    execution = str(uuid.uuid4())
    kept, pending = ObjectRef(execution, "input", "kept"), ObjectRef(execution, "input", "pending")
    await storage.upload(kept, b"sealed before the outage")
    assert await storage.provider.seal_input(kept) is not None
    await storage.upload(pending, b"uploaded before the outage")
    storage.azurite.pause()
    try:
        await _unavailable(lambda: storage.provider.size(kept))
        await _unavailable(lambda: storage.provider.seal_input(pending))
        await _unavailable(lambda: storage.provider.delete_execution(str(uuid.uuid4())))
        # accessors are signed locally with the cached delegation key: still issued while storage hangs
        assert (await storage.provider.download_accessor(kept, MINUTE)).uri
    finally:
        storage.azurite.resume()
    sealed = await _eventually(lambda: storage.provider.seal_input(pending))
    assert sealed is not None
    assert sealed.size == len(b"uploaded before the outage")
    assert await storage.provider.size(kept) == len(b"sealed before the outage")


async def test_a_stopped_storage_is_unavailable_then_recovers(storage: Storage, emulators: Emulators) -> None:
    ref = ObjectRef(str(uuid.uuid4()), "output", "result.json")
    await storage.upload(ref, b'{"ok": true}')
    storage.azurite.stop()
    await _unavailable(lambda: storage.provider.size(ref))
    await _unavailable(lambda: storage.provider.delete_execution(ref.execution))
    # a replica that starts during the outage cannot get a delegation key, so it cannot issue accessors
    async with emulators.hub_credential() as credential:
        fresh = await AzureBlobObjectProvider.open(
            storage.azurite.account_url,
            storage.provider.container_name,
            credential,
            operation_timeout=OPERATION_TIMEOUT,
            connection_verify=str(emulators.certificates.ca_cert),
        )
        try:
            await _unavailable(lambda: fresh.upload_accessor(ref, MINUTE))
            storage.azurite.restart()
            assert await _eventually(lambda: storage.provider.size(ref)) == len(b'{"ok": true}')
            accessor = await _eventually(lambda: fresh.download_accessor(ref, MINUTE))
            async with storage.session.get(accessor.uri, ssl=storage.ssl_context) as response:
                assert (response.status, await response.read()) == (200, b'{"ok": true}')
        finally:
            await fresh.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_no_token_is_unavailable(emulators: Emulators) -> None:
    """The identity provider is unreachable: no token, so no delegation key; UNAVAILABLE, not INTERNAL."""
    credential = WorkloadIdentityCredential(
        tenant_id=TENANT_ID,
        client_id=HUB_CLIENT_ID,
        token_file_path=str(emulators.hub_token_file),
        authority=f"https://127.0.0.1:{_closed_port()}",
        connection_verify=str(emulators.certificates.ca_cert),
    )
    async with credential:
        provider = await AzureBlobObjectProvider.open(
            emulators.azurite().account_url,
            "exthub-objects",
            credential,
            operation_timeout=OPERATION_TIMEOUT,
            connection_verify=str(emulators.certificates.ca_cert),
        )
        try:
            ref = ObjectRef(str(uuid.uuid4()), "input", "doc")
            await _unavailable(lambda: provider.upload_accessor(ref, MINUTE))
        finally:
            await provider.close()
