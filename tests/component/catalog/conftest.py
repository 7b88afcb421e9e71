"""A real catalog service on 127.0.0.1 (OS-chosen port) over a real SQLite file, token helpers, and the Cosmos DB
emulator for the search feed's backend tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from exthub.catalog.v1 import catalog_service_pb2_grpc
from exthub.contract.dev_tokens import DevIssuer
from services.catalog.app import CatalogApp, start_catalog
from services.platform.settings import Settings
from tools.emulators.cosmos import CosmosEmulator, start_cosmos_emulator

Metadata = tuple[tuple[str, str], ...]
TokenFactory = Callable[..., Metadata]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def settings(data_dir: Path) -> Settings:
    # the versions these tests register name an internal test extension, allow-listed like an operator would
    return Settings.local_defaults(data_dir, catalog_port=0, log_format="console", egress={"allow": ["127.0.0.1:9"]})


@pytest.fixture
async def catalog(settings: Settings) -> AsyncIterator[CatalogApp]:
    app = await start_catalog(settings, port=0)
    try:
        yield app
    finally:
        await app.stop(0)


@pytest.fixture
async def stub(catalog: CatalogApp) -> AsyncIterator[catalog_service_pb2_grpc.CatalogServiceAsyncStub]:
    async with grpc.aio.insecure_channel(catalog.address) as channel:
        await channel.channel_ready()
        yield catalog_service_pb2_grpc.CatalogServiceStub(channel)


@pytest.fixture
def issuer(data_dir: Path, catalog: CatalogApp) -> DevIssuer:
    return DevIssuer.load_or_create(data_dir)


@pytest.fixture
def token(issuer: DevIssuer) -> TokenFactory:
    """``token(roles=[...], tenant=..., user=...)`` → call metadata with a development bearer token."""

    def make(*, roles: tuple[str, ...] = (), tenant: str = "tenant-a", user: str = "user-1", **kw: object) -> Metadata:
        jwt = issuer.issue(tenant=tenant, user=user, roles=list(roles), **kw)  # type: ignore[arg-type]
        return (("authorization", f"Bearer {jwt}"),)

    return make


@pytest.fixture(scope="session")
def cosmos_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CosmosEmulator]:
    """The Cosmos DB emulator, started on first use for the rest of the session (stopped by its pid)."""
    emulator = start_cosmos_emulator(tmp_path_factory.mktemp("cosmos-emulator"))
    yield emulator
    emulator.stop()


@pytest.fixture(scope="session")
def cosmos_token_issuer(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    """Signs the tokens the Cosmos DB adapter's credential hands out."""
    return DevIssuer.load_or_create(tmp_path_factory.mktemp("cosmos-issuer"))
