"""What only az-blob/v1 has: its blob layout, its SAS parameters and its user-delegation key cache (Azurite)."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from azure.storage.blob.aio import BlobServiceClient

from services.objects.azblob import AzureBlobObjectProvider, blob_name
from services.objects.port import Accessor, ObjectRef
from services.platform.errors import Unavailable
from tests.contract.objects.conftest import OffsetClock
from tests.support.azure_emulators import Emulators
from tools.emulators.azurite import create_container

MINUTE = timedelta(minutes=1)


@dataclass
class Blob:
    provider: AzureBlobObjectProvider
    service: BlobServiceClient
    container: str
    clock: OffsetClock
    session: aiohttp.ClientSession
    ssl_context: ssl.SSLContext

    async def blobs(self, prefix: str = "") -> list[str]:
        container = self.service.get_container_client(self.container)
        return sorted([b.name async for b in container.list_blobs(name_starts_with=prefix)])

    async def put(self, ref: ObjectRef, payload: bytes) -> int:
        accessor = await self.provider.upload_accessor(ref, MINUTE)
        async with self.session.put(
            accessor.uri, data=payload, headers=accessor.headers, ssl=self.ssl_context
        ) as response:
            return response.status


@pytest.fixture
async def blob(emulators: Emulators) -> AsyncIterator[Blob]:
    azurite = emulators.azurite()
    ca_file = str(emulators.certificates.ca_cert)
    container = f"a{uuid.uuid4().hex[:20]}"
    clock = OffsetClock()
    async with (
        emulators.hub_credential() as credential,
        BlobServiceClient(azurite.account_url, credential=credential, connection_verify=ca_file) as service,
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
    ):
        await create_container(azurite.account_url, container, credential, connection_verify=ca_file)
        provider = await AzureBlobObjectProvider.open(
            azurite.account_url, container, credential, clock=clock, connection_verify=ca_file
        )
        try:
            yield Blob(provider, service, container, clock, session, ssl.create_default_context(cafile=ca_file))
        finally:
            await provider.close()


async def test_the_blob_layout(blob: Blob) -> None:
    execution = str(uuid.uuid4())
    document, result = ObjectRef(execution, "input", "document.pdf"), ObjectRef(execution, "output", "result.json")
    assert blob_name(document) == f"executions/{execution}/inputs/document.pdf"
    assert blob_name(document, upload=True) == f"executions/{execution}/uploads/document.pdf"
    assert blob_name(result) == blob_name(result, upload=True) == f"executions/{execution}/outputs/result.json"
    assert await blob.put(document, b"doc") == 201
    assert await blob.put(result, b"{}") == 201
    assert await blob.blobs() == [blob_name(result), blob_name(document, upload=True)]
    await blob.provider.seal_input(document)
    assert await blob.blobs() == [blob_name(document), blob_name(result)]  # the upload is gone once sealed


async def test_sas_parameters(blob: Blob) -> None:
    ref = ObjectRef(str(uuid.uuid4()), "input", "doc")
    put = await blob.provider.upload_accessor(ref, timedelta(minutes=10))
    get = await blob.provider.download_accessor(ref, timedelta(minutes=5))
    assert put.headers == {"x-ms-blob-type": "BlockBlob"}
    assert urlsplit(put.uri).path.endswith(f"/{blob.container}/{blob_name(ref, upload=True)}")
    assert urlsplit(get.uri).path.endswith(f"/{blob.container}/{blob_name(ref)}")
    for accessor, permissions in ((put, "cw"), (get, "r")):
        query = {k: v[0] for k, v in parse_qs(urlsplit(accessor.uri).query).items()}
        assert query["sp"] == permissions
        assert query["sr"] == "b"  # one blob
        assert query["spr"] == "https"
        assert "st" not in query  # valid from issue: no start time to trip over clock skew
        assert {"skoid", "sktid", "skt", "ske", "sig"} <= set(query)  # a user-delegation SAS, no account key
        assert datetime.strptime(query["se"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC) == accessor.expire_time
        assert accessor.expire_time <= datetime.strptime(query["ske"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


async def test_the_delegation_key_is_cached_and_replaced_before_it_expires(blob: Blob) -> None:
    ref = ObjectRef(str(uuid.uuid4()), "output", "out")
    assert await blob.put(ref, b"first") == 201
    assert blob.provider.delegation_keys_fetched == 1
    first = await blob.provider.download_accessor(ref, MINUTE)
    for _ in range(5):
        await blob.provider.download_accessor(ref, MINUTE)
        await blob.provider.upload_accessor(ref, MINUTE)
    assert blob.provider.delegation_keys_fetched == 1
    # 17 h on, the 24 h key still covers a 6 h SAS plus the margin; 18 h on it does not: a new key comes first
    blob.clock.offset = 17 * 3600.0
    assert _query(await blob.provider.download_accessor(ref, MINUTE))["ske"] == _query(first)["ske"]
    assert blob.provider.delegation_keys_fetched == 1
    blob.clock.offset = 18 * 3600.0
    later = _query(await blob.provider.download_accessor(ref, MINUTE))
    assert blob.provider.delegation_keys_fetched == 2
    shifted = datetime.now(UTC) + timedelta(hours=18)
    assert abs(_time(later["skt"]) - (shifted - timedelta(minutes=5))) < timedelta(seconds=30)
    assert abs(_time(later["ske"]) - (shifted + timedelta(hours=24))) < timedelta(seconds=30)


def _query(accessor: Accessor) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(accessor.uri).query).items()}


def _time(value: str) -> datetime:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


async def test_a_missing_container_is_unavailable_not_missing(emulators: Emulators) -> None:
    """A deployment without its container must not look like "nothing uploaded" (INPUTS_MISSING)."""
    async with emulators.hub_credential() as credential:
        provider = await AzureBlobObjectProvider.open(
            emulators.azurite().account_url,
            f"missing{uuid.uuid4().hex[:12]}",
            credential,
            connection_verify=str(emulators.certificates.ca_cert),
        )
        try:
            with pytest.raises(Unavailable):
                await provider.size(ObjectRef(str(uuid.uuid4()), "output", "out"))
        finally:
            await provider.close()


def test_settings_that_cannot_work_are_refused() -> None:
    service = BlobServiceClient("https://acct.blob.core.windows.net")
    with pytest.raises(ValueError, match="7 days"):
        AzureBlobObjectProvider(service, "c", delegation_key_lifetime=timedelta(days=8))
    with pytest.raises(ValueError, match="exceed max_ttl"):
        AzureBlobObjectProvider(service, "c", max_ttl=timedelta(hours=24), delegation_key_lifetime=timedelta(hours=24))
    with pytest.raises(ValueError, match="positive"):
        AzureBlobObjectProvider(service, "c", operation_timeout=0)
