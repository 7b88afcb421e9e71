"""A real catalog service on 127.0.0.1 (OS-chosen port), token helpers, and the Cosmos DB emulator for the search
tests' Azure backend.

The service runs on the embedded profile (a real SQLite file) unless a test module imports
``tests.support.profiles.hub_profile``: its tests then run on the Azure profile too, the catalog started as in a pod
(``EXTHUB_BACKEND=azure``, the catalog identity's standard variables, a fresh Cosmos DB database of the session's
emulator stack, user tokens of its token authority). The Cosmos DB emulator is that stack's: one per session.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import grpc
import pytest

from exthub.catalog.v1 import catalog_service_pb2_grpc
from exthub.contract.dev_tokens import DevIssuer
from services.catalog.app import CatalogApp, start_catalog
from services.platform.settings import Settings
from tests.support.azure_hub import AzureHubProfile
from tests.support.profiles import azure_profile
from tools.emulators.cosmos import CosmosEmulator

__all__ = ["azure_profile"]  # the session's emulator stack (its Cosmos DB emulator serves this package)

Metadata = tuple[tuple[str, str], ...]
TokenFactory = Callable[..., Metadata]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def hub_profile() -> AzureHubProfile | None:
    """The embedded profile; a test module that imports ``tests.support.profiles.hub_profile`` runs on both."""
    return None


@pytest.fixture
async def settings(data_dir: Path, hub_profile: AzureHubProfile | None) -> Settings:
    """The catalog's settings on the profile: every replica started with them shares one store (the SQLite file
    in ``data_dir``, or the test's own Cosmos DB database)."""
    # the versions these tests register name an internal test extension, allow-listed like an operator would
    values: dict[str, Any] = {"catalog_port": 0, "log_format": "console", "egress": {"allow": ["127.0.0.1:9"]}}
    if hub_profile is None:
        return Settings.local_defaults(data_dir, **values)
    return Settings(data_dir=data_dir, **values, **(await hub_profile.isolated()))


@pytest.fixture
def catalog_environ(hub_profile: AzureHubProfile | None) -> Mapping[str, str] | None:
    """The variables a catalog process reads its Azure identity from (None: ``os.environ``, unused locally)."""
    return None if hub_profile is None else hub_profile.stack.service_environment("catalog")


@pytest.fixture
async def catalog(settings: Settings, catalog_environ: Mapping[str, str] | None) -> AsyncIterator[CatalogApp]:
    app = await start_catalog(settings, port=0, environ=catalog_environ)
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
def token(issuer: DevIssuer, hub_profile: AzureHubProfile | None) -> TokenFactory:
    """``token(roles=[...], tenant=..., user=...)`` → call metadata with a bearer token the profile's catalog
    accepts (a development token, or a user token of the emulators' token authority)."""

    def make(*, roles: tuple[str, ...] = (), tenant: str = "tenant-a", user: str = "user-1", **kw: object) -> Metadata:
        if hub_profile is not None:
            assert not kw, "the Azure profile's tokens take roles, tenant and user only"
            jwt = hub_profile.bearer(roles=roles, tenant=tenant, user=user)
        else:
            jwt = issuer.issue(tenant=tenant, user=user, roles=list(roles), **kw)  # type: ignore[arg-type]
        return (("authorization", f"Bearer {jwt}"),)

    return make


@pytest.fixture(scope="session")
def cosmos_emulator(azure_profile: AzureHubProfile) -> CosmosEmulator:
    """The Cosmos DB emulator of the session's emulator stack (started on first use, stopped with the stack)."""
    return azure_profile.stack.cosmos


@pytest.fixture(scope="session")
def cosmos_token_issuer(tmp_path_factory: pytest.TempPathFactory) -> DevIssuer:
    """Signs the tokens the Cosmos DB adapter's credential hands out."""
    return DevIssuer.load_or_create(tmp_path_factory.mktemp("cosmos-issuer"))
