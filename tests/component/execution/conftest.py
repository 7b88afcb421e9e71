"""A real hub on loopback (see :mod:`tests.support.hub`): catalog + execution + agent + echo, on each profile:
real SQLite files (``embedded``), or the Azure adapters on the emulators (``azure``, see
:mod:`tests.support.profiles`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exthub.contract.dev_tokens import DevIssuer
from tests.support.azure_hub import AzureHubProfile
from tests.support.hub import Hub, TokenFactory, running_hub, token_factory
from tests.support.profiles import azure_profile, hub_profile

__all__ = ["azure_profile", "hub_profile"]  # fixtures of this package


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def issuer(data_dir: Path) -> DevIssuer:
    return DevIssuer.load_or_create(data_dir)


@pytest.fixture
def token(issuer: DevIssuer, hub_profile: AzureHubProfile | None) -> TokenFactory:
    """``token(roles=[...], tenant=..., user=...)`` → call metadata with a bearer token the profile's hub accepts."""
    return token_factory(issuer) if hub_profile is None else hub_profile.token_factory()


@pytest.fixture
async def hub(data_dir: Path, issuer: DevIssuer, hub_profile: AzureHubProfile | None) -> AsyncIterator[Hub]:
    async with running_hub(data_dir, issuer, azure=hub_profile) as running:
        yield running
