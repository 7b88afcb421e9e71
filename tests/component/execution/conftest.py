"""A real hub on loopback (see :mod:`tests.support.hub`): catalog + execution + agent + echo, real SQLite files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from exthub.contract.dev_tokens import DevIssuer
from tests.support.hub import Hub, TokenFactory, running_hub, token_factory


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def issuer(data_dir: Path) -> DevIssuer:
    return DevIssuer.load_or_create(data_dir)


@pytest.fixture
def token(issuer: DevIssuer) -> TokenFactory:
    """``token(roles=[...], tenant=..., user=...)`` → call metadata with a development bearer token."""
    return token_factory(issuer)


@pytest.fixture
async def hub(data_dir: Path, issuer: DevIssuer) -> AsyncIterator[Hub]:
    async with running_hub(data_dir, issuer) as running:
        yield running
