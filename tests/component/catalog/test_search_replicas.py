"""Two catalog services (real gRPC servers, started as production starts them) on ONE document store: each keeps
its own search index, refreshed from the store with the default polling settings, so a write through one is found
by SearchExtensions on the other within 2 s — new extensions, updates that change the ranking, deletes and
undeletes.

Both profiles (``hub_profile``): ``embedded``, one SQLite file; ``azure``, one fresh Cosmos DB database of the
session's emulator, each replica with the catalog identity's Azure credential. Each wait is recorded as the test's
``replica_waits_seconds`` property (in ``--junitxml`` reports).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING

import grpc
import pytest

from exthub.catalog.v1 import catalog_service_pb2 as pb
from exthub.catalog.v1 import catalog_service_pb2_grpc, resources_pb2
from exthub.contract.roles import EXTENSIONS_PUBLISH
from services.catalog.app import CatalogApp, start_catalog
from services.platform.docstore.cosmos import CosmosDocumentStore
from services.platform.docstore.sqlite import SqliteDocumentStore
from services.platform.settings import Settings
from tests.component.catalog.conftest import TokenFactory
from tests.support.azure_hub import AzureHubProfile
from tests.support.profiles import hub_profile

__all__ = ["hub_profile"]  # both profiles: the embedded one and the Azure one

if TYPE_CHECKING:
    Stub = catalog_service_pb2_grpc.CatalogServiceAsyncStub
PUBLISH = (EXTENSIONS_PUBLISH,)
TIMEOUT = 10
FRESH_WITHIN_SECONDS = 2.0


@pytest.fixture
async def second(
    settings: Settings, catalog_environ: Mapping[str, str] | None, catalog: CatalogApp
) -> AsyncIterator[CatalogApp]:
    """Another catalog replica with the same settings as ``catalog``: the same database file, or the same Cosmos DB
    database."""
    app = await start_catalog(settings, port=0, environ=catalog_environ)
    try:
        yield app
    finally:
        await app.stop(0)


@pytest.fixture
async def other_stub(second: CatalogApp) -> AsyncIterator[Stub]:
    async with grpc.aio.insecure_channel(second.address) as channel:
        await channel.channel_ready()
        yield catalog_service_pb2_grpc.CatalogServiceStub(channel)


Waits = Callable[[Callable[[], Awaitable[bool]]], Awaitable[float]]


@pytest.fixture
def searchable_within(request: pytest.FixtureRequest) -> Iterator[Waits]:
    """``await searchable_within(check)`` waits (bounded by 2 s) until ``check`` holds and returns how long it took;
    the waits are recorded as the test's ``replica_waits_seconds`` property."""
    waits: list[float] = []

    async def wait(check: Callable[[], Awaitable[bool]]) -> float:
        started = time.monotonic()
        while not await check():
            waited = time.monotonic() - started
            assert waited < FRESH_WITHIN_SECONDS, f"not searchable on the other replica after {waited:.2f}s"
            await asyncio.sleep(0.05)
        waits.append(round(time.monotonic() - started, 3))
        return waits[-1]

    yield wait
    request.node.user_properties.append(("replica_waits_seconds", waits))


async def test_a_write_on_one_replica_is_searchable_on_the_other(
    catalog: CatalogApp,
    second: CatalogApp,
    hub_profile: AzureHubProfile | None,
    stub: Stub,
    other_stub: Stub,
    token: TokenFactory,
    searchable_within: Waits,
) -> None:
    expected = CosmosDocumentStore if hub_profile is not None else SqliteDocumentStore
    assert isinstance(catalog.store, expected)
    assert isinstance(second.store, expected)
    publisher, reader = token(roles=PUBLISH), token()

    async def names(query: str, on: Stub = other_stub) -> list[str]:
        found = await on.SearchExtensions(pb.SearchExtensionsRequest(query=query), metadata=reader, timeout=TIMEOUT)
        return [e.name for e in found.extensions]

    async def create(extension_id: str, **fields: object) -> resources_pb2.Extension:
        draft = resources_pb2.Extension(publisher="Acme", category="finance", **fields)  # type: ignore[arg-type]
        return await stub.CreateExtension(
            pb.CreateExtensionRequest(extension_id=extension_id, extension=draft), metadata=publisher, timeout=TIMEOUT
        )

    ledger = await create("ledger", display_name="Ledger", tags=["invoice"])
    assert await names("invoice", on=stub) == ["extensions/ledger"]  # the writing replica: at once

    async def ledger_found() -> bool:
        return await names("invoice") == ["extensions/ledger"]

    await searchable_within(ledger_found)

    billing = await create("billing", display_name="Billing", description="sends every invoice")

    async def ledger_first() -> bool:
        return await names("invoice") == ["extensions/ledger", "extensions/billing"]

    await searchable_within(ledger_first)

    # an update that changes the ranking: "invoice" moves into billing's display name (tier 0)
    renamed = resources_pb2.Extension(name="extensions/billing", display_name="Invoice Billing", etag=billing.etag)
    await stub.UpdateExtension(pb.UpdateExtensionRequest(extension=renamed), metadata=publisher, timeout=TIMEOUT)

    async def billing_first() -> bool:
        return await names("invoice") == ["extensions/billing", "extensions/ledger"]

    await searchable_within(billing_first)

    deleted = pb.DeleteExtensionRequest(name="extensions/ledger", etag=ledger.etag)
    await stub.DeleteExtension(deleted, metadata=publisher, timeout=TIMEOUT)

    async def ledger_gone() -> bool:
        return await names("invoice") == ["extensions/billing"]

    await searchable_within(ledger_gone)
    facets = await other_stub.SearchExtensions(pb.SearchExtensionsRequest(query=""), metadata=reader, timeout=TIMEOUT)
    assert facets.total_size == 1
    assert {(v.value, v.count) for f in facets.facets if f.field == "tags" for v in f.values} == set()

    undeleted = pb.UndeleteExtensionRequest(name="extensions/ledger")
    await stub.UndeleteExtension(undeleted, metadata=publisher, timeout=TIMEOUT)
    await searchable_within(billing_first)
    everything = await other_stub.SearchExtensions(
        pb.SearchExtensionsRequest(query=""), metadata=reader, timeout=TIMEOUT
    )
    assert everything.total_size == 2
    assert {(v.value, v.count) for f in everything.facets if f.field == "tags" for v in f.values} == {("invoice", 1)}

    # and the other way round: a write on the second replica reaches the first
    await other_stub.CreateExtension(
        pb.CreateExtensionRequest(
            extension_id="reverse", extension=resources_pb2.Extension(display_name="Reverse Invoice", publisher="Zed")
        ),
        metadata=publisher,
        timeout=TIMEOUT,
    )

    async def reverse_found() -> bool:
        return "extensions/reverse" in await names("invoice", on=stub)

    await searchable_within(reverse_found)
